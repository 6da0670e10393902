//! The streaming predictor: SAM 2's `SAM2VideoPredictor` semantics (prompts added, then
//! `propagate_in_video` forward from the earliest prompt `s`, then `reverse=True` from `s`, the
//! last result kept) computed in bounded memory with output in frame order.
//!
//! Run order (see DESIGN.md): a prompt pre-pass (each prompted frame decoded, the prompts run as
//! `add_new_points_or_box` / `add_new_mask`, hole filling, the binarised conditioning memory as
//! the official preflight encodes it); forward over `s ..= head_end` (`s + 15` officially), whose
//! results the reverse pass reads; the reverse pass from `s` down to 0, decoded in chunks from the
//! end backwards with its encoded outputs spooled to a file and replayed in ascending order; then
//! forward from `head_end + 1` to the end. Every object is tracked on every processed frame of
//! both passes. The per-object [`bank::ObjectBank`] holds only what later frames can read.
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
    /// A [`RunHook`] asked the run to stop (`Some(next)`: at a resumable point).
    #[error("run stopped before processed index {0:?}")]
    Stopped(Option<usize>),
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
    /// Stopped by the hook; `Some(next)`: at a resumable point (continue at processed index
    /// `next`), `None`: before the first one (start again from scratch).
    Stopped(Option<usize>),
}

/// Called after every processed frame of every pass with `Some(next)` where the run is
/// resumable at processed index `next` (the sink has written every written frame before it and
/// the banks are exactly those the rest reads: after the reverse pass, then after each frame of
/// the final forward stretch), `None` elsewhere (pre-pass excluded).
pub type RunHook<'h> = dyn FnMut(&Tracker<'_>, Option<usize>) -> Result<Flow, TrackError> + 'h;

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

/// The results of one written frame (every object, empty masks included).
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
    /// The memory encoder's sine PE (the same for every frame).
    mem_pos: Option<Tensor>,
    done: usize,
    total: usize,
    observer: Option<Box<RawObserver<'a>>>,
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
            mem_pos: None,
            done: 0,
            total,
            observer: None,
        })
    }

    /// Installs an observer of the raw per-frame outputs (for parity checks).
    pub fn set_observer(&mut self, f: Box<RawObserver<'a>>) {
        self.observer = Some(f);
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn banks(&self) -> &[ObjectBank] {
        &self.banks
    }

    fn device(&self) -> Device {
        self.model.device
    }

    fn encode(&self, image: &Tensor) -> BackboneOut {
        let dev = self.device();
        let x = if dev.is_cuda() && image.device() == Device::Cpu {
            // Pinned host memory (libtorch's caching host allocator reuses its blocks, guarded by
            // CUDA events, so no per-frame pinning) and an asynchronous copy on the current
            // stream, ordered before the encoder's kernels.
            image
                .to_kind(Kind::Float)
                .pin_memory(dev)
                .to_device_(dev, Kind::Float, true, false)
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

    /// [`Self::run`] with a [`RunHook`] (checkpoints, stopping). `resume_at = Some(i)`: the
    /// caller has run [`Self::prepass`] and [`Self::load_banks`] with banks saved by the hook at
    /// `Some(i)`, and the sink has everything written before `i`: only the final forward
    /// stretch from `i` runs.
    pub fn run_resumable(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        resume_at: Option<usize>,
        hook: &mut RunHook<'_>,
    ) -> Result<RunEnd, TrackError> {
        let _g = tch::no_grad_guard();
        match self.run_inner(frames, sink, progress, resume_at, hook) {
            Ok(()) => Ok(RunEnd::Finished),
            Err(TrackError::Stopped(next)) => Ok(RunEnd::Stopped(next)),
            Err(e) => Err(e),
        }
    }

    fn run_inner(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        resume_at: Option<usize>,
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        let head_end = self.plan.head_end;
        if let Some(next) = resume_at {
            if next <= head_end {
                return Err(TrackError::Invalid(format!(
                    "cannot resume at processed index {next}: not after the first stretch ({head_end})"
                )));
            }
            self.done = next;
            return self.forward_rest(frames, sink, progress, next, hook);
        }
        self.prepass(frames, progress)?;
        let s = self.plan.start;
        // Forward head s ..= head_end, results kept in memory (encoded), banks unpruned.
        let mut head: Vec<(u64, Vec<u8>)> = Vec::new();
        let numbers: Vec<u64> = self.plan.processed[s..=head_end].to_vec();
        {
            let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
                let (_, bytes) = self.track_frame(&fi, false, false, sink)?;
                if let Some(bytes) = bytes {
                    head.push((fi.number, bytes));
                }
                self.done += 1;
                progress(Progress::Tracked {
                    frame: fi.number,
                    done: self.done,
                    total: self.total,
                });
                stop_if(hook(self, None)?, None)
            };
            frames.for_each_frame(&numbers, &mut cb)?;
        }
        // Reverse s ..= 0 on a copy of the banks.
        if s > 0 {
            let forward_banks: Vec<ObjectBank> = self.banks.clone();
            let mut spool = spool::Spool::create(&self.cfg.spool_dir)?;
            let chunk = self.cfg.reverse_chunk.max(1);
            let mut hi = s as i64; // inclusive upper end of the next chunk
            while hi >= 0 {
                let lo = (hi - chunk as i64 + 1).max(0);
                let numbers: Vec<u64> = self.plan.processed[lo as usize..=hi as usize].to_vec();
                let mut imgs: Vec<FrameInput> = Vec::with_capacity(numbers.len());
                frames.for_each_frame(&numbers, &mut |fi| {
                    imgs.push(fi);
                    Ok(())
                })?;
                if imgs.len() != numbers.len() {
                    return Err(TrackError::Video(format!(
                        "asked for {} frames from {}, got {}",
                        numbers.len(),
                        numbers[0],
                        imgs.len()
                    )));
                }
                while let Some(fi) = imgs.pop() {
                    let (t, bytes) = self.track_frame(&fi, true, true, sink)?;
                    if let Some(bytes) = bytes {
                        spool.push(fi.number, &bytes)?;
                    }
                    if t != s {
                        self.done += 1;
                    }
                    progress(Progress::Tracked {
                        frame: fi.number,
                        done: self.done,
                        total: self.total,
                    });
                    stop_if(hook(self, None)?, None)?;
                }
                hi = lo - 1;
            }
            self.banks = forward_banks;
            spool.replay_ascending(&mut |n, b| sink.write(n, b))?;
            // Frame s was written by the reverse pass (its result is the one kept).
            for (n, b) in head.iter().filter(|(n, _)| *n != self.plan.processed[s]) {
                sink.write(*n, b)?;
            }
        } else {
            for (n, b) in &head {
                sink.write(*n, b)?;
            }
        }
        drop(head);
        for b in self.banks.iter_mut() {
            b.prune(head_end as i64, false, &self.select);
        }
        stop_if(hook(self, Some(head_end + 1))?, Some(head_end + 1))?;
        self.forward_rest(frames, sink, progress, head_end + 1, hook)
    }

    /// The final forward stretch from processed index `from` (banks pruned for `from - 1`).
    fn forward_rest(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        progress: &mut dyn FnMut(Progress),
        from: usize,
        hook: &mut RunHook<'_>,
    ) -> Result<(), TrackError> {
        if from < self.plan.len() {
            let numbers: Vec<u64> = self.plan.processed[from..].to_vec();
            let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
                let (t, bytes) = self.track_frame(&fi, false, true, sink)?;
                if let Some(bytes) = bytes {
                    sink.write(fi.number, &bytes)?;
                }
                self.done += 1;
                progress(Progress::Tracked {
                    frame: fi.number,
                    done: self.done,
                    total: self.total,
                });
                stop_if(hook(self, Some(t + 1))?, Some(t + 1))
            };
            frames.for_each_frame(&numbers, &mut cb)?;
        }
        Ok(())
    }

    /// The prompt pre-pass: every prompted frame, every object prompted there, as the official
    /// `add_new_mask` / `add_new_points_or_box` then the preflight's memory encoding.
    pub fn prepass(
        &mut self,
        frames: &mut dyn FrameSource,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), TrackError> {
        let _g = tch::no_grad_guard();
        let numbers = self.prompts.prompted_frames();
        let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
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
            Ok(())
        };
        frames.for_each_frame(&numbers, &mut cb)
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

    /// Every object on processed frame `t`: the stored output on its conditioning frames, a
    /// tracking step elsewhere (stored in its bank).
    /// Tracks every object on one processed frame: image encoder, one step, optionally drops
    /// what no later frame of the pass can read, and encodes the result if the frame is written.
    /// Returns the frame's processed index and the encoded result.
    fn track_frame(
        &mut self,
        fi: &FrameInput,
        reverse: bool,
        prune: bool,
        sink: &mut dyn ResultSink,
    ) -> Result<(usize, Option<Vec<u8>>), TrackError> {
        let t = self
            .plan
            .index_of(fi.number)
            .ok_or_else(|| bad_frame(fi.number))?;
        let feats = self.encode(&fi.image);
        let outs = self.step(&feats, t as i64, reverse)?;
        if prune {
            for b in self.banks.iter_mut() {
                b.prune(t as i64, reverse, &self.select);
            }
        }
        let bytes = if self.plan.written[t] {
            Some(sink.encode(self.frame_result(fi, &outs))?)
        } else {
            None
        };
        Ok((t, bytes))
    }

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
            if let Some(c) = b.cond_entry(t) {
                outs[o] = Some(RawOutput {
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
        outs.into_iter()
            .map(|o| o.ok_or_else(|| TrackError::Invalid("object without output".into())))
            .collect()
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

    /// The written result of a frame: video-resolution masks as runs.
    fn frame_result(&self, fi: &FrameInput, outs: &[RawOutput]) -> FrameResult {
        let lows: Vec<Tensor> = outs.iter().map(|o| o.low_res.shallow_clone()).collect();
        let masks = masks::video_masks(&Tensor::cat(&lows, 0), self.video_h, self.video_w);
        let objects = outs
            .iter()
            .enumerate()
            .map(|(i, o)| ObjectResult {
                object: i,
                mask: masks::mask_runs(&masks.get(i as i64)),
                score: 1.0 / (1.0 + (-(o.score_logit as f32)).exp()) as f64,
                iou: o.iou,
            })
            .collect();
        FrameResult {
            number: fi.number,
            seconds: fi.seconds,
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

fn stop_if(flow: Flow, next: Option<usize>) -> Result<(), TrackError> {
    match flow {
        Flow::Continue => Ok(()),
        Flow::Stop => Err(TrackError::Stopped(next)),
    }
}

fn bad_frame(n: u64) -> TrackError {
    TrackError::Video(format!(
        "frame source returned frame {n}, which was not asked for"
    ))
}
