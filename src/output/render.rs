//! QA overlays of a result on its video: translucent masks in a colour stable per object id,
//! boxes, labels, and the frame number and time, one overlay per written frame; as PNG files
//! or an H.264 MP4 (in-process through the FFmpeg libraries when built with the `ffmpeg`
//! feature; otherwise, or when those libraries lack an H.264 encoder, raw RGB frames piped
//! into the `ffmpeg` program). Frames come from the video module's stream, so memory does not
//! grow with the video. The MP4 or PNG folder is written under a temporary name and renamed
//! into place when complete ([`crate::output::atomic`]): a failed render leaves no partial
//! output.

use crate::output::atomic::{PartialDir, PartialFile};
use crate::output::jsonl::{FrameRecord, JsonlReader, ObjectRecord, OutputError};
use crate::output::png_io::write_rgb_png;
use crate::video::{RgbFrame, Selection, StreamOptions, VideoSource};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Where overlays go.
#[derive(Debug, Clone)]
pub enum RenderTarget {
    /// An H.264 MP4 (odd frame sizes padded to even by repeating the last row / column).
    Mp4(PathBuf),
    /// `DIR/<frame:05d>.png`.
    PngDir(PathBuf),
}

/// Rendering options.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Mask opacity, 0..1.
    pub alpha: f32,
    /// Draw boxes.
    pub boxes: bool,
    /// Draw labels and the frame number / time.
    pub text: bool,
    /// MP4 quality (x264 CRF).
    pub crf: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            boxes: true,
            text: true,
            crf: 20,
        }
    }
}

/// The colour of an object: a saturated colour from a stable (FNV-1a) hash of its id.
pub fn object_colour(id: &str) -> [u8; 3] {
    let h = crate::hash::fnv1a(id.as_bytes());
    let hue = (h % 360) as f32;
    let (s, v) = (0.85f32, 0.95f32);
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r, g, b].map(|t| ((t + m) * 255.0).round() as u8)
}

/// A 3x5 pixel font: rows top to bottom, 3 bits each (bit 2 = left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 3, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '=' => [0, 7, 0, 7, 0],
        '#' => [5, 7, 5, 7, 5],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        ' ' => [0; 5],
        _ => [7, 1, 3, 0, 2], // '?'
    }
}

/// Drawing on a packed RGB frame.
struct Canvas<'a> {
    f: &'a mut RgbFrame,
}

impl Canvas<'_> {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.f.width && (y as usize) < self.f.height {
            let i = (y as usize * self.f.width + x as usize) * 3;
            self.f.data[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.f.height as i64) {
            for x in x0.max(0)..x1.min(self.f.width as i64) {
                self.put(x, y, c);
            }
        }
    }

    /// Pixel-edge rectangle outline of thickness `t`, inside `[x0, x1) x [y0, y1)`.
    fn rect(&mut self, [x0, y0, x1, y1]: [i64; 4], t: i64, c: [u8; 3]) {
        self.fill(x0, y0, x1, y0 + t, c);
        self.fill(x0, y1 - t, x1, y1, c);
        self.fill(x0, y0, x0 + t, y1, c);
        self.fill(x1 - t, y0, x1, y1, c);
    }

    /// Text at (x, y) with `scale`-pixel font pixels on a dark backing box.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        let n = s.chars().count() as i64;
        self.fill(x, y, x + (4 * n + 1) * scale, y + 7 * scale, [0, 0, 0]);
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        let px = x + (1 + 4 * k as i64 + col) * scale;
                        let py = y + (1 + row as i64) * scale;
                        self.fill(px, py, px + scale, py + scale, c);
                    }
                }
            }
        }
    }
}

/// Draws one frame's objects over `frame` (masks, then boxes and labels, then the frame
/// number and time). Errors name the frame and object.
pub fn draw_overlay(
    frame: &mut RgbFrame,
    rec: &FrameRecord,
    result: &Path,
    line: u64,
    opts: &RenderOptions,
) -> Result<(), OutputError> {
    let (w, h) = (frame.width, frame.height);
    let a = opts.alpha.clamp(0.0, 1.0);
    for o in &rec.objects {
        let bad = |reason: String| {
            OutputError::invalid(result, line, rec.frame_number, Some(&o.id), reason)
        };
        let rle = o.rle().map_err(|e| bad(e.to_string()))?;
        if (rle.height as usize, rle.width as usize) != (h, w) {
            return Err(bad(format!(
                "mask size {}x{} differs from the video frame {}x{}",
                rle.height, rle.width, h, w
            )));
        }
        let c = object_colour(&o.id).map(f32::from);
        let mut pos = 0usize;
        for (k, &n) in rle.counts.iter().enumerate() {
            let end = pos + n as usize;
            if k % 2 == 1 {
                for p in pos..end {
                    let i = ((p % h) * w + p / h) * 3;
                    for (px, &cc) in frame.data[i..i + 3].iter_mut().zip(&c) {
                        *px = (f32::from(*px) * (1.0 - a) + cc * a).round() as u8;
                    }
                }
            }
            pos = end;
        }
    }
    let scale = ((h.min(w) / 240) as i64).max(1);
    let mut cv = Canvas { f: frame };
    for o in &rec.objects {
        draw_labels(&mut cv, o, scale, opts);
    }
    if opts.text {
        let s = format!("#{} {:.3}S", rec.frame_number, rec.time_s);
        cv.text(0, 0, &s, scale, [255, 255, 255]);
    }
    Ok(())
}

fn draw_labels(cv: &mut Canvas, o: &ObjectRecord, scale: i64, opts: &RenderOptions) {
    let c = object_colour(&o.id);
    let b = o.bbox.map(i64::from);
    if opts.boxes {
        cv.rect(b, scale, c);
    }
    if opts.text {
        let name = if o.label.is_empty() || o.label == o.id {
            o.id.clone()
        } else {
            format!("{} {}", o.id, o.label)
        };
        let y = (b[1] - 7 * scale).max(0);
        cv.text(b[0], y, &name, scale, c);
    }
}

/// Pipes raw RGB frames into `ffmpeg` (libx264, yuv420p, even size padding). Dropped before
/// [`Mp4Sink::finish`] (a failed render), it stops the program, so nothing writes to the
/// temporary file after it is removed.
struct Mp4Sink {
    child: Child,
    stdin: Option<ChildStdin>,
    path: PathBuf,
}

impl Mp4Sink {
    fn start(path: &Path, w: usize, h: usize, fps: f64, crf: u32) -> Result<Self, OutputError> {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo"])
            .args(["-pix_fmt", "rgb24", "-s", &format!("{w}x{h}")])
            .args(["-r", &format!("{fps}"), "-i", "-"])
            .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
            .args([
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                &crf.to_string(),
            ])
            .args(["-movflags", "+faststart"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                OutputError::other(
                    path,
                    format!("cannot start ffmpeg (needed for MP4 output; use --png-dir): {e}"),
                )
            })?;
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, f: &RgbFrame) -> Result<(), OutputError> {
        let r = match self.stdin.as_mut() {
            Some(s) => s.write_all(&f.data),
            None => Ok(()),
        };
        if let Err(e) = r {
            let msg = self.finish_err();
            return Err(OutputError::other(
                &self.path,
                format!("ffmpeg stopped ({e}): {msg}"),
            ));
        }
        Ok(())
    }

    fn finish_err(&mut self) -> String {
        self.stdin.take();
        match self.child.wait_with_output_ref() {
            Ok(s) => s,
            Err(e) => e.to_string(),
        }
    }

    fn finish(mut self) -> Result<(), OutputError> {
        self.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| OutputError::io(&self.path, e))?;
        if !status.success() {
            let msg = self.finish_err();
            return Err(OutputError::other(
                &self.path,
                format!("ffmpeg failed ({status}): {msg}"),
            ));
        }
        Ok(())
    }
}

impl Drop for Mp4Sink {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> std::io::Result<String>;
}

impl WaitRef for Child {
    /// Waits and returns what the child wrote to stderr.
    fn wait_with_output_ref(&mut self) -> std::io::Result<String> {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            use std::io::Read;
            e.read_to_string(&mut s)?;
        }
        self.wait()?;
        Ok(s.trim().to_string())
    }
}

/// An MP4 being written: in-process, or through the `ffmpeg` program.
enum VideoSink {
    #[cfg(feature = "ffmpeg")]
    Lib(crate::output::mp4::Mp4Writer),
    Cli(Mp4Sink),
}

impl VideoSink {
    fn start(path: &Path, w: usize, h: usize, fps: f64, crf: u32) -> Result<Self, OutputError> {
        #[cfg(feature = "ffmpeg")]
        match crate::output::mp4::Mp4Writer::create(path, w, h, fps, crf) {
            Ok(m) => return Ok(Self::Lib(m)),
            Err(e) => tracing::warn!("{e}; trying the ffmpeg program"),
        }
        Ok(Self::Cli(Mp4Sink::start(path, w, h, fps, crf)?))
    }

    fn write(&mut self, f: &RgbFrame) -> Result<(), OutputError> {
        match self {
            #[cfg(feature = "ffmpeg")]
            Self::Lib(m) => m.write(f),
            Self::Cli(c) => c.write(f),
        }
    }

    fn finish(self) -> Result<(), OutputError> {
        match self {
            #[cfg(feature = "ffmpeg")]
            Self::Lib(m) => m.finish(),
            Self::Cli(c) => c.finish(),
        }
    }
}

/// A render's output under its temporary name.
enum Partial {
    File(PartialFile),
    Dir(PartialDir),
}

/// What a render wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSummary {
    pub frames: u64,
}

/// Renders every line of `result` over the matching frame of `video`.
pub fn render(
    result: &Path,
    video: &Path,
    target: &RenderTarget,
    opts: &RenderOptions,
) -> Result<RenderSummary, OutputError> {
    let vid_err = |e: crate::video::VideoError| OutputError::other(video, e.to_string());
    let src = VideoSource::open(video).map_err(vid_err)?;
    let total = src.frame_count();
    // First pass: the frame numbers to decode.
    let mut wanted = Vec::new();
    let mut reader = JsonlReader::open(result)?;
    while let Some(rec) = reader.next() {
        let rec = rec?;
        if rec.frame_number as usize >= total {
            return Err(OutputError::invalid(
                result,
                reader.line(),
                rec.frame_number,
                None,
                format!("the video {} has only {total} frames", video.display()),
            ));
        }
        wanted.push(rec.frame_number as usize);
    }
    if wanted.is_empty() {
        return Err(OutputError::other(result, "no result lines to render"));
    }
    let step = wanted
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or(1)
        .max(1);
    let fps = (src.info().fps_avg / step as f64).max(0.001);
    // The output under its temporary name (declared before the sink, so dropped after it).
    let partial = match target {
        RenderTarget::Mp4(p) => Partial::File(PartialFile::new(p)?),
        RenderTarget::PngDir(d) => Partial::Dir(PartialDir::new(d)?),
    };
    let mut sink = match &partial {
        Partial::File(f) => Some(VideoSink::start(
            f.path(),
            src.width(),
            src.height(),
            fps,
            opts.crf,
        )?),
        Partial::Dir(_) => None,
    };
    let stream = src
        .frames(Selection::List(wanted), StreamOptions::default())
        .map_err(vid_err)?;
    let mut reader = JsonlReader::open(result)?;
    let mut n = 0u64;
    for frame in stream {
        let mut frame = frame.map_err(vid_err)?;
        let Some(rec) = reader.next() else {
            break;
        };
        let rec = rec?;
        if frame.info.number as u64 != rec.frame_number {
            return Err(OutputError::invalid(
                result,
                reader.line(),
                rec.frame_number,
                None,
                format!("the video yielded frame {} instead", frame.info.number),
            ));
        }
        draw_overlay(&mut frame.rgb, &rec, result, reader.line(), opts)?;
        match (&mut sink, &partial) {
            (Some(s), _) => s.write(&frame.rgb)?,
            (None, Partial::Dir(d)) => {
                let p = d.path().join(format!("{:05}.png", rec.frame_number));
                write_rgb_png(
                    &p,
                    frame.rgb.width as u32,
                    frame.rgb.height as u32,
                    &frame.rgb.data,
                )?;
            }
            (None, Partial::File(_)) => {}
        }
        n += 1;
    }
    if let Some(s) = sink {
        s.finish()?;
    }
    match partial {
        Partial::File(f) => f.commit()?,
        Partial::Dir(d) => d.commit()?,
    }
    Ok(RenderSummary { frames: n })
}
