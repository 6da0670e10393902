//! The prompt pre-pass (docs/sam2-inference.md §4.2, §4.3 preflight, §7.3 step 0): every
//! prompted frame decoded once, every object prompted there run as the official `add_new_mask` /
//! `add_new_points_or_box` calls, hole filling, and the binarised conditioning memory as the
//! official preflight encodes it, stored as the object's conditioning entry. Every run does it
//! again (a resumed one too: it provides the memory PE); between the objects of a frame the
//! observer may stop the run.

use tch::{Kind, Tensor};

use super::bank::CondEntry;
use super::{
    FrameInput, FrameNo, FramePrompt, Observer, Progress, Stage, TrackError, Tracker, bad_frame,
    stop_if,
};
use crate::model::config::Family;
use crate::model::fill_holes::fill_holes;
use crate::model::sam2::{BackboneOut, PointInputs, StepOutput};

/// `max_point_num_in_prompt_enc` of SAM 3's predictor.
const MAX_POINTS_SAM3: usize = 16;

impl Tracker<'_> {
    /// The pre-pass; the observer sees each prompted frame ([`Progress::Prompted`], then
    /// [`Observer::at_resume_point`] with [`Stage::Start`]) and, on frames with several
    /// objects, each object ([`Progress::Prompting`]); [`Observer::stop_requested`] is polled
    /// between objects.
    pub(super) fn prepass(
        &mut self,
        frames: &mut dyn super::FrameSource,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        let numbers = self.setup.prompts.prompted_frames();
        let mut got = 0usize;
        let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
            if numbers.get(got) != Some(&fi.number) {
                return Err(missing_prompted(numbers.get(got).copied(), fi.number));
            }
            got += 1;
            let t = self
                .setup
                .schedule
                .index_of(fi.number)
                .ok_or_else(|| bad_frame(fi.number))?;
            let feats = self.encode_image(&fi.image);
            let here: Vec<usize> = (0..self.setup.prompts.objects.len())
                .filter(|&o| {
                    self.setup.prompts.objects[o]
                        .frames
                        .contains_key(&fi.number)
                })
                .collect();
            for (k, &o) in here.iter().enumerate() {
                if k > 0 && obs.stop_requested() {
                    return Err(TrackError::Stopped(Stage::Start));
                }
                let fp = &self.setup.prompts.objects[o].frames[&fi.number];
                let (entry, pos) = self.prompt_object(&feats, fp)?;
                if self.run.mem_pos.is_none() {
                    self.run.mem_pos = Some(pos);
                }
                self.run.banks[o].insert_cond(t.key(), entry);
                if here.len() > 1 {
                    obs.progress(Progress::Prompting {
                        frame: fi.number,
                        done: k + 1,
                        total: here.len(),
                    });
                }
            }
            obs.progress(Progress::Prompted { frame: fi.number });
            stop_if(obs.at_resume_point(self, Stage::Start)?, Stage::Start)
        };
        frames.for_each_frame(&numbers, &mut cb)?;
        if let Some(&n) = numbers.get(got) {
            return Err(missing_prompted(Some(n), FrameNo(u64::MAX)));
        }
        Ok(())
    }

    /// One object's prompts on one frame -> its conditioning entry, and the memory encoder's
    /// position encoding.
    fn prompt_object(
        &self,
        feats: &BackboneOut,
        fp: &FramePrompt,
    ) -> Result<(CondEntry, Tensor), TrackError> {
        let model = self.setup.model;
        let fill = self.setup.cfg.fill_hole_area;
        let s = model.config.image_size;
        let dev = self.device();
        let mut prev: Option<StepOutput> = None;
        let mut prev_low: Option<Tensor> = None;
        let sam3 = model.config.family() == Family::Sam3;
        if let Some(m) = &fp.mask {
            let data: Vec<f32> = m.data.iter().map(|&v| v as f32).collect();
            let mask = Tensor::from_slice(&data)
                .view([1, 1, m.height as i64, m.width as i64])
                .to_device(dev);
            let out = if sam3 {
                model.mask_prompt_sam3(feats, &mask)
            } else {
                let mask01 = if m.height as i64 != s || m.width as i64 != s {
                    mask.internal_upsample_bilinear2d_aa([s, s], false, None, None)
                        .ge(0.5)
                        .to_kind(Kind::Float)
                } else {
                    mask
                };
                model.mask_as_output(feats, &mask01)
            };
            prev_low = Some(fill_holes(&out.low_res_masks, fill));
            prev = Some(out);
        }
        if !fp.points.is_empty() {
            // SAM 3's prompt encoder takes at most 16 points: the first 8 and the last 8.
            let keep: Vec<usize> = match (sam3, fp.points.len()) {
                (true, n) if n > MAX_POINTS_SAM3 => (0..MAX_POINTS_SAM3 / 2)
                    .chain(n - MAX_POINTS_SAM3 / 2..n)
                    .collect(),
                (_, n) => (0..n).collect(),
            };
            let n = keep.len() as i64;
            let flat: Vec<f32> = keep
                .iter()
                .flat_map(|&i| [fp.points[i][0], fp.points[i][1]])
                .collect();
            let labels: Vec<i32> = keep.iter().map(|&i| fp.labels[i]).collect();
            let wh = Tensor::from_slice(&[self.setup.video_w as f32, self.setup.video_h as f32]);
            let coords =
                (Tensor::from_slice(&flat).view([1, n, 2]) / wh * (s as f64)).to_device(dev);
            let labels = Tensor::from_slice(&labels).view([1, n]).to_device(dev);
            let pts = PointInputs { coords, labels };
            // SAM 3 keeps no logits of a mask prompt for clicks on the same frame (its
            // `pred_masks` is None there): the clicks start afresh.
            let mask_in = if sam3 && fp.mask.is_some() {
                None
            } else {
                prev_low.as_ref().map(|l| l.clamp(-32.0, 32.0))
            };
            let out = model.prompt_frame(feats, Some(&pts), mask_in.as_ref());
            prev_low = Some(fill_holes(&out.low_res_masks, fill));
            prev = Some(out);
        }
        let (Some(out), Some(low)) = (prev, prev_low) else {
            return Err(TrackError::Invalid(
                "a frame prompt without mask or points".into(),
            ));
        };
        // Preflight: binarised memory from the hole-filled low-res logits upsampled to S.
        let high = low.upsample_bilinear2d([s, s], false, None, None);
        let (features, pos) = model.encode_memory(feats, &high, &out.object_score_logits, true);
        Ok((
            CondEntry {
                features,
                obj_ptr: out.obj_ptr,
                low_res: low,
                score_logit: out
                    .object_score_logits
                    .f_double_value(&[0, 0])
                    .map_err(|e| TrackError::Device(format!("object score: {e}")))?,
                iou: out
                    .ious
                    .f_double_value(&[0, 0])
                    .map_err(|e| TrackError::Device(format!("predicted IoU: {e}")))?,
            },
            pos,
        ))
    }
}

fn missing_prompted(want: Option<FrameNo>, got: FrameNo) -> TrackError {
    match want {
        Some(n) if n < got => TrackError::Video(format!(
            "prompted frame {n} could not be decoded (its prompts cannot be used)"
        )),
        _ => bad_frame(got),
    }
}
