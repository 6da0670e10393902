//! The first step of a run: the inputs resolved ([`super::input`]), the video opened, the prompts
//! validated against it (and, for `--window K`, cut to the window), each object's span under `--span prompts`, and the frames the container lists but
//! the file does not hold (a truncated file), which the run reports as failed frames. Nothing is
//! written here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::args::{AnnotateJobArgs, SpanMode};
use super::state::FailedFrame;
use super::window::{WindowRange, lcm, video_fps, window_frames, window_prompts};
use super::{JobError, input};
use crate::prompts::{self, VideoGeometry};
use crate::tracker::schedule::{FrameRange, prompt_span};
use crate::tracker::{FrameNo, PromptSet};
use crate::video::VideoSource;

/// A run's inputs, ready for tracking.
#[derive(Debug)]
pub struct Prepared {
    /// The video as given, and opened.
    pub video_path: PathBuf,
    pub video: VideoSource,
    pub video_id: String,
    pub geo: VideoGeometry,
    /// The frame rate windows are measured with.
    pub fps: f64,
    /// Frames per window (`--window-duration`).
    pub window_frames: u64,
    /// `--window K`: the window run alone.
    pub window: Option<WindowRange>,
    /// Objects are HD-EPIC associations.
    pub hd_epic: bool,
    /// The hash of the prompt input.
    pub prompts_hash: String,
    /// The prompts of the run (a window run's: those inside its frames).
    pub prompts: PromptSet,
    /// `--span prompts`: per object id, the original frames (inclusive) it is tracked on.
    pub spans: HashMap<String, (FrameNo, FrameNo)>,
    /// `--span-margin` in frames.
    pub margin_frames: u64,
    pub warnings: Vec<String>,
    /// Frames of the run that the container lists past the file's end.
    pub unreadable: Vec<FailedFrame>,
}

impl Prepared {
    /// The frames of the run: a window run starts at its warm-up and writes from its own first
    /// frame.
    pub fn range(&self) -> FrameRange {
        match &self.window {
            Some(w) => FrameRange {
                first: FrameNo(w.warm_from),
                end: FrameNo(w.end),
                write_from: FrameNo(w.own_from),
            },
            None => FrameRange::video(self.geo.num_frames),
        }
    }
}

fn open_video(p: &Path) -> Result<VideoSource, JobError> {
    VideoSource::open(p).map_err(|e| JobError::Input(format!("video {}: {e}", p.display())))
}

/// Resolves and checks the inputs of `args` (options already validated).
pub fn prepare(args: &AnnotateJobArgs) -> Result<Prepared, JobError> {
    let ta = &args.track;
    let (track_stride, frame_interval) = ta.strides();
    let mut opened: Option<VideoSource> = None;
    let inp = input::resolve(&args.input, &mut |p| {
        let v = open_video(p)?;
        let size = (v.width() as u32, v.height() as u32);
        opened = Some(v);
        Ok(size)
    })?;
    let video = match opened {
        Some(v) => v,
        None => open_video(&inp.video)?,
    };
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let fps = video_fps(&video);
    let (window_frames, overlap_frames) =
        window_frames(args.job.window_duration, args.job.window_overlap, fps);
    let window = args
        .job
        .window
        .map(|k| {
            let grid = lcm(track_stride, frame_interval);
            WindowRange::new(k, window_frames, overlap_frames, geo.num_frames, grid)
        })
        .transpose()?;
    let mut warnings = inp.warnings;
    if ta.strict && !warnings.is_empty() {
        return Err(JobError::Input(format!(
            "prompts (strict): {}",
            warnings.join("; ")
        )));
    }
    let (set, more) = prompts::validate(inp.objects, geo, ta.strict)
        .map_err(|e| JobError::Input(e.to_string()))?;
    warnings.extend(more);
    // `--span prompts`: each object's span in original frames, from all its prompts (a window
    // run keeps only the prompts near its window, but the span stays that of the whole video).
    let margin_frames = (ta.span_margin * fps).round() as u64;
    let spans = match ta.span {
        SpanMode::Video => HashMap::new(),
        SpanMode::Prompts => set
            .objects
            .iter()
            .filter_map(|o| {
                let first = *o.frames.keys().next()?;
                let last = *o.frames.keys().next_back()?;
                let span = prompt_span(first, last, margin_frames, geo.num_frames);
                Some((o.id.clone(), span))
            })
            .collect(),
    };
    let prompts = match &window {
        Some(w) => window_prompts(&set, w, &mut warnings),
        None => set,
    };
    let unreadable = unreadable_frames(
        &video,
        (track_stride, frame_interval),
        window.as_ref(),
        window_frames,
    );
    Ok(Prepared {
        video_path: inp.video,
        video,
        video_id: inp.video_id,
        geo,
        fps,
        window_frames,
        window,
        hd_epic: inp.hd_epic,
        prompts_hash: inp.prompts_hash,
        prompts,
        spans,
        margin_frames,
        warnings,
        unreadable,
    })
}

/// The frames the run would process (every `track_stride`-th and every `frame_interval`-th;
/// a window run's own frames only) that the container lists past the end of a truncated file:
/// their lines are missing, so they are failed frames.
fn unreadable_frames(
    video: &VideoSource,
    (track_stride, frame_interval): (u64, u64),
    window: Option<&WindowRange>,
    window_frames: u64,
) -> Vec<FailedFrame> {
    let Some((from, listed, error)) = video.info().unreadable_tail() else {
        return Vec::new();
    };
    let (lo, hi) = match window {
        Some(w) => (
            w.own_from.max(from),
            (w.own_from + window_frames).min(listed),
        ),
        None => (from, listed),
    };
    let frames: Vec<u64> = (lo..hi)
        .filter(|n| n % track_stride.max(1) == 0 || n % frame_interval.max(1) == 0)
        .collect();
    if !frames.is_empty() {
        tracing::warn!(
            "{}: {} frame(s) from frame {from} on are listed by the container but cannot be \
             read ({error}): reported as failed frames",
            video.path().display(),
            frames.len()
        );
    }
    frames
        .into_iter()
        .map(|n| FailedFrame {
            frame: n,
            error: format!("{}: frame {n} is missing: {error}", video.path().display()),
        })
        .collect()
}
