//! The run plan: which original frames are processed (the video SAM 2 sees), which are written,
//! the span of frames an object is tracked on under `--span prompts` ([`prompt_span`]), where the
//! forward and reverse passes start, and how far the first forward stretch must go so
//! that the reverse pass and the rest of the forward pass read exactly what the official
//! forward-then-reverse order would have them read.

use super::bank::SelectCfg;

/// The processed frames and the pass layout of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Original frame numbers of the processed frames, ascending. SAM 2 sees these as its video:
    /// processed index `i` is frame `processed[i]`.
    pub processed: Vec<u64>,
    /// Per processed index: whether the frame is written to the output.
    pub written: Vec<bool>,
    /// Processed index of the earliest prompted frame (`s`).
    pub start: usize,
    /// Last processed index (inclusive) of the first forward stretch `s ..= head_end`.
    pub head_end: usize,
}

impl Plan {
    /// Processed frames: every `track_stride`-th, every written (`frame_interval`-th) and every
    /// prompted frame. `prompted` must be non-empty and inside `0..num_frames`.
    pub fn new(
        num_frames: u64,
        prompted: &[u64],
        track_stride: u64,
        frame_interval: u64,
        mem_stride: i64,
    ) -> Option<Plan> {
        let stride = track_stride.max(1);
        let interval = frame_interval.max(1);
        let first = *prompted.iter().min()?;
        if prompted.iter().any(|&p| p >= num_frames) {
            return None;
        }
        let mut prompted_sorted = prompted.to_vec();
        prompted_sorted.sort_unstable();
        prompted_sorted.dedup();
        let mut processed = Vec::new();
        let mut written = Vec::new();
        let mut pi = 0usize;
        let mut n = 0u64;
        // Walk the grid points and prompted frames in order, without visiting every frame.
        loop {
            let next_grid = next_multiple_of_either(n, stride, interval);
            let next_prompt = prompted_sorted.get(pi).copied();
            let cand = match next_prompt {
                Some(p) if p < next_grid => p,
                _ => next_grid,
            };
            if cand >= num_frames {
                break;
            }
            processed.push(cand);
            written.push(cand % interval == 0);
            if next_prompt == Some(cand) {
                pi += 1;
            }
            n = cand + 1;
        }
        let start = processed.binary_search(&first).ok()?;
        let cfg = SelectCfg {
            num_frames: processed.len() as i64,
            max_cond: -1,
            stride: mem_stride,
            signed_ptr_pos: true,
        };
        let head_end = head_end(start as i64, &cfg).min(processed.len() as i64 - 1) as usize;
        Some(Plan {
            processed,
            written,
            start,
            head_end,
        })
    }

    pub fn len(&self) -> usize {
        self.processed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processed.is_empty()
    }

    /// Processed index of an original frame number.
    pub fn index_of(&self, frame: u64) -> Option<usize> {
        self.processed.binary_search(&frame).ok()
    }

    /// The processed indices `(lo, hi)` (inclusive) of the processed frames among original
    /// frames `first ..= last`; `None` if there is none.
    pub fn index_range(&self, first: u64, last: u64) -> Option<(usize, usize)> {
        let lo = self.processed.partition_point(|&f| f < first);
        let hi = self.processed.partition_point(|&f| f <= last);
        (lo < hi).then(|| (lo, hi - 1))
    }
}

/// An object's span under `--span prompts`, in original frames (inclusive): its first prompted
/// frame minus `margin` frames to its last plus `margin`, clipped to `0..num_frames`.
pub fn prompt_span(first: u64, last: u64, margin: u64, num_frames: u64) -> (u64, u64) {
    (
        first.saturating_sub(margin),
        last.saturating_add(margin)
            .min(num_frames.saturating_sub(1))
            .max(first),
    )
}

/// The smallest `n' >= n` that is a multiple of `a` or of `b`.
fn next_multiple_of_either(n: u64, a: u64, b: u64) -> u64 {
    let up = |m: u64| n.div_ceil(m) * m;
    up(a).min(up(b))
}

/// The last index `s + k` of the first forward stretch: the reverse pass from `s` reads forward
/// results up to `s + k`, and no forward frame after `s + k` reads frame `s` (whose tracked
/// result the reverse pass replaces). For the official configuration this is `s + 15`.
pub fn head_end(s: i64, cfg: &SelectCfg) -> i64 {
    let (rev_ptr, rev_mem) = cfg.read_bounds(s, true);
    let mut k = (rev_ptr.max(rev_mem) - s).max(15);
    while cfg.read_bounds(s + k + 1, false).0 <= s {
        k += 1;
    }
    s + k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_frames_union() {
        let p = Plan::new(20, &[7, 3], 5, 4, 1).unwrap();
        assert_eq!(p.processed, vec![0, 3, 4, 5, 7, 8, 10, 12, 15, 16]);
        assert_eq!(
            p.written,
            vec![
                true, false, true, false, false, true, false, true, false, true
            ]
        );
        assert_eq!(p.start, 1);
        assert_eq!(p.head_end, 9); // capped at the last index
        assert_eq!(p.index_of(7), Some(4));
        assert_eq!(p.index_of(6), None);
        let p = Plan::new(10, &[9], 1, 1, 1).unwrap();
        assert_eq!(p.processed, (0..10).collect::<Vec<_>>());
        assert!(p.written.iter().all(|&w| w));
        assert_eq!(p.start, 9);
        assert!(Plan::new(10, &[10], 1, 1, 1).is_none());
        assert!(Plan::new(10, &[], 1, 1, 1).is_none());
    }

    #[test]
    fn spans_and_index_ranges() {
        let p = Plan::new(20, &[7, 3], 5, 4, 1).unwrap();
        // processed: 0, 3, 4, 5, 7, 8, 10, 12, 15, 16
        assert_eq!(p.index_range(3, 7), Some((1, 4)));
        assert_eq!(p.index_range(1, 9), Some((1, 5)));
        assert_eq!(p.index_range(17, 19), None);
        assert_eq!(p.index_range(0, 100), Some((0, 9)));
        assert_eq!(prompt_span(10, 30, 5, 100), (5, 35));
        assert_eq!(prompt_span(2, 98, 5, 100), (0, 99));
        assert_eq!(prompt_span(2, 2, 0, 100), (2, 2));
    }

    #[test]
    fn head_stretch() {
        let cfg = SelectCfg {
            num_frames: 1000,
            max_cond: -1,
            stride: 1,
            signed_ptr_pos: true,
        };
        assert_eq!(head_end(10, &cfg), 25);
        let cfg3 = SelectCfg { stride: 3, ..cfg };
        let e = head_end(10, &cfg3);
        // Reverse at 10 reads memories up to ceil(12/3)*3 + 12 = 24; forward after e never reads 10.
        assert!(e >= 25);
        assert!(cfg3.read_bounds(e + 1, false).0 > 10);
        assert!(cfg3.read_bounds(e, false).0 <= 10);
    }
}
