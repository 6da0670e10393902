//! Frame directories (JPEG/PNG files named by number, as SAM 2's tools, DAVIS and SA-V use:
//! frame N is the N-th file in the order of the number in its name) and single images.
//!
//! These carry no timing: frame N has pts N and lies at `N / fps` seconds, with `fps` from
//! [`super::OpenOptions::dir_fps`] (30 unless set). JPEG files (by their content, not their
//! name) are decoded with libjpeg-turbo, bit-identical to Pillow (see [`super::jpeg`]); PNG
//! files with the `image` crate, also exact. Neither applies an EXIF orientation, as SAM 2's
//! loader does not.

use std::path::{Path, PathBuf};

use super::error::VideoError;
use super::frame::{Frame, FrameInfo, RgbFrame};
use super::jpeg;
use super::{ErrorPolicy, Sink, VideoInfo};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Whether a path names a JPEG/PNG image by its extension.
pub(crate) fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The frames of a directory or a single image.
#[derive(Debug)]
pub(crate) struct DirIndex {
    pub path: PathBuf,
    pub files: Vec<PathBuf>,
    /// Frame N has pts N.
    pub pts: Vec<i64>,
    pub fps: f64,
    pub info: VideoInfo,
}

fn image_err(path: &Path, e: impl std::fmt::Display) -> VideoError {
    VideoError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, VideoError> {
    std::fs::read(path).map_err(|e| image_err(path, e))
}

/// The size an image file declares in its header (nothing decoded), checked against
/// [`crate::mask::png::MAX_PIXELS`].
fn dimensions(path: &Path) -> Result<(usize, usize), VideoError> {
    let bytes = read_bytes(path)?;
    declared(path, &bytes, None)
}

/// The size in the header of an image file's `bytes`, checked against `expect` and the pixel
/// limit ([`crate::mask::png::check_declared`]) before anything is decoded.
fn declared(
    path: &Path,
    bytes: &[u8],
    expect: Option<(usize, usize)>,
) -> Result<(usize, usize), VideoError> {
    let (w, h) = if jpeg::is_jpeg(bytes) {
        jpeg::dimensions(bytes).map_err(|e| image_err(path, e))?
    } else {
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| image_err(path, e))?
            .into_dimensions()
            .map_err(|e| image_err(path, e))?;
        (w as usize, h as usize)
    };
    let as_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    crate::mask::png::check_declared(
        as_u32(w),
        as_u32(h),
        expect.map(|(ew, eh)| (as_u32(ew), as_u32(eh))),
    )
    .map_err(|m| image_err(path, m))?;
    Ok((w, h))
}

/// Reads one image file as packed RGB24: the pixels of Pillow's `Image.open(path).convert("RGB")`
/// (what SAM 2's loader reads) for JPEG files and PNGs of every colour type and depth: alpha
/// dropped, grey and palettes expanded, 16-bit samples reduced as Pillow reduces them (see
/// [`pillow_rgb`]). `expect`: the size (width, height) it must have; the size its header
/// declares is checked before it is decoded.
pub fn read_image(path: &Path, expect: Option<(usize, usize)>) -> Result<RgbFrame, VideoError> {
    let bytes = read_bytes(path)?;
    declared(path, &bytes, expect)?;
    if jpeg::is_jpeg(&bytes) {
        return jpeg::decode_rgb(&bytes).map_err(|e| image_err(path, e));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_err(path, e))?
        .decode()
        .map_err(|e| image_err(path, e))?;
    Ok(pillow_rgb(img))
}

/// A decoded image as RGB24 the way Pillow converts it: 8-bit images as the `image` crate does
/// (identical); 16-bit grey (Pillow mode `I;16`) clipped to 255; other 16-bit images (Pillow
/// modes `RGB`/`RGBA`, read with the high byte of each sample) shifted right by 8 — where the
/// `image` crate would round `v / 257` instead.
fn pillow_rgb(img: image::DynamicImage) -> RgbFrame {
    use image::DynamicImage as D;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let expand = |samples: &[u16], channels: usize, f: fn(u16) -> u8| -> Vec<u8> {
        let mut out = Vec::with_capacity(width * height * 3);
        for px in samples.chunks_exact(channels) {
            if channels < 3 {
                out.extend_from_slice(&[f(px[0]); 3]);
            } else {
                out.extend(px[..3].iter().map(|&v| f(v)));
            }
        }
        out
    };
    let msb = |v: u16| (v >> 8) as u8;
    let data = match img {
        D::ImageLuma16(b) => expand(b.as_raw(), 1, |v| v.min(255) as u8),
        D::ImageLumaA16(b) => expand(b.as_raw(), 2, msb),
        D::ImageRgb16(b) => expand(b.as_raw(), 3, msb),
        D::ImageRgba16(b) => expand(b.as_raw(), 4, msb),
        other => other.into_rgb8().into_raw(),
    };
    RgbFrame {
        width,
        height,
        data,
    }
}

fn info_for(source: &str, files: &[PathBuf], fps: f64) -> Result<VideoInfo, VideoError> {
    let (width, height) = dimensions(&files[0])?;
    let n = files.len();
    let codec = files[0]
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            if e.eq_ignore_ascii_case("png") {
                "png"
            } else {
                "mjpeg"
            }
        })
        .unwrap_or("image")
        .to_string();
    Ok(VideoInfo {
        source: source.into(),
        width,
        height,
        frame_count: n,
        container_frame_count: None,
        fps_avg: fps,
        fps_nominal: fps,
        duration_s: n as f64 / fps,
        codec,
        pix_fmt: Some("rgb24".into()),
        rotation: 0,
        vfr: false,
        time_base: (1, 1),
        first_pts: 0,
        last_pts: n as i64 - 1,
        demux_error: None,
    })
}

/// Indexes a directory of numbered frames.
pub(crate) fn index_dir(path: &Path, fps: f64) -> Result<DirIndex, VideoError> {
    let dir_err = |reason: String| VideoError::FrameDir {
        path: path.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(path).map_err(|e| dir_err(e.to_string()))?;
    let mut numbered: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| dir_err(e.to_string()))?.path();
        if !p.is_file() || !is_image_path(&p) {
            continue;
        }
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Ok(num) = stem.parse::<u64>() else {
            return Err(dir_err(format!(
                "frame file {:?} is not named by a number (frames must be named like 00000.jpg)",
                p.file_name().unwrap_or_default()
            )));
        };
        numbered.push((num, p));
    }
    if numbered.is_empty() {
        return Err(VideoError::NoFrames {
            path: path.to_path_buf(),
        });
    }
    numbered.sort();
    if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(dir_err(format!(
            "two frame files have the number {}: {:?} and {:?}",
            w[0].0,
            w[0].1.file_name().unwrap_or_default(),
            w[1].1.file_name().unwrap_or_default()
        )));
    }
    let files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    let info = info_for("frames_dir", &files, fps)?;
    let pts = (0..files.len() as i64).collect();
    Ok(DirIndex {
        path: path.to_path_buf(),
        files,
        pts,
        fps,
        info,
    })
}

/// Indexes a single image as a one-frame video.
pub(crate) fn index_image(path: &Path, fps: f64) -> Result<DirIndex, VideoError> {
    let files = vec![path.to_path_buf()];
    let info = info_for("image", &files, fps)?;
    Ok(DirIndex {
        path: path.to_path_buf(),
        files,
        pts: vec![0],
        fps,
        info,
    })
}

impl DirIndex {
    pub(crate) fn frame_info(&self, n: usize) -> FrameInfo {
        FrameInfo {
            number: n,
            pts: n as i64,
            seconds: n as f64 / self.fps,
        }
    }

    fn read_frame(&self, n: usize) -> Result<Frame, VideoError> {
        let file = &self.files[n];
        let expect = (self.info.width, self.info.height);
        let rgb = read_image(file, Some(expect)).map_err(|e| VideoError::CorruptFrame {
            path: self.path.clone(),
            frame: n,
            reason: e.to_string(),
        })?;
        if (rgb.width, rgb.height) != (self.info.width, self.info.height) {
            return Err(VideoError::CorruptFrame {
                path: self.path.clone(),
                frame: n,
                reason: format!(
                    "{:?} is {}x{}, frame 0 is {}x{}",
                    file.file_name().unwrap_or_default(),
                    rgb.width,
                    rgb.height,
                    self.info.width,
                    self.info.height
                ),
            });
        }
        Ok(Frame {
            info: self.frame_info(n),
            rgb,
            model_rgb: None,
        })
    }

    /// Reads the frames `wanted`, handing each to `sink` (see `FileReader::read`).
    pub(crate) fn read(&self, wanted: &[usize], policy: ErrorPolicy, sink: Sink<'_>) {
        for &n in wanted {
            let item = self.read_frame(n);
            let is_err = item.is_err();
            if !sink(item) || (is_err && policy == ErrorPolicy::Stop) {
                return;
            }
        }
    }
}
