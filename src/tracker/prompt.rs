//! The prompts a run takes: per object, per prompted frame, what the official
//! `add_new_mask` / `add_new_points_or_box` calls get, in original video pixels. Plain,
//! validated values: src/prompts/ reads and validates the files and produces them; the tracker
//! only checks that every prompted frame is a processed frame of its schedule.

use std::collections::BTreeMap;

use super::FrameNo;
// A neutral mask type (moving to `crate::mask`); the tracker uses nothing else of src/prompts/.
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
}
