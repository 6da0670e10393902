//! Mask PNGs: DAVIS-style indexed (palette) PNGs read as their raw indices and written with
//! the DAVIS palette, and binary mask PNGs (any colour type, nonzero = foreground), as HD-EPIC
//! releases its masks. Errors name the file. The size a PNG declares is checked before anything
//! is allocated for its pixels: against the size the caller expects (the video's), and against
//! [`MAX_PIXELS`] (a small file can declare a huge image).

use png::{BitDepth, ColorType, Transformations};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

/// The most pixels a PNG densam reads may declare: 8192 × 8192, above every video densam is
/// meant for (8K UHD is 7680 × 4320).
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Checks a declared image size (before decoding) against `expect` and [`MAX_PIXELS`]; the
/// message says what was declared and what was allowed.
pub fn check_declared(w: u32, h: u32, expect: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((ew, eh)) = expect
        && (w, h) != (ew, eh)
    {
        return Err(format!(
            "declares {w}x{h} pixels where {ew}x{eh} (the video's) are expected"
        ));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "declares {w}x{h} pixels, more than densam reads ({MAX_PIXELS} pixels, 8192x8192)"
        ));
    }
    Ok(())
}

/// A mask PNG that cannot be read or written: the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct PngError {
    pub path: PathBuf,
    pub msg: String,
}

/// A decoded single-channel image: `data[y * width + x]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plane {
    pub height: u32,
    pub width: u32,
    pub data: Vec<u8>,
}

/// The DAVIS / PASCAL VOC palette: index `i` gets the colour from interleaving its bits.
pub fn davis_palette() -> Vec<u8> {
    let mut p = Vec::with_capacity(768);
    for i in 0..256u32 {
        let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
        let mut c = i;
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        p.extend_from_slice(&[r, g, b]);
    }
    p
}

fn err(path: &Path, e: impl std::fmt::Display) -> PngError {
    PngError {
        path: path.to_path_buf(),
        msg: format!("PNG: {e}"),
    }
}

fn io(path: &Path, e: std::io::Error) -> PngError {
    PngError {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Reads a PNG as raw samples without palette expansion: one value per pixel for indexed and
/// grey images (the index / grey level; 16-bit samples keep their high byte), or `channels`
/// interleaved values for RGB(A) / grey-alpha. Returns (plane data, channels). The declared
/// size is checked first ([`check_declared`]).
fn read_raw(
    path: &Path,
    expect: Option<(u32, u32)>,
) -> Result<(Plane, usize, ColorType), PngError> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let mut dec = png::Decoder::new(BufReader::new(f));
    dec.set_transformations(Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| err(path, e))?;
    let (dw, dh) = (reader.info().width, reader.info().height);
    check_declared(dw, dh, expect).map_err(|m| err(path, m))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err(path, "image too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(path, e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        ColorType::Grayscale | ColorType::Indexed => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
    };
    let mut data = Vec::with_capacity(w * h * channels);
    for y in 0..h {
        let row = &buf[y * info.line_size..(y + 1) * info.line_size];
        match info.bit_depth {
            BitDepth::Eight => data.extend_from_slice(&row[..w * channels]),
            BitDepth::Sixteen => data.extend(row.chunks_exact(2).take(w * channels).map(|c| {
                // Keep "nonzero" for masks: a 16-bit value 1 must not become 0.
                if c[0] == 0 && c[1] != 0 { 1 } else { c[0] }
            })),
            d => {
                let bits = d as usize;
                let mask = ((1u16 << bits) - 1) as u8;
                for x in 0..w {
                    let bit = x * bits;
                    let byte = row[bit / 8];
                    let shift = 8 - bits - (bit % 8);
                    data.push((byte >> shift) & mask);
                }
            }
        }
    }
    Ok((
        Plane {
            height: h as u32,
            width: w as u32,
            data,
        },
        channels,
        info.color_type,
    ))
}

/// Reads an object-index PNG (DAVIS annotations): palette indices, or grey levels of a
/// greyscale PNG. Colour PNGs are refused (their colours cannot be mapped to objects).
/// `expect`: the size it must have, checked before decoding.
pub fn read_index_png(path: &Path, expect: Option<(u32, u32)>) -> Result<Plane, PngError> {
    let (plane, channels, ct) = read_raw(path, expect)?;
    if channels != 1 {
        return Err(err(
            path,
            format!("expected an indexed or greyscale PNG of object indices, found {ct:?}"),
        ));
    }
    Ok(plane)
}

/// Reads a binary mask PNG of any colour type as 0/1 (foreground = any nonzero colour
/// channel; alpha is ignored except in grey-alpha / RGBA images with all-zero colour).
/// `expect`: the size it must have, checked before decoding.
pub fn read_mask_png(path: &Path, expect: Option<(u32, u32)>) -> Result<Plane, PngError> {
    let (plane, channels, ct) = read_raw(path, expect)?;
    let colour = match ct {
        ColorType::GrayscaleAlpha => 1,
        ColorType::Rgba => 3,
        _ => channels,
    };
    let data = plane
        .data
        .chunks_exact(channels)
        .map(|px| u8::from(px[..colour].iter().any(|&v| v != 0)))
        .collect();
    Ok(Plane { data, ..plane })
}

/// Writes an 8-bit indexed PNG with the DAVIS palette.
pub fn write_index_png(path: &Path, plane: &Plane) -> Result<(), PngError> {
    let f = File::create(path).map_err(|e| io(path, e))?;
    let mut enc = png::Encoder::new(BufWriter::new(f), plane.width, plane.height);
    enc.set_color(ColorType::Indexed);
    enc.set_depth(BitDepth::Eight);
    enc.set_palette(davis_palette());
    let mut w = enc.write_header().map_err(|e| err(path, e))?;
    w.write_image_data(&plane.data).map_err(|e| err(path, e))?;
    w.finish().map_err(|e| err(path, e))
}
