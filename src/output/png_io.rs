//! RGB PNG frames of `densam render --png-dir` (mask PNGs are [`crate::mask::png`]'s).

use crate::mask::png::PngError;
use crate::output::jsonl::OutputError;
use png::{BitDepth, ColorType};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

impl From<PngError> for OutputError {
    fn from(e: PngError) -> Self {
        OutputError::Other {
            path: e.path,
            reason: e.msg,
        }
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> OutputError {
    OutputError::other(path, format!("PNG: {e}"))
}

/// Writes an 8-bit RGB PNG (`data` interleaved RGB, row-major).
pub fn write_rgb_png(path: &Path, width: u32, height: u32, data: &[u8]) -> Result<(), OutputError> {
    let f = File::create(path).map_err(|e| OutputError::io(path, e))?;
    let mut enc = png::Encoder::new(BufWriter::new(f), width, height);
    enc.set_color(ColorType::Rgb);
    enc.set_depth(BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| err(path, e))?;
    w.write_image_data(data).map_err(|e| err(path, e))?;
    w.finish().map_err(|e| err(path, e))
}
