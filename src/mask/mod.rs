//! Binary masks as every layer exchanges them, free of tensors: the COCO run-length codec
//! ([`rle`], byte-identical to pycocotools), the COCO RLE JSON form `{"size": [h, w], "counts":
//! ...}` that prompts files and result lines share ([`CocoRle`]), mask PNGs (binary and DAVIS
//! index PNGs, [`png`]), a decoded row-major mask ([`BinaryMask`], what a mask prompt becomes)
//! and one object's run-length mask with its area and box ([`MaskRuns`], what the tracker
//! hands out per object-frame); connected components on runs ([`components`]).
//!
//! Used by `prompts` (mask prompts), `tracker` (results), `output` (result lines, exports) and
//! `eval`; it depends on none of them.

mod coco;
pub mod components;
pub mod png;
pub mod rle;

pub use coco::{CocoRle, Counts};
pub use rle::{Rle, RleError};

/// The most pixels a mask read from a file may declare (16384 x 16384, four times an 8K frame):
/// readers of result files refuse larger sizes before anything is allocated for them.
pub const MAX_PIXELS: u64 = 1 << 28;

/// A decoded binary mask, row-major, `data[y * width + x]` in {0, 1}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl BinaryMask {
    /// Decodes `rle` (allocates `height * width` bytes: check the size first where it comes
    /// from input, see [`CocoRle::to_rle_within`]).
    pub fn from_rle(rle: &Rle) -> Self {
        Self {
            height: rle.height as usize,
            width: rle.width as usize,
            data: rle.decode_row_major(),
        }
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }
}

/// One object's binary mask on one frame, run-length encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRuns {
    pub height: u32,
    pub width: u32,
    /// COCO runs: column-major, alternating 0-runs and 1-runs, starting with zeros.
    pub counts: Vec<u32>,
    pub area: u64,
    /// `[xmin, ymin, xmax, ymax]`, xmax/ymax exclusive; `None` for an empty mask.
    pub bbox: Option<[u32; 4]>,
}

impl From<Rle> for MaskRuns {
    fn from(rle: Rle) -> Self {
        MaskRuns {
            height: rle.height,
            width: rle.width,
            area: rle.area(),
            bbox: rle.bbox_xyxy(),
            counts: rle.counts,
        }
    }
}
