//! `densam annotate`: one video, one prompts file, one checkpoint -> the dense JSONL
//! (`DIR/dense_annotations_<video stem>.jsonl`, deterministic bytes, one line per written frame
//! in frame order) and a run manifest (`DIR/run.json`). Both are written under temporary names
//! and renamed into place when complete. Progress goes to an indicatif bar on a terminal and to
//! plain log lines otherwise; the peak RSS is logged and recorded in the manifest.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Device;

use super::{
    FrameInput, FrameResult, FrameSource, Plan, Progress, ResultSink, TrackError, Tracker,
    TrackerConfig,
};
use crate::model::device::{DeviceChoice, select_device};
use crate::model::sam2::Sam2Model;
use crate::output::jsonl::{FrameRecord, JsonlWriter, ObjectRecord};
use crate::output::rle::Rle;
use crate::prompts::{self, PromptSet, VideoGeometry};
use crate::video::{Selection, StreamOptions, VideoSource, model_input_tensor};

/// Options of `densam annotate`.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct AnnotateArgs {
    /// Video file, frame directory or image.
    #[arg(long)]
    pub video: PathBuf,
    /// Prompts file (JSON `{"objects": [...]}` or JSON Lines, one object a line).
    #[arg(long)]
    pub prompts: PathBuf,
    /// SAM 2 / 2.1 checkpoint (official .pt or safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Model input size (a multiple of 64 in 256..=1024).
    #[arg(long, default_value_t = 1024)]
    pub image_size: i64,
    /// Fill background holes of at most this many low-res pixels (official 8; 0 = off, as the
    /// official package on a CPU-only install).
    #[arg(long, default_value_t = 8)]
    pub fill_hole_area: i64,
    /// Process every N-th frame (plus every written and prompted frame).
    #[arg(long, default_value_t = 1)]
    pub track_stride: u64,
    /// Write every N-th frame.
    #[arg(long, default_value_t = 1)]
    pub frame_interval: u64,
    /// Attend to at most N conditioning frames, the temporally closest (-1 = all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub max_cond_frames: i64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Treat every skipped prompt as an error.
    #[arg(long)]
    pub strict: bool,
    /// Objects tracked per batch (1 = one by one, as the official predictor).
    #[arg(long, default_value_t = 16)]
    pub batch_objects: usize,
    /// Processed frames decoded per chunk of the reverse pass.
    #[arg(long, default_value_t = 16)]
    pub reverse_chunk: usize,
}

/// Errors of `densam annotate`.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    #[error(transparent)]
    Prompts(#[from] prompts::PromptError),
    #[error(transparent)]
    Video(#[from] crate::video::VideoError),
    #[error(transparent)]
    Model(#[from] crate::model::sam2::ModelError),
    #[error(transparent)]
    Device(#[from] crate::model::device::DeviceError),
    #[error(transparent)]
    Track(#[from] TrackError),
    #[error(transparent)]
    Output(#[from] crate::output::jsonl::OutputError),
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AnnotateError + '_ {
    move |e| AnnotateError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub output: PathBuf,
    pub manifest: PathBuf,
    pub processed_frames: usize,
    pub written_frames: usize,
    pub peak_rss_bytes: Option<u64>,
    pub wall_seconds: f64,
}

/// Frames of a [`VideoSource`] as model input.
pub struct VideoFrames<'a> {
    pub video: &'a VideoSource,
    pub image_size: usize,
}

impl FrameSource for VideoFrames<'_> {
    fn for_each_frame(
        &mut self,
        numbers: &[u64],
        f: &mut dyn FnMut(FrameInput) -> Result<(), TrackError>,
    ) -> Result<(), TrackError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let list: Vec<usize> = numbers.iter().map(|&n| n as usize).collect();
        let stream = self
            .video
            .frames(Selection::List(list), StreamOptions::default())
            .map_err(|e| TrackError::Video(e.to_string()))?;
        for fr in stream {
            let fr = fr.map_err(|e| TrackError::Video(e.to_string()))?;
            f(FrameInput {
                number: fr.info.number as u64,
                seconds: fr.info.seconds,
                image: model_input_tensor(&fr.rgb, self.image_size, Device::Cpu),
            })?;
        }
        Ok(())
    }

    fn frame_seconds(&mut self, numbers: &[u64]) -> Result<Vec<f64>, TrackError> {
        numbers
            .iter()
            .map(|&n| {
                self.video
                    .frame_info(n as usize)
                    .map(|i| i.seconds)
                    .map_err(|e| TrackError::Video(e.to_string()))
            })
            .collect()
    }
}

/// Results as JSONL lines.
pub struct JsonlSink<'a, W: std::io::Write> {
    pub writer: JsonlWriter<W>,
    pub prompts: &'a PromptSet,
    pub written: usize,
}

impl<W: std::io::Write> ResultSink for JsonlSink<'_, W> {
    fn encode(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        let rec = frame_record(&r, self.prompts)?;
        serde_json::to_vec(&rec).map_err(|e| TrackError::Sink(e.to_string()))
    }

    fn write(&mut self, _number: u64, bytes: &[u8]) -> Result<(), TrackError> {
        let rec: FrameRecord =
            serde_json::from_slice(bytes).map_err(|e| TrackError::Sink(e.to_string()))?;
        self.writer
            .write_frame(&rec)
            .map_err(|e| TrackError::Sink(e.to_string()))?;
        self.written += 1;
        Ok(())
    }
}

/// The output line of a frame: the objects with a non-empty mask, in prompt-file order.
pub fn frame_record(r: &FrameResult, prompts: &PromptSet) -> Result<FrameRecord, TrackError> {
    let mut objects = Vec::new();
    for o in &r.objects {
        if o.mask.area == 0 {
            continue;
        }
        let p = prompts
            .objects
            .get(o.object)
            .ok_or_else(|| TrackError::Invalid(format!("object index {}", o.object)))?;
        let rle = Rle::from_counts(o.mask.height, o.mask.width, o.mask.counts.clone())
            .map_err(|e| TrackError::Sink(e.to_string()))?;
        let label = p.label.clone().unwrap_or_default();
        if let Some(rec) = ObjectRecord::from_rle(&p.id, label, &rle, o.score as f32, o.iou as f32)
        {
            objects.push(rec);
        }
    }
    Ok(FrameRecord {
        frame_number: r.number,
        time_s: r.seconds,
        objects,
    })
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn video_stem(p: &Path) -> String {
    let p = if p.is_dir() {
        p.components().next_back().map(|c| Path::new(c.as_os_str()))
    } else {
        None
    }
    .unwrap_or(p);
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".into())
}

/// Runs `densam annotate`.
pub fn run(args: &AnnotateArgs) -> Result<RunSummary, AnnotateError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let t0 = Instant::now();
    if args.track_stride == 0 || args.frame_interval == 0 {
        return Err(AnnotateError::Invalid(
            "--track-stride and --frame-interval must be >= 1".into(),
        ));
    }
    let video = VideoSource::open(&args.video)?;
    let geo = VideoGeometry {
        num_frames: video.frame_count() as u64,
        width: video.width() as u32,
        height: video.height() as u32,
    };
    let raw = prompts::read_prompts_file(&args.prompts)?;
    let (set, warnings) = prompts::validate(raw, geo, args.strict)?;
    let device = select_device(args.device)?;
    let model = Sam2Model::load(&args.checkpoint, device, args.image_size)?;
    tracing::info!(
        "video {}: {}x{}, {} frames; {} object(s); model {:?} {:?} at {}; device {:?}",
        args.video.display(),
        geo.width,
        geo.height,
        geo.num_frames,
        set.objects.len(),
        model.config.size,
        model.config.version,
        model.config.image_size,
        device
    );
    let plan = Plan::new(
        geo.num_frames,
        &set.prompted_frames(),
        args.track_stride,
        args.frame_interval,
        1,
    )
    .ok_or_else(|| AnnotateError::Invalid("no prompted frame inside the video".into()))?;
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let stem = video_stem(&args.video);
    let out_name = format!("dense_annotations_{stem}.jsonl");
    let out_path = args.out.join(&out_name);
    let partial = args.out.join(format!(".{out_name}.partial"));
    let cfg = TrackerConfig {
        fill_hole_area: args.fill_hole_area,
        max_cond_frames: args.max_cond_frames,
        memory_temporal_stride: 1,
        reverse_chunk: args.reverse_chunk.max(1),
        batch_objects: args.batch_objects.max(1),
        spool_dir: args.out.clone(),
    };
    let processed = plan.len();
    let start_frame = plan.processed[plan.start];
    let mut tracker = Tracker::new(&model, cfg, plan, set.clone(), geo.width, geo.height)?;
    let writer = JsonlWriter::create(&partial)?;
    let mut sink = JsonlSink {
        writer,
        prompts: &set,
        written: 0,
    };
    let mut frames = VideoFrames {
        video: &video,
        image_size: args.image_size as usize,
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(processed as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut last_log = Instant::now();
    let mut progress = |p: Progress| match p {
        Progress::Prompted { frame } => {
            if let Some(b) = &bar {
                b.set_message(format!("prompts: frame {frame}"));
            } else {
                tracing::info!("prompt pre-pass: frame {frame}");
            }
        }
        Progress::Tracked { frame, done, total } => {
            if let Some(b) = &bar {
                b.set_position(done as u64);
                b.set_message(format!("frame {frame}"));
            } else if last_log.elapsed().as_secs_f64() >= 10.0 || done == total {
                last_log = Instant::now();
                tracing::info!(
                    "tracked {done}/{total} processed frames (frame {frame}); peak RSS {} MiB",
                    peak_rss_bytes().unwrap_or(0) / (1 << 20)
                );
            }
        }
    };
    tracker.run(&mut frames, &mut sink, &mut progress)?;
    if let Some(b) = &bar {
        b.finish();
    }
    let written = sink.written;
    sink.writer.close()?;
    std::fs::rename(&partial, &out_path).map_err(io_err(&out_path))?;
    let peak = peak_rss_bytes();
    let wall = t0.elapsed().as_secs_f64();
    let manifest = serde_json::json!({
        "densam_version": env!("CARGO_PKG_VERSION"),
        "command": "annotate",
        "options": args,
        "video": {"path": args.video, "width": geo.width, "height": geo.height,
                  "frames": geo.num_frames},
        "model": {"size": model.config.size, "version": model.config.version,
                  "image_size": model.config.image_size},
        "device": format!("{device:?}"),
        "objects": set.objects.iter().map(|o| serde_json::json!({
            "id": o.id, "label": o.label, "prompted_frames": o.frames.keys().collect::<Vec<_>>()
        })).collect::<Vec<_>>(),
        "warnings": warnings,
        "start_frame": start_frame,
        "processed_frames": processed,
        "written_frames": written,
        "output": out_name,
        "peak_rss_bytes": peak,
        "wall_seconds": wall,
    });
    let man_path = args.out.join("run.json");
    let man_tmp = args.out.join(".run.json.partial");
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| AnnotateError::Invalid(e.to_string()))?;
    std::fs::write(&man_tmp, text + "\n").map_err(io_err(&man_tmp))?;
    std::fs::rename(&man_tmp, &man_path).map_err(io_err(&man_path))?;
    tracing::info!(
        "wrote {} ({written} frames, {processed} processed) in {wall:.1} s; peak RSS {} MiB",
        out_path.display(),
        peak.unwrap_or(0) / (1 << 20)
    );
    Ok(RunSummary {
        output: out_path,
        manifest: man_path,
        processed_frames: processed,
        written_frames: written,
        peak_rss_bytes: peak,
        wall_seconds: wall,
    })
}
