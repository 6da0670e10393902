//! JPEG decoding that gives exactly the pixels of SAM 2's frame loader,
//! `PIL.Image.open(path).convert("RGB")` (sam2/utils/misc.py).
//!
//! Pillow decodes JPEGs with the libjpeg-turbo it bundles, at libjpeg's defaults (accurate
//! integer IDCT, "fancy" triangle-filter chroma upsampling, block smoothing). densam decodes with
//! libjpeg-turbo too, through its TurboJPEG API at the same defaults; `turbojpeg-sys` builds it
//! from its bundled source and links it statically, so the binary needs no libjpeg at run time.
//! libjpeg-turbo's SIMD code paths give the same output as its C paths for these settings.
//!
//! Like Pillow:
//! - grayscale JPEGs come out with the grey value in all three channels;
//! - 4-channel JPEGs (CMYK, or YCCK that libjpeg turns into CMYK) are read as Adobe-inverted
//!   CMYK and converted to RGB with Pillow's `cmyk2rgb`;
//! - the EXIF orientation is not applied (the official loader does not call `exif_transpose`);
//! - libjpeg's warnings about corrupt data are ignored, but a file that ends before its image
//!   data does ("Premature end of JPEG file") is an error, as Pillow's "image file is truncated";
//! - only 8-bit samples (Pillow: "cannot handle 12-bit layers");
//! - at most `2 * Image.MAX_IMAGE_PIXELS` pixels (Pillow's `DecompressionBombError`).

use std::ffi::CStr;

use turbojpeg_sys as tj;

use super::frame::RgbFrame;

/// Pillow refuses images over `2 * Image.MAX_IMAGE_PIXELS` pixels (`DecompressionBombError`),
/// and so does this, before allocating the output.
const PILLOW_MAX_PIXELS: u64 = 2 * 89_478_485;

/// Whether `bytes` starts with a JPEG SOI marker.
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// The header facts that decoding needs.
struct Header {
    width: usize,
    height: usize,
    /// CMYK or YCCK: decoded as CMYK, then converted the way Pillow does.
    four_channel: bool,
}

/// An owned TurboJPEG decompressor instance.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, String> {
        // SAFETY: tj3Init has no preconditions; it returns null on failure.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as libc::c_int) };
        if h.is_null() {
            return Err("cannot create a libjpeg-turbo decompressor".into());
        }
        Ok(Decompressor(h))
    }

    /// The instance's last error message.
    fn message(&self) -> String {
        // SAFETY: the handle is live; tj3GetErrorStr returns a NUL-terminated string that stays
        // valid until the next call on this handle, and it is copied at once.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Turns a TurboJPEG return value into a result. Warnings (corrupt data that libjpeg went
    /// past) are ignored, as Pillow ignores them, unless the data ran out before the end of the
    /// image: Pillow then fails ("image file is truncated"), and so does this.
    fn check(&self, rc: libc::c_int, bytes: &[u8]) -> Result<(), String> {
        if rc == 0 {
            return Ok(());
        }
        let msg = self.message();
        // SAFETY: the handle is live.
        let code = unsafe { tj::tj3GetErrorCode(self.0) };
        if code != tj::TJERR_TJERR_WARNING as libc::c_int {
            return Err(msg);
        }
        if msg.contains("Premature end") || !ends_after_last_scan(bytes) {
            return Err("the file is truncated (premature end of JPEG data)".into());
        }
        Ok(())
    }

    fn get(&self, param: tj::TJPARAM) -> libc::c_int {
        // SAFETY: the handle is live; tj3Get only reads the instance.
        unsafe { tj::tj3Get(self.0, param as libc::c_int) }
    }

    fn header(&mut self, bytes: &[u8]) -> Result<Header, String> {
        // SAFETY: the handle is live and `bytes` is a valid buffer of `bytes.len()` bytes that
        // outlives the call.
        let rc =
            unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
        self.check(rc, bytes)?;
        let precision = self.get(tj::TJPARAM_TJPARAM_PRECISION);
        if precision != 8 {
            return Err(format!(
                "{precision}-bit JPEGs are not supported (8-bit only)"
            ));
        }
        let width = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        if width <= 0 || height <= 0 {
            return Err(format!("bad JPEG size {width}x{height}"));
        }
        let pixels = width as u64 * height as u64;
        if pixels > PILLOW_MAX_PIXELS {
            return Err(format!(
                "{width}x{height} is over Pillow's limit of {PILLOW_MAX_PIXELS} pixels \
                 (a decompression bomb, or a corrupt header)"
            ));
        }
        let cs = self.get(tj::TJPARAM_TJPARAM_COLORSPACE);
        let four_channel =
            cs == tj::TJCS_TJCS_CMYK as libc::c_int || cs == tj::TJCS_TJCS_YCCK as libc::c_int;
        Ok(Header {
            width: width as usize,
            height: height as usize,
            four_channel,
        })
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// The size (width, height) of a JPEG from its header.
pub(crate) fn dimensions(bytes: &[u8]) -> Result<(usize, usize), String> {
    let h = Decompressor::new()?.header(bytes)?;
    Ok((h.width, h.height))
}

/// Decodes a JPEG to packed RGB24, bit-identical to Pillow's `Image.open(p).convert("RGB")`.
pub(crate) fn decode_rgb(bytes: &[u8]) -> Result<RgbFrame, String> {
    let mut d = Decompressor::new()?;
    let h = d.header(bytes)?;
    let channels = if h.four_channel { 4 } else { 3 };
    let pitch = h
        .width
        .checked_mul(channels)
        .filter(|&p| p <= libc::c_int::MAX as usize)
        .ok_or_else(|| format!("JPEG too large ({}x{})", h.width, h.height))?;
    let len = pitch
        .checked_mul(h.height)
        .ok_or_else(|| format!("JPEG too large ({}x{})", h.width, h.height))?;
    let mut out = vec![0u8; len];
    let format = if h.four_channel {
        tj::TJPF_TJPF_CMYK
    } else {
        tj::TJPF_TJPF_RGB
    };
    // SAFETY: the handle is live and holds this JPEG's header; `out` has room for `height` rows
    // of `pitch` bytes in `format` (channels bytes a pixel) at the JPEG's full size (no scaling
    // factor is set), which is what tj3Decompress8 writes.
    let rc = unsafe {
        tj::tj3Decompress8(
            d.0,
            bytes.as_ptr(),
            bytes.len() as tj::size_t,
            out.as_mut_ptr(),
            pitch as libc::c_int,
            format,
        )
    };
    d.check(rc, bytes)?;
    let data = if h.four_channel {
        cmyk_to_rgb_like_pillow(&out)
    } else {
        out
    };
    Ok(RgbFrame {
        width: h.width,
        height: h.height,
        data,
    })
}

/// libjpeg's CMYK samples (Adobe convention: inverted) to RGB as Pillow does: the samples are
/// inverted when read (raw mode "CMYK;I"), then `convert("RGB")` applies
/// `255 - k - c * (255 - k) / 255` per channel with Pillow's rounded integer division.
fn cmyk_to_rgb_like_pillow(cmyk: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let nk = px[3] as i32; // 255 - (255 - k_stored)
        for &c in &px[..3] {
            let c = 255 - c as i32;
            rgb.push((nk - muldiv255(c, nk)).clamp(0, 255) as u8);
        }
    }
    rgb
}

/// Whether an EOI marker follows the last SOS marker, i.e. libjpeg does not run out of data
/// (libjpeg only reports the first warning, so a truncation after another warning is found
/// here). In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so these
/// byte pairs are markers (an EXIF thumbnail's markers all lie before the image's first scan).
fn ends_after_last_scan(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w == [0xFF, m]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Pillow's `MULDIV255(a, b)`: a * b / 255, rounded.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}
