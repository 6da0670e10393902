//! From low-res mask logits to what is written per object-frame: the official video-resolution
//! output (bilinear resize of the hole-filled low-res logits to H×W, `align_corners=False`, no
//! antialias, then `> 0`), as COCO run lengths (column-major, zeros first), area and the
//! pixel-edge bounding box.

use tch::{Device, Kind, Tensor};

use crate::output::rle::Rle;

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

/// Resizes low-res logits `[N, 1, r, r]` to `[N, H, W]` booleans (`> 0`) on the CPU.
pub fn video_masks(low_res: &Tensor, height: u32, width: u32) -> Tensor {
    let up = low_res.to_kind(Kind::Float).upsample_bilinear2d(
        [height as i64, width as i64],
        false,
        None,
        None,
    );
    up.gt(0.0).squeeze_dim(1).to_device(Device::Cpu)
}

/// Run-length encodes one `[H, W]` boolean mask with the shared COCO RLE encoder
/// (row-major input, no transposed copy).
pub fn mask_runs(mask: &Tensor) -> MaskRuns {
    let size = mask.size();
    let (h, w) = (size[0] as u32, size[1] as u32);
    let bytes = mask.to_kind(Kind::Uint8).contiguous().flatten(0, -1);
    let data: Vec<u8> = Vec::<u8>::try_from(&bytes).unwrap_or_default();
    let rle = Rle::encode_row_major(&data, h, w).unwrap_or_else(|_| Rle::empty(h, w));
    MaskRuns {
        height: h,
        width: w,
        area: rle.area(),
        bbox: rle.bbox_xyxy(),
        counts: rle.counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_bbox() {
        // 2x3 mask rows [0,1,1],[0,1,0] -> column-major 0,0,1,1,1,0.
        let m = Tensor::from_slice(&[0u8, 1, 1, 0, 1, 0]).view([2, 3]).gt(0);
        let r = mask_runs(&m);
        assert_eq!(r.counts, vec![2, 3, 1]);
        assert_eq!(r.area, 3);
        assert_eq!(r.bbox, Some([1, 0, 3, 2]));
        let e = mask_runs(&Tensor::zeros([2, 2], (Kind::Bool, Device::Cpu)));
        assert_eq!(e.counts, vec![4]);
        assert_eq!(e.bbox, None);
        let f = mask_runs(&Tensor::ones([2, 2], (Kind::Bool, Device::Cpu)));
        assert_eq!(f.counts, vec![0, 4]);
    }

    #[test]
    fn resize_is_bilinear_half_pixel() {
        // A 4x4 logit map, one positive pixel, to 8x8: the positive 2x2 block stays interior.
        let mut v = vec![-1.0f32; 16];
        v[5] = 3.0;
        let low = Tensor::from_slice(&v).view([1, 1, 4, 4]);
        let m = video_masks(&low, 8, 8);
        assert_eq!(m.size(), vec![1, 8, 8]);
        let r = mask_runs(&m.get(0));
        assert_eq!(r.bbox, Some([2, 2, 4, 4]));
    }
}
