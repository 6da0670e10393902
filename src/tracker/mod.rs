//! The streaming predictor: SAM 2's `SAM2VideoPredictor` semantics (prompts added, then
//! `propagate_in_video` forward from the earliest prompt `s`, then `reverse=True` from `s`, the
//! last result kept) computed in bounded memory with output in frame order.
//!
//! Run order (see DESIGN.md): a prompt pre-pass (each prompted frame decoded, the prompts run as
//! `add_new_points_or_box` / `add_new_mask`, hole filling, the binarised conditioning memory as
//! the official preflight encodes it); forward over `s ..= head_end` (`s + 15` officially), whose
//! results the reverse pass reads; the reverse pass from `s` down to 0, decoded in chunks from the
//! end backwards; the encoded outputs of both spooled to a file and replayed in ascending order;
//! then forward from `head_end + 1` to the end. Every object is tracked on every processed frame
//! of both passes, or only on those of its span ([`Tracker::set_spans`]); a processed frame with
//! no object active is neither decoded nor encoded. The per-object [`bank::ObjectBank`] holds
//! only what later frames can read. After every tracked frame the run can be saved and resumed
//! exactly ([`Stage`], [`Tracker::save_state`]); frames the source skips are failed frames, after
//! which the objects are re-seeded from their conditioning memories.
//!
//! The tracker knows nothing of file formats: frames come from a [`FrameSource`], results go to
//! a [`ResultSink`] that turns them into bytes (encoded as soon as a frame is computed) and
//! writes them in ascending frame order.

pub mod bank;
pub mod masks;
pub mod plan;
mod spool;

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use crate::model::fill_holes::fill_holes;
use crate::model::sam2::{
    BackboneOut, MemoryEntry, ObjectMemory, PointInputs, PointerEntry, Sam2Model, StepOutput,
};
use crate::prompts::{FramePrompt, PromptSet};

use bank::{CondEntry, ObjectBank, SelectCfg, TrackedEntry};
pub use masks::MaskRuns;
pub use plan::Plan;

/// Errors of a tracking run.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("video: {0}")]
    Video(String),
    #[error("output: {0}")]
    Sink(String),
    #[error("spool file {path}: {msg}")]
    Spool { path: String, msg: String },
    #[error(transparent)]
    Bank(#[from] bank::BankError),
    #[error("tracker: {0}")]
    Invalid(String),
    /// A [`RunHook`] asked the run to stop (at `Stage`).
    #[error("run stopped at {0:?}")]
    Stopped(Stage),
}

/// What a [`RunHook`] tells the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How a resumable run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    /// Stopped by the hook at this stage ([`Stage::Start`]: before anything could be saved).
    Stopped(Stage),
}

/// Where a run stands, as far as resuming goes: the point after the last frame tracked. Every
/// stage but `Start` can be saved ([`Tracker::save_state`]) and resumed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// The prompt pre-pass (recomputed by every run): nothing to save.
    Start,
    /// Forward head: the next processed index to track; the results so far are in the spool.
    Head(usize),
    /// Reverse pass: the lowest processed index tracked so far (the pass goes on below it); the
    /// head's banks are kept aside, the results so far are in the spool.
    Reverse(usize),
    /// Final forward stretch: the next processed index; the sink has every written frame before
    /// it.
    Rest(usize),
}

/// Called after every tracked frame of every pass, and after every prompted frame of the
/// pre-pass, with the run's [`Stage`]: the hook may save the state ([`Tracker::save_state`])
/// and may stop the run.
pub type RunHook<'h> = dyn FnMut(&Tracker<'_>, Stage) -> Result<Flow, TrackError> + 'h;

/// One decoded frame as model input.
#[derive(Debug)]
pub struct FrameInput {
    /// Original frame number (presentation order, from 0).
    pub number: u64,
    pub seconds: f64,
    /// `[3, S, S]` normalised f32 (any device).
    pub image: Tensor,
}

/// Where frames come from: decodes the requested original frame numbers (ascending, possibly
/// sparse: it seeks as needed) and hands each to `f` in that order.
pub trait FrameSource {
    fn for_each_frame(
        &mut self,
        numbers: &[u64],
        f: &mut dyn FnMut(FrameInput) -> Result<(), TrackError>,
    ) -> Result<(), TrackError>;

    /// The time in seconds of each of the original frames `numbers` (ascending): what a written
    /// frame that no object is tracked on needs. Sources that know it without decoding (a
    /// video's frame index) should say so; the default decodes the frames.
    fn frame_seconds(&mut self, numbers: &[u64]) -> Result<Vec<f64>, TrackError> {
        let mut out = Vec::with_capacity(numbers.len());
        self.for_each_frame(numbers, &mut |fi| {
            out.push(fi.seconds);
            Ok(())
        })?;
        Ok(out)
    }
}

/// A processed frame as a pass meets it: decoded where some object is active, else idle (not
/// decoded, no image encoder; `seconds` is NaN unless the frame is written).
enum Slot {
    Decoded(FrameInput),
    Idle { number: u64, seconds: f64 },
}

impl Slot {
    fn number(&self) -> u64 {
        match self {
            Slot::Decoded(fi) => fi.number,
            Slot::Idle { number, .. } => *number,
        }
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
    pub number: u64,
    pub seconds: f64,
    pub objects: Vec<ObjectResult>,
}

/// Turns frame results into bytes and writes them in ascending frame order.
pub trait ResultSink {
    /// Called as soon as a written frame is computed (in any order).
    fn encode(&mut self, r: FrameResult) -> Result<Vec<u8>, TrackError>;
    /// Called in ascending frame order with what `encode` returned.
    fn write(&mut self, number: u64, bytes: &[u8]) -> Result<(), TrackError>;
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
    /// Folder for the reverse-pass spool file.
    pub spool_dir: PathBuf,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            fill_hole_area: 8,
            max_cond_frames: -1,
            memory_temporal_stride: 1,
            reverse_chunk: 16,
            batch_objects: 16,
            spool_dir: std::env::temp_dir(),
        }
    }
}

/// Progress events.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// A prompted frame was run in the pre-pass.
    Prompted { frame: u64 },
    /// A processed frame was tracked (`done` of `total` processed frames, both passes).
    Tracked {
        frame: u64,
        done: usize,
        total: usize,
    },
}

/// The streaming predictor over one video.
pub struct Tracker<'a> {
    model: &'a Sam2Model,
    cfg: TrackerConfig,
    plan: Plan,
    prompts: PromptSet,
    video_w: u32,
    video_h: u32,
    select: SelectCfg,
    /// Per object.
    banks: Vec<ObjectBank>,
    /// Per object: the processed indices (inclusive) it is tracked on (all by default).
    spans: Vec<(usize, usize)>,
    /// Frames run through the image encoder (pre-pass included).
    encoded: usize,
    /// The memory encoder's sine PE (the same for every frame).
    mem_pos: Option<Tensor>,
    done: usize,
    total: usize,
    observer: Option<Box<RawObserver<'a>>>,
    /// Resume bookkeeping of the run order (see [`Stage`]).
    stage: Stage,
    /// The head's banks, kept aside during the reverse pass.
    forward_banks: Option<Vec<ObjectBank>>,
    /// The first stretch's spool (head and reverse results), while it is open.
    spool: Option<spool::Spool>,
    /// A fixed path for the spool, so that a first-stretch state can be resumed.
    spool_file: Option<PathBuf>,
}

/// Sees the raw outputs of every processed frame of every pass (processed index, outputs).
pub type RawObserver<'a> = dyn FnMut(usize, &[RawOutput]) + 'a;

impl<'a> Tracker<'a> {
    /// `prompts` validated against the video; `plan` built from its prompted frames.
    pub fn new(
        model: &'a Sam2Model,
        cfg: TrackerConfig,
        plan: Plan,
        prompts: PromptSet,
        video_w: u32,
        video_h: u32,
    ) -> Result<Self, TrackError> {
        for o in &prompts.objects {
            for f in o.frames.keys() {
                if plan.index_of(*f).is_none() {
                    return Err(TrackError::Invalid(format!(
                        "object `{}`: prompted frame {f} is not a processed frame of the plan",
                        o.id
                    )));
                }
            }
        }
        let select = SelectCfg {
            num_frames: plan.len() as i64,
            max_cond: cfg.max_cond_frames,
            stride: cfg.memory_temporal_stride,
            signed_ptr_pos: model.config.is_v2_1(),
        };
        let n = prompts.objects.len();
        let total = plan.len();
        Ok(Tracker {
            model,
            cfg,
            plan,
            prompts,
            video_w,
            video_h,
            select,
            banks: (0..n).map(|_| ObjectBank::default()).collect(),
            spans: vec![(0, total.saturating_sub(1)); n],
            encoded: 0,
            mem_pos: None,
            done: 0,
            total,
            observer: None,
            stage: Stage::Start,
            forward_banks: None,
            spool: None,
            spool_file: None,
        })
    }

    /// Installs an observer of the raw per-frame outputs (for parity checks).
    pub fn set_observer(&mut self, f: Box<RawObserver<'a>>) {
        self.observer = Some(f);
    }

    /// Keeps the first stretch's spool at `path` (replaced when a run starts, kept when it ends:
    /// the caller removes it) instead of a temporary file, so that [`Self::save_state`] works
    /// inside the first stretch too.
    pub fn set_spool_file(&mut self, path: PathBuf) {
        self.spool_file = Some(path);
    }

    /// Where the run stands.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether [`Self::save_state`] can save the current stage.
    pub fn can_save(&self) -> bool {
        match self.stage {
            Stage::Start => false,
            Stage::Rest(_) => true,
            Stage::Head(_) | Stage::Reverse(_) => self.spool_file.is_some(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn banks(&self) -> &[ObjectBank] {
        &self.banks
    }

    /// Limits each object (in prompt-set order) to the processed frames among original frames
    /// `first ..= last` (`--span prompts`). Outside its span an object is inactive: no step,
    /// nothing stored, absent from the results; on the first frame of its span it tracks with
    /// what its bank holds (its conditioning memories, possibly in the future, as SAM 2 does
    /// before an object's first prompt), and its bank is emptied after its span in the final
    /// forward pass. Processed frames where no object is active are not decoded or encoded.
    /// Each span must hold its object's prompted frames.
    pub fn set_spans(&mut self, spans: &[(u64, u64)]) -> Result<(), TrackError> {
        if spans.len() != self.prompts.objects.len() {
            return Err(TrackError::Invalid(format!(
                "{} spans for {} objects",
                spans.len(),
                self.prompts.objects.len()
            )));
        }
        let mut out = Vec::with_capacity(spans.len());
        for (obj, &(first, last)) in self.prompts.objects.iter().zip(spans) {
            let range = self.plan.index_range(first, last).filter(|&(lo, hi)| {
                obj.frames
                    .keys()
                    .all(|f| self.plan.index_of(*f).is_some_and(|i| lo <= i && i <= hi))
            });
            let Some(range) = range else {
                return Err(TrackError::Invalid(format!(
                    "object `{}`: span {first}..={last} does not hold its prompted frames",
                    obj.id
                )));
            };
            out.push(range);
        }
        self.spans = out;
        Ok(())
    }

    /// Per object: the processed indices (inclusive) it is tracked on.
    pub fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    fn active(&self, o: usize, t: usize) -> bool {
        self.spans
            .get(o)
            .is_some_and(|&(lo, hi)| lo <= t && t <= hi)
    }

    fn any_active(&self, t: usize) -> bool {
        self.spans.iter().any(|&(lo, hi)| lo <= t && t <= hi)
    }

    /// The processed frames some object is active on (those the passes decode and encode).
    pub fn active_frames(&self) -> usize {
        (0..self.plan.len()).filter(|&t| self.any_active(t)).count()
    }

    /// Frames run through the image encoder so far (pre-pass included).
    pub fn encoded_frames(&self) -> usize {
        self.encoded
    }

    fn device(&self) -> Device {
        self.model.device
    }

    fn encode(&mut self, image: &Tensor) -> BackboneOut {
        let _prof = crate::profile::scope(crate::profile::Section::ImageEncoder);
        self.encoded += 1;
        let dev = self.device();
        if image.kind() == Kind::Uint8 {
            // An [S, S, 3] uint8 model image: 3 bytes per pixel to the device (pinned, async),
            // normalised there (bit-identical to the host normalisation).
            let x = if dev.is_cuda() && image.device() == Device::Cpu {
                match crate::model::cuda::pinned(image) {
                    Some(p) => p.to_device_(dev, Kind::Uint8, true, false),
                    None => image.to_device(dev),
                }
            } else {
                image.to_device(dev)
            };
            return self
                .model
                .encode_image(&crate::video::normalize_tensor(&x).unsqueeze(0));
        }
        let x = if dev.is_cuda() && image.device() == Device::Cpu {
            // Pinned host memory (libtorch's caching host allocator reuses its blocks, guarded by
            // CUDA events, so no per-frame pinning) and an asynchronous copy on the current
            // stream, ordered before the encoder's kernels.
            let x = image.to_kind(Kind::Float);
            match crate::model::cuda::pinned(&x) {
                Some(p) => p.to_device_(dev, Kind::Float, true, false),
                None => x.to_device(dev),
            }
        } else {
            image.to_device(dev).to_kind(Kind::Float)
        };
        let x = if x.dim() == 3 { x.unsqueeze(0) } else { x };
        self.model.encode_image(&x)
    }

    /// The whole run: pre-pass, forward head, reverse, forward rest.
    pub fn run(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), TrackError> {
        self.run_resumable(frames, sink, progress, None, &mut |_, _| Ok(Flow::Continue))
            .map(|_| ())
    }

    /// [`Self::run`] with a [`RunHook`] (checkpoints, stopping). `resume`: a state saved by
    /// [`Self::save_state`] from a run of the same plan, prompts and model, whose sink has
    /// everything written before that state (nothing, inside the first stretch); the pre-pass
    /// runs again (it provides the memory PE), then the run goes on from the saved stage.
    ///
    /// Frames a source does not deliver (it skipped them as undecodable) are failed frames:
    /// nothing is written for them, and every object's tracked memories are dropped, so the
    /// next frame is tracked from the conditioning memories alone (re-seeded from the prompts).
    /// A prompted frame the source does not deliver is an error.
    pub fn run_resumable(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        resume: Option<&[u8]>,
        hook: &mut RunHook<'_>,
    ) -> Result<RunEnd, TrackError> {
        let _g = tch::no_grad_guard();
        let res = self.run_inner(frames, sink, progress, resume, hook);
        self.spool = None;
        self.forward_banks = None;
        match res {
            Ok(()) => Ok(RunEnd::Finished),
            Err(TrackError::Stopped(at)) => Ok(RunEnd::Stopped(at)),
            Err(e) => Err(e),
        }
    }

    fn run_inner(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        resume: Option<&[u8]>,
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        let head_end = self.plan.head_end;
        let s = self.plan.start;
        self.stage = Stage::Start;
        self.done = 0;
        self.prepass_inner(frames, progress, Some(&mut *hook))?;
        let stage = match resume {
            Some(bytes) => self.restore_state(bytes)?,
            None => {
                self.spool = Some(self.new_spool()?);
                Stage::Head(s)
            }
        };
        self.stage = stage;
        let from = match stage {
            Stage::Start => return Err(TrackError::Invalid("cannot resume at the start".into())),
            Stage::Rest(next) => next,
            Stage::Head(_) | Stage::Reverse(_) => {
                if let Stage::Head(next) = stage {
                    // Forward head s ..= head_end: results spooled, banks unpruned.
                    self.forward(frames, sink, progress, next, head_end + 1, true, hook)?;
                    if s > 0 {
                        self.forward_banks = Some(self.banks.clone());
                    }
                }
                if s > 0 {
                    // Reverse s ..= 0 on a copy of the banks.
                    let below = match stage {
                        Stage::Reverse(lowest) => lowest,
                        _ => s + 1,
                    };
                    self.reverse(frames, sink, progress, below, hook)?;
                    self.banks = self.forward_banks.take().ok_or_else(|| {
                        TrackError::Invalid("reverse pass without the head's banks".into())
                    })?;
                }
                let mut spool = self
                    .spool
                    .take()
                    .ok_or_else(|| TrackError::Invalid("first stretch without a spool".into()))?;
                // Ascending; on frame s the reverse pass's result (recorded later) wins.
                spool.replay_ascending(&mut |n, b| sink.write(n, b))?;
                drop(spool);
                for b in self.banks.iter_mut() {
                    b.prune(head_end as i64, false, &self.select);
                }
                self.drop_finished(head_end);
                self.stage = Stage::Rest(head_end + 1);
                stop_if(hook(self, self.stage)?, self.stage)?;
                head_end + 1
            }
        };
        self.forward(frames, sink, progress, from, self.plan.len(), false, hook)
    }

    fn new_spool(&self) -> Result<spool::Spool, TrackError> {
        match &self.spool_file {
            Some(p) => spool::Spool::create_at(p),
            None => spool::Spool::create(&self.cfg.spool_dir),
        }
    }

    /// A frame the source did not deliver: every object's tracked memories are dropped (the
    /// conditioning ones stay), so tracking starts again from the prompts after it.
    fn frame_failed(&mut self, counted: bool) {
        for b in self.banks.iter_mut() {
            b.retain_tracked(|_| false);
        }
        if counted {
            self.done += 1;
        }
    }

    /// Forward over processed indices `from..to`: the head (results to the spool, banks
    /// unpruned) or the final stretch (results to the sink, banks pruned).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        from: usize,
        to: usize,
        head: bool,
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        if from >= to {
            return Ok(());
        }
        // Only the frames some object is active on are decoded; the others are idle slots.
        let numbers: Vec<u64> = (from..to)
            .filter(|&t| self.any_active(t))
            .map(|t| self.plan.processed[t])
            .collect();
        let idle = self.idle_seconds(frames, from, to - 1)?;
        let mut k = 0usize;
        let mut next = from;
        {
            let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
                let t = self
                    .plan
                    .index_of(fi.number)
                    .filter(|&t| t >= next && t < to)
                    .ok_or_else(|| bad_frame(fi.number))?;
                while next < t {
                    self.forward_gap(next, &idle, &mut k, head, sink, progress, hook)?;
                    next += 1;
                }
                self.forward_one(t, Slot::Decoded(fi), head, sink, progress, hook)?;
                next = t + 1;
                Ok(())
            };
            frames.for_each_frame(&numbers, &mut cb)?;
        }
        while next < to {
            self.forward_gap(next, &idle, &mut k, head, sink, progress, hook)?;
            next += 1;
        }
        Ok(())
    }

    /// A processed index of a forward pass that the source did not deliver: an idle frame (no
    /// object active) is processed as such; an active one was skipped by the source (a failed
    /// frame).
    #[allow(clippy::too_many_arguments)]
    fn forward_gap(
        &mut self,
        t: usize,
        idle: &[f64],
        k: &mut usize,
        head: bool,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        if self.any_active(t) {
            self.frame_failed(true);
            return Ok(());
        }
        // The idle frames' times come in ascending order.
        let slot = self.idle_slot(t, || {
            let s = idle.get(*k).copied();
            *k += 1;
            s
        })?;
        self.forward_one(t, slot, head, sink, progress, hook)
    }

    /// One processed frame of a forward pass: tracked, its result to the spool (head) or the
    /// sink, progress, then the hook at the new stage.
    fn forward_one(
        &mut self,
        t: usize,
        slot: Slot,
        head: bool,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        let number = slot.number();
        if let Some(bytes) = self.process(t, slot, false, !head, sink)? {
            match (head, self.spool.as_mut()) {
                (true, Some(sp)) => sp.push(number, &bytes)?,
                (true, None) => {
                    return Err(TrackError::Invalid("head without a spool".into()));
                }
                (false, _) => sink.write(number, &bytes)?,
            }
        }
        self.done += 1;
        progress(Progress::Tracked {
            frame: number,
            done: self.done,
            total: self.total,
        });
        self.stage = if head {
            Stage::Head(t + 1)
        } else {
            Stage::Rest(t + 1)
        };
        stop_if(hook(self, self.stage)?, self.stage)
    }

    /// The times of the written processed frames of `from ..= to` that no object is active on
    /// (ascending), from the frame source without decoding where it can.
    fn idle_seconds(
        &self,
        frames: &mut dyn FrameSource,
        from: usize,
        to: usize,
    ) -> Result<Vec<f64>, TrackError> {
        let numbers: Vec<u64> = (from..=to)
            .filter(|&t| self.plan.written[t] && !self.any_active(t))
            .map(|t| self.plan.processed[t])
            .collect();
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let secs = frames.frame_seconds(&numbers)?;
        if secs.len() != numbers.len() {
            return Err(TrackError::Video(format!(
                "asked for the times of {} frames from {}, got {}",
                numbers.len(),
                numbers[0],
                secs.len()
            )));
        }
        Ok(secs)
    }

    /// The idle slot of processed index `t` (which no object is active on; else the frame was
    /// not delivered), taking its time from `next_seconds` (the next of
    /// [`Self::idle_seconds`] in the pass's order) if it is written.
    fn idle_slot(
        &self,
        t: usize,
        next_seconds: impl FnOnce() -> Option<f64>,
    ) -> Result<Slot, TrackError> {
        let number = self.plan.processed[t];
        if self.any_active(t) {
            return Err(missing_frame(number));
        }
        let seconds = if self.plan.written[t] {
            next_seconds().ok_or_else(|| missing_frame(number))?
        } else {
            f64::NAN
        };
        Ok(Slot::Idle { number, seconds })
    }

    /// The reverse pass over processed indices `below - 1` down to 0 (on the reverse banks),
    /// decoded in chunks from the end backwards, results to the spool.
    fn reverse(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        below: usize,
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        let s = self.plan.start;
        let chunk = self.cfg.reverse_chunk.max(1) as i64;
        let mut hi = below as i64 - 1; // inclusive upper end of the next chunk
        while hi >= 0 {
            let lo = (hi - chunk + 1).max(0);
            let (lo_u, hi_u) = (lo as usize, hi as usize);
            // Only the frames some object is active on are decoded.
            let numbers: Vec<u64> = (lo_u..=hi_u)
                .filter(|&t| self.any_active(t))
                .map(|t| self.plan.processed[t])
                .collect();
            let mut imgs: Vec<Option<FrameInput>> = (0..numbers.len()).map(|_| None).collect();
            frames.for_each_frame(&numbers, &mut |fi| {
                let k = numbers
                    .binary_search(&fi.number)
                    .map_err(|_| bad_frame(fi.number))?;
                imgs[k] = Some(fi);
                Ok(())
            })?;
            let idle = self.idle_seconds(frames, lo_u, hi_u)?;
            let (mut ka, mut ki) = (numbers.len(), idle.len());
            for t in (lo_u..=hi_u).rev() {
                let number = self.plan.processed[t];
                let slot = if self.any_active(t) {
                    ka = ka.checked_sub(1).ok_or_else(|| missing_frame(number))?;
                    match imgs[ka].take() {
                        Some(fi) => Slot::Decoded(fi),
                        None => {
                            // Skipped by the source: a failed frame.
                            self.frame_failed(t != s);
                            continue;
                        }
                    }
                } else {
                    // Descending here: the idle times are taken from the end.
                    self.idle_slot(t, || {
                        ki = ki.checked_sub(1)?;
                        idle.get(ki).copied()
                    })?
                };
                if let Some(bytes) = self.process(t, slot, true, true, sink)? {
                    self.spool
                        .as_mut()
                        .ok_or_else(|| TrackError::Invalid("reverse without a spool".into()))?
                        .push(number, &bytes)?;
                }
                if t != s {
                    self.done += 1;
                }
                progress(Progress::Tracked {
                    frame: number,
                    done: self.done,
                    total: self.total,
                });
                self.stage = Stage::Reverse(t);
                stop_if(hook(self, self.stage)?, self.stage)?;
            }
            hi = lo - 1;
        }
        Ok(())
    }

    /// The run's state at its current stage (not [`Stage::Start`]): the banks, inside the
    /// reverse pass also the head's banks, and inside the first stretch the spool's length
    /// (the spool is synced to disk first; it must stay as it is up to that length).
    pub fn save_state(&self) -> Result<Vec<u8>, TrackError> {
        if !self.can_save() {
            return Err(TrackError::Invalid(format!(
                "no resumable state at {:?}{}",
                self.stage,
                if self.spool_file.is_none() {
                    " (no spool file set)"
                } else {
                    ""
                }
            )));
        }
        let (tag, index) = match self.stage {
            Stage::Start => (0u64, 0usize),
            Stage::Head(k) => (1, k),
            Stage::Reverse(k) => (2, k),
            Stage::Rest(k) => (3, k),
        };
        let spool_len = match (self.stage, &self.spool) {
            (Stage::Head(_) | Stage::Reverse(_), Some(sp)) => sp.sync()?,
            (Stage::Head(_) | Stage::Reverse(_), None) => {
                return Err(TrackError::Invalid("first stretch without a spool".into()));
            }
            _ => 0,
        };
        let banks = bank::save_banks(&self.banks)?;
        let fwd = match (&self.forward_banks, self.stage) {
            (Some(f), Stage::Reverse(_)) => bank::save_banks(f)?,
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(40 + banks.len() + fwd.len());
        out.extend_from_slice(STATE_MAGIC);
        for v in [tag, index as u64, spool_len, banks.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&banks);
        out.extend_from_slice(&fwd);
        Ok(out)
    }

    /// The stage saved in a state of [`Self::save_state`].
    pub fn saved_stage(bytes: &[u8]) -> Result<Stage, TrackError> {
        Ok(parse_state(bytes)?.0)
    }

    /// Restores a state of [`Self::save_state`] (after the pre-pass).
    fn restore_state(&mut self, bytes: &[u8]) -> Result<Stage, TrackError> {
        let (stage, spool_len, banks, fwd) = parse_state(bytes)?;
        let (s, head_end, len) = (self.plan.start, self.plan.head_end, self.plan.len());
        let ok = match stage {
            Stage::Start => false,
            Stage::Head(k) => (s..=head_end + 1).contains(&k),
            Stage::Reverse(k) => k <= s && s > 0 && !fwd.is_empty(),
            Stage::Rest(k) => (head_end + 1..=len).contains(&k),
        };
        if !ok {
            return Err(TrackError::Invalid(format!(
                "saved state at {stage:?} does not fit the plan (first prompt {s}, head end \
                 {head_end}, {len} processed frames)"
            )));
        }
        self.load_banks(banks)?;
        if !fwd.is_empty() {
            let f = bank::load_banks(fwd, self.device())?;
            if f.len() != self.banks.len() {
                return Err(TrackError::Invalid("saved head banks: object count".into()));
            }
            self.forward_banks = Some(f);
        }
        self.done = match stage {
            Stage::Start => 0,
            Stage::Head(k) => k - s,
            Stage::Reverse(k) => head_end + 1 - k,
            Stage::Rest(k) => k,
        };
        if let Stage::Head(_) | Stage::Reverse(_) = stage {
            let path = self.spool_file.as_ref().ok_or_else(|| {
                TrackError::Invalid("a first-stretch state needs the spool file".into())
            })?;
            self.spool = Some(spool::Spool::reopen(path, spool_len)?);
        }
        Ok(stage)
    }

    /// The prompt pre-pass: every prompted frame, every object prompted there, as the official
    /// `add_new_mask` / `add_new_points_or_box` then the preflight's memory encoding.
    pub fn prepass(
        &mut self,
        frames: &mut dyn FrameSource,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), TrackError> {
        self.prepass_inner(frames, progress, None)
    }

    /// [`Self::prepass`], calling `hook` (with [`Stage::Start`]) after every prompted frame.
    fn prepass_inner(
        &mut self,
        frames: &mut dyn FrameSource,
        progress: &mut dyn FnMut(Progress),
        mut hook: Option<&mut RunHook<'_>>,
    ) -> Result<(), TrackError> {
        let _g = tch::no_grad_guard();
        let numbers = self.prompts.prompted_frames();
        let mut got = 0usize;
        let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
            if numbers.get(got) != Some(&fi.number) {
                return Err(missing_prompted(numbers.get(got).copied(), fi.number));
            }
            got += 1;
            let t = self
                .plan
                .index_of(fi.number)
                .ok_or_else(|| bad_frame(fi.number))?;
            let feats = self.encode(&fi.image);
            for o in 0..self.prompts.objects.len() {
                let Some(fp) = self.prompts.objects[o].frames.get(&fi.number).cloned() else {
                    continue;
                };
                let entry = self.prompt_object(&feats, &fp)?;
                self.banks[o].insert_cond(t as i64, entry);
            }
            progress(Progress::Prompted { frame: fi.number });
            match hook.as_mut() {
                Some(h) => stop_if(h(self, Stage::Start)?, Stage::Start),
                None => Ok(()),
            }
        };
        frames.for_each_frame(&numbers, &mut cb)?;
        if let Some(&n) = numbers.get(got) {
            return Err(missing_prompted(Some(n), u64::MAX));
        }
        Ok(())
    }

    /// One object's prompts on one frame -> its conditioning entry.
    fn prompt_object(
        &mut self,
        feats: &BackboneOut,
        fp: &FramePrompt,
    ) -> Result<CondEntry, TrackError> {
        let s = self.model.config.image_size;
        let dev = self.device();
        let mut prev: Option<StepOutput> = None;
        let mut prev_low: Option<Tensor> = None;
        if let Some(m) = &fp.mask {
            let data: Vec<f32> = m.data.iter().map(|&v| v as f32).collect();
            let mask = Tensor::from_slice(&data)
                .view([1, 1, m.height as i64, m.width as i64])
                .to_device(dev);
            let mask01 = if m.height as i64 != s || m.width as i64 != s {
                mask.internal_upsample_bilinear2d_aa([s, s], false, None, None)
                    .ge(0.5)
                    .to_kind(Kind::Float)
            } else {
                mask
            };
            let out = self.model.mask_as_output(feats, &mask01);
            prev_low = Some(fill_holes(&out.low_res_masks, self.cfg.fill_hole_area));
            prev = Some(out);
        }
        if !fp.points.is_empty() {
            let n = fp.points.len() as i64;
            let flat: Vec<f32> = fp.points.iter().flat_map(|p| [p[0], p[1]]).collect();
            let wh = Tensor::from_slice(&[self.video_w as f32, self.video_h as f32]);
            let coords =
                (Tensor::from_slice(&flat).view([1, n, 2]) / wh * (s as f64)).to_device(dev);
            let labels = Tensor::from_slice(&fp.labels).view([1, n]).to_device(dev);
            let pts = PointInputs { coords, labels };
            let mask_in = prev_low.as_ref().map(|l| l.clamp(-32.0, 32.0));
            let out = self.model.prompt_frame(feats, Some(&pts), mask_in.as_ref());
            prev_low = Some(fill_holes(&out.low_res_masks, self.cfg.fill_hole_area));
            prev = Some(out);
        }
        let (Some(out), Some(low)) = (prev, prev_low) else {
            return Err(TrackError::Invalid(
                "a frame prompt without mask or points".into(),
            ));
        };
        // Preflight: binarised memory from the hole-filled low-res logits upsampled to S.
        let high = low.upsample_bilinear2d([s, s], false, None, None);
        let (features, pos) =
            self.model
                .encode_memory(feats, &high, &out.object_score_logits, true);
        if self.mem_pos.is_none() {
            self.mem_pos = Some(pos);
        }
        Ok(CondEntry {
            features,
            obj_ptr: out.obj_ptr,
            low_res: low,
            score_logit: out.object_score_logits.double_value(&[0, 0]),
            iou: out.ious.double_value(&[0, 0]),
        })
    }

    /// One processed frame of a pass. A decoded frame: the image encoder once, then every object
    /// active there (its stored output on its conditioning frames, a tracking step stored in its
    /// bank elsewhere). An idle frame (no object active): nothing. Then optionally drops what no
    /// later frame of the pass can read, and encodes the result if the frame is written (an idle
    /// frame's result has no objects).
    fn process(
        &mut self,
        t: usize,
        slot: Slot,
        reverse: bool,
        prune: bool,
        sink: &mut dyn ResultSink,
    ) -> Result<Option<Vec<u8>>, TrackError> {
        let result = match slot {
            Slot::Decoded(fi) => {
                if self.plan.processed.get(t) != Some(&fi.number) {
                    return Err(bad_frame(fi.number));
                }
                let feats = self.encode(&fi.image);
                let outs = self.step(&feats, t as i64, reverse)?;
                self.plan.written[t].then(|| self.frame_result(fi.number, fi.seconds, &outs))
            }
            Slot::Idle { number, seconds } => self.plan.written[t].then(|| FrameResult {
                number,
                seconds,
                objects: Vec::new(),
            }),
        };
        if prune {
            for b in self.banks.iter_mut() {
                b.prune(t as i64, reverse, &self.select);
            }
            if !reverse {
                self.drop_finished(t);
            }
        }
        result.map(|r| sink.encode(r)).transpose()
    }

    /// Empties the banks of the objects whose span ended at or before processed index `t` (of
    /// the final forward pass): nothing reads them again. Spans that reach the last processed
    /// frame are left alone.
    fn drop_finished(&mut self, t: usize) {
        let last = self.plan.len().saturating_sub(1);
        for (b, &(_, hi)) in self.banks.iter_mut().zip(&self.spans) {
            if hi <= t && hi < last && !(b.cond.is_empty() && b.tracked.is_empty()) {
                *b = ObjectBank::default();
            }
        }
    }

    /// Every active object on processed frame `t`: the stored output on its conditioning
    /// frames, a tracking step elsewhere (stored in its bank), in object order.
    pub fn step(
        &mut self,
        feats: &BackboneOut,
        t: i64,
        reverse: bool,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let outs = self.step_inner(feats, t, reverse)?;
        if let Some(f) = self.observer.as_mut() {
            f(t as usize, &outs);
        }
        Ok(outs)
    }

    fn step_inner(
        &mut self,
        feats: &BackboneOut,
        t: i64,
        reverse: bool,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let n = self.banks.len();
        let mut outs: Vec<Option<RawOutput>> = (0..n).map(|_| None).collect();
        let mut to_track: Vec<usize> = Vec::new();
        for (o, b) in self.banks.iter().enumerate() {
            if !self.active(o, t as usize) {
                continue;
            }
            if let Some(c) = b.cond_entry(t) {
                outs[o] = Some(RawOutput {
                    object: o,
                    low_res: c.low_res.shallow_clone(),
                    score_logit: c.score_logit,
                    iou: c.iou,
                });
            } else {
                to_track.push(o);
            }
        }
        let batch = self.cfg.batch_objects.max(1);
        for group in to_track.chunks(batch) {
            let res = if group.len() == 1 {
                self.track_one(feats, t, reverse, group[0])?
            } else {
                self.track_batch(feats, t, reverse, group)?
            };
            for (o, r) in group.iter().zip(res) {
                outs[*o] = Some(r);
            }
        }
        Ok(outs.into_iter().flatten().collect())
    }

    fn entries(
        &self,
        o: usize,
        t: i64,
        reverse: bool,
    ) -> Result<(Vec<MemoryEntry>, Vec<PointerEntry>, i64), TrackError> {
        let b = &self.banks[o];
        let rs = b.read_set(t, reverse, &self.select);
        let pos = self
            .mem_pos
            .as_ref()
            .ok_or_else(|| TrackError::Invalid("tracking before the prompt pre-pass".into()))?;
        let mut mems = Vec::with_capacity(rs.memories.len());
        for (src, tpos) in &rs.memories {
            let f = b.memory(*src).ok_or_else(|| {
                TrackError::Invalid(format!("frame {t}: memory {src:?} was pruned too early"))
            })?;
            mems.push(MemoryEntry {
                features: f.shallow_clone(),
                pos_enc: pos.shallow_clone(),
                tpos_index: *tpos,
            });
        }
        let mut ptrs = Vec::with_capacity(rs.pointers.len());
        for (src, p) in &rs.pointers {
            let f = b.pointer(*src).ok_or_else(|| {
                TrackError::Invalid(format!("frame {t}: pointer {src:?} missing"))
            })?;
            ptrs.push(PointerEntry {
                ptr: f.shallow_clone(),
                pos: *p,
            });
        }
        Ok((mems, ptrs, rs.max_ptr))
    }

    /// Stores a tracked step's memory and pointer for each object in `objs` and returns their
    /// hole-filled outputs.
    fn finish_tracked(
        &mut self,
        feats: &BackboneOut,
        t: i64,
        objs: &[usize],
        out: StepOutput,
    ) -> Vec<RawOutput> {
        let (features, _pos) =
            self.model
                .encode_memory(feats, &out.high_res_masks, &out.object_score_logits, false);
        let _prof = crate::profile::scope(crate::profile::Section::StepPost);
        let low = fill_holes(&out.low_res_masks, self.cfg.fill_hole_area);
        let osl = Vec::<f32>::try_from(
            out.object_score_logits
                .to_kind(Kind::Float)
                .flatten(0, -1)
                .to_device(Device::Cpu),
        )
        .unwrap_or_default();
        let ious = Vec::<f32>::try_from(
            out.ious
                .to_kind(Kind::Float)
                .flatten(0, -1)
                .to_device(Device::Cpu),
        )
        .unwrap_or_default();
        let mut res = Vec::with_capacity(objs.len());
        for (i, &o) in objs.iter().enumerate() {
            let i64i = i as i64;
            self.banks[o].insert_tracked(
                t,
                TrackedEntry {
                    features: Some(features.narrow(0, i64i, 1).copy()),
                    obj_ptr: out.obj_ptr.narrow(0, i64i, 1).copy(),
                },
            );
            res.push(RawOutput {
                object: o,
                low_res: low.narrow(0, i64i, 1).copy(),
                score_logit: osl.get(i).copied().unwrap_or(f32::NAN) as f64,
                iou: ious.get(i).copied().unwrap_or(f32::NAN) as f64,
            });
        }
        res
    }

    fn track_one(
        &mut self,
        feats: &BackboneOut,
        t: i64,
        reverse: bool,
        o: usize,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let (mems, ptrs, max_ptr) = self.entries(o, t, reverse)?;
        let out = self.model.track_frame(feats, &mems, &ptrs, max_ptr);
        Ok(self.finish_tracked(feats, t, &[o], out))
    }

    /// Several objects in one batch: one memory-attention / heads / memory-encoder pass, each
    /// object attending to exactly its own memories (padding + key mask in the model), equal
    /// to one-by-one results within fp32 tolerance.
    fn track_batch(
        &mut self,
        feats: &BackboneOut,
        t: i64,
        reverse: bool,
        objs: &[usize],
    ) -> Result<Vec<RawOutput>, TrackError> {
        let mut entries = Vec::with_capacity(objs.len());
        let mut max_ptr = 0;
        for &o in objs {
            let (m, p, mp) = self.entries(o, t, reverse)?;
            max_ptr = mp;
            entries.push((m, p));
        }
        let views: Vec<ObjectMemory<'_>> = entries
            .iter()
            .map(|(m, p)| ObjectMemory {
                memories: m,
                pointers: p,
            })
            .collect();
        let fb = feats.expand_item(0, objs.len() as i64);
        let out = self.model.track_frame_batched(&fb, &views, max_ptr);
        drop(views);
        Ok(self.finish_tracked(&fb, t, objs, out))
    }

    /// The written result of a frame: video-resolution masks as runs (of the active objects).
    fn frame_result(&self, number: u64, seconds: f64, outs: &[RawOutput]) -> FrameResult {
        if outs.is_empty() {
            return FrameResult {
                number,
                seconds,
                objects: Vec::new(),
            };
        }
        let _prof = crate::profile::scope(crate::profile::Section::Output);
        let lows: Vec<Tensor> = outs.iter().map(|o| o.low_res.shallow_clone()).collect();
        let runs = masks::frame_mask_runs(&Tensor::cat(&lows, 0), self.video_h, self.video_w);
        let objects = outs
            .iter()
            .zip(runs)
            .map(|(o, mask)| ObjectResult {
                object: o.object,
                mask,
                score: 1.0 / (1.0 + (-(o.score_logit as f32)).exp()) as f64,
                iou: o.iou,
            })
            .collect();
        FrameResult {
            number,
            seconds,
            objects,
        }
    }

    /// Saves the banks (conditioning and recent tracked state of every object).
    pub fn save_banks(&self) -> Result<Vec<u8>, TrackError> {
        Ok(bank::save_banks(&self.banks)?)
    }

    /// Replaces the banks with saved ones (after the pre-pass, which provides the memory PE).
    pub fn load_banks(&mut self, bytes: &[u8]) -> Result<(), TrackError> {
        let b = bank::load_banks(bytes, self.device())?;
        if b.len() != self.banks.len() {
            return Err(TrackError::Invalid(format!(
                "saved banks hold {} objects, the run has {}",
                b.len(),
                self.banks.len()
            )));
        }
        self.banks = b;
        Ok(())
    }

    /// Tracks a range of processed frames in one direction, calling `out` per frame with the raw
    /// outputs (for step-wise checks and window hand-over; [`Self::run`] is the full order).
    pub fn track_range(
        &mut self,
        frames: &mut dyn FrameSource,
        indices: std::ops::RangeInclusive<usize>,
        reverse: bool,
        prune: bool,
        out: &mut dyn FnMut(u64, Vec<RawOutput>),
    ) -> Result<(), TrackError> {
        let _g = tch::no_grad_guard();
        let mut idx: Vec<usize> = indices.collect();
        let numbers: Vec<u64> = idx.iter().map(|&i| self.plan.processed[i]).collect();
        let mut imgs: Vec<FrameInput> = Vec::new();
        if reverse {
            frames.for_each_frame(&numbers, &mut |fi| {
                imgs.push(fi);
                Ok(())
            })?;
            idx.reverse();
            imgs.reverse();
            for (t, fi) in idx.into_iter().zip(imgs) {
                let feats = self.encode(&fi.image);
                let o = self.step(&feats, t as i64, true)?;
                if prune {
                    for b in self.banks.iter_mut() {
                        b.prune(t as i64, true, &self.select);
                    }
                }
                out(fi.number, o);
            }
            return Ok(());
        }
        let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
            let t = self
                .plan
                .index_of(fi.number)
                .ok_or_else(|| bad_frame(fi.number))?;
            let feats = self.encode(&fi.image);
            let o = self.step(&feats, t as i64, false)?;
            if prune {
                for b in self.banks.iter_mut() {
                    b.prune(t as i64, false, &self.select);
                }
            }
            out(fi.number, o);
            Ok(())
        };
        frames.for_each_frame(&numbers, &mut cb)
    }
}

fn stop_if(flow: Flow, at: Stage) -> Result<(), TrackError> {
    match flow {
        Flow::Continue => Ok(()),
        Flow::Stop => Err(TrackError::Stopped(at)),
    }
}

fn missing_frame(n: u64) -> TrackError {
    TrackError::Video(format!("the frame source did not deliver frame {n}"))
}

fn missing_prompted(want: Option<u64>, got: u64) -> TrackError {
    match want {
        Some(n) if n < got => TrackError::Video(format!(
            "prompted frame {n} could not be decoded (its prompts cannot be used)"
        )),
        _ => bad_frame(got),
    }
}

const STATE_MAGIC: &[u8; 8] = b"DSTRKST1";

/// A parsed saved state: stage, spool length, banks, head banks.
type ParsedState<'b> = (Stage, u64, &'b [u8], &'b [u8]);

/// Parses a state of [`Tracker::save_state`].
fn parse_state(bytes: &[u8]) -> Result<ParsedState<'_>, TrackError> {
    let bad = |m: &str| TrackError::Invalid(format!("saved tracker state: {m}"));
    if bytes.len() < 40 || &bytes[..8] != STATE_MAGIC {
        return Err(bad("not a tracker state"));
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(w)
    };
    let (tag, index, spool_len, n) = (word(0), word(1) as usize, word(2), word(3));
    let stage = match tag {
        1 => Stage::Head(index),
        2 => Stage::Reverse(index),
        3 => Stage::Rest(index),
        _ => return Err(bad("unknown stage")),
    };
    let rest = &bytes[40..];
    if n > rest.len() as u64 {
        return Err(bad("truncated"));
    }
    let (banks, fwd) = rest.split_at(n as usize);
    Ok((stage, spool_len, banks, fwd))
}

fn bad_frame(n: u64) -> TrackError {
    TrackError::Video(format!(
        "frame source returned frame {n}, which was not asked for"
    ))
}
