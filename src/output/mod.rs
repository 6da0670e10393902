//! Outputs: COCO RLE masks (`rle`), the JSONL result lines of `densam annotate` and their
//! streaming writer and reader (`jsonl`), and the exporters built on them.

pub mod cli;
pub mod export;
pub mod jsonl;
#[cfg(feature = "ffmpeg")]
pub mod mp4;
pub mod png_io;
pub mod render;
pub mod rle;

pub use jsonl::{
    Counts, FrameRecord, JsonlReader, JsonlWriter, ObjectRecord, OutputError, Segmentation,
};
pub use rle::{Rle, RleError};
