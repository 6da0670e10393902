//! The job's frame source (with the `--video_scale_factor` downscale of the seed script,
//! docs/ARCHITECTURE.md §5, before SAM 2's own resize, and decode timing) and its result sink:
//! one JSONL line per written frame carrying `video_id` (and, for HD-EPIC objects, `assoc_id` /
//! `assoc_name`), appended to the partial output and flushed line by line, with the byte offset
//! kept for checkpoints.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::JobError;
use super::report::append_line;
use crate::output::jsonl::{OutputError, open_truncated};
use crate::tracker::{
    FrameInput, FrameNo, FrameResult, FrameSource, PromptSet, ResultSink, TrackError,
};
use crate::video::{
    DEFAULT_QUEUE_FRAMES, ErrorPolicy, ModelRgb, Selection, StreamOptions, VideoSource,
    model_rgb_tensor,
};

/// Frames of a video as model input, optionally downscaled by `scale` first.
pub struct JobFrames<'a> {
    pub video: &'a VideoSource,
    pub image_size: usize,
    pub scale: f64,
    /// Time spent decoding and preparing frames.
    pub decode_time: Duration,
    /// Frames decoded and prepared as model input.
    pub decoded: usize,
    /// Skip frames that cannot be decoded (recorded in `failed`; the tracker re-seeds after
    /// them) instead of failing.
    pub lenient: bool,
    /// The frames skipped so far (each once).
    pub failed: Rc<RefCell<Vec<super::state::FailedFrame>>>,
}

impl<'a> JobFrames<'a> {
    /// A strict source (an undecodable frame is an error) with nothing counted yet.
    pub fn new(video: &'a VideoSource, image_size: usize, scale: f64) -> Self {
        JobFrames {
            video,
            image_size,
            scale,
            decode_time: Duration::ZERO,
            decoded: 0,
            lenient: false,
            failed: Rc::default(),
        }
    }
}

impl FrameSource for JobFrames<'_> {
    fn for_each_frame(
        &mut self,
        numbers: &[FrameNo],
        f: &mut dyn FnMut(FrameInput) -> Result<(), TrackError>,
    ) -> Result<(), TrackError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let list: Vec<usize> = numbers.iter().map(|n| n.get() as usize).collect();
        // The resizes (the costly part after decoding) run on a few preparing threads beside
        // the decoder; the model image travels as uint8 and is normalised on the model's device.
        let pre_resize = (self.scale > 1.0).then(|| {
            let w = ((self.video.width() as f64 / self.scale).round() as usize).max(1);
            let h = ((self.video.height() as f64 / self.scale).round() as usize).max(1);
            (w, h)
        });
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let model_rgb = ModelRgb {
            size: self.image_size,
            pre_resize,
        };
        let options = StreamOptions {
            model_rgb: Some(model_rgb),
            prepare_threads: (threads / 2).clamp(1, 4),
            queue_frames: DEFAULT_QUEUE_FRAMES.max(threads.min(8)),
            on_error: if self.lenient {
                ErrorPolicy::Skip
            } else {
                ErrorPolicy::Stop
            },
            ..StreamOptions::default()
        };
        let mut stream = self
            .video
            .frames(Selection::List(list), options)
            .map_err(|e| TrackError::Video(e.to_string()))?;
        loop {
            let t = Instant::now();
            let Some(fr) = stream.next() else { break };
            let fr = match fr {
                Ok(fr) => fr,
                Err(e) => match e.frame() {
                    Some(n) if self.lenient && e.is_frame_error() => {
                        let mut failed = self.failed.borrow_mut();
                        if !failed.iter().any(|f| f.frame == n as u64) {
                            tracing::warn!(
                                "frame {n} cannot be decoded ({e}): skipped; the objects are \
                                 re-seeded from their prompts after it"
                            );
                            failed.push(super::state::FailedFrame {
                                frame: n as u64,
                                error: e.to_string(),
                            });
                        }
                        continue;
                    }
                    _ => return Err(TrackError::Video(e.to_string())),
                },
            };
            let image = match &fr.model_rgb {
                Some(m) => model_rgb_tensor(m),
                None => model_rgb_tensor(&model_rgb.apply(&fr.rgb)),
            };
            self.decode_time += t.elapsed();
            self.decoded += 1;
            f(FrameInput {
                number: FrameNo(fr.info.number as u64),
                seconds: fr.info.seconds,
                image,
            })?;
        }
        Ok(())
    }

    fn frame_seconds(&mut self, numbers: &[FrameNo]) -> Result<Vec<f64>, TrackError> {
        numbers
            .iter()
            .map(|&n| {
                self.video
                    .frame_info(n.get() as usize)
                    .map(|i| i.seconds)
                    .map_err(|e| TrackError::Video(e.to_string()))
            })
            .collect()
    }
}

/// Where the partial output stands (shared with the checkpoint hook).
#[derive(Debug, Default)]
pub struct Position {
    pub offset: Cell<u64>,
    pub written: Cell<usize>,
}

/// Writes result lines to the partial output.
pub struct JobSink<'a> {
    file: File,
    path: PathBuf,
    pub prompts: &'a PromptSet,
    pub video_id: String,
    pub hd_epic: bool,
    pub pos: Rc<Position>,
    pub write_time: Duration,
    /// The counts string being written (kept between lines).
    scratch: Vec<u8>,
    /// The length of the last line (the next one's first capacity).
    last_len: usize,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    video_id: &'a str,
    #[serde(flatten)]
    frame: crate::output::jsonl::FrameRecord,
}

/// The bytes of one output line (with its newline).
pub fn line_bytes(
    video_id: &str,
    frame: crate::output::jsonl::FrameRecord,
) -> Result<Vec<u8>, JobError> {
    let mut bytes = serde_json::to_vec(&Line { video_id, frame })
        .map_err(|e| JobError::Internal(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl<'a> JobSink<'a> {
    /// Opens `path`, cut to `offset` bytes (0: a new output).
    pub fn open(
        path: &Path,
        offset: u64,
        written: usize,
        prompts: &'a PromptSet,
        video_id: &str,
        hd_epic: bool,
    ) -> Result<Self, JobError> {
        let file = open_truncated(path, offset, true).map_err(|e| match e {
            OutputError::Truncated { len, .. } => JobError::Checkpoint(format!(
                "{}: the checkpoint needs {offset} bytes of output, the file has {len}; \
                 run with --restart",
                path.display()
            )),
            e => JobError::Output(e.to_string()),
        })?;
        let pos = Rc::new(Position::default());
        pos.offset.set(offset);
        pos.written.set(written);
        Ok(JobSink {
            file,
            path: path.to_path_buf(),
            prompts,
            video_id: video_id.to_string(),
            hd_epic,
            pos,
            write_time: Duration::ZERO,
            scratch: Vec::new(),
            last_len: 0,
        })
    }

    /// Flushes the file to disk.
    pub fn sync(&mut self) -> Result<(), JobError> {
        self.file
            .sync_data()
            .map_err(|e| JobError::Output(format!("{}: {e}", self.path.display())))
    }

    /// A handle for syncing from the checkpoint hook.
    pub fn file_handle(&self) -> Result<File, JobError> {
        self.file
            .try_clone()
            .map_err(|e| JobError::Output(format!("{}: {e}", self.path.display())))
    }
}

impl ResultSink for JobSink<'_> {
    fn format(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError> {
        let t = Instant::now();
        // Straight into the line (the bytes `line_bytes` gives for the frame's serde record): at 8
        // speckled 1408² masks a line is ~440 KB, and the serde record took ~2 ms of the
        // tracking thread per frame (`cargo run --release --example bench_sink_format`).
        let mut bytes = Vec::with_capacity(self.last_len + self.last_len / 8 + 256);
        append_line(
            &mut bytes,
            &mut self.scratch,
            &self.video_id,
            &r,
            self.prompts,
            self.hd_epic,
        )?;
        self.last_len = bytes.len();
        self.write_time += t.elapsed();
        Ok(bytes)
    }

    fn write(&mut self, _number: FrameNo, bytes: &[u8]) -> Result<(), TrackError> {
        let t = Instant::now();
        self.file
            .write_all(bytes)
            .map_err(|e| TrackError::Sink(format!("{}: {e}", self.path.display())))?;
        self.pos
            .offset
            .set(self.pos.offset.get() + bytes.len() as u64);
        self.pos.written.set(self.pos.written.get() + 1);
        self.write_time += t.elapsed();
        Ok(())
    }
}
