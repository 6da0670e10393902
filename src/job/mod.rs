//! `densam annotate` as a production job: input resolution (generic prompts or HD-EPIC), the
//! output folder (`dense_annotations_<video id>.jsonl`, `run.json`, the checkpoint while
//! running), checkpoints and resume (byte-identical to an uninterrupted run), stop signals,
//! windows as checkpoint/timing units, progress and memory reporting, and documented exit codes.
//!
//! Checkpoints can be taken after any tracked frame of any pass (the tracker's [`Stage`]): inside
//! the first stretch (forward head `s..=s+15`, reverse pass) they hold the banks and the length of
//! the first stretch's spool, which lives in the output folder (`.densam-spool`) for that; after
//! it, the banks and the output offset. Only the prompt pre-pass (re-run by every resume) has no
//! resume point: a stop there leaves the previous checkpoint as it was.
//!
//! Stop signals are handled from the start (input, checkpoint and model loading included).
//! Frames that cannot be decoded are skipped (their lines are missing), the objects re-seeded
//! from their prompts after them, recorded in `run.json` and reported by a distinct exit code at
//! the end; `--strict` stops at the first one.
//!
//! Exit codes: see [`EXIT_USAGE`] and the other `EXIT_*` constants.

pub mod args;
pub mod input;
pub mod io;
pub mod merge;
pub mod report;
pub mod signals;
pub mod state;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::model::device::select_device;
use crate::model::sam2::Sam2Model;
use crate::prompts::{self, VideoGeometry};
use crate::tracker::schedule::{FrameRange, Schedule, prompt_span};
use crate::tracker::{
    Flow, FrameNo, Observer, ProcIdx, Progress, RunEnd, Stage, TrackError, Tracker, TrackerConfig,
};
use crate::video::VideoSource;

pub use args::AnnotateJobArgs;
use args::SpanMode;
use report::peak_rss_bytes;
use state::{Meta, WindowRecord};

/// Success, or a finished run re-run (nothing changed).
pub const EXIT_OK: i32 = 0;
/// A failure while running (tracking, internal error).
pub const EXIT_FAILURE: i32 = 1;
/// Bad options (clap's own usage errors also exit 2).
pub const EXIT_USAGE: i32 = 2;
/// Bad input: video missing or undecodable, prompts malformed or unusable, unknown video id,
/// a prompt warning under `--strict`.
pub const EXIT_INPUT: i32 = 3;
/// A checkpoint or finished result made with other parameters (without `--restart`), or an
/// invalid checkpoint.
pub const EXIT_CHECKPOINT: i32 = 4;
/// The output folder is not writable, or writing failed (disk full).
pub const EXIT_OUTPUT: i32 = 5;
/// The model checkpoint is missing or invalid, or the device is unusable.
pub const EXIT_MODEL: i32 = 6;
/// The run finished, but some frames could not be decoded: their lines are missing and the
/// objects were re-seeded from their prompts after them (listed in `run.json` under
/// `failures`). Without `--strict` only.
pub const EXIT_FRAMES_FAILED: i32 = 7;
/// Stopped by SIGTERM, SIGINT or SIGUSR1 after checkpointing (EX_TEMPFAIL): re-run the same
/// command to continue.
pub const EXIT_INTERRUPTED: i32 = 75;

/// Errors of a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    UnknownVideo(String),
    #[error("{0}")]
    Checkpoint(String),
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Failed(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl JobError {
    /// The documented exit code of this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::Usage(_) => EXIT_USAGE,
            JobError::Input(_) | JobError::UnknownVideo(_) => EXIT_INPUT,
            JobError::Checkpoint(_) => EXIT_CHECKPOINT,
            JobError::Output(_) => EXIT_OUTPUT,
            JobError::Model(_) => EXIT_MODEL,
            JobError::Failed(_) | JobError::Internal(_) => EXIT_FAILURE,
        }
    }
}

/// How a job ended (errors aside).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished; `failed_frames`: processed frames that could not be decoded.
    Complete {
        output: PathBuf,
        written_frames: usize,
        failed_frames: usize,
    },
    /// The output was already complete with the same parameters: nothing was changed.
    AlreadyComplete {
        output: PathBuf,
        failed_frames: usize,
    },
    /// Stopped by a signal; `checkpointed`: a checkpoint to resume from exists.
    Interrupted { checkpointed: bool },
}

/// Runs the job and returns its exit code (errors are printed on stderr): what `main` calls.
pub fn main(args: &AnnotateJobArgs) -> i32 {
    match run(args) {
        Ok(Outcome::Complete { failed_frames, .. })
        | Ok(Outcome::AlreadyComplete { failed_frames, .. }) => {
            if failed_frames > 0 {
                EXIT_FRAMES_FAILED
            } else {
                EXIT_OK
            }
        }
        Ok(Outcome::Interrupted { .. }) => EXIT_INTERRUPTED,
        Err(e) => {
            eprintln!("densam annotate: error: {e}");
            e.exit_code()
        }
    }
}

fn init_logging(a: &args::JobArgs) {
    let level = if a.verbose {
        "debug"
    } else if a.quiet {
        "warn"
    } else {
        "info"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Paths of one output folder.
struct OutPaths {
    dir: PathBuf,
    output: PathBuf,
    partial: PathBuf,
    manifest: PathBuf,
}

impl OutPaths {
    fn new(dir: &Path, video_id: &str) -> Self {
        let name = format!("dense_annotations_{video_id}.jsonl");
        OutPaths {
            dir: dir.to_path_buf(),
            output: dir.join(&name),
            partial: dir.join(format!(".{name}.partial")),
            manifest: dir.join("run.json"),
        }
    }
}

fn out_err(p: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
    move |e| output_error(format!("{}: {e}", p.display()))
}

/// An output error, with a hint when the disk (or quota, or file size limit) is full.
pub(crate) fn output_error(msg: String) -> JobError {
    let full = ["os error 28)", "os error 122)", "os error 27)"]
        .iter()
        .any(|c| msg.contains(c));
    if full {
        JobError::Output(format!(
            "{msg}: the output disk is full; what was written up to the last checkpoint is \
             intact: free space and re-run the same command to resume"
        ))
    } else {
        JobError::Output(msg)
    }
}

/// A test hook (documented in tests/job_annotate.rs): `DENSAM_TEST_SIGTERM_AT=<point>` raises
/// SIGTERM at that point of the start-up.
fn test_signal_at(point: &str) {
    if std::env::var("DENSAM_TEST_SIGTERM_AT").is_ok_and(|v| v == point) {
        // SAFETY: raising a signal on this process.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}

/// A stop signal that came while loading: nothing was changed.
fn stopped_early(during: &str) -> Option<Outcome> {
    if !signals::stop_requested() {
        return None;
    }
    tracing::warn!(
        "stopped by {} while {during}; nothing changed; re-run the same command to continue \
         (exit {EXIT_INTERRUPTED})",
        signals::signal_name(signals::signal_number())
    );
    Some(Outcome::Interrupted {
        checkpointed: false,
    })
}

/// Creates the output folder and checks that it is writable.
fn prepare_out(dir: &Path) -> Result<(), JobError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        JobError::Output(format!(
            "{}: cannot create the output folder: {e}",
            dir.display()
        ))
    })?;
    let probe = dir.join(format!(".densam-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        JobError::Output(format!(
            "{}: output folder not writable: {e}",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> Result<(), JobError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(out_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        JobError::Output(format!("{}: {e}", path.display()))
    })
}

/// The frame rate windows are measured with: the average fps, else 30.
pub fn video_fps(video: &VideoSource) -> f64 {
    let i = video.info();
    if i.fps_avg.is_finite() && i.fps_avg > 0.0 {
        i.fps_avg
    } else {
        30.0
    }
}

/// (frames per window, overlap frames) of `--window-duration` / `--window-overlap` at `fps`.
pub fn window_frames(window_duration: f64, window_overlap: f64, fps: f64) -> (u64, u64) {
    (
        ((window_duration * fps).round() as u64).max(1),
        (window_overlap * fps).round() as u64,
    )
}

/// The number of windows of a video of `num_frames` frames.
pub fn window_count(num_frames: u64, window_frames: u64) -> u64 {
    num_frames.div_ceil(window_frames.max(1))
}

/// The window of an original frame.
fn window_of(frame: u64, window_frames: u64) -> u64 {
    frame / window_frames.max(1)
}

/// Runs the job.
pub fn run(args: &AnnotateJobArgs) -> Result<Outcome, JobError> {
    // First of all: a stop while the inputs, the checkpoint or the model load still exits 75.
    signals::install();
    init_logging(&args.job);
    test_signal_at("start");
    let t0 = Instant::now();
    let ta = &args.track;
    let (track_stride, frame_interval) = ta.strides();
    if track_stride == 0 || frame_interval == 0 {
        return Err(JobError::Usage(
            "--track-stride, --frame-interval and --frame_interval must be >= 1".into(),
        ));
    }
    if !(ta.video_scale_factor.is_finite() && ta.video_scale_factor >= 1.0) {
        return Err(JobError::Usage("--video-scale-factor must be >= 1".into()));
    }
    if !(ta.span_margin.is_finite() && ta.span_margin >= 0.0) {
        return Err(JobError::Usage("--span-margin must be >= 0".into()));
    }
    if !(args.job.window_duration > 0.0 && args.job.window_overlap >= 0.0) {
        return Err(JobError::Usage(
            "--window-duration must be > 0 and --window-overlap >= 0".into(),
        ));
    }
    let open_video = |p: &Path| {
        VideoSource::open(p).map_err(|e| JobError::Input(format!("video {}: {e}", p.display())))
    };
    let mut opened: Option<VideoSource> = None;
    let inp = input::resolve(&args.input, &mut |p| {
        let v = open_video(p)?;
        let size = (v.width() as u32, v.height() as u32);
        opened = Some(v);
        Ok(size)
    })?;
    prepare_out(&args.input.out)?;
    let paths = OutPaths::new(&args.input.out, &inp.video_id);
    let video = match opened {
        Some(v) => v,
        None => open_video(&inp.video)?,
    };
    if let Some(o) = stopped_early("reading the inputs") {
        return Ok(o);
    }
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let fps = video_fps(&video);
    let (window_frames, overlap_frames) =
        window_frames(args.job.window_duration, args.job.window_overlap, fps);
    let win = match args.job.window {
        Some(k) => Some(WindowRange::new(
            k,
            window_frames,
            overlap_frames,
            geo.num_frames,
            lcm(track_stride, frame_interval),
        )?),
        None => None,
    };
    let hd_epic = inp.hd_epic;
    let mut warnings = inp.warnings.clone();
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
    let spans: std::collections::HashMap<String, (FrameNo, FrameNo)> = match ta.span {
        SpanMode::Video => Default::default(),
        SpanMode::Prompts => set
            .objects
            .iter()
            .filter_map(|o| {
                let first = *o.frames.keys().next()?;
                let last = *o.frames.keys().next_back()?;
                Some((
                    o.id.clone(),
                    prompt_span(first, last, margin_frames, geo.num_frames),
                ))
            })
            .collect(),
    };
    let set = match &win {
        Some(wr) => window_prompts(&set, wr, &mut warnings),
        None => set,
    };
    let device = select_device(ta.device).map_err(|e| JobError::Model(e.to_string()))?;
    if args.job.profile {
        crate::profile::enable(match device {
            tch::Device::Cuda(i) => Some(i),
            _ => None,
        });
    }
    let ckpt_meta = std::fs::metadata(&args.input.checkpoint).map_err(|e| {
        JobError::Model(format!(
            "model checkpoint {}: {e}",
            args.input.checkpoint.display()
        ))
    })?;
    let mut params = serde_json::json!({
        "video": std::fs::canonicalize(&inp.video).unwrap_or(inp.video.clone()),
        "video_frames": geo.num_frames,
        "video_size": [geo.width, geo.height],
        "video_id": inp.video_id,
        "prompts": inp.prompts_hash,
        "hd_epic": hd_epic,
        "checkpoint": std::fs::canonicalize(&args.input.checkpoint)
            .unwrap_or(args.input.checkpoint.clone()),
        "checkpoint_bytes": ckpt_meta.len(),
        "image_size": ta.image_size,
        "fill_hole_area": ta.fill_hole_area,
        "track_stride": track_stride,
        "frame_interval": frame_interval,
        "video_scale_factor": ta.video_scale_factor,
        "max_cond_frames": ta.max_cond_frames,
        "memory_temporal_stride": ta.memory_temporal_stride,
        "batch_objects": ta.batch_objects.max(1),
        "device": format!("{device:?}"),
        "dtype": ta.dtype,
        "window": win.as_ref().map(|w| serde_json::json!({"index": w.index,
            "first_frame": w.own_from, "end_frame": w.end, "warm_from": w.warm_from})),
    });
    if ta.span == SpanMode::Prompts {
        // (absent with the default `video`, so that earlier checkpoints stay valid)
        params["span"] = serde_json::json!({"mode": "prompts", "margin_s": ta.span_margin,
                                            "margin_frames": margin_frames});
    }

    // A finished result, a checkpoint, or neither.
    if paths.output.exists() {
        let prev: Option<serde_json::Value> = std::fs::read(&paths.manifest)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let prev_params = prev.as_ref().and_then(|m| m.get("params")).cloned();
        let complete = prev
            .as_ref()
            .and_then(|m| m.get("status"))
            .and_then(|s| s.as_str())
            == Some("complete");
        if complete && prev_params.as_ref() == Some(&params) && !args.job.restart {
            let failed_frames = prev
                .as_ref()
                .and_then(|m| m.get("failed_frames"))
                .and_then(|n| n.as_u64())
                .unwrap_or(0) as usize;
            tracing::info!(
                "{} is complete (same parameters): nothing to do{}",
                paths.output.display(),
                if failed_frames > 0 {
                    format!(" ({failed_frames} frame(s) could not be decoded: see run.json)")
                } else {
                    String::new()
                }
            );
            return Ok(Outcome::AlreadyComplete {
                output: paths.output,
                failed_frames,
            });
        }
        if !args.job.restart {
            let diff = prev_params
                .map(|p| state::param_diff(&p, &params).join("; "))
                .unwrap_or_else(|| "no readable run.json".into());
            return Err(JobError::Checkpoint(format!(
                "{} exists from a run with other parameters ({diff}); use --restart to replace it",
                paths.output.display()
            )));
        }
    }
    let mut resume: Option<(Meta, Vec<u8>)> = None;
    test_signal_at("checkpoint-load");
    state::remove_stale(&paths.dir);
    if args.job.restart {
        state::remove(&paths.dir);
        let _ = std::fs::remove_file(&paths.output);
        let _ = std::fs::remove_file(&paths.partial);
    } else if let Some((meta, banks)) = state::read(&paths.dir)? {
        if meta.params != params {
            return Err(JobError::Checkpoint(format!(
                "{} holds a checkpoint made with other parameters ({}); re-run with the same \
                 options to resume, or use --restart to discard it",
                paths.dir.display(),
                state::param_diff(&meta.params, &params).join("; ")
            )));
        }
        resume = Some((meta, banks));
    }
    // A first-stretch spool that no checkpoint refers to (left by a killed run).
    let mut spool_in_checkpoint = resume
        .as_ref()
        .is_some_and(|(m, _)| m.stage.in_first_stretch());
    if !spool_in_checkpoint {
        state::remove_spool(&paths.dir);
    }
    if let Some(o) = stopped_early("reading the checkpoint") {
        return Ok(o);
    }
    test_signal_at("model-load");

    let model = Sam2Model::load(&args.input.checkpoint, device, ta.image_size)
        .map_err(|e| JobError::Model(e.to_string()))?
        .with_precision(ta.dtype);
    if let Some(o) = stopped_early("loading the model") {
        return Ok(o);
    }
    crate::model::cuda::apply_tf32_policy(device, ta.dtype);
    crate::model::cuda::reset_peak_memory(device);
    let range = match &win {
        Some(w) => FrameRange {
            first: FrameNo(w.warm_from),
            end: FrameNo(w.end),
            write_from: FrameNo(w.own_from),
        },
        None => FrameRange::video(geo.num_frames),
    };
    if set.objects.is_empty() {
        // A window without prompted objects: its written frames, with no objects.
        return empty_window(
            &paths,
            &video,
            &inp.video_id,
            (range.write_from.get(), range.end.get(), frame_interval),
            &params,
        );
    }
    let schedule = Schedule::new(
        range,
        &set.prompted_frames(),
        track_stride,
        frame_interval,
        ta.memory_temporal_stride,
    )
    .ok_or_else(|| JobError::Input("no prompted frame inside the video".into()))?;
    if let Some(w) = &win {
        tracing::info!(
            "window {}: frames {}..{} (bank warm-up from {})",
            w.index,
            w.own_from,
            w.end,
            w.warm_from
        );
    }
    tracing::info!(
        "video {} ({}): {}x{}, {} frames at {fps:.3} fps; {} object(s); model {:?} {:?} at {}; \
         device {device:?}; {} processed frames; windows of {window_frames} frames",
        inp.video_id,
        inp.video.display(),
        geo.width,
        geo.height,
        geo.num_frames,
        set.objects.len(),
        model.config.size,
        model.config.version,
        model.config.image_size,
        schedule.len()
    );
    let processed_total = schedule.len();
    let cfg = TrackerConfig {
        fill_hole_area: ta.fill_hole_area,
        max_cond_frames: ta.max_cond_frames,
        memory_temporal_stride: ta.memory_temporal_stride,
        reverse_chunk: ta.reverse_chunk.max(1),
        batch_objects: ta.batch_objects.max(1),
        spool_dir: std::env::temp_dir(),
        spool_file: Some(state::spool_path(&paths.dir)),
    };
    let mut tracker = Tracker::new(&model, cfg, schedule, set.clone(), geo.width, geo.height)
        .map_err(|e| JobError::Failed(e.to_string()))?;
    if ta.span == SpanMode::Prompts {
        let last = FrameNo(range.end.get().saturating_sub(1));
        let spans: Vec<(FrameNo, FrameNo)> = set
            .objects
            .iter()
            .map(|o| {
                let (lo, hi) = spans
                    .get(&o.id)
                    .copied()
                    .unwrap_or((FrameNo(0), FrameNo(u64::MAX)));
                (lo, hi.min(last))
            })
            .collect();
        tracker
            .set_spans(&spans)
            .map_err(|e| JobError::Internal(e.to_string()))?;
        tracing::info!(
            "--span prompts (margin {} s = {margin_frames} frames): {} of {processed_total} \
             processed frames have an object to track",
            ta.span_margin,
            tracker.active_frames()
        );
    }
    let failed: Rc<std::cell::RefCell<Vec<state::FailedFrame>>> = Rc::new(Default::default());
    if let Some((meta, _)) = &resume {
        *failed.borrow_mut() = meta.failed_frames.clone();
    }
    let mut frames = io::JobFrames {
        video: &video,
        image_size: ta.image_size as usize,
        scale: ta.video_scale_factor,
        decode_time: std::time::Duration::ZERO,
        decoded: 0,
        lenient: !ta.strict,
        failed: failed.clone(),
    };

    let bar = (std::io::stderr().is_terminal() && !args.job.quiet).then(|| {
        let b = indicatif::ProgressBar::new(processed_total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let test_kill_at: Option<u64> = std::env::var("DENSAM_TEST_KILL_AT_FRAME")
        .ok()
        .and_then(|s| s.parse().ok());
    let test_term_at: Option<u64> = std::env::var("DENSAM_TEST_SIGTERM_AT_FRAME")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut last_log = Instant::now();
    let mut prompted_seen = false;
    // The last frame whose objects were reported (once at debug level per frame and pass).
    let mut objects_reported: Option<(bool, FrameNo)> = None;
    let progress = |p: Progress| match p {
        Progress::Prompting { frame, done, total } | Progress::Tracking { frame, done, total } => {
            // A frame with many objects: progress inside it.
            let prompting = matches!(p, Progress::Prompting { .. });
            let what = if prompting {
                "prompt pre-pass"
            } else {
                "tracking"
            };
            if let Some(b) = &bar {
                b.set_message(format!("{what}: frame {frame}, objects {done}/{total}"));
            } else if last_log.elapsed().as_secs_f64() >= 5.0 {
                last_log = Instant::now();
                tracing::info!("{what}: frame {frame}: {done}/{total} objects");
            } else if objects_reported != Some((prompting, frame)) {
                tracing::debug!("{what}: frame {frame}: {done}/{total} objects");
            }
            objects_reported = Some((prompting, frame));
        }
        Progress::Prompted { frame } => {
            if !prompted_seen {
                prompted_seen = true;
                test_signal_at("prepass");
            }
            if let Some(b) = &bar {
                b.set_message(format!("prompts: frame {frame}"));
            } else {
                tracing::debug!("prompt pre-pass: frame {frame}");
            }
        }
        Progress::Tracked { frame, done, total } => {
            if let Some(b) = &bar {
                b.set_position(done as u64);
                b.set_message(format!(
                    "frame {frame}, RSS peak {} MiB",
                    peak_rss_bytes().unwrap_or(0) >> 20
                ));
            } else if last_log.elapsed().as_secs_f64() >= 5.0 || done == total {
                last_log = Instant::now();
                tracing::info!(
                    "tracked {done}/{total} processed frames (frame {frame}); peak RSS {} MiB",
                    peak_rss_bytes().unwrap_or(0) >> 20
                );
            }
            // Test hooks (documented in the tests): a hard kill or a SIGTERM at a frame.
            if test_kill_at == Some(frame.get()) {
                // SAFETY: raising a signal on this process.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            if test_term_at == Some(frame.get()) {
                // SAFETY: raising a signal on this process.
                unsafe { libc::raise(libc::SIGTERM) };
            }
        }
    };

    let resumed_stage = resume.as_ref().map(|(m, _)| m.stage);
    let (resume_at, offset, written0, windows, wall_before, resume_state) = match resume {
        Some((meta, state)) => {
            match meta.stage {
                Stage::Rest(next) => tracing::info!(
                    "resuming at processed frame {next} of {processed_total} ({} frames written)",
                    meta.written_frames
                ),
                Stage::Head(next) => tracing::info!(
                    "resuming in the first stretch: forward head at processed frame {next}"
                ),
                Stage::Reverse(lowest) => tracing::info!(
                    "resuming in the first stretch: reverse pass below processed frame {lowest}"
                ),
                Stage::Start => {}
            }
            (
                Some(meta.next),
                meta.offset,
                meta.written_frames,
                meta.windows,
                meta.wall_seconds,
                Some(state),
            )
        }
        None => (None, 0, 0, Vec::new(), 0.0, None),
    };
    let mut sink = io::JobSink::open(
        &paths.partial,
        offset,
        written0,
        &set,
        &inp.video_id,
        hd_epic,
    )?;
    let pos: Rc<io::Position> = sink.pos.clone();
    let file = sink.file_handle()?;
    let run_start = Instant::now();
    let mut last_ckpt = Instant::now();
    let mut clock = WindowClock {
        windows,
        last_window_end: Instant::now(),
        processed_at_window_end: resume_at.unwrap_or(0),
        window_frames,
        num_frames: geo.num_frames,
    };
    let mut ckpt_error: Option<JobError> = None;
    let mut checkpointed = false;
    let every = args.job.checkpoint_every.max(0.0);
    let params_c = params.clone();
    let failed_c = failed.clone();
    let hook = |t: &Tracker<'_>, stage: Stage| -> Result<Flow, TrackError> {
        let stop = signals::stop_requested();
        let (window_end, force) = match stage {
            Stage::Rest(next) => {
                let schedule = t.schedule();
                // The first checkpoint after the first stretch is always taken: it frees the
                // spool.
                let force = next == schedule.head_end().next() || next.get() >= schedule.len();
                (clock.advance(schedule, next, device), force)
            }
            _ => (false, false),
        };
        if !t.can_save() {
            return Ok(if stop { Flow::Stop } else { Flow::Continue });
        }
        if stop || window_end || force || last_ckpt.elapsed().as_secs_f64() >= every {
            let res = (|| -> Result<(), JobError> {
                file.sync_data().map_err(out_err(&paths.partial))?;
                let state = t.save_state().map_err(|e| match e {
                    TrackError::Spool { .. } => output_error(e.to_string()),
                    e => JobError::Failed(format!("saving the tracker state: {e}")),
                })?;
                let meta = Meta {
                    format: state::FORMAT,
                    params: params_c.clone(),
                    stage,
                    next: match stage {
                        Stage::Rest(n) => n.get(),
                        _ => 0,
                    },
                    offset: pos.offset.get(),
                    written_frames: pos.written.get(),
                    windows: clock.windows.clone(),
                    wall_seconds: wall_before + run_start.elapsed().as_secs_f64(),
                    failed_frames: failed_c.borrow().clone(),
                };
                state::write(&paths.dir, &meta, &state)
            })();
            if let Err(e) = res {
                ckpt_error = Some(e);
                return Ok(Flow::Stop);
            }
            checkpointed = true;
            last_ckpt = Instant::now();
            let first = stage.in_first_stretch();
            if spool_in_checkpoint && !first {
                state::remove_spool(&paths.dir);
            }
            spool_in_checkpoint = first;
            tracing::debug!("checkpoint at {stage:?}");
        }
        Ok(if stop { Flow::Stop } else { Flow::Continue })
    };
    let mut observer = JobObserver { progress, hook };
    let end = tracker.run(
        &mut frames,
        &mut sink,
        resume_state.as_deref(),
        &mut observer,
    );
    let windows = clock.windows;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let wall = wall_before + run_start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes();
    let mut manifest = serde_json::json!({
        "densam_version": env!("CARGO_PKG_VERSION"),
        "command": "annotate",
        "options": args,
        "params": params,
        "video_id": inp.video_id,
        "video": {"path": inp.video, "width": geo.width, "height": geo.height,
                  "frames": geo.num_frames, "fps": fps, "info": video.info()},
        "model": {"size": model.config.size, "version": model.config.version,
                  "image_size": model.config.image_size,
                  "checkpoint": args.input.checkpoint,
                  "checkpoint_fnv1a": checkpoint_hash(&args.input.checkpoint)},
        "device": format!("{device:?}"),
        "dtype": ta.dtype,
        "peak_gpu_bytes": crate::model::cuda::run_peak_allocated_bytes(device),
        "objects": set.objects.iter().map(|o| serde_json::json!({
            "id": o.id, "label": o.label, "prompted_frames": o.frames.keys().collect::<Vec<_>>(),
            "span_frames": spans.get(&o.id).map(|&(lo, hi)| [lo, hi]),
        })).collect::<Vec<_>>(),
        "span": ta.span,
        "span_margin_s": (ta.span == SpanMode::Prompts).then_some(ta.span_margin),
        "active_frames": tracker.active_frames(),
        "warnings": warnings,
        "window_frames": window_frames,
        "windows": windows,
        "processed_frames": processed_total,
        "written_frames": pos.written.get(),
        "output": paths.output.file_name().map(|s| s.to_string_lossy().into_owned()),
        "peak_rss_bytes": peak,
        "wall_seconds": wall,
        "this_run": {"wall_seconds": run_start.elapsed().as_secs_f64(),
                     "decode_seconds": frames.decode_time.as_secs_f64(),
                     "decoded_frames": frames.decoded,
                     "encoded_frames": tracker.encoded_frames(),
                     "encode_write_seconds": sink.write_time.as_secs_f64(),
                     "stage_seconds": crate::profile::enabled().then(|| {
                         let mut m = serde_json::Map::new();
                         m.insert("decode_wait".into(), frames.decode_time.as_secs_f64().into());
                         for (k, v) in crate::profile::totals() {
                             m.insert(k.into(), v.into());
                         }
                         m.insert("encode_write".into(), sink.write_time.as_secs_f64().into());
                         m
                     }),
                     "resumed_at": resumed_stage,
                     "fps": (tracker_done(processed_total, resume_at) as f64)
                         / run_start.elapsed().as_secs_f64().max(1e-9)},
        "since_start_seconds": t0.elapsed().as_secs_f64(),
    });
    if crate::profile::enabled() {
        let split: Vec<String> = crate::profile::totals()
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        tracing::info!(
            "stage seconds: decode wait {:.2}, {}, encode+write {:.2}; wall {:.2}",
            frames.decode_time.as_secs_f64(),
            split.join(", "),
            sink.write_time.as_secs_f64(),
            run_start.elapsed().as_secs_f64()
        );
    }
    // Frames that could not be decoded, by window.
    let failed_list = failed.borrow().clone();
    manifest["failed_frames"] = serde_json::json!(failed_list.len());
    manifest["failures"] = failures_by_window(&failed_list, window_frames);
    let set_status = |m: &mut serde_json::Value, s: &str, err: Vec<String>| {
        m["status"] = serde_json::json!(s);
        m["errors"] = serde_json::json!(err);
    };
    // The spool goes unless a checkpoint still refers to it.
    if !spool_in_checkpoint {
        state::remove_spool(&paths.dir);
    }
    if let Some(e) = ckpt_error {
        set_status(&mut manifest, "failed", vec![e.to_string()]);
        let _ = write_manifest(&paths.manifest, &manifest);
        return Err(e);
    }
    match end {
        Ok(RunEnd::Finished) => {
            sink.sync()?;
            drop(sink);
            let summary = failure_summary(&failed_list, window_frames);
            set_status(&mut manifest, "complete", summary.clone());
            // run.json first: a kill (or a full disk) between the two leaves the partial output
            // and the final checkpoint, and a re-run finishes at once.
            write_manifest(&paths.manifest, &manifest)?;
            std::fs::rename(&paths.partial, &paths.output).map_err(out_err(&paths.output))?;
            if !args.job.keep_checkpoints {
                state::remove(&paths.dir);
            }
            tracing::info!(
                "wrote {} ({} frames, {processed_total} processed) in {wall:.1} s; peak RSS {} MiB",
                paths.output.display(),
                pos.written.get(),
                peak.unwrap_or(0) >> 20
            );
            for line in &summary {
                tracing::error!("{line}");
            }
            if !summary.is_empty() {
                tracing::error!(
                    "{} frame(s) could not be decoded: their lines are missing and the objects \
                     were re-seeded from their prompts after them (exit {EXIT_FRAMES_FAILED}; \
                     see `failures` in {})",
                    failed_list.len(),
                    paths.manifest.display()
                );
            }
            Ok(Outcome::Complete {
                output: paths.output,
                written_frames: pos.written.get(),
                failed_frames: failed_list.len(),
            })
        }
        Ok(RunEnd::Stopped(at)) => {
            let sig = signals::signal_name(signals::signal_number());
            let resumable = state::path(&paths.dir).exists();
            set_status(&mut manifest, "interrupted", Vec::new());
            manifest["interrupted"] = serde_json::json!({"signal": sig, "at": at,
                "checkpoint": resumable});
            let _ = write_manifest(&paths.manifest, &manifest);
            let _ = sink.sync();
            tracing::warn!(
                "stopped by {sig}; {}; re-run the same command to continue (exit {EXIT_INTERRUPTED})",
                if checkpointed {
                    "checkpoint written"
                } else if resumable {
                    "the previous checkpoint stays"
                } else {
                    "no resumable point yet: the next run starts again from the beginning"
                }
            );
            Ok(Outcome::Interrupted {
                checkpointed: resumable,
            })
        }
        Err(e) => {
            let err = match e {
                TrackError::Video(m) => JobError::Input(format!("video: {m}")),
                TrackError::Sink(m) => output_error(m),
                e @ TrackError::Spool { .. } => output_error(e.to_string()),
                e @ (TrackError::State(_) | TrackError::SpoolDamaged { .. }) => {
                    JobError::Checkpoint(format!(
                        "{e}: the checkpoint in {} cannot be resumed; run with --restart to \
                         start again",
                        paths.dir.display()
                    ))
                }
                other => JobError::Failed(other.to_string()),
            };
            set_status(&mut manifest, "failed", vec![err.to_string()]);
            let _ = write_manifest(&paths.manifest, &manifest);
            Err(err)
        }
    }
}

/// The failed frames grouped by window, windows ascending (frames in the order recorded).
fn group_by_window(
    failed: &[state::FailedFrame],
    window_frames: u64,
) -> std::collections::BTreeMap<u64, Vec<&state::FailedFrame>> {
    let mut by: std::collections::BTreeMap<u64, Vec<&state::FailedFrame>> = Default::default();
    for f in failed {
        by.entry(window_of(f.frame, window_frames))
            .or_default()
            .push(f);
    }
    by
}

/// `run.json`'s `failures`: per window, the frames that could not be decoded and why.
fn failures_by_window(failed: &[state::FailedFrame], window_frames: u64) -> serde_json::Value {
    serde_json::Value::Array(
        group_by_window(failed, window_frames)
            .into_iter()
            .map(|(k, v)| {
                serde_json::json!({
                    "window": k,
                    "frames": v.iter().map(|f| f.frame).collect::<Vec<_>>(),
                    "errors": v.iter().map(|f| f.error.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// One line per window with failed frames.
fn failure_summary(failed: &[state::FailedFrame], window_frames: u64) -> Vec<String> {
    group_by_window(failed, window_frames)
        .into_iter()
        .map(|(k, frames)| {
            let mut v: Vec<u64> = frames.iter().map(|f| f.frame).collect();
            v.sort_unstable();
            let list: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!(
                "window {k}: {} frame(s) could not be decoded: {}",
                v.len(),
                list.join(", ")
            )
        })
        .collect()
}

/// The windows finished so far in a sequential run (and when).
struct WindowClock {
    windows: Vec<WindowRecord>,
    last_window_end: Instant,
    processed_at_window_end: usize,
    window_frames: u64,
    num_frames: u64,
}

impl WindowClock {
    /// Records the windows finished before processed index `next` of the final stretch;
    /// whether any was (a checkpoint is then due).
    fn advance(&mut self, schedule: &Schedule, next: ProcIdx, device: tch::Device) -> bool {
        let window_frames = self.window_frames;
        let next = next.get();
        let frame = |t: usize| schedule.frame(ProcIdx(t)).get();
        // Windows finished: every window before the one of the next processed frame.
        let done_before = if next >= schedule.len() {
            u64::MAX
        } else {
            window_of(frame(next), window_frames)
        };
        let first_open = self
            .windows
            .last()
            .map(|w: &WindowRecord| w.index + 1)
            .unwrap_or(0);
        let last_done = window_of(frame(next - 1), window_frames);
        if !(done_before > first_open && last_done >= first_open) {
            return false;
        }
        let upto = last_done.min(done_before.saturating_sub(1));
        let n_new = upto + 1 - first_open;
        let wall = self.last_window_end.elapsed().as_secs_f64();
        let nproc = next - self.processed_at_window_end;
        for k in first_open..=upto {
            let first_frame = k * window_frames;
            let last_frame = ((k + 1) * window_frames - 1).min(self.num_frames - 1);
            self.windows.push(WindowRecord {
                index: k,
                first_frame,
                last_frame,
                wall_seconds: wall,
                processed_frames: nproc,
                fps: nproc as f64 / wall.max(1e-9),
                peak_rss_bytes: peak_rss_bytes(),
                peak_gpu_bytes: crate::model::cuda::peak_allocated_bytes(device),
                in_first_stretch: n_new > 1 || next == schedule.head_end().get() + 1,
            });
            tracing::info!(
                "window {k} (frames {first_frame}..={last_frame}) done: {nproc} processed frames \
                 in {wall:.1} s; peak RSS {} MiB{}",
                peak_rss_bytes().unwrap_or(0) >> 20,
                crate::model::cuda::peak_allocated_bytes(device)
                    .map(|b| format!("; peak GPU {} MiB", b >> 20))
                    .unwrap_or_default()
            );
        }
        crate::model::cuda::reset_peak_memory(device);
        self.last_window_end = Instant::now();
        self.processed_at_window_end = next;
        true
    }
}

/// The job's observer of a run: progress (bar, logs, test hooks), checkpoints at resume points,
/// and stop signals, also polled between object batches and between the objects of a prompted
/// frame.
struct JobObserver<P, H> {
    progress: P,
    hook: H,
}

impl<P, H> Observer for JobObserver<P, H>
where
    P: FnMut(Progress),
    H: FnMut(&Tracker<'_>, Stage) -> Result<Flow, TrackError>,
{
    fn progress(&mut self, event: Progress) {
        (self.progress)(event)
    }

    fn at_resume_point(&mut self, tracker: &Tracker<'_>, stage: Stage) -> Result<Flow, TrackError> {
        (self.hook)(tracker, stage)
    }

    fn stop_requested(&mut self) -> bool {
        signals::stop_requested()
    }
}

fn tracker_done(total: usize, resume_at: Option<usize>) -> usize {
    total - resume_at.unwrap_or(0).min(total)
}

fn write_manifest(path: &Path, m: &serde_json::Value) -> Result<(), JobError> {
    let text = serde_json::to_string_pretty(m).map_err(|e| JobError::Internal(e.to_string()))?;
    write_atomic(path, &(text + "\n"))
}

/// FNV-1a of the model checkpoint's bytes, as hex.
fn checkpoint_hash(path: &Path) -> Option<String> {
    crate::hash::fnv1a_file(path).ok().map(|h| h.hex())
}

/// The frames of window-parallel window `index`.
#[derive(Debug, Clone, Copy)]
pub struct WindowRange {
    pub index: u64,
    /// First frame of the bank warm-up (on the processing grid).
    pub warm_from: u64,
    /// First frame the window owns (writes).
    pub own_from: u64,
    /// One past the last frame it owns.
    pub end: u64,
}

impl WindowRange {
    pub fn new(
        index: u64,
        window_frames: u64,
        overlap_frames: u64,
        num_frames: u64,
        grid: u64,
    ) -> Result<Self, JobError> {
        let n_windows = window_count(num_frames, window_frames);
        if index >= n_windows {
            return Err(JobError::Usage(format!(
                "--window {index}: the video has {n_windows} window(s) of {window_frames} frames"
            )));
        }
        let own_from = index * window_frames;
        let end = ((index + 1) * window_frames).min(num_frames);
        let warm = own_from.saturating_sub(overlap_frames);
        let grid = grid.max(1);
        Ok(WindowRange {
            index,
            warm_from: warm / grid * grid,
            own_from,
            end,
        })
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let (a, b) = (a.max(1), b.max(1));
    a / gcd(a, b) * b
}

/// The prompts a window run uses: each object's prompts inside `warm_from..end`; objects without
/// one are left out (with a warning).
fn window_prompts(
    set: &crate::tracker::PromptSet,
    w: &WindowRange,
    warnings: &mut Vec<String>,
) -> crate::tracker::PromptSet {
    let mut out = crate::tracker::PromptSet::default();
    for o in &set.objects {
        let frames: std::collections::BTreeMap<FrameNo, crate::tracker::FramePrompt> = o
            .frames
            .range(FrameNo(w.warm_from)..FrameNo(w.end))
            .map(|(f, p)| (*f, p.clone()))
            .collect();
        if frames.is_empty() {
            let msg = format!(
                "window {}: object `{}` has no prompt in frames {}..{}: not tracked in this window",
                w.index, o.id, w.warm_from, w.end
            );
            tracing::warn!("{msg}");
            warnings.push(msg);
            continue;
        }
        out.objects.push(crate::tracker::ObjectPrompts {
            id: o.id.clone(),
            label: o.label.clone(),
            frames,
        });
    }
    out
}

/// The output of a window without prompted objects: one empty line per written frame.
fn empty_window(
    paths: &OutPaths,
    video: &VideoSource,
    video_id: &str,
    (from, end, interval): (u64, u64, u64),
    params: &serde_json::Value,
) -> Result<Outcome, JobError> {
    let mut text = String::new();
    let mut n_lines = 0;
    for n in (from.div_ceil(interval) * interval..end).step_by(interval as usize) {
        let info = video
            .frame_info(n as usize)
            .map_err(|e| JobError::Input(e.to_string()))?;
        let rec = crate::output::jsonl::FrameRecord {
            frame_number: n,
            time_s: info.seconds,
            objects: Vec::new(),
        };
        text.push_str(&String::from_utf8_lossy(&io::line_bytes(video_id, rec)?));
        n_lines += 1;
    }
    std::fs::write(&paths.partial, text).map_err(out_err(&paths.partial))?;
    std::fs::rename(&paths.partial, &paths.output).map_err(out_err(&paths.output))?;
    let m = serde_json::json!({"status": "complete", "written_frames": n_lines,
                               "params": params, "note": "no prompted object in this window"});
    write_manifest(&paths.manifest, &m)?;
    Ok(Outcome::Complete {
        output: paths.output.clone(),
        written_frames: n_lines,
        failed_frames: 0,
    })
}
