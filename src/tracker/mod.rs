//! The streaming predictor: SAM 2's `SAM2VideoPredictor` semantics (prompts added, then
//! `propagate_in_video` forward from the earliest prompt, then `reverse=True` from it, the last
//! result kept) computed in bounded memory, with output in frame order
//! (docs/sam2-inference.md §4.3 and §7).
//!
//! Glossary (the words the tracker's code and docs use):
//! - *frame* / [`FrameNo`]: an original frame of the video, numbered in presentation order
//!   from 0. A window run uses the same numbers: there are no window-local numbers.
//! - *processed frame* / [`ProcIdx`]: a frame SAM 2 sees. The processed frames of a run (every
//!   `track_stride`-th, every written and every prompted frame of its frame range) are SAM 2's
//!   video; a frame's *processed index* is its position among them. Memory selection, spans
//!   and resume points count processed indices.
//! - *written frame*: a processed frame whose result goes to the output (every
//!   `frame_interval`-th, at or after the range's `write_from`).
//! - *prompted* (*conditioning*) *frame*: a processed frame holding an object's prompts; the
//!   pre-pass stores its output and memory as that object's conditioning entry.
//! - *first prompt* `s`: the processed index of the earliest prompted frame, where both passes
//!   start.
//! - *first stretch*: the *forward head* `s ..= head_end` (head end: see
//!   [`schedule::head_end`], `s + 15` officially) and then the *reverse pass* from `s` down to
//!   0; both spool their results. *The rest*: the forward pass from `head_end + 1` to the end,
//!   written directly.
//! - *pass*: [`Pass::Head`], [`Pass::Reverse`] or [`Pass::Rest`] (the pre-pass runs the prompts
//!   before them).
//! - *span*: the processed indices an object is tracked on (all by default;
//!   [`Tracker::set_spans`]). An object is *active* on the frames of its span.
//! - *idle frame*: a processed frame no object is active on: neither decoded nor encoded (its
//!   result, if written, has no objects).
//! - *failed frame*: an active processed frame the frame source did not deliver (undecodable):
//!   nothing is written for it, and every object is re-seeded from its conditioning memories.
//! - *spool*: the file the first stretch's formatted results go to, replayed in ascending
//!   frame order once the reverse pass is done (the reverse pass's result wins on `s`).
//! - *stage* / [`Stage`]: where a run stands between two processed frames: a resume point.
//!
//! Layout: [`prompt`] (the prompt types a run takes), [`schedule`] (processed frames and the run
//! order, pure index logic), [`bank`] (per-object memory and the official read-set), `prepass`
//! (the prompts), `step` (one processed frame: image encoder, objects in batches, results),
//! `run` (the passes, failed and idle frames, saving and resuming), `state` (the saved run
//! state's bytes), `spool`, [`masks`] (low-res logits to written masks).
//!
//! The tracker knows nothing of file formats: frames come from a [`FrameSource`], results go to
//! a [`ResultSink`] that formats them (as soon as a frame is computed) and writes them in
//! ascending frame order, and one [`Observer`] sees progress, may save the state at every resume
//! point, may stop the run, and sees raw outputs.

pub mod bank;
pub mod masks;
pub mod policy;
mod prepass;
pub mod prompt;
mod run;
pub mod schedule;
mod spool;
mod state;
mod step;

use std::fmt;
use std::path::PathBuf;

use tch::{Device, Tensor};

use crate::model::sam2::{MemoryCapacity, Sam2Model};

use bank::{ObjectBank, SelectCfg};
pub use masks::MaskRuns;
pub use prompt::{FramePrompt, ObjectPrompts, PromptSet};
pub use schedule::{FrameRange, Pass, Schedule, Stage};

/// An original frame number: presentation order in the video, from 0.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct FrameNo(pub u64);

impl FrameNo {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FrameNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A processed index: a processed frame's position among the processed frames of the run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct ProcIdx(pub usize);

impl ProcIdx {
    pub fn get(self) -> usize {
        self.0
    }

    /// The next processed index.
    pub fn next(self) -> ProcIdx {
        ProcIdx(self.0 + 1)
    }

    /// The index as the memory bank keys it (signed: the read-set arithmetic goes below 0).
    pub fn key(self) -> i64 {
        self.0 as i64
    }
}

impl fmt::Display for ProcIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Errors of a tracking run.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("video: {0}")]
    Video(String),
    #[error("output: {0}")]
    Sink(String),
    /// Reading or writing the spool failed (I/O).
    #[error("spool file {path}: {msg}")]
    Spool { path: String, msg: String },
    /// The spool a saved state refers to is truncated or damaged (its checksum differs).
    #[error("spool file {path}: {msg}")]
    SpoolDamaged { path: String, msg: String },
    /// A saved state that cannot be resumed: damaged (its checksum differs), truncated, of
    /// another format, or of another schedule.
    #[error("saved tracker state: {0}")]
    State(String),
    /// A device-to-host copy of a result failed.
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Bank(#[from] bank::BankError),
    #[error("tracker: {0}")]
    Invalid(String),
    /// The [`Observer`] stopped the run (at `Stage`).
    #[error("run stopped at {0:?}")]
    Stopped(Stage),
}

/// What the [`Observer`] tells the run at a resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    /// Stopped by the observer at this stage ([`Stage::Start`]: before anything could be saved).
    Stopped(Stage),
}

/// Progress events.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Objects prompted on a prompted frame of the pre-pass so far (after each object, on frames
    /// with several).
    Prompting {
        frame: FrameNo,
        done: usize,
        total: usize,
    },
    /// A prompted frame was run in the pre-pass.
    Prompted { frame: FrameNo },
    /// Objects tracked on a processed frame so far (after each batch, on frames with several
    /// batches).
    Tracking {
        frame: FrameNo,
        done: usize,
        total: usize,
    },
    /// A processed frame was tracked (`done` of `total` processed frames, both passes).
    Tracked {
        frame: FrameNo,
        done: usize,
        total: usize,
    },
}

/// What watches a run: progress, resume points (where it may save the state and stop the run),
/// raw outputs, and stop requests inside a frame. Every method has a do-nothing default; `()`
/// observes nothing.
pub trait Observer {
    /// A progress event.
    fn progress(&mut self, _event: Progress) {}

    /// Called after every processed frame of every pass with the run's new stage (a resume
    /// point: [`Tracker::save_state`] may save it if [`Tracker::can_save`]), and after every
    /// prompted frame of the pre-pass with [`Stage::Start`] (nothing to save). Also called again
    /// at the current stage when [`Self::stop_requested`] stopped a frame half-way (the frame is
    /// undone first), so that the state can be saved before the run stops.
    fn at_resume_point(
        &mut self,
        _tracker: &Tracker<'_>,
        _stage: Stage,
    ) -> Result<Flow, TrackError> {
        Ok(Flow::Continue)
    }

    /// The raw outputs of a decoded processed frame (every pass; a frame of the head that the
    /// reverse pass tracks again is seen twice).
    fn raw_outputs(&mut self, _pass: Pass, _t: ProcIdx, _outputs: &[RawOutput]) {}

    /// Polled between the object batches of a processed frame and between the objects of a
    /// prompted frame: `true` stops the run there (a tracked frame is undone and the run stops
    /// at the stage before it, see [`Self::at_resume_point`]; the pre-pass stops at
    /// [`Stage::Start`]).
    fn stop_requested(&mut self) -> bool {
        false
    }
}

impl Observer for () {}

/// One decoded frame as model input.
#[derive(Debug)]
pub struct FrameInput {
    pub number: FrameNo,
    pub seconds: f64,
    /// `[3, S, S]` normalised f32 or `[S, S, 3]` uint8 model image (any device).
    pub image: Tensor,
}

/// Where frames come from: decodes the requested frames (ascending, possibly sparse: it seeks
/// as needed) and hands each to `f` in that order. A frame it cannot decode it may skip (a
/// failed frame).
pub trait FrameSource {
    fn for_each_frame(
        &mut self,
        numbers: &[FrameNo],
        f: &mut dyn FnMut(FrameInput) -> Result<(), TrackError>,
    ) -> Result<(), TrackError>;

    /// The time in seconds of each of the frames `numbers` (ascending): what a written frame
    /// that no object is tracked on needs. Sources that know it without decoding (a video's
    /// frame index) should say so; the default decodes the frames.
    fn frame_seconds(&mut self, numbers: &[FrameNo]) -> Result<Vec<f64>, TrackError> {
        let mut out = Vec::with_capacity(numbers.len());
        self.for_each_frame(numbers, &mut |fi| {
            out.push(fi.seconds);
            Ok(())
        })?;
        Ok(out)
    }
}

/// One object's result on one written frame.
#[derive(Debug, Clone)]
pub struct ObjectResult {
    /// Index into the prompt set's objects.
    pub object: usize,
    pub mask: MaskRuns,
    /// `sigmoid(object_score_logit)`.
    pub score: f64,
    /// Predicted IoU of the chosen mask.
    pub iou: f64,
}

/// The results of one written frame (every object active there, empty masks included).
#[derive(Debug, Clone)]
pub struct FrameResult {
    pub number: FrameNo,
    pub seconds: f64,
    pub objects: Vec<ObjectResult>,
}

/// Turns frame results into bytes and writes them in ascending frame order.
pub trait ResultSink {
    /// The bytes of a written frame's result; called as soon as it is computed (in any order).
    fn format(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError>;
    /// Called in ascending frame order with what `format` returned.
    fn write(&mut self, number: FrameNo, bytes: &[u8]) -> Result<(), TrackError>;
}

/// Raw per-object output of one processed frame (low-res logits after hole filling).
#[derive(Debug)]
pub struct RawOutput {
    /// Index into the prompt set's objects.
    pub object: usize,
    /// `[1, 1, r, r]`.
    pub low_res: Tensor,
    pub score_logit: f64,
    pub iou: f64,
    /// Which multimask output a tracked frame kept (`None` on conditioning frames).
    pub mask_index: Option<i64>,
    /// What a tracked frame read (`None` on conditioning frames).
    pub read: Option<ReadFrames>,
}

/// The read-set of one tracked object-frame, as processed-frame indices: the memories in
/// attention (concatenation) order and the pointers in order, conditioning frames included;
/// and the memory policy's score of the frame (`None` under `sam2`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFrames {
    pub memories: Vec<i64>,
    pub pointers: Vec<i64>,
    pub score: Option<f32>,
}

/// Tracker options (the model-independent ones; the model's own come from its config).
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Hole filling of the low-res logits (official 8; 0 = off, what CPU runs of the official
    /// package do since its CUDA extension is absent).
    pub fill_hole_area: i64,
    /// `max_cond_frames_in_attn` (-1 = all).
    pub max_cond_frames: i64,
    /// `memory_temporal_stride_for_eval` (1 officially).
    pub memory_temporal_stride: i64,
    /// Processed frames decoded per reverse-pass chunk.
    pub reverse_chunk: usize,
    /// Objects tracked in one batch (1 = one by one as the official predictor). Batched results
    /// equal one-by-one results within fp32 tolerance, not bit for bit (the masked attention
    /// sums in another order, and the bf16 rounding of stored memories lets 1-ulp differences
    /// compound): measured max |Δ low-res logit| 1.5e-4 over a 32-frame, 3-object run (tiny,
    /// 256), the order of the official predictor against itself at 1 vs 2 threads (2.2e-4).
    pub batch_objects: usize,
    /// Pad every tracked object's memory to fixed capacities (the conditioning frames the
    /// selection can yield + 6 recent memories; as many pointers + `min(frames, 16) − 1`) with
    /// masked zero slots, so that every steady-state step of a batch of B objects has the same
    /// tensor shapes: the prerequisite for replaying the step as a CUDA graph. Objects tracked
    /// alone then take the batched path too (batch of one). Off by default until measured on a
    /// GPU; on the CPU in fp32 the masks are the same (see `Sam2Model::assemble_memory_padded`).
    pub static_shapes: bool,
    /// Folder for a temporary spool (unique name, removed when the run ends).
    pub spool_dir: PathBuf,
    /// A fixed path for the spool instead (replaced when a run starts, kept when it ends: the
    /// caller removes it), so that a stage inside the first stretch can be saved and resumed.
    pub spool_file: Option<PathBuf>,
    /// Which stored frames each tracked frame reads (docs/sam2-inference.md §7.14).
    pub memory_policy: policy::MemoryPolicy,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            fill_hole_area: 8,
            max_cond_frames: -1,
            memory_temporal_stride: 1,
            reverse_chunk: 16,
            batch_objects: 16,
            static_shapes: false,
            spool_dir: std::env::temp_dir(),
            spool_file: None,
            memory_policy: policy::MemoryPolicy::Sam2,
        }
    }
}

/// What stays fixed for a tracker: the model, the options, the schedule (with the spans), the
/// prompts and the video size.
struct Setup<'a> {
    model: &'a Sam2Model,
    cfg: TrackerConfig,
    schedule: Schedule,
    prompts: PromptSet,
    video_w: u32,
    video_h: u32,
    select: SelectCfg,
    /// The memory capacity of every tracked object with `static_shapes`.
    capacity: Option<MemoryCapacity>,
}

/// What a run changes.
#[derive(Default)]
struct RunState {
    /// Per object.
    banks: Vec<ObjectBank>,
    /// The head's banks, kept aside during the reverse pass.
    head_banks: Option<Vec<ObjectBank>>,
    stage: Stage,
    /// The first stretch's spool, while it is open.
    spool: Option<spool::Spool>,
    /// The memory encoder's sine PE (the same for every frame; from the pre-pass).
    mem_pos: Option<Tensor>,
    /// Processed frames tracked so far (both passes; the reverse pass's `s` not counted twice).
    done: usize,
    /// Frames run through the image encoder (pre-pass included).
    encoded: usize,
}

/// The streaming predictor over one video (or a frame range of it).
pub struct Tracker<'a> {
    setup: Setup<'a>,
    run: RunState,
}

impl<'a> Tracker<'a> {
    /// `prompts` validated against the video; `schedule` built from its prompted frames.
    pub fn new(
        model: &'a Sam2Model,
        cfg: TrackerConfig,
        mut schedule: Schedule,
        prompts: PromptSet,
        video_w: u32,
        video_h: u32,
    ) -> Result<Self, TrackError> {
        for o in &prompts.objects {
            for f in o.frames.keys() {
                if schedule.index_of(*f).is_none() {
                    return Err(TrackError::Invalid(format!(
                        "object `{}`: prompted frame {f} is not a processed frame of the schedule",
                        o.id
                    )));
                }
            }
        }
        let select = SelectCfg {
            num_frames: schedule.len() as i64,
            max_cond: cfg.max_cond_frames,
            stride: cfg.memory_temporal_stride,
            signed_ptr_pos: model.config.is_v2_1(),
            policy: cfg.memory_policy,
        };
        let capacity = cfg
            .static_shapes
            .then(|| static_capacity(&prompts, &select));
        let n = prompts.objects.len();
        schedule.set_full_spans(n);
        Ok(Tracker {
            setup: Setup {
                model,
                cfg,
                schedule,
                prompts,
                video_w,
                video_h,
                select,
                capacity,
            },
            run: RunState {
                banks: (0..n).map(|_| ObjectBank::default()).collect(),
                ..RunState::default()
            },
        })
    }

    /// Limits each object (in prompt-set order) to the processed frames among frames
    /// `first ..= last` (`--span prompts`). Outside its span an object is inactive: no step,
    /// nothing stored, absent from the results; on the first frame of its span it tracks with
    /// what its bank holds (its conditioning memories, possibly in the future, as SAM 2 does
    /// before an object's first prompt), and its bank is emptied after its span in the rest.
    /// Processed frames where no object is active are idle. Each span must hold its object's
    /// prompted frames.
    pub fn set_spans(&mut self, spans: &[(FrameNo, FrameNo)]) -> Result<(), TrackError> {
        let prompts = &self.setup.prompts;
        let schedule = &self.setup.schedule;
        if spans.len() != prompts.objects.len() {
            return Err(TrackError::Invalid(format!(
                "{} spans for {} objects",
                spans.len(),
                prompts.objects.len()
            )));
        }
        let mut out = Vec::with_capacity(spans.len());
        for (obj, &(first, last)) in prompts.objects.iter().zip(spans) {
            let range = schedule.index_range(first, last).filter(|&(lo, hi)| {
                obj.frames
                    .keys()
                    .all(|f| schedule.index_of(*f).is_some_and(|i| lo <= i && i <= hi))
            });
            let Some(range) = range else {
                return Err(TrackError::Invalid(format!(
                    "object `{}`: span {first}..={last} does not hold its prompted frames",
                    obj.id
                )));
            };
            out.push(range);
        }
        self.setup.schedule.set_spans(out);
        Ok(())
    }

    /// The schedule (processed frames, passes, spans).
    pub fn schedule(&self) -> &Schedule {
        &self.setup.schedule
    }

    /// Where the run stands.
    pub fn stage(&self) -> Stage {
        self.run.stage
    }

    /// Whether [`Self::save_state`] can save the current stage.
    pub fn can_save(&self) -> bool {
        match self.run.stage {
            Stage::Start => false,
            Stage::Rest(_) => true,
            Stage::Head(_) | Stage::Reverse(_) => self.setup.cfg.spool_file.is_some(),
        }
    }

    /// The per-object memory banks.
    pub fn banks(&self) -> &[ObjectBank] {
        &self.run.banks
    }

    /// The processed frames some object is active on (those the passes decode and encode).
    pub fn active_frames(&self) -> usize {
        self.setup.schedule.active_frames()
    }

    /// Frames run through the image encoder so far (pre-pass included).
    pub fn encoded_frames(&self) -> usize {
        self.run.encoded
    }

    fn device(&self) -> Device {
        self.setup.model.device
    }
}

fn stop_if(flow: Flow, at: Stage) -> Result<(), TrackError> {
    match flow {
        Flow::Continue => Ok(()),
        Flow::Stop => Err(TrackError::Stopped(at)),
    }
}

fn missing_frame(n: FrameNo) -> TrackError {
    TrackError::Video(format!("the frame source did not deliver frame {n}"))
}

fn bad_frame(n: FrameNo) -> TrackError {
    TrackError::Video(format!(
        "frame source returned frame {n}, which was not asked for"
    ))
}

/// The memory capacity of `--static-shapes`: the most conditioning frames of any object
/// ([`PromptSet::most_conditioning_frames`]), so that every batch has the same shapes.
fn static_capacity(prompts: &PromptSet, select: &SelectCfg) -> MemoryCapacity {
    let cond = prompts.most_conditioning_frames(select.max_cond);
    MemoryCapacity::new(cond as i64, select.max_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capacity follows the object with the most prompted frames, capped by `max_cond`,
    /// and `max_ptr`: 1 conditioning frame + 6 recent memories and 1 + 15 pointers in the
    /// common case of one prompt per object on a long video.
    #[test]
    fn static_capacity_follows_prompts_and_selection() {
        let object = |frames: &[u64]| ObjectPrompts {
            id: "o".into(),
            label: None,
            frames: frames
                .iter()
                .map(|&f| {
                    let p = FramePrompt {
                        mask: None,
                        points: vec![[1.0, 1.0]],
                        labels: vec![1],
                    };
                    (FrameNo(f), p)
                })
                .collect(),
        };
        let set = PromptSet {
            objects: vec![object(&[0]), object(&[3, 9, 20]), object(&[5])],
        };
        let select = |max_cond, num_frames| SelectCfg {
            num_frames,
            max_cond,
            stride: 1,
            signed_ptr_pos: true,
            policy: policy::MemoryPolicy::Sam2,
        };
        let cap = |s| {
            let c = static_capacity(&set, &s);
            (c.memory_frames, c.pointers)
        };
        assert_eq!(cap(select(-1, 1000)), (3 + 6, 3 + 15));
        assert_eq!(cap(select(2, 1000)), (2 + 6, 2 + 15));
        assert_eq!(cap(select(-1, 10)), (3 + 6, 3 + 9));
        let one = PromptSet {
            objects: vec![object(&[4])],
        };
        let c = static_capacity(&one, &select(-1, 1000));
        assert_eq!((c.memory_frames, c.pointers), (7, 16));
    }
}
