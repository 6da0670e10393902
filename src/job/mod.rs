//! `densam annotate` as a production job: input resolution (generic prompts or HD-EPIC), the
//! output folder (`dense_annotations_<video id>.jsonl`, `run.json`, the checkpoint while
//! running), checkpoints and resume (byte-identical to an uninterrupted run), stop signals,
//! windows as checkpoint/timing units, progress and memory reporting, and documented exit codes.
//!
//! A run ([`run`]) is a sequence of steps, each in its module: the options checked
//! ([`args`]), the inputs resolved and checked against the video ([`prepare`]), the run's
//! parameters ([`params`]), where it starts ([`resume`]: afresh, from the checkpoint, or not at
//! all), the model loaded, the tracking with its checkpoints ([`checkpointer`]) and progress
//! ([`progress`]), and its end ([`finish`], `run.json` in [`manifest`]). The checkpoint file is
//! [`state`]; window arithmetic, shared with `densam plan`, is [`window`].
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
//! the end; `--strict` stops at the first one. Frames a truncated file's container lists past
//! its end count as such frames too.
//!
//! Exit codes: [`crate::exit`].

pub mod args;
pub mod batch;
pub mod checkpointer;
mod fault;
pub mod finish;
pub mod input;
pub mod io;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod params;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod resume;
pub mod signals;
pub mod state;
pub mod window;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::model::device::select_device;
use crate::model::sam2::Sam2Model;
use crate::tracker::schedule::Schedule;
use crate::tracker::{
    Flow, FrameNo, Observer, Pass, ProcIdx, Progress, RawOutput, Stage, TrackError, Tracker,
    TrackerConfig,
};

pub use args::AnnotateJobArgs;
use args::SpanMode;
use checkpointer::Checkpointer;
use manifest::{Manifest, Status};
use params::RunParams;
use prepare::Prepared;
use progress::{ProgressReport, WindowClock, peak_rss_bytes};
use resume::Start;

use crate::exit::{
    EXIT_BUSY, EXIT_CHECKPOINT, EXIT_FAILURE, EXIT_FRAMES_FAILED, EXIT_INPUT, EXIT_INTERRUPTED,
    EXIT_MODEL, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE,
};

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
    /// Another run holds the output folder's lock.
    #[error("{0}")]
    Busy(String),
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
            JobError::Busy(_) => EXIT_BUSY,
            JobError::Model(_) => EXIT_MODEL,
            JobError::Failed(_) | JobError::Internal(_) => EXIT_FAILURE,
        }
    }
}

/// A tracker error as a job error (the one mapping): video errors are input errors, sink and
/// spool write errors output errors (with the disk-full hint); others fail the run, `doing`
/// saying when (empty: no context).
pub(crate) fn track_error(e: TrackError, doing: &str) -> JobError {
    match e {
        TrackError::Video(m) => JobError::Input(format!("video: {m}")),
        TrackError::Sink(m) => output_error(m),
        e @ TrackError::Spool { .. } => output_error(e.to_string()),
        e @ (TrackError::SpoolDamaged { .. } | TrackError::State(_)) => JobError::Checkpoint(
            format!("{e}: the saved run cannot be resumed; run again with --restart"),
        ),
        e if doing.is_empty() => JobError::Failed(e.to_string()),
        e => JobError::Failed(format!("{doing}: {e}")),
    }
}

impl From<TrackError> for JobError {
    fn from(e: TrackError) -> Self {
        track_error(e, "")
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
#[derive(Debug, Clone)]
pub struct OutPaths {
    pub dir: PathBuf,
    /// `dense_annotations_<video id>.jsonl`.
    pub output: PathBuf,
    /// The output while it is written (`.dense_annotations_<video id>.jsonl.partial`).
    pub partial: PathBuf,
    /// `run.json`.
    pub manifest: PathBuf,
}

impl OutPaths {
    pub fn new(dir: &Path, video_id: &str) -> Self {
        let name = format!("dense_annotations_{video_id}.jsonl");
        OutPaths {
            dir: dir.to_path_buf(),
            output: dir.join(&name),
            partial: dir.join(format!(".{name}.partial")),
            manifest: dir.join("run.json"),
        }
    }
}

pub(crate) fn out_err(p: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
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
    crate::files::create_new(&probe).map_err(|e| {
        JobError::Output(format!(
            "{}: output folder not writable: {e}",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Runs the job.
pub fn run(args: &AnnotateJobArgs) -> Result<Outcome, JobError> {
    // First of all: a stop while the inputs, the checkpoint or the model load still exits 75.
    signals::install();
    init_logging(&args.job);
    fault::at(fault::Point::Start);
    let t0 = Instant::now();
    args.validate()?;
    // The options left to the model take its family's values (known from the checkpoint's keys).
    let family = crate::model::checkpoint::family_of(&args.input.checkpoint)
        .map_err(|e| JobError::Model(e.to_string()))?;
    let mut resolved = args.clone();
    resolved.track.resolve_for(family)?;
    let args = &resolved;
    args.validate()?;
    let job = prepare::prepare(args)?;
    if let Some(o) = stopped_early("reading the inputs") {
        return Ok(o);
    }
    let device = select_device(args.track.device).map_err(|e| JobError::Model(e.to_string()))?;
    if args.job.profile {
        crate::profile::enable(match device {
            tch::Device::Cuda(i) => Some(i),
            _ => None,
        });
    }
    let auto = batch_choice(args, &job, device);
    let batch_objects = match args.track.batch_objects {
        args::BatchObjects::Fixed(n) => n,
        args::BatchObjects::Auto => auto.as_ref().map_or(batch::CPU_AUTO, |c| c.batch),
    };
    let mut params = RunParams::new(args, &job, device, batch_objects)?;
    let paths = OutPaths::new(&args.input.out, &job.video_id);
    // Held until the run returns (the kernel releases it if the process dies).
    let _lock = lock::acquire(&paths.dir)?;
    let start = resume::decide(&paths, &mut params, args.job.restart)?;
    if let Some(c) = &auto {
        if params.batch_objects == c.batch {
            tracing::info!("objects per batch: {} (auto: {})", c.batch, c.reason);
        } else {
            tracing::info!(
                "objects per batch: {} (auto, as the earlier run of this output chose; {} \
                 would be chosen now: {})",
                params.batch_objects,
                c.batch,
                c.reason
            );
        }
    }
    if let Start::AlreadyComplete { failed_frames } = start {
        return Ok(already_complete(paths, failed_frames));
    }
    prepare_out(&paths.dir)?;
    if let Some(o) = stopped_early("reading the checkpoint") {
        return Ok(o);
    }
    resume::tidy(&paths, &start, args.job.restart);
    fault::at(fault::Point::ModelLoad);
    let model = Sam2Model::load(&args.input.checkpoint, device, args.track.image_size())
        .map_err(|e| JobError::Model(e.to_string()))?
        .with_precision(args.track.dtype);
    if let Some(o) = stopped_early("loading the model") {
        return Ok(o);
    }
    crate::model::cuda::apply_tf32_policy(device, args.track.dtype);
    crate::model::cuda::reset_peak_memory(device);
    if job.prompts.objects.is_empty() {
        // A window without prompted objects: its written frames, with no objects.
        return finish::empty_window(&paths, &job, args.track.strides().1, &params);
    }
    let tracker = new_tracker(&model, device, args, &job, &paths, params.batch_objects)?;
    let run = Run {
        args,
        job: &job,
        params: &params,
        paths: &paths,
        model: &model,
        device,
        t0,
    };
    track(&run, start, tracker)
}

/// `--batch-objects auto`: the number for this run's device and inputs, and why (`None` for a
/// number given).
fn batch_choice(
    args: &AnnotateJobArgs,
    job: &Prepared,
    device: tch::Device,
) -> Option<batch::Choice> {
    if args.track.batch_objects != args::BatchObjects::Auto {
        return None;
    }
    let ta = &args.track;
    let cond_frames = job.prompts.most_conditioning_frames(ta.max_cond_frames());
    let footprint = batch::Footprint {
        image_size: ta.image_size(),
        video_size: [job.geo.width, job.geo.height],
        objects: job.prompts.objects.len(),
        cond_frames,
        checkpoint_bytes: std::fs::metadata(&args.input.checkpoint).map_or(0, |m| m.len()),
        dtype: ta.dtype,
    };
    Some(batch::choose(device, &footprint))
}

/// The outcome of a run whose output is complete with the same parameters.
fn already_complete(paths: OutPaths, failed_frames: usize) -> Outcome {
    tracing::info!(
        "{} is complete (same parameters): nothing to do{}",
        paths.output.display(),
        if failed_frames > 0 {
            format!(" ({failed_frames} frame(s) could not be decoded: see run.json)")
        } else {
            String::new()
        }
    );
    Outcome::AlreadyComplete {
        output: paths.output,
        failed_frames,
    }
}

/// The tracker of a run: its plan over the run's frames, its spans, its spool in the output
/// folder.
fn new_tracker<'m>(
    model: &'m Sam2Model,
    device: tch::Device,
    args: &AnnotateJobArgs,
    job: &Prepared,
    paths: &OutPaths,
    batch_objects: usize,
) -> Result<Tracker<'m>, JobError> {
    let ta = &args.track;
    let (track_stride, frame_interval) = ta.strides();
    let range = job.range();
    let schedule = Schedule::new(
        range,
        &job.prompts.prompted_frames(),
        track_stride,
        frame_interval,
        ta.memory_temporal_stride,
    )
    .ok_or_else(|| JobError::Input("no prompted frame inside the video".into()))?;
    if let Some(w) = &job.window {
        tracing::info!(
            "window {}: frames {}..{} (bank warm-up from {})",
            w.index,
            w.own_from,
            w.end,
            w.warm_from
        );
    }
    let (geo, c) = (&job.geo, &model.config);
    tracing::info!(
        "video {} ({}): {}x{}, {} frames at {:.3} fps; {} object(s); model {} at {}; \
         device {:?}; {} processed frames; windows of {} frames",
        job.video_id,
        job.video_path.display(),
        geo.width,
        geo.height,
        geo.num_frames,
        job.fps,
        job.prompts.objects.len(),
        c.describe(),
        c.image_size,
        device,
        schedule.len(),
        job.window_frames
    );
    let processed_total = schedule.len();
    let cfg = TrackerConfig {
        fill_hole_area: ta.fill_hole_area(),
        max_cond_frames: ta.max_cond_frames(),
        memory_temporal_stride: ta.memory_temporal_stride,
        reverse_chunk: ta.reverse_chunk,
        batch_objects,
        static_shapes: ta.static_shapes,
        spool_dir: std::env::temp_dir(),
        spool_file: Some(state::spool_path(&paths.dir)),
        memory_policy: ta.memory_policy(),
    };
    let prompts = job.prompts.clone();
    let mut tracker = Tracker::new(model, cfg, schedule, prompts, geo.width, geo.height)?;
    if ta.span == SpanMode::Prompts {
        let last = FrameNo(range.end.get().saturating_sub(1));
        let spans: Vec<(FrameNo, FrameNo)> = job
            .prompts
            .objects
            .iter()
            .map(|o| {
                let (lo, hi) = job
                    .spans
                    .get(&o.id)
                    .copied()
                    .unwrap_or((FrameNo(0), FrameNo(u64::MAX)));
                (lo, hi.min(last))
            })
            .collect();
        tracker.set_spans(&spans)?;
        tracing::info!(
            "--span prompts (margin {} s = {} frames): {} of {processed_total} processed frames \
             have an object to track",
            ta.span_margin,
            job.margin_frames,
            tracker.active_frames()
        );
    }
    Ok(tracker)
}

/// What a run tracks with: its options, inputs, parameters, folder, model and device, and when
/// it started.
#[derive(Clone, Copy)]
struct Run<'a> {
    args: &'a AnnotateJobArgs,
    job: &'a Prepared,
    params: &'a RunParams,
    paths: &'a OutPaths,
    model: &'a Sam2Model,
    device: tch::Device,
    t0: Instant,
}

/// Tracks (from the checkpoint of `start`, if any) with checkpoints and progress, then ends the
/// run.
fn track(run: &Run<'_>, start: Start, mut tracker: Tracker<'_>) -> Result<Outcome, JobError> {
    let Run {
        args,
        job,
        params,
        paths,
        device,
        ..
    } = *run;
    let ta = &args.track;
    let processed_total = tracker.schedule().len();
    // Where the run starts: the checkpoint's point, or the start.
    let (from, saved) = match start {
        Start::Resume(c) => {
            log_resume(&c.meta, processed_total);
            (c.meta, Some(c.state))
        }
        _ => (state::Meta::start(params.clone()), None),
    };
    let resumed_at = saved.is_some().then_some(from.stage);
    let failed = Rc::new(RefCell::new(from.failed_frames.clone()));
    let mut frames = io::JobFrames {
        video: &job.video,
        image_size: ta.image_size() as usize,
        scale: ta.video_scale_factor,
        decode_time: std::time::Duration::ZERO,
        decoded: 0,
        lenient: !ta.strict,
        failed: failed.clone(),
    };
    let mut sink = io::JobSink::open(
        &paths.partial,
        from.offset,
        from.written_frames,
        &job.prompts,
        &job.video_id,
        job.hd_epic,
    )?;
    let output = (sink.file_handle()?, sink.pos.clone());
    let (num_frames, window_frames) = (job.geo.num_frames, job.window_frames);
    let clock = WindowClock::new(
        from.windows.clone(),
        from.next,
        window_frames,
        num_frames,
        device,
    );
    let every = args.job.checkpoint_every;
    let mut checkpointer =
        Checkpointer::new(paths, params, every, clock, output, failed.clone(), &from);
    let mut report = ProgressReport::new(processed_total, args.job.quiet);
    let run_start = Instant::now();
    let trace = match &args.job.trace {
        Some(p) => Some(Trace {
            out: std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| JobError::Output(format!("--trace {}: {e}", p.display())))?,
            ),
            frames: tracker.schedule().frames().to_vec(),
            ids: job.prompts.objects.iter().map(|o| o.id.clone()).collect(),
        }),
        None => None,
    };
    let mut observer = JobObserver {
        report: &mut report,
        checkpointer: &mut checkpointer,
        prompted_seen: false,
        trace,
    };
    let end = tracker.run(&mut frames, &mut sink, saved.as_deref(), &mut observer);
    report.finish();
    let mut checkpoints = checkpointer.finish();
    let this_run = manifest::ThisRun {
        resumed_at,
        ..this_run(
            &frames,
            &sink,
            &tracker,
            processed_total - from.next.min(processed_total),
            run_start,
        )
    };
    let mut manifest = record(run, &tracker, this_run);
    manifest.windows = std::mem::take(&mut checkpoints.windows);
    manifest.written_frames = sink.pos.written.get();
    manifest.wall_seconds += from.wall_seconds;
    let failed = failed.borrow().clone();
    let ran = finish::Ran {
        end,
        checkpoints,
        failed,
        manifest,
    };
    finish::conclude(paths, job, args.job.keep_checkpoints, ran, sink)
}

/// The job's observer of a run: progress (bar or log lines, the fault-injection hooks),
/// checkpoints at resume points, and stop signals, also polled between object batches and
/// between the objects of a prompted frame.
struct JobObserver<'r, 'c> {
    report: &'r mut ProgressReport,
    checkpointer: &'r mut Checkpointer<'c>,
    prompted_seen: bool,
    trace: Option<Trace>,
}

/// `--trace`: what every tracked object-frame read.
struct Trace {
    out: std::io::BufWriter<std::fs::File>,
    /// Processed index -> frame number.
    frames: Vec<FrameNo>,
    ids: Vec<String>,
}

impl Trace {
    fn write(&mut self, pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
        use std::io::Write;
        let frame = |i: i64| self.frames.get(i as usize).map(|f| f.get());
        for o in outs {
            let Some(r) = &o.read else { continue };
            let line = serde_json::json!({
                "frame": frame(t.get() as i64),
                "object": self.ids.get(o.object),
                "pass": format!("{pass:?}"),
                "score": r.score,
                "iou": o.iou,
                "mask": o.mask_index,
                "memories": r.memories.iter().map(|&i| frame(i)).collect::<Vec<_>>(),
                "pointers": r.pointers.iter().map(|&i| frame(i)).collect::<Vec<_>>(),
            });
            if let Err(e) = writeln!(self.out, "{line}") {
                tracing::warn!("--trace: {e}");
            }
        }
    }
}

impl Observer for JobObserver<'_, '_> {
    fn progress(&mut self, event: Progress) {
        match event {
            Progress::Prompting { frame, done, total } => {
                self.report.objects(true, frame, done, total)
            }
            Progress::Prompted { frame } => {
                if !std::mem::replace(&mut self.prompted_seen, true) {
                    fault::at(fault::Point::Prepass);
                }
                self.report.prompted(frame);
            }
            Progress::Tracking { frame, done, total } => {
                self.report.objects(false, frame, done, total)
            }
            Progress::Tracked { frame, done, total } => {
                self.report.tracked(frame, done, total);
                fault::tracked(frame.get());
            }
        }
    }

    fn at_resume_point(&mut self, tracker: &Tracker<'_>, stage: Stage) -> Result<Flow, TrackError> {
        Ok(self.checkpointer.after_frame(tracker, stage))
    }

    fn stop_requested(&mut self) -> bool {
        signals::stop_requested()
    }

    fn raw_outputs(&mut self, pass: Pass, t: ProcIdx, outs: &[RawOutput]) {
        if let Some(tr) = &mut self.trace {
            tr.write(pass, t, outs);
        }
    }
}

/// This run's figures (`run.json`'s `this_run`, without where it resumed); with `--profile`
/// also the seconds per stage, logged.
fn this_run(
    frames: &io::JobFrames<'_>,
    sink: &io::JobSink<'_>,
    tracker: &Tracker<'_>,
    tracked: usize,
    run_start: Instant,
) -> manifest::ThisRun {
    let wall = run_start.elapsed().as_secs_f64();
    let (decode, write) = (
        frames.decode_time.as_secs_f64(),
        sink.write_time.as_secs_f64(),
    );
    let stage_seconds = crate::profile::enabled().then(|| {
        let totals = crate::profile::totals();
        let split: Vec<String> = totals.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        tracing::info!(
            "stage seconds: decode wait {decode:.2}, {}, encode+write {write:.2}; wall {wall:.2}",
            split.join(", "),
        );
        let mut m: std::collections::BTreeMap<String, f64> = totals
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        m.insert("decode_wait".into(), decode);
        m.insert("encode_write".into(), write);
        m
    });
    manifest::ThisRun {
        wall_seconds: wall,
        decode_seconds: decode,
        decoded_frames: frames.decoded,
        encoded_frames: tracker.encoded_frames(),
        encode_write_seconds: write,
        stage_seconds,
        resumed_at: None,
        fps: tracked as f64 / wall.max(1e-9),
    }
}

/// The `run.json` of a run that tracked, before its end is known (status, failures, windows
/// and written frames are set by the caller and [`finish::conclude`]); `wall_seconds` is this
/// run's.
fn record<'a>(run: &Run<'a>, tracker: &Tracker<'_>, this_run: manifest::ThisRun) -> Manifest<'a> {
    let Run {
        args,
        job,
        params,
        paths,
        model,
        device,
        t0,
    } = *run;
    let ta = &args.track;
    Manifest {
        status: Status::Failed,
        errors: Vec::new(),
        interrupted: None,
        densam_version: env!("CARGO_PKG_VERSION"),
        command: "annotate",
        options: args,
        params,
        video_id: &job.video_id,
        video: manifest::VideoRecord {
            path: &job.video_path,
            width: job.geo.width,
            height: job.geo.height,
            frames: job.geo.num_frames,
            fps: job.fps,
            info: job.video.info(),
        },
        model: manifest::ModelRecord {
            family: model.config.family(),
            size: model.config.size,
            version: model.config.version,
            image_size: model.config.image_size,
            checkpoint: &args.input.checkpoint,
            checkpoint_fnv1a: params.checkpoint_fnv1a.clone(),
        },
        device: format!("{device:?}"),
        dtype: ta.dtype,
        peak_gpu_bytes: crate::model::cuda::run_peak_allocated_bytes(device),
        objects: job
            .prompts
            .objects
            .iter()
            .map(|o| manifest::ObjectRecord {
                id: &o.id,
                label: o.label.as_deref(),
                prompted_frames: o.frames.keys().map(|f| f.get()).collect(),
                span_frames: job.spans.get(&o.id).map(|&(lo, hi)| [lo.get(), hi.get()]),
            })
            .collect(),
        span: ta.span,
        span_margin_s: (ta.span == SpanMode::Prompts).then_some(ta.span_margin),
        active_frames: tracker.active_frames(),
        warnings: &job.warnings,
        window_frames: job.window_frames,
        windows: Vec::new(),
        processed_frames: tracker.schedule().len(),
        written_frames: 0,
        failed_frames: 0,
        failures: Vec::new(),
        output: paths
            .output
            .file_name()
            .map(|s| s.to_string_lossy().into_owned()),
        peak_rss_bytes: peak_rss_bytes(),
        wall_seconds: this_run.wall_seconds,
        this_run,
        since_start_seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Says where a resumed run goes on.
fn log_resume(meta: &state::Meta, processed_total: usize) {
    match meta.stage {
        Stage::Rest(next) => tracing::info!(
            "resuming at processed frame {next} of {processed_total} ({} frames written)",
            meta.written_frames
        ),
        Stage::Head(next) => {
            tracing::info!("resuming in the first stretch: forward head at processed frame {next}")
        }
        Stage::Reverse(lowest) => tracing::info!(
            "resuming in the first stretch: reverse pass below processed frame {lowest}"
        ),
        Stage::Start => {}
    }
}
