//! The prompts a run takes: per object, per prompted frame, what the official
//! `add_new_mask` / `add_new_points_or_box` calls get, in original video pixels. Plain,
//! validated values: src/prompts/ reads and validates the files and produces them; the tracker
//! only checks that every prompted frame is a processed frame of its schedule.

use std::collections::BTreeMap;

use super::FrameNo;
use crate::mask::BinaryMask;

/// One object's prompts on one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePrompt {
    /// `add_new_mask` input (applied first), original video pixels.
    pub mask: Option<BinaryMask>,
    /// `add_new_points_or_box` input: box corners (labels 2, 3) first, then points (1 / 0), in
    /// original video pixels. Empty when the frame has only a mask.
    pub points: Vec<[f32; 2]>,
    pub labels: Vec<i32>,
}

/// A validated object: its id, label and prompts by frame (ascending).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPrompts {
    pub id: String,
    pub label: Option<String>,
    pub frames: BTreeMap<FrameNo, FramePrompt>,
}

/// The validated prompts of a run, objects in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptSet {
    pub objects: Vec<ObjectPrompts>,
}

impl PromptSet {
    /// Every prompted frame, ascending.
    pub fn prompted_frames(&self) -> Vec<FrameNo> {
        let mut v: Vec<FrameNo> = self
            .objects
            .iter()
            .flat_map(|o| o.frames.keys().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The most conditioning frames memory attention reads for any object: an object's
    /// conditioning frames are its prompted frames (the prompt pre-pass stores one per prompted
    /// frame), of which the selection keeps at most `max_cond` (-1: all; docs/sam2-inference.md
    /// §4.4 step 0). What `--static-shapes` pads to and `--batch-objects auto` sizes for.
    pub fn most_conditioning_frames(&self, max_cond: i64) -> usize {
        let most = self
            .objects
            .iter()
            .map(|o| o.frames.len())
            .max()
            .unwrap_or(0);
        match usize::try_from(max_cond) {
            Ok(cap) => most.min(cap),
            Err(_) => most,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_conditioning_frames_is_capped_by_the_selection() {
        let p = FramePrompt {
            mask: None,
            points: vec![[1.0, 2.0]],
            labels: vec![1],
        };
        let object = |frames: &[u64]| ObjectPrompts {
            id: format!("{frames:?}"),
            label: None,
            frames: frames.iter().map(|&f| (FrameNo(f), p.clone())).collect(),
        };
        let set = PromptSet {
            objects: vec![object(&[3]), object(&[0, 5, 9]), object(&[2, 4])],
        };
        assert_eq!(set.most_conditioning_frames(-1), 3);
        assert_eq!(set.most_conditioning_frames(2), 2);
        assert_eq!(set.most_conditioning_frames(5), 3);
        assert_eq!(PromptSet::default().most_conditioning_frames(-1), 0);
    }
}
