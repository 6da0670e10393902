//! The work behind the video subcommands: `probe` (JSON description), `extract` (one frame or
//! its model input as PNG) and the hidden `bench-decode` (decode throughput and per-frame
//! conversion costs).

use std::path::Path;
use std::time::Instant;

use super::error::VideoError;
use super::model_input::model_input_rgb;
use super::{Selection, StreamOptions, VideoSource};

/// `densam probe`: the video's description as pretty JSON. With `decode_count`, the whole video
/// is decoded too and `decoded_frame_count` is added (it should equal `frame_count`).
pub fn probe_json(path: &Path, decode_count: bool) -> Result<String, VideoError> {
    let video = VideoSource::open(path)?;
    let mut value = serde_json::to_value(video.info()).map_err(|e| VideoError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let serde_json::Value::Object(map) = &mut value {
        let info = video.info();
        let first = video.frame_info(0)?;
        let last = video.frame_info(info.frame_count - 1)?;
        map.insert("path".into(), path.display().to_string().into());
        map.insert("first_s".into(), first.seconds.into());
        map.insert("last_s".into(), last.seconds.into());
        if decode_count {
            let n = video.count_decoded_frames(0)?;
            map.insert("decoded_frame_count".into(), n.into());
        }
    }
    Ok(serde_json::to_string_pretty(&value).unwrap_or_default())
}

/// `densam extract`: writes frame `frame` as an RGB PNG at the source size, or with
/// `model_input = Some(S)` the S×S model input (uint8, Pillow bicubic, before normalisation).
pub fn extract(
    path: &Path,
    frame: usize,
    out: &Path,
    model_input: Option<usize>,
) -> Result<(), VideoError> {
    if model_input == Some(0) {
        return Err(VideoError::invalid(path, "the image size must be >= 1"));
    }
    let video = VideoSource::open(path)?;
    let f = video.read_frame(frame)?;
    let rgb = match model_input {
        Some(s) => model_input_rgb(&f.rgb, s),
        None => f.rgb,
    };
    rgb.save_png(out)
}

/// Figures of `densam bench-decode`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub path: String,
    pub threads: usize,
    pub width: usize,
    pub height: usize,
    pub frame_count: usize,
    /// The demux-only index pass (`VideoSource::open`).
    pub index_s: f64,
    pub index_fps: f64,
    /// Decoding every frame without RGB conversion.
    pub decode_s: f64,
    pub decode_fps: f64,
    /// The threaded stream over every frame, with RGB conversion.
    pub stream_rgb_fps: f64,
    /// Per frame: RGB conversion alone (swscale + rotation, ms), over `resize_frames` frames.
    pub rgb_ms_per_frame: f64,
    /// Per frame: Pillow-exact resize to the model input size (ms).
    pub resize_ms_per_frame: f64,
    /// Per frame: normalisation to CHW f32 (ms).
    pub normalize_ms_per_frame: f64,
    pub image_size: usize,
}

/// Measures decode throughput and per-frame conversion costs on `path` with `threads` decoder
/// threads (0 = automatic). `resize_frames` frames are resized to `image_size`; with 0 only the
/// index and decode-only passes run (the other figures are 0).
pub fn bench_decode(
    path: &Path,
    threads: usize,
    image_size: usize,
    resize_frames: usize,
) -> Result<BenchReport, VideoError> {
    let t = Instant::now();
    let video = VideoSource::open(path)?;
    let index_s = t.elapsed().as_secs_f64();
    let n = video.frame_count();

    let t = Instant::now();
    let decoded = video.count_decoded_frames(threads)?;
    let decode_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut kept = Vec::new();
    let options = StreamOptions {
        threads,
        ..Default::default()
    };
    let mut streamed = 0usize;
    // resize_frames == 0: decode-only measurement, no stream.
    let selection = if resize_frames == 0 {
        Selection::List(Vec::new())
    } else {
        Selection::All
    };
    for f in video.frames(selection, options)? {
        let f = f?;
        if kept.len() < resize_frames {
            kept.push(f.rgb);
        }
        streamed += 1;
    }
    let stream_s = t.elapsed().as_secs_f64();

    let (conv_s, conv_n) = video.time_conversion(threads, resize_frames)?;
    let mut resize_s = 0.0;
    let mut norm_s = 0.0;
    for rgb in &kept {
        let t = Instant::now();
        let small = model_input_rgb(rgb, image_size);
        resize_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::hint::black_box(crate::model::image_input::normalize_chw(&small.data));
        norm_s += t.elapsed().as_secs_f64();
    }
    let k = kept.len().max(1) as f64;
    Ok(BenchReport {
        path: path.display().to_string(),
        threads,
        width: video.width(),
        height: video.height(),
        frame_count: n,
        index_s,
        index_fps: n as f64 / index_s,
        decode_s,
        decode_fps: decoded as f64 / decode_s,
        stream_rgb_fps: streamed as f64 / stream_s,
        rgb_ms_per_frame: conv_s * 1000.0 / conv_n.max(1) as f64,
        resize_ms_per_frame: resize_s * 1000.0 / k,
        normalize_ms_per_frame: norm_s * 1000.0 / k,
        image_size,
    })
}
