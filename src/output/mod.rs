//! Outputs: the JSONL result lines of `densam annotate` and their streaming writer and reader
//! (`jsonl`), and the exporters and overlays built on them. Masks and their COCO RLE codec are
//! [`crate::mask`]'s; [`Rle`] is re-exported here because result records are built from it.

pub mod atomic;
pub mod cli;
pub mod export;
pub mod jsonl;
#[cfg(feature = "ffmpeg")]
pub mod mp4;
pub mod png_io;
pub mod render;

pub use crate::mask::{Rle, RleError};
pub use jsonl::{FrameRecord, JsonlReader, JsonlWriter, ObjectRecord, OutputError};
