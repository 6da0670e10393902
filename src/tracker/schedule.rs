//! The schedule of a run, as pure index logic: which frames of its frame range are processed
//! (the video SAM 2 sees) and written, each object's span ([`prompt_span`] under
//! `--span prompts`), where the passes start, how far the forward head must go so that the
//! reverse pass and the rest read exactly what the official forward-then-reverse order would
//! have them read ([`head_end`]), and the run order: which processed indices each pass visits,
//! in which order, which of them are decoded and which are idle, how the reverse pass is
//! decoded in chunks, and how a run goes on from a resume point ([`Stage`]). Nothing here
//! touches a tensor.

use super::bank::SelectCfg;
use super::{FrameNo, ProcIdx};

/// The frames a run covers, `first .. end` (a whole video, or a window with its warm-up);
/// frames before `write_from` are tracked but not written (a window's warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRange {
    pub first: FrameNo,
    pub end: FrameNo,
    pub write_from: FrameNo,
}

impl FrameRange {
    /// A whole video of `num_frames` frames.
    pub fn video(num_frames: u64) -> Self {
        FrameRange {
            first: FrameNo(0),
            end: FrameNo(num_frames),
            write_from: FrameNo(0),
        }
    }
}

/// The passes after the prompt pre-pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Forward over `s ..= head_end`: results spooled, banks kept whole under `sam2` (the
    /// reverse pass and the rest read them; a ranked policy keeps what they read,
    /// [`super::bank::ObjectBank::prune_head`]).
    Head,
    /// From `s` down to 0 on a copy of the head's banks: results spooled.
    Reverse,
    /// Forward from `head_end + 1` to the end: results written directly.
    Rest,
}

impl Pass {
    pub fn is_reverse(self) -> bool {
        self == Pass::Reverse
    }

    /// Whether the results go to the spool (the first stretch) rather than to the sink.
    pub fn spooled(self) -> bool {
        self != Pass::Rest
    }

    /// Whether what no later frame of the pass can read is dropped after each frame (not in the
    /// head, whose banks the reverse pass and the rest read; there a ranked policy has its own
    /// retention).
    pub fn prunes(self) -> bool {
        self != Pass::Head
    }
}

/// Where a run stands, as far as resuming goes: the point after the last processed frame
/// tracked. Every stage but `Start` can be saved and resumed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// The prompt pre-pass (recomputed by every run): nothing to save.
    #[default]
    Start,
    /// Forward head: the next processed index to track; the results so far are in the spool.
    Head(ProcIdx),
    /// Reverse pass: the lowest processed index tracked so far (the pass goes on below it); the
    /// head's banks are kept aside, the results so far are in the spool.
    Reverse(ProcIdx),
    /// The rest: the next processed index; the sink has every written frame before it.
    Rest(ProcIdx),
}

impl Stage {
    /// The stage after processed index `t` of `pass` was tracked.
    pub fn after(pass: Pass, t: ProcIdx) -> Stage {
        match pass {
            Pass::Head => Stage::Head(t.next()),
            Pass::Reverse => Stage::Reverse(t),
            Pass::Rest => Stage::Rest(t.next()),
        }
    }

    /// Inside the first stretch: a saved state there refers to the spool.
    pub fn in_first_stretch(self) -> bool {
        matches!(self, Stage::Head(_) | Stage::Reverse(_))
    }
}

/// A part of the run order: the frames of one decode of the frame source, or the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Forward over processed indices `from .. to` (ascending; `pass` is the head or the rest):
    /// the active frames decoded in one go.
    Forward {
        pass: Pass,
        from: ProcIdx,
        to: ProcIdx,
    },
    /// A chunk of the reverse pass: processed indices `hi` down to `lo` (inclusive), the active
    /// ones decoded together first.
    Reverse { lo: ProcIdx, hi: ProcIdx },
    /// The end of the first stretch: the head's banks back, the spool replayed into the sink in
    /// ascending frame order; the run is then at `Stage::Rest(head_end + 1)`.
    Replay,
}

impl Leg {
    /// The pass and the processed indices the leg visits, in visiting order.
    pub fn visits(&self) -> (Pass, Vec<ProcIdx>) {
        match *self {
            Leg::Forward { pass, from, to } => (pass, (from.0..to.0).map(ProcIdx).collect()),
            Leg::Reverse { lo, hi } => (Pass::Reverse, (lo.0..=hi.0).rev().map(ProcIdx).collect()),
            Leg::Replay => (Pass::Rest, Vec::new()),
        }
    }
}

/// The processed frames, the spans and the pass layout of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The processed frames, ascending: processed index `i` is frame `processed[i]`.
    processed: Vec<FrameNo>,
    /// Per processed index: whether the frame is written.
    written: Vec<bool>,
    /// The first prompt `s`.
    start: ProcIdx,
    /// The last processed index (inclusive) of the forward head `s ..= head_end`: at first
    /// [`head_end`]'s; a ranked memory policy may extend it while the run goes
    /// ([`Self::extend_head`]).
    head_end: ProcIdx,
    /// [`head_end`]'s value, the least head of every run of this schedule.
    min_head_end: ProcIdx,
    /// Per object: the processed indices (inclusive) it is active on.
    spans: Vec<(ProcIdx, ProcIdx)>,
}

impl Schedule {
    /// Processed frames of `range`: every `track_stride`-th, every written
    /// (`frame_interval`-th) and every prompted frame; the grids count the video's frame
    /// numbers (a window's range starts on both). `prompted` must be non-empty and inside the
    /// range. No objects yet (see [`Self::set_full_spans`]).
    pub fn new(
        range: FrameRange,
        prompted: &[FrameNo],
        track_stride: u64,
        frame_interval: u64,
        mem_stride: i64,
    ) -> Option<Schedule> {
        let stride = track_stride.max(1);
        let interval = frame_interval.max(1);
        let first = *prompted.iter().min()?;
        if prompted.iter().any(|&p| p < range.first || p >= range.end) {
            return None;
        }
        let mut prompted_sorted = prompted.to_vec();
        prompted_sorted.sort_unstable();
        prompted_sorted.dedup();
        let mut processed = Vec::new();
        let mut written = Vec::new();
        let mut pi = 0usize;
        let mut n = range.first.0;
        // Walk the grid points and prompted frames in order, without visiting every frame.
        loop {
            let next_grid = next_multiple_of_either(n, stride, interval);
            let next_prompt = prompted_sorted.get(pi).map(|p| p.0);
            let cand = match next_prompt {
                Some(p) if p < next_grid => p,
                _ => next_grid,
            };
            if cand >= range.end.0 {
                break;
            }
            processed.push(FrameNo(cand));
            written.push(cand % interval == 0 && cand >= range.write_from.0);
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
            policy: crate::tracker::policy::MemoryPolicy::Sam2,
        };
        let head_end = head_end(start as i64, &cfg).min(processed.len() as i64 - 1) as usize;
        Some(Schedule {
            processed,
            written,
            start: ProcIdx(start),
            head_end: ProcIdx(head_end),
            min_head_end: ProcIdx(head_end),
            spans: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.processed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processed.is_empty()
    }

    /// The processed frames, ascending.
    pub fn frames(&self) -> &[FrameNo] {
        &self.processed
    }

    /// The frame of processed index `t` (which must be one).
    pub fn frame(&self, t: ProcIdx) -> FrameNo {
        self.processed[t.0]
    }

    /// Whether processed index `t` is written.
    pub fn is_written(&self, t: ProcIdx) -> bool {
        self.written.get(t.0).copied().unwrap_or(false)
    }

    /// The first prompt `s`.
    pub fn start(&self) -> ProcIdx {
        self.start
    }

    /// The last processed index of the forward head.
    pub fn head_end(&self) -> ProcIdx {
        self.head_end
    }

    /// The head end [`head_end`] gives, before any extension.
    pub fn min_head_end(&self) -> ProcIdx {
        self.min_head_end
    }

    /// Extends the head (SAM 3's policy, while the reverse pass would read further than the head
    /// holds): by its length so far (at least [`HEAD_EXTENSION`] processed frames), so that a
    /// long head costs few restarts of the decoder; never past the last processed index.
    /// Returns whether it grew.
    pub fn extend_head(&mut self) -> bool {
        let last = self.len().saturating_sub(1);
        let he = self.head_end.0;
        let grown = (he + (he + 1 - self.start.0).max(HEAD_EXTENSION)).min(last);
        self.head_end = ProcIdx(grown.max(he));
        grown > he
    }

    /// Sets the head end of a saved state; `false` (nothing changed) if no run of this schedule
    /// can have it.
    pub fn set_head_end(&mut self, he: ProcIdx) -> bool {
        let ok = he >= self.min_head_end && he.0 < self.len();
        if ok {
            self.head_end = he;
        }
        ok
    }

    /// The processed index of a frame.
    pub fn index_of(&self, frame: FrameNo) -> Option<ProcIdx> {
        self.processed.binary_search(&frame).ok().map(ProcIdx)
    }

    /// The processed indices `(lo, hi)` (inclusive) of the processed frames among frames
    /// `first ..= last`; `None` if there is none.
    pub fn index_range(&self, first: FrameNo, last: FrameNo) -> Option<(ProcIdx, ProcIdx)> {
        let lo = self.processed.partition_point(|&f| f < first);
        let hi = self.processed.partition_point(|&f| f <= last);
        (lo < hi).then(|| (ProcIdx(lo), ProcIdx(hi - 1)))
    }

    /// Per object: the processed indices (inclusive) it is active on.
    pub fn spans(&self) -> &[(ProcIdx, ProcIdx)] {
        &self.spans
    }

    /// `n` objects, each active on every processed frame.
    pub fn set_full_spans(&mut self, n: usize) {
        let last = ProcIdx(self.len().saturating_sub(1));
        self.spans = vec![(ProcIdx(0), last); n];
    }

    /// Per object, the processed indices (inclusive) it is active on.
    pub fn set_spans(&mut self, spans: Vec<(ProcIdx, ProcIdx)>) {
        self.spans = spans;
    }

    /// Whether object `o` is active on processed index `t`.
    pub fn is_active(&self, o: usize, t: ProcIdx) -> bool {
        self.spans
            .get(o)
            .is_some_and(|&(lo, hi)| lo <= t && t <= hi)
    }

    /// Whether some object is active on processed index `t` (else the frame is idle).
    pub fn any_active(&self, t: ProcIdx) -> bool {
        self.spans.iter().any(|&(lo, hi)| lo <= t && t <= hi)
    }

    /// The processed frames some object is active on.
    pub fn active_frames(&self) -> usize {
        (0..self.len())
            .filter(|&t| self.any_active(ProcIdx(t)))
            .count()
    }

    /// The frames of processed indices `from .. to` to decode (the active ones), ascending.
    pub fn decoded(&self, from: ProcIdx, to: ProcIdx) -> Vec<FrameNo> {
        (from.0..to.0)
            .map(ProcIdx)
            .filter(|&t| self.any_active(t))
            .map(|t| self.frame(t))
            .collect()
    }

    /// The written idle frames of processed indices `from .. to` (whose times are needed
    /// without decoding them), ascending.
    pub fn idle_written(&self, from: ProcIdx, to: ProcIdx) -> Vec<FrameNo> {
        (from.0..to.0)
            .map(ProcIdx)
            .filter(|&t| self.is_written(t) && !self.any_active(t))
            .map(|t| self.frame(t))
            .collect()
    }

    /// Whether a processed frame of `pass` counts towards the progress (the reverse pass's
    /// first frame `s` was counted by the head).
    pub fn counted(&self, pass: Pass, t: ProcIdx) -> bool {
        !(pass == Pass::Reverse && t == self.start)
    }

    /// Processed frames counted before `stage` (see [`Self::counted`]).
    pub fn done_before(&self, stage: Stage) -> usize {
        let (s, he) = (self.start.0, self.head_end.0);
        match stage {
            Stage::Start => 0,
            Stage::Head(k) => k.0.saturating_sub(s),
            Stage::Reverse(k) => (he + 1).saturating_sub(k.0),
            Stage::Rest(k) => k.0,
        }
    }

    /// Whether a run of this schedule can be at `stage` (a saved state's stage).
    pub fn fits(&self, stage: Stage) -> bool {
        let (s, he, len) = (self.start.0, self.head_end.0, self.len());
        match stage {
            Stage::Start => false,
            Stage::Head(k) => (s..=he + 1).contains(&k.0),
            Stage::Reverse(k) => k.0 <= s && s > 0,
            Stage::Rest(k) => (he + 1..=len).contains(&k.0),
        }
    }

    /// The run order after the pre-pass, from `stage` on (`Start`: the whole run): the forward
    /// head, the reverse pass in chunks of `reverse_chunk` processed frames from its end
    /// backwards (none if `s` is 0), the replay, the rest. Empty forward legs are left out.
    pub fn legs(&self, stage: Stage, reverse_chunk: usize) -> Vec<Leg> {
        let (s, he, len) = (self.start.0, self.head_end.0, self.len());
        let (head_from, reverse_below, rest_from) = match stage {
            Stage::Start => (Some(s), Some(s + 1), he + 1),
            Stage::Head(k) => (Some(k.0), Some(s + 1), he + 1),
            Stage::Reverse(k) => (None, Some(k.0), he + 1),
            Stage::Rest(k) => (None, None, k.0),
        };
        let mut legs = Vec::new();
        if let Some(k) = head_from.filter(|&k| k <= he) {
            legs.push(Leg::Forward {
                pass: Pass::Head,
                from: ProcIdx(k),
                to: ProcIdx(he + 1),
            });
        }
        if let Some(below) = reverse_below {
            if s > 0 {
                let chunk = reverse_chunk.max(1);
                let mut top = below; // one past the next chunk's upper end
                while top > 0 {
                    let lo = top.saturating_sub(chunk);
                    legs.push(Leg::Reverse {
                        lo: ProcIdx(lo),
                        hi: ProcIdx(top - 1),
                    });
                    top = lo;
                }
            }
            legs.push(Leg::Replay);
        }
        if rest_from < len {
            legs.push(Leg::Forward {
                pass: Pass::Rest,
                from: ProcIdx(rest_from),
                to: ProcIdx(len),
            });
        }
        legs
    }
}

/// The least extension of the head ([`Schedule::extend_head`]), in processed frames.
pub const HEAD_EXTENSION: usize = 64;

/// An object's span under `--span prompts` (inclusive): its first prompted frame minus `margin`
/// frames to its last plus `margin`, clipped to `0..num_frames`.
pub fn prompt_span(
    first: FrameNo,
    last: FrameNo,
    margin: u64,
    num_frames: u64,
) -> (FrameNo, FrameNo) {
    (
        FrameNo(first.0.saturating_sub(margin)),
        FrameNo(
            last.0
                .saturating_add(margin)
                .min(num_frames.saturating_sub(1))
                .max(first.0),
        ),
    )
}

/// The smallest `n' >= n` that is a multiple of `a` or of `b`.
fn next_multiple_of_either(n: u64, a: u64, b: u64) -> u64 {
    let up = |m: u64| n.div_ceil(m) * m;
    up(a).min(up(b))
}

/// The last index `s + k` of the forward head: the reverse pass from `s` reads forward results
/// up to `s + k`, and no forward frame after `s + k` reads frame `s` (whose tracked result the
/// reverse pass replaces). For the official configuration this is `s + 15`.
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

    fn frames(v: &[u64]) -> Vec<FrameNo> {
        v.iter().map(|&f| FrameNo(f)).collect()
    }

    fn sched(num_frames: u64, prompted: &[u64], stride: u64, interval: u64) -> Schedule {
        let mut s = Schedule::new(
            FrameRange::video(num_frames),
            &frames(prompted),
            stride,
            interval,
            1,
        )
        .unwrap();
        s.set_full_spans(1);
        s
    }

    #[test]
    fn processed_frames_union() {
        let p = sched(20, &[7, 3], 5, 4);
        assert_eq!(p.frames(), frames(&[0, 3, 4, 5, 7, 8, 10, 12, 15, 16]));
        let written: Vec<bool> = (0..p.len()).map(|t| p.is_written(ProcIdx(t))).collect();
        assert_eq!(
            written,
            vec![
                true, false, true, false, false, true, false, true, false, true
            ]
        );
        assert_eq!(p.start(), ProcIdx(1));
        assert_eq!(p.head_end(), ProcIdx(9)); // capped at the last index
        assert_eq!(p.index_of(FrameNo(7)), Some(ProcIdx(4)));
        assert_eq!(p.index_of(FrameNo(6)), None);
        let p = sched(10, &[9], 1, 1);
        assert_eq!(p.frames(), frames(&(0..10).collect::<Vec<_>>()));
        assert!((0..10).all(|t| p.is_written(ProcIdx(t))));
        assert_eq!(p.start(), ProcIdx(9));
        let none =
            |pr: &[u64]| Schedule::new(FrameRange::video(10), &frames(pr), 1, 1, 1).is_none();
        assert!(none(&[10]));
        assert!(none(&[]));
    }

    #[test]
    fn a_window_range_is_the_video_schedule_cut_to_it() {
        // Window frames 12..24 with the warm-up from 6 (on the grid of 3 and 2), written from 12:
        // the processed frames are those of the whole video's schedule inside 6..24, with the
        // video's frame numbers.
        let range = FrameRange {
            first: FrameNo(6),
            end: FrameNo(24),
            write_from: FrameNo(12),
        };
        let w = Schedule::new(range, &frames(&[7, 13]), 3, 2, 1).unwrap();
        let v = Schedule::new(FrameRange::video(40), &frames(&[7, 13]), 3, 2, 1).unwrap();
        let inside: Vec<FrameNo> = v
            .frames()
            .iter()
            .copied()
            .filter(|f| (6..24).contains(&f.0))
            .collect();
        assert_eq!(w.frames(), inside);
        for t in 0..w.len() {
            let f = w.frame(ProcIdx(t));
            let vt = v.index_of(f).unwrap();
            assert_eq!(
                w.is_written(ProcIdx(t)),
                v.is_written(vt) && f.0 >= 12,
                "{f}"
            );
        }
        assert_eq!(w.frame(w.start()), FrameNo(7));
        // Prompts outside the range: no schedule.
        assert!(Schedule::new(range, &frames(&[5]), 3, 2, 1).is_none());
        assert!(Schedule::new(range, &frames(&[24]), 3, 2, 1).is_none());
    }

    #[test]
    fn spans_index_ranges_and_idle_frames() {
        let mut p = sched(20, &[7, 3], 5, 4);
        // processed: 0, 3, 4, 5, 7, 8, 10, 12, 15, 16
        assert_eq!(
            p.index_range(FrameNo(3), FrameNo(7)),
            Some((ProcIdx(1), ProcIdx(4)))
        );
        assert_eq!(
            p.index_range(FrameNo(1), FrameNo(9)),
            Some((ProcIdx(1), ProcIdx(5)))
        );
        assert_eq!(p.index_range(FrameNo(17), FrameNo(19)), None);
        assert_eq!(
            p.index_range(FrameNo(0), FrameNo(100)),
            Some((ProcIdx(0), ProcIdx(9)))
        );
        assert_eq!(
            prompt_span(FrameNo(10), FrameNo(30), 5, 100),
            (FrameNo(5), FrameNo(35))
        );
        assert_eq!(
            prompt_span(FrameNo(2), FrameNo(98), 5, 100),
            (FrameNo(0), FrameNo(99))
        );
        assert_eq!(
            prompt_span(FrameNo(2), FrameNo(2), 0, 100),
            (FrameNo(2), FrameNo(2))
        );
        // Two objects on indices 1..=2 and 4..=5: 0, 3 and 6.. are idle.
        p.set_spans(vec![(ProcIdx(1), ProcIdx(2)), (ProcIdx(4), ProcIdx(5))]);
        assert!(p.is_active(1, ProcIdx(4)) && !p.is_active(0, ProcIdx(4)));
        assert_eq!(p.active_frames(), 4);
        assert_eq!(p.decoded(ProcIdx(0), ProcIdx(10)), frames(&[3, 4, 7, 8]));
        // Idle: 0, 5, 10, 12, 15, 16; written (every 4th) among them: 0, 12, 16.
        assert_eq!(
            p.idle_written(ProcIdx(0), ProcIdx(10)),
            frames(&[0, 12, 16])
        );
        assert_eq!(p.idle_written(ProcIdx(4), ProcIdx(8)), frames(&[12]));
    }

    #[test]
    fn head_stretch() {
        let cfg = SelectCfg {
            num_frames: 1000,
            max_cond: -1,
            stride: 1,
            signed_ptr_pos: true,
            policy: crate::tracker::policy::MemoryPolicy::Sam2,
        };
        assert_eq!(head_end(10, &cfg), 25);
        let cfg3 = SelectCfg { stride: 3, ..cfg };
        let e = head_end(10, &cfg3);
        // Reverse at 10 reads memories up to ceil(12/3)*3 + 12 = 24; forward after e never reads 10.
        assert!(e >= 25);
        assert!(cfg3.read_bounds(e + 1, false).0 > 10);
        assert!(cfg3.read_bounds(e, false).0 <= 10);
    }

    #[test]
    fn an_extended_head_grows_geometrically_and_stays_inside() {
        let mut p = sched(300, &[10], 1, 1);
        let i = ProcIdx;
        assert_eq!((p.head_end(), p.min_head_end()), (i(25), i(25)));
        assert!(p.extend_head());
        assert_eq!(p.head_end(), i(25 + 64));
        assert!(p.extend_head());
        assert_eq!(p.head_end(), i(89 + 80));
        assert!(p.extend_head());
        assert_eq!(p.head_end(), i(299));
        assert!(!p.extend_head());
        // The run order from the end of the first head goes on with the extension.
        assert!(p.set_head_end(i(89)));
        assert_eq!(
            p.legs(Stage::Head(i(26)), 16)[0],
            Leg::Forward {
                pass: Pass::Head,
                from: i(26),
                to: i(90)
            }
        );
        assert!(p.fits(Stage::Head(i(90))) && !p.fits(Stage::Rest(i(60))));
        assert!(!p.set_head_end(i(24)) && !p.set_head_end(i(300)));
        assert_eq!(p.head_end(), i(89));
    }

    #[test]
    fn run_order_from_the_start() {
        // 40 frames, first prompt 10: head 10..=25, then the reverse pass from 10 down to 0 in
        // chunks of 4 from its top (7..=10, 3..=6, 0..=2), the replay, the rest 26..40.
        let p = sched(40, &[10, 30], 1, 1);
        let legs = p.legs(Stage::Start, 4);
        let i = ProcIdx;
        assert_eq!(
            legs,
            vec![
                Leg::Forward {
                    pass: Pass::Head,
                    from: i(10),
                    to: i(26)
                },
                Leg::Reverse {
                    lo: i(7),
                    hi: i(10)
                },
                Leg::Reverse { lo: i(3), hi: i(6) },
                Leg::Reverse { lo: i(0), hi: i(2) },
                Leg::Replay,
                Leg::Forward {
                    pass: Pass::Rest,
                    from: i(26),
                    to: i(40)
                },
            ]
        );
        // First prompt on frame 0: no reverse pass, the replay right after the head.
        let p = sched(40, &[0], 1, 1);
        assert_eq!(
            p.legs(Stage::Start, 4),
            vec![
                Leg::Forward {
                    pass: Pass::Head,
                    from: i(0),
                    to: i(16)
                },
                Leg::Replay,
                Leg::Forward {
                    pass: Pass::Rest,
                    from: i(16),
                    to: i(40)
                },
            ]
        );
        // A video shorter than the head: no rest.
        let p = sched(12, &[3], 1, 1);
        assert_eq!(p.head_end(), i(11));
        assert_eq!(p.legs(Stage::Start, 16).last(), Some(&Leg::Replay));
    }

    /// A visit (none for the replay), the stage after it, the progress count there.
    type Walk = Vec<(Option<(Pass, ProcIdx)>, Stage, usize)>;

    /// Every processed index of the run, in visiting order, with the stage after it and the
    /// progress count there (a replay shows as `None`).
    fn walk(p: &Schedule, from: Stage, chunk: usize) -> Walk {
        let mut done = p.done_before(from);
        let mut out = Vec::new();
        for leg in p.legs(from, chunk) {
            if leg == Leg::Replay {
                out.push((None, Stage::Rest(p.head_end().next()), done));
                continue;
            }
            let (pass, visits) = leg.visits();
            for t in visits {
                done += p.counted(pass, t) as usize;
                out.push((Some((pass, t)), Stage::after(pass, t), done));
            }
        }
        out
    }

    #[test]
    fn resuming_at_any_stage_goes_on_exactly() {
        for (n, prompted, chunk) in [(40, vec![10, 30], 4), (40, vec![0], 5), (30, vec![17], 16)] {
            let p = sched(n, &prompted, 1, 1);
            let full = walk(&p, Stage::Start, chunk);
            // Every processed index once per pass; `s` twice (head, reverse); all counted.
            let s = p.start();
            let visits: Vec<_> = full.iter().filter_map(|v| v.0).collect();
            assert_eq!(visits.len(), p.len() + (s.0 > 0) as usize);
            assert_eq!(full.last().unwrap().2, p.len());
            for (k, (_, stage, done)) in full.iter().enumerate() {
                assert!(p.fits(*stage), "{stage:?}");
                assert_eq!(p.done_before(*stage), *done, "{stage:?}");
                // Resumed there (other reverse chunks from there, the same visiting order).
                let rest = walk(&p, *stage, chunk);
                assert_eq!(rest, full[k + 1..].to_vec(), "resumed at {stage:?}");
            }
            assert!(!p.fits(Stage::Start));
            assert!(!p.fits(Stage::Rest(ProcIdx(p.len() + 1))));
            assert_eq!(p.fits(Stage::Reverse(ProcIdx(0))), s.0 > 0);
        }
    }
}
