//! Window arithmetic, shared by `densam annotate` and `densam plan`: the frame rate windows are
//! measured with, the frames per window and per overlap of `--window-duration` /
//! `--window-overlap`, the window of a frame, the frames of a window-parallel run
//! (`--window K`: warm-up, owned frames) and the prompts such a run keeps. One definition, so
//! that a planned task's window is exactly the one `annotate --window K` runs.

use std::collections::BTreeMap;

use super::JobError;
use crate::tracker::{FrameNo, FramePrompt, ObjectPrompts, PromptSet};
use crate::video::VideoSource;

/// The frame rate windows are measured with: the average fps, else 30.
pub fn video_fps(video: &VideoSource) -> f64 {
    let i = video.info();
    if i.fps_avg.is_finite() && i.fps_avg > 0.0 {
        i.fps_avg
    } else {
        30.0
    }
}

/// (frames per window, overlap frames) of `--window-duration` / `--window-overlap` at `fps`.
pub fn window_frames(window_duration: f64, window_overlap: f64, fps: f64) -> (u64, u64) {
    (
        ((window_duration * fps).round() as u64).max(1),
        (window_overlap * fps).round() as u64,
    )
}

/// The number of windows of a video of `num_frames` frames.
pub fn window_count(num_frames: u64, window_frames: u64) -> u64 {
    num_frames.div_ceil(window_frames.max(1))
}

/// The window of an original frame.
pub fn window_of(frame: u64, window_frames: u64) -> u64 {
    frame / window_frames.max(1)
}

/// The least common multiple (of the track stride and the frame interval: the grid a window's
/// warm-up starts on). Zeros count as 1.
pub fn lcm(a: u64, b: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let (a, b) = (a.max(1), b.max(1));
    a / gcd(a, b) * b
}

/// The frames of window-parallel window `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRange {
    pub index: u64,
    /// First frame of the bank warm-up (on the processing grid).
    pub warm_from: u64,
    /// First frame the window owns (writes).
    pub own_from: u64,
    /// One past the last frame it owns.
    pub end: u64,
}

impl WindowRange {
    /// Window `index` of a video of `num_frames` frames, its warm-up `overlap_frames` before it
    /// rounded down to a multiple of `grid`; a usage error past the last window.
    pub fn new(
        index: u64,
        window_frames: u64,
        overlap_frames: u64,
        num_frames: u64,
        grid: u64,
    ) -> Result<Self, JobError> {
        let n_windows = window_count(num_frames, window_frames);
        if index >= n_windows {
            return Err(JobError::Usage(format!(
                "--window {index}: the video has {n_windows} window(s) of {window_frames} frames"
            )));
        }
        let own_from = index * window_frames;
        let end = ((index + 1) * window_frames).min(num_frames);
        let warm = own_from.saturating_sub(overlap_frames);
        let grid = grid.max(1);
        Ok(WindowRange {
            index,
            warm_from: warm / grid * grid,
            own_from,
            end,
        })
    }
}

/// The prompts a window run uses: each object's prompts inside `warm_from..end`; objects without
/// one are left out (with a warning).
pub fn window_prompts(set: &PromptSet, w: &WindowRange, warnings: &mut Vec<String>) -> PromptSet {
    let mut out = PromptSet::default();
    for o in &set.objects {
        let frames: BTreeMap<FrameNo, FramePrompt> = o
            .frames
            .range(FrameNo(w.warm_from)..FrameNo(w.end))
            .map(|(f, p)| (*f, p.clone()))
            .collect();
        if frames.is_empty() {
            let msg = format!(
                "window {}: object `{}` has no prompt in frames {}..{}: not tracked in this window",
                w.index, o.id, w.warm_from, w.end
            );
            tracing::warn!("{msg}");
            warnings.push(msg);
            continue;
        }
        out.objects.push(ObjectPrompts {
            id: o.id.clone(),
            label: o.label.clone(),
            frames,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_arithmetic() {
        assert_eq!(window_frames(0.5, 0.2, 30.0), (15, 6));
        assert_eq!(window_frames(0.001, 0.0, 30.0), (1, 0));
        assert_eq!(window_count(40, 15), 3);
        assert_eq!(window_count(45, 15), 3);
        assert_eq!(window_count(0, 15), 0);
        assert_eq!((window_of(14, 15), window_of(15, 15)), (0, 1));
        assert_eq!((lcm(4, 6), lcm(0, 3), lcm(1, 1)), (12, 3, 1));
        let w = WindowRange::new(2, 15, 6, 40, 4).unwrap();
        assert_eq!((w.warm_from, w.own_from, w.end), (24, 30, 40));
        let w0 = WindowRange::new(0, 15, 6, 40, 1).unwrap();
        assert_eq!((w0.warm_from, w0.own_from, w0.end), (0, 0, 15));
        assert!(matches!(
            WindowRange::new(3, 15, 6, 40, 1),
            Err(JobError::Usage(_))
        ));
    }

    #[test]
    fn window_prompts_cut_and_drop() {
        let prompt = |f: u64| {
            let p = FramePrompt {
                mask: None,
                points: vec![[1.0, 2.0]],
                labels: vec![1],
            };
            (FrameNo(f), p)
        };
        let set = PromptSet {
            objects: vec![
                ObjectPrompts {
                    id: "a".into(),
                    label: None,
                    frames: [prompt(3), prompt(12), prompt(20)].into_iter().collect(),
                },
                ObjectPrompts {
                    id: "b".into(),
                    label: None,
                    frames: [prompt(2)].into_iter().collect(),
                },
            ],
        };
        let w = WindowRange::new(1, 10, 2, 40, 1).unwrap();
        let mut warnings = Vec::new();
        let got = window_prompts(&set, &w, &mut warnings);
        assert_eq!(got.objects.len(), 1);
        assert_eq!(
            got.objects[0].frames.keys().copied().collect::<Vec<_>>(),
            [FrameNo(12)]
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`b`"), "{warnings:?}");
    }
}
