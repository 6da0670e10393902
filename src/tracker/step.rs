//! One processed frame of a pass: the image encoder once, then every object active there in
//! batches (its stored output on its conditioning frames, a tracking step stored in its bank
//! elsewhere), then the finishing: what no later frame can read dropped, and the written result
//! (video-resolution masks as runs) formatted by the sink. Between batches the observer may stop
//! the run; the frame is then undone.

use tch::{Device, Kind, Tensor};

use super::bank::{ObjectBank, Src, TrackedEntry};
use super::masks;
use super::{
    FrameInput, FrameNo, FrameResult, ObjectResult, Observer, Pass, ProcIdx, Progress, RawOutput,
    ReadFrames, ResultSink, TrackError, Tracker, bad_frame,
};
use crate::model::fill_holes::fill_holes;
use crate::model::sam2::{BackboneOut, MemoryEntry, ObjectMemory, PointerEntry, StepOutput};

/// A processed frame as a pass meets it: decoded where some object is active, else idle (not
/// decoded, no image encoder; `seconds` is NaN unless the frame is written).
pub(super) enum Slot {
    Decoded(FrameInput),
    Idle { number: FrameNo, seconds: f64 },
}

impl Slot {
    pub(super) fn number(&self) -> FrameNo {
        match self {
            Slot::Decoded(fi) => fi.number,
            Slot::Idle { number, .. } => *number,
        }
    }
}

/// How a processed frame ended.
pub(super) enum Processed {
    /// Tracked; the formatted result if the frame is written.
    Done(Option<Vec<u8>>),
    /// The observer asked to stop between two object batches: the frame was undone.
    StopRequested,
}

/// The tracked results stored so far on one frame, to undo it: (object, the entry replaced).
type Undo = Vec<(usize, Option<TrackedEntry>)>;

impl Tracker<'_> {
    /// Runs the image encoder on a model image (`[S, S, 3]` uint8 or `[3, S, S]` float).
    pub(super) fn encode_image(&mut self, image: &Tensor) -> BackboneOut {
        let _prof = crate::profile::scope(crate::profile::Section::ImageEncoder);
        self.run.encoded += 1;
        let dev = self.device();
        let model = self.setup.model;
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
            return model
                .encode_image(&crate::model::image_input::normalize_tensor(&x).unsqueeze(0));
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
        model.encode_image(&x)
    }

    /// One processed frame `t` of `pass`. A decoded frame: the image encoder, then the objects
    /// ([`Self::step`]). An idle frame: nothing. Then, in the reverse pass and the rest, drops
    /// what no later frame of the pass can read (in the rest also the banks of objects whose
    /// span ended), and formats the result if the frame is written (an idle frame's result has
    /// no objects).
    pub(super) fn process(
        &mut self,
        t: ProcIdx,
        slot: Slot,
        pass: Pass,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
    ) -> Result<Processed, TrackError> {
        let written = self.setup.schedule.is_written(t);
        let result = match slot {
            Slot::Decoded(fi) => {
                if self.setup.schedule.frames().get(t.0) != Some(&fi.number) {
                    return Err(bad_frame(fi.number));
                }
                let feats = self.encode_image(&fi.image);
                let Some(outs) = self.step(&feats, t, pass, fi.number, obs)? else {
                    return Ok(Processed::StopRequested);
                };
                match written {
                    true => Some(self.frame_result(fi.number, fi.seconds, &outs)?),
                    false => None,
                }
            }
            Slot::Idle { number, seconds } => written.then(|| FrameResult {
                number,
                seconds,
                objects: Vec::new(),
            }),
        };
        if pass.prunes() {
            let select = &self.setup.select;
            for b in self.run.banks.iter_mut() {
                b.prune(t.key(), pass.is_reverse(), select);
            }
            if pass == Pass::Rest {
                self.drop_finished(t);
            }
        } else {
            // The head: only a ranked policy prunes there (its head can be long).
            let (select, s) = (&self.setup.select, self.setup.schedule.start());
            for b in self.run.banks.iter_mut() {
                b.prune_head(t.key(), s.key(), select);
            }
        }
        Ok(Processed::Done(result.map(|r| sink.format(r)).transpose()?))
    }

    /// Empties the banks of the objects whose span ended at or before processed index `t` (of
    /// the rest): nothing reads them again. Spans that reach the last processed frame are left
    /// alone.
    pub(super) fn drop_finished(&mut self, t: ProcIdx) {
        let last = ProcIdx(self.setup.schedule.len().saturating_sub(1));
        let spans = self.setup.schedule.spans();
        for (b, &(_, hi)) in self.run.banks.iter_mut().zip(spans) {
            if hi <= t && hi < last && !(b.cond.is_empty() && b.tracked.is_empty()) {
                *b = ObjectBank::default();
            }
        }
    }

    /// Every active object on processed frame `t`, in object order: the stored output on its
    /// conditioning frames, a tracking step elsewhere (stored in its bank), `batch_objects` at a
    /// time. `None` if the observer asked to stop between two batches (the frame's tracked
    /// results are then removed again, the banks as before the frame).
    fn step(
        &mut self,
        feats: &BackboneOut,
        t: ProcIdx,
        pass: Pass,
        frame: FrameNo,
        obs: &mut dyn Observer,
    ) -> Result<Option<Vec<RawOutput>>, TrackError> {
        let n = self.run.banks.len();
        let mut outs: Vec<Option<RawOutput>> = (0..n).map(|_| None).collect();
        let mut to_track: Vec<usize> = Vec::new();
        for (o, b) in self.run.banks.iter().enumerate() {
            if !self.setup.schedule.is_active(o, t) {
                continue;
            }
            if let Some(c) = b.cond_entry(t.key()) {
                outs[o] = Some(RawOutput {
                    object: o,
                    low_res: c.low_res.shallow_clone(),
                    score_logit: c.score_logit,
                    iou: c.iou,
                    mask_index: None,
                    read: None,
                });
            } else {
                to_track.push(o);
            }
        }
        let batch = self.setup.cfg.batch_objects.max(1);
        let several = to_track.len() > batch;
        let mut undo: Undo = Vec::new();
        let mut done = 0usize;
        for group in to_track.chunks(batch) {
            if done > 0 && obs.stop_requested() {
                for (o, replaced) in undo {
                    self.run.banks[o].undo_tracked(t.key(), replaced);
                }
                return Ok(None);
            }
            let res = if group.len() == 1 && self.setup.capacity.is_none() {
                self.track_one(feats, t, pass, group[0], &mut undo)?
            } else {
                self.track_batch(feats, t, pass, group, &mut undo)?
            };
            for (o, r) in group.iter().zip(res) {
                outs[*o] = Some(r);
            }
            done += group.len();
            if several {
                obs.progress(Progress::Tracking {
                    frame,
                    done,
                    total: to_track.len(),
                });
            }
        }
        let outs: Vec<RawOutput> = outs.into_iter().flatten().collect();
        obs.raw_outputs(pass, t, &outs);
        Ok(Some(outs))
    }

    fn entries(
        &self,
        o: usize,
        t: ProcIdx,
        pass: Pass,
    ) -> Result<(Vec<MemoryEntry>, Vec<PointerEntry>, i64, ReadFrames), TrackError> {
        let b = &self.run.banks[o];
        let rs = b.read_set(t.key(), pass.is_reverse(), &self.setup.select);
        let pos = self
            .run
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
        let frame = |s: &Src| match s {
            Src::Cond(f) | Src::Tracked(f) | Src::UnselectedCond(f) => *f,
        };
        let read = ReadFrames {
            memories: rs.memories.iter().map(|(s, _)| frame(s)).collect(),
            pointers: rs.pointers.iter().map(|(s, _)| frame(s)).collect(),
            score: None,
        };
        Ok((mems, ptrs, rs.max_ptr, read))
    }

    /// Stores a tracked step's memory and pointer for each object in `objs` (what they replace
    /// into `undo`) and returns their hole-filled outputs.
    fn finish_tracked(
        &mut self,
        feats: &BackboneOut,
        t: ProcIdx,
        objs: &[usize],
        out: StepOutput,
        reads: Vec<ReadFrames>,
        undo: &mut Undo,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let (features, _pos) = self.setup.model.encode_memory(
            feats,
            &out.high_res_masks,
            &out.object_score_logits,
            false,
        );
        let _prof = crate::profile::scope(crate::profile::Section::StepPost);
        let low = fill_holes(&out.low_res_masks, self.setup.cfg.fill_hole_area);
        // One device-to-host copy (one wait for the device) for the three.
        let mut parts = vec![
            out.object_score_logits.to_kind(Kind::Float).flatten(0, -1),
            out.ious.to_kind(Kind::Float).flatten(0, -1),
        ];
        if let Some(m) = &out.mask_index {
            parts.push(m.to_kind(Kind::Float).flatten(0, -1));
        }
        let n = objs.len();
        let v = host_values(
            &Tensor::cat(&parts, 0),
            "object scores, predicted IoUs and mask choices",
            parts.len() * n,
        )?;
        let (osl, ious) = (&v[..n], &v[n..2 * n]);
        let chosen = |i: usize| v.get(2 * n + i).map(|&x| x as i64);
        let mut res = Vec::with_capacity(objs.len());
        for ((i, &o), mut read) in objs.iter().enumerate().zip(reads) {
            let k = i as i64;
            let score = self.setup.select.policy.score(osl[i], ious[i]);
            read.score = score;
            let replaced = self.run.banks[o].insert_tracked(
                t.key(),
                TrackedEntry {
                    features: Some(features.narrow(0, k, 1).copy()),
                    obj_ptr: out.obj_ptr.narrow(0, k, 1).copy(),
                    score,
                },
            );
            undo.push((o, replaced));
            res.push(RawOutput {
                object: o,
                low_res: low.narrow(0, k, 1).copy(),
                score_logit: osl[i] as f64,
                iou: ious[i] as f64,
                mask_index: chosen(i),
                read: Some(read),
            });
        }
        Ok(res)
    }

    fn track_one(
        &mut self,
        feats: &BackboneOut,
        t: ProcIdx,
        pass: Pass,
        o: usize,
        undo: &mut Undo,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let (mems, ptrs, max_ptr, read) = self.entries(o, t, pass)?;
        let out = self.setup.model.track_frame(feats, &mems, &ptrs, max_ptr);
        self.finish_tracked(feats, t, &[o], out, vec![read], undo)
    }

    /// Several objects in one batch: one memory-attention / heads / memory-encoder pass, each
    /// object attending to exactly its own memories (padding + key mask in the model), equal
    /// to one-by-one results within fp32 tolerance. With `static_shapes` also a single object,
    /// padded to the run's capacity.
    fn track_batch(
        &mut self,
        feats: &BackboneOut,
        t: ProcIdx,
        pass: Pass,
        objs: &[usize],
        undo: &mut Undo,
    ) -> Result<Vec<RawOutput>, TrackError> {
        let mut entries = Vec::with_capacity(objs.len());
        let mut max_ptr = 0;
        let mut reads = Vec::with_capacity(objs.len());
        for &o in objs {
            let (m, p, mp, read) = self.entries(o, t, pass)?;
            max_ptr = mp;
            entries.push((m, p));
            reads.push(read);
        }
        let views: Vec<ObjectMemory<'_>> = entries
            .iter()
            .map(|(m, p)| ObjectMemory {
                memories: m,
                pointers: p,
            })
            .collect();
        let fb = feats.expand_item(0, objs.len() as i64);
        let out =
            self.setup
                .model
                .track_frame_batched_padded(&fb, &views, max_ptr, self.setup.capacity);
        drop(views);
        self.finish_tracked(&fb, t, objs, out, reads, undo)
    }

    /// The written result of a frame: video-resolution masks as runs (of the active objects).
    fn frame_result(
        &self,
        number: FrameNo,
        seconds: f64,
        outs: &[RawOutput],
    ) -> Result<FrameResult, TrackError> {
        if outs.is_empty() {
            return Ok(FrameResult {
                number,
                seconds,
                objects: Vec::new(),
            });
        }
        let _prof = crate::profile::scope(crate::profile::Section::Output);
        let lows: Vec<Tensor> = outs.iter().map(|o| o.low_res.shallow_clone()).collect();
        let runs = masks::frame_mask_runs(
            &Tensor::cat(&lows, 0),
            self.setup.video_h,
            self.setup.video_w,
        )?;
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
        Ok(FrameResult {
            number,
            seconds,
            objects,
        })
    }
}

/// The values of a per-object result on the host as f32, `n` of them: a failed copy or a wrong
/// count is an error.
fn host_values(t: &Tensor, what: &str, n: usize) -> Result<Vec<f32>, TrackError> {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1).to_device(Device::Cpu))
        .map_err(|e| TrackError::Device(format!("copying the {what} to the host: {e}")))?;
    if v.len() != n {
        return Err(TrackError::Device(format!(
            "{} {what} where {n} were expected",
            v.len()
        )));
    }
    Ok(v)
}
