//! Decoded frames: `RgbFrame` (packed 8-bit RGB at the source size), the per-frame metadata
//! (`FrameInfo`: frame number, pts, seconds), display-matrix rotation, and PNG output.

use std::path::Path;

use super::error::VideoError;

/// A packed RGB24 image: `data[(y * width + x) * 3 + c]`, c = 0 (R), 1 (G), 2 (B).
#[derive(Clone, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbFrame({}x{})", self.width, self.height)
    }
}

impl RgbFrame {
    /// Wraps a packed RGB24 buffer; `data.len()` must be `width * height * 3`.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(RgbFrame {
            width,
            height,
            data,
        })
    }

    /// Writes the frame as an 8-bit RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), VideoError> {
        let write_err = |e: &dyn std::fmt::Display| VideoError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let file = std::fs::File::create(path).map_err(|e| write_err(&e))?;
        let encoder = image::codecs::png::PngEncoder::new(std::io::BufWriter::new(file));
        image::ImageEncoder::write_image(
            encoder,
            &self.data,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| write_err(&e))
    }

    /// Applies a display transform (the one the ffmpeg command line inserts for rotation
    /// metadata), returning the displayed image.
    pub fn transformed(self, t: Transform) -> RgbFrame {
        if t == Transform::Identity {
            return self;
        }
        let (w, h) = (self.width, self.height);
        let (ow, oh) = if t.swaps_axes() { (h, w) } else { (w, h) };
        let mut out = vec![0u8; w * h * 3];
        for oy in 0..oh {
            for ox in 0..ow {
                // Source pixel of output (ox, oy), as FFmpeg's transpose/hflip/vflip filters map it.
                let (sx, sy) = match t {
                    Transform::Identity => (ox, oy),
                    Transform::Clock => (oy, h - 1 - ox),
                    Transform::CClock => (w - 1 - oy, ox),
                    Transform::Rotate180 => (w - 1 - ox, h - 1 - oy),
                };
                let s = (sy * w + sx) * 3;
                let d = (oy * ow + ox) * 3;
                out[d..d + 3].copy_from_slice(&self.data[s..s + 3]);
            }
        }
        RgbFrame {
            width: ow,
            height: oh,
            data: out,
        }
    }
}

/// The display transform derived from a stream's display matrix, as the ffmpeg command line
/// applies it by default (`-autorotate`): 90° steps only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transform {
    #[default]
    Identity,
    /// `transpose=clock`: 90° clockwise.
    Clock,
    /// `transpose=cclock`: 90° counter-clockwise.
    CClock,
    /// `hflip,vflip`.
    Rotate180,
}

impl Transform {
    /// Whether width and height trade places.
    pub fn swaps_axes(self) -> bool {
        matches!(self, Transform::Clock | Transform::CClock)
    }

    /// The clockwise rotation in degrees that this transform displays .
    pub fn degrees(self) -> i32 {
        match self {
            Transform::Clock => 90,
            Transform::Rotate180 => 180,
            Transform::CClock => 270,
            Transform::Identity => 0,
        }
    }

    /// The transform for a display matrix (9 i32, 16.16 fixed point, as in the container),
    /// following the ffmpeg CLI (5.1) `get_rotation` and its filter choice.
    pub fn from_display_matrix(m: &[i32; 9]) -> Transform {
        // av_display_rotation_get (counter-clockwise degrees), then the CLI's get_rotation.
        let conv = |x: i32| x as f64 / 65536.0;
        let scale0 = conv(m[0]).hypot(conv(m[3]));
        let scale1 = conv(m[1]).hypot(conv(m[4]));
        if scale0 == 0.0 || scale1 == 0.0 {
            return Transform::Identity;
        }
        let rotation = -(conv(m[1]) / scale1)
            .atan2(conv(m[0]) / scale0)
            .to_degrees();
        let mut theta = -rotation.round();
        theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        // FFmpeg 5.1's CLI: transpose=clock, hflip+vflip, transpose=cclock; other angles
        // (a `rotate` filter there) and flips are not applied.
        if (theta - 90.0).abs() < 1.0 {
            Transform::Clock
        } else if (theta - 180.0).abs() < 1.0 {
            Transform::Rotate180
        } else if (theta - 270.0).abs() < 1.0 {
            Transform::CClock
        } else {
            Transform::Identity
        }
    }
}

/// Where a frame sits in the video.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameInfo {
    /// Position in presentation order, from 0 (as HD-EPIC counts).
    pub number: usize,
    /// Presentation timestamp in the stream's time base (frame directories: the frame number).
    pub pts: i64,
    /// Seconds since the first frame: `(pts - pts_of_frame_0) * time_base`.
    pub seconds: f64,
}

/// One decoded frame of a stream.
#[derive(Clone, Debug)]
pub struct Frame {
    pub info: FrameInfo,
    /// The frame at the source size (after rotation).
    pub rgb: RgbFrame,
    /// The S×S uint8 model image before normalisation (see `model_input_rgb`), when the stream
    /// was asked for it (`StreamOptions::model_rgb`): computed off the consumer's thread.
    pub model_rgb: Option<RgbFrame>,
}
