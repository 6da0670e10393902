//! Outputs: COCO RLE masks (`rle`), the JSONL result lines of `densam annotate` and their
//! streaming writer and reader (`jsonl`), and the exporters built on them.

pub mod rle;

pub use rle::{Rle, RleError};
