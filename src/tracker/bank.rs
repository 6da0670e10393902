//! The per-object memory bank: exactly the state SAM 2's `_prepare_memory_conditioned_features`
//! can still read, and nothing older.
//!
//! It holds the conditioning entries (memory, pointer and the hole-filled low-res output of every
//! prompted frame) and the tracked (non-conditioning) results of the recent processed frames:
//! their object pointers for the pointer window (t∓1 … t∓15) and their memory features for the
//! memory window (t∓1 … t∓6, or the strided frames with `memory_temporal_stride_for_eval`).
//! [`select`] is the official selection rule (docs/sam2-inference.md §4.4) as pure index logic on
//! processed indices; [`ObjectBank::prune`] drops what no later frame of the same pass can read.
//! Banks serialise to bytes (libtorch's pickle container) for saved run states.

use std::collections::BTreeMap;
use std::io::Cursor;

use tch::{Device, Kind, Tensor};

use super::policy::{MemoryPolicy, frame_filter};
use crate::model::config::{MAX_OBJ_PTRS, NUM_MASKMEM};

/// Errors of bank (de)serialisation.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("memory bank: {0}")]
    Torch(#[from] tch::TchError),
    #[error("memory bank: malformed saved state: {0}")]
    Malformed(String),
}

/// The parameters of the selection rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectCfg {
    /// Number of processed frames (the video length SAM 2 sees).
    pub num_frames: i64,
    /// `max_cond_frames_in_attn` (-1: all).
    pub max_cond: i64,
    /// `memory_temporal_stride_for_eval` (1 in every official config).
    pub stride: i64,
    /// SAM 2.1: signed pointer positions; 2.0: absolute.
    pub signed_ptr_pos: bool,
    /// Which stored frames are read (docs/sam2-inference.md §7.14).
    pub policy: MemoryPolicy,
}

impl SelectCfg {
    /// `min(num_frames, max_obj_ptrs_in_encoder)`.
    pub fn max_ptr(&self) -> i64 {
        self.num_frames.min(MAX_OBJ_PTRS)
    }

    /// The furthest processed frame (towards the past of the pass) that frame `t` can read, as a
    /// (pointer bound, memory bound) pair: forward, the smallest index; reverse, the largest.
    pub fn read_bounds(&self, t: i64, reverse: bool) -> (i64, i64) {
        let r = self.stride.max(1);
        let span = NUM_MASKMEM - 1 - 2; // (t_rel - 2) for the oldest slot, t_rel = 6
        if !reverse {
            let mem = ((t - 2).div_euclid(r) * r - span * r).min(t - 1);
            ((t - (MAX_OBJ_PTRS - 1)).min(mem), mem)
        } else {
            let mem = (-(-(t + 2)).div_euclid(r) * r + span * r).max(t + 1);
            ((t + (MAX_OBJ_PTRS - 1)).max(mem), mem)
        }
    }
}

/// Where a selected memory or pointer comes from (processed-frame index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// A selected conditioning frame.
    Cond(i64),
    /// A tracked (non-conditioning) result.
    Tracked(i64),
    /// A conditioning frame not selected by `max_cond`, read as if it were tracked.
    UnselectedCond(i64),
}

/// The read-set of one tracked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSet {
    /// Memories in concatenation order, with their `maskmem_tpos_enc` index.
    pub memories: Vec<(Src, i64)>,
    /// Object pointers in concatenation order, with their temporal position.
    pub pointers: Vec<(Src, i64)>,
    pub max_ptr: i64,
}

/// `select_closest_cond_frames`: the selected conditioning frames in the official dict order
/// (all in insertion order; or closest before, closest at/after, then the rest by distance),
/// and the unselected ones.
pub fn select_cond(t: i64, cond_frames: &[i64], max_cond: i64) -> (Vec<i64>, Vec<i64>) {
    if max_cond == -1 || cond_frames.len() as i64 <= max_cond {
        return (cond_frames.to_vec(), vec![]);
    }
    let mut sel: Vec<i64> = Vec::new();
    if let Some(&b) = cond_frames.iter().filter(|&&c| c < t).max() {
        sel.push(b);
    }
    if let Some(&a) = cond_frames.iter().filter(|&&c| c >= t).min() {
        sel.push(a);
    }
    let remain = (max_cond - sel.len() as i64).max(0) as usize;
    let mut rest: Vec<i64> = cond_frames
        .iter()
        .copied()
        .filter(|c| !sel.contains(c))
        .collect();
    // Python's sorted is stable: ties keep insertion order.
    rest.sort_by_key(|&c| (c - t).abs());
    sel.extend(rest.into_iter().take(remain));
    let unsel = cond_frames
        .iter()
        .copied()
        .filter(|c| !sel.contains(c))
        .collect();
    (sel, unsel)
}

/// The official read-set of a non-initial frame `t` (docs/sam2-inference.md §4.4). `cond_frames` in insertion
/// order; `has_tracked(i)` says whether a tracked result of frame `i` exists.
pub fn select(
    t: i64,
    reverse: bool,
    cfg: &SelectCfg,
    cond_frames: &[i64],
    has_tracked: &dyn Fn(i64) -> bool,
) -> ReadSet {
    let (sel, unsel) = select_cond(t, cond_frames, cfg.max_cond);
    let lookup = |i: i64| -> Option<Src> {
        if has_tracked(i) {
            Some(Src::Tracked(i))
        } else if unsel.contains(&i) {
            Some(Src::UnselectedCond(i))
        } else {
            None
        }
    };
    let mut memories: Vec<(Src, i64)> = sel
        .iter()
        .map(|&c| (Src::Cond(c), NUM_MASKMEM - 1))
        .collect();
    let r = cfg.stride.max(1);
    for t_pos in 1..NUM_MASKMEM {
        let t_rel = NUM_MASKMEM - t_pos;
        let prev = if t_rel == 1 {
            if reverse { t + 1 } else { t - 1 }
        } else if !reverse {
            (t - 2).div_euclid(r) * r - (t_rel - 2) * r
        } else {
            -(-(t + 2)).div_euclid(r) * r + (t_rel - 2) * r
        };
        if let Some(src) = lookup(prev) {
            memories.push((src, NUM_MASKMEM - t_pos - 1));
        }
    }
    let max_ptr = cfg.max_ptr();
    let mut pointers: Vec<(Src, i64)> = sel
        .iter()
        .filter(|&&c| if reverse { c >= t } else { c <= t })
        .map(|&c| {
            let pos = if cfg.signed_ptr_pos {
                (t - c) * if reverse { -1 } else { 1 }
            } else {
                (t - c).abs()
            };
            (Src::Cond(c), pos)
        })
        .collect();
    for d in 1..max_ptr {
        let i = if reverse { t + d } else { t - d };
        if i < 0 || i >= cfg.num_frames {
            break;
        }
        if let Some(src) = lookup(i) {
            pointers.push((src, d));
        }
    }
    ReadSet {
        memories,
        pointers,
        max_ptr,
    }
}

/// The read-set of a ranked policy (SAM 3's frame filter, docs/sam2-inference.md §7.14): the
/// conditioning frames as in [`select`], then the last 6 of the filtered list `v` (oldest first,
/// temporal position = rank: `v[-1]` gets `maskmem_tpos_enc[0]`), then the pointers
/// `v[-1] … v[-(len − 1)]` at positions 1, 2, … (SAM 3's bound: the first entry of `v` is never
/// a pointer).
pub fn select_ranked(
    t: i64,
    reverse: bool,
    cfg: &SelectCfg,
    cond_frames: &[i64],
    has_tracked: &dyn Fn(i64) -> bool,
    v: &[i64],
) -> ReadSet {
    let (sel, unsel) = select_cond(t, cond_frames, cfg.max_cond);
    let lookup = |i: i64| -> Option<Src> {
        if has_tracked(i) {
            Some(Src::Tracked(i))
        } else if unsel.contains(&i) {
            Some(Src::UnselectedCond(i))
        } else {
            None
        }
    };
    let mut memories: Vec<(Src, i64)> = sel
        .iter()
        .map(|&c| (Src::Cond(c), NUM_MASKMEM - 1))
        .collect();
    let len = v.len() as i64;
    for t_pos in 1..NUM_MASKMEM {
        let t_rel = NUM_MASKMEM - t_pos;
        if t_rel > len {
            continue;
        }
        if let Some(src) = lookup(v[(len - t_rel) as usize]) {
            memories.push((src, NUM_MASKMEM - t_pos - 1));
        }
    }
    let max_ptr = cfg.max_ptr();
    let mut pointers: Vec<(Src, i64)> = sel
        .iter()
        .filter(|&&c| if reverse { c >= t } else { c <= t })
        .map(|&c| {
            let pos = if cfg.signed_ptr_pos {
                (t - c) * if reverse { -1 } else { 1 }
            } else {
                (t - c).abs()
            };
            (Src::Cond(c), pos)
        })
        .collect();
    for d in 1..max_ptr {
        if d >= len {
            break;
        }
        if let Some(src) = lookup(v[(len - d) as usize]) {
            pointers.push((src, d));
        }
    }
    ReadSet {
        memories,
        pointers,
        max_ptr,
    }
}

/// The stored state of one conditioning (prompted) frame of one object.
#[derive(Debug)]
pub struct CondEntry {
    /// Memory features `[1,64,f,f]` (bf16-rounded values, f32).
    pub features: Tensor,
    /// Object pointer `[1,256]`.
    pub obj_ptr: Tensor,
    /// Hole-filled low-res logits `[1,1,r,r]`, the frame's output.
    pub low_res: Tensor,
    pub score_logit: f64,
    pub iou: f64,
}

/// The stored state of one tracked frame of one object.
#[derive(Debug)]
pub struct TrackedEntry {
    /// Memory features `[1,64,f,f]`; dropped once outside every later memory window.
    pub features: Option<Tensor>,
    /// Object pointer `[1,256]`.
    pub obj_ptr: Tensor,
    /// The memory policy's score of the frame (`None` under `sam2`).
    pub score: Option<f32>,
}

fn shallow(t: &Tensor) -> Tensor {
    t.shallow_clone()
}

/// One object's read-set state. Frame keys are processed-frame indices.
#[derive(Debug, Default)]
pub struct ObjectBank {
    /// Conditioning entries in insertion order (the official dict order).
    pub cond: Vec<(i64, CondEntry)>,
    pub tracked: BTreeMap<i64, TrackedEntry>,
}

impl Clone for ObjectBank {
    /// Shares the tensors (they are never modified in place).
    fn clone(&self) -> Self {
        ObjectBank {
            cond: self
                .cond
                .iter()
                .map(|(f, c)| {
                    (
                        *f,
                        CondEntry {
                            features: shallow(&c.features),
                            obj_ptr: shallow(&c.obj_ptr),
                            low_res: shallow(&c.low_res),
                            score_logit: c.score_logit,
                            iou: c.iou,
                        },
                    )
                })
                .collect(),
            tracked: self
                .tracked
                .iter()
                .map(|(f, e)| {
                    (
                        *f,
                        TrackedEntry {
                            features: e.features.as_ref().map(shallow),
                            obj_ptr: shallow(&e.obj_ptr),
                            score: e.score,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl ObjectBank {
    pub fn cond_frames(&self) -> Vec<i64> {
        self.cond.iter().map(|(f, _)| *f).collect()
    }

    pub fn cond_entry(&self, t: i64) -> Option<&CondEntry> {
        self.cond.iter().find(|(f, _)| *f == t).map(|(_, c)| c)
    }

    pub fn is_cond(&self, t: i64) -> bool {
        self.cond.iter().any(|(f, _)| *f == t)
    }

    /// Adds (or replaces, keeping its place) a conditioning entry; removes a tracked result of
    /// the same frame, as the official preflight does.
    pub fn insert_cond(&mut self, t: i64, e: CondEntry) {
        self.tracked.remove(&t);
        if let Some(slot) = self.cond.iter_mut().find(|(f, _)| *f == t) {
            slot.1 = e;
        } else {
            self.cond.push((t, e));
        }
    }

    /// Stores a tracked result; returns the one it replaces (the head's, on the frames the
    /// reverse pass tracks again), so that a frame can be undone.
    pub fn insert_tracked(&mut self, t: i64, e: TrackedEntry) -> Option<TrackedEntry> {
        self.tracked.insert(t, e)
    }

    /// Undoes [`Self::insert_tracked`] of frame `t`, given what it returned.
    pub fn undo_tracked(&mut self, t: i64, replaced: Option<TrackedEntry>) {
        match replaced {
            Some(e) => {
                self.tracked.insert(t, e);
            }
            None => {
                self.tracked.remove(&t);
            }
        }
    }

    /// The read-set of frame `t`.
    pub fn read_set(&self, t: i64, reverse: bool, cfg: &SelectCfg) -> ReadSet {
        let has = |i: i64| self.tracked.contains_key(&i);
        match cfg.policy.ranked() {
            None => select(t, reverse, cfg, &self.cond_frames(), &has),
            Some(mf_threshold) => {
                let v = self.sam3_valid(t, reverse, cfg, mf_threshold);
                select_ranked(t, reverse, cfg, &self.cond_frames(), &has, &v)
            }
        }
    }

    /// SAM 3's `frame_filter` for frame `t` over the stored tracked frames (only those can have a
    /// score; the pruning keeps every frame the scan can still reach).
    pub fn sam3_valid(&self, t: i64, reverse: bool, cfg: &SelectCfg, threshold: f32) -> Vec<i64> {
        let n = cfg.num_frames;
        if (!reverse && t == 0) || (reverse && t == n - 1) {
            return Vec::new();
        }
        let r = cfg.stride.max(1);
        let max_num = n.min(MAX_OBJ_PTRS);
        // range(t∓1, end, ∓r): the frames whose distance from t∓1 is a multiple of r.
        let on_grid = |d: i64| d % r == 0;
        if !reverse {
            let scan = self
                .tracked
                .range(1..t)
                .rev()
                .filter(|(i, _)| on_grid(t - 1 - **i))
                .map(|(i, e)| (*i, e.score));
            frame_filter(scan, threshold, max_num, t - 1)
        } else {
            let scan = self
                .tracked
                .range(t + 1..n)
                .filter(|(i, _)| on_grid(**i - t - 1))
                .map(|(i, e)| (*i, e.score));
            frame_filter(scan, threshold, max_num, t + 1)
        }
    }

    /// Resolves a memory source to its features.
    pub fn memory(&self, src: Src) -> Option<&Tensor> {
        match src {
            Src::Cond(f) | Src::UnselectedCond(f) => self.cond_entry(f).map(|c| &c.features),
            Src::Tracked(f) => self.tracked.get(&f).and_then(|e| e.features.as_ref()),
        }
    }

    /// Resolves a pointer source.
    pub fn pointer(&self, src: Src) -> Option<&Tensor> {
        match src {
            Src::Cond(f) | Src::UnselectedCond(f) => self.cond_entry(f).map(|c| &c.obj_ptr),
            Src::Tracked(f) => self.tracked.get(&f).map(|e| &e.obj_ptr),
        }
    }

    /// Drops tracked state that no frame after `t` in the same pass direction can read.
    pub fn prune(&mut self, t: i64, reverse: bool, cfg: &SelectCfg) {
        if let Some(mf_threshold) = cfg.policy.ranked() {
            self.prune_ranked(t, reverse, mf_threshold);
            return;
        }
        let next = if reverse { t - 1 } else { t + 1 };
        let (ptr_bound, mem_bound) = cfg.read_bounds(next, reverse);
        if !reverse {
            self.tracked.retain(|&f, _| f >= ptr_bound);
            for (&f, e) in self.tracked.iter_mut() {
                if f < mem_bound {
                    e.features = None;
                }
            }
        } else {
            self.tracked.retain(|&f, _| f <= ptr_bound);
            for (&f, e) in self.tracked.iter_mut() {
                if f > mem_bound {
                    e.features = None;
                }
            }
        }
    }

    /// The retention of the ranked policies (SAM 3): after frame `t`, of the tracked frames at or
    /// before `t` in the pass direction, keeps `t` itself (the next frame's must-include) and
    /// the `MAX_OBJ_PTRS - 1` newest valid ones (score > threshold), memory features only for `t`
    /// and the `NUM_MASKMEM - 1` newest valid ones. A dropped frame is never read again: later
    /// frames only add newer valid frames in front of it.
    fn prune_ranked(&mut self, t: i64, reverse: bool, threshold: f32) {
        let past: Vec<i64> = if !reverse {
            self.tracked.range(..=t).rev().map(|(f, _)| *f).collect()
        } else {
            self.tracked.range(t..).map(|(f, _)| *f).collect()
        };
        let keep = self.ranked_keep(&past, t, threshold);
        self.apply_keep(&past, &keep);
    }

    /// The retention of SAM 3's policy inside the forward head `s ..= head_end`: what the
    /// forward pass reads next ([`Self::prune_ranked`]'s set) and what the reverse pass from `s`
    /// reads of the head when it starts: frame `s + 1` (its first step's must-include) and the
    /// `MAX_OBJ_PTRS - 1` valid frames after `s` nearest to it, features for `s + 1` and the
    /// `NUM_MASKMEM - 1` nearest valid ones. Later reverse steps read only reverse results in
    /// front of those. Bounded however long the head runs (docs/sam2-inference.md §7.14).
    pub fn prune_head(&mut self, t: i64, s: i64, cfg: &SelectCfg) {
        let Some(mf_threshold) = cfg.policy.ranked() else {
            return; // SAM 2.1's head is short and kept whole (§7.4).
        };
        let past: Vec<i64> = self.tracked.range(..=t).rev().map(|(f, _)| *f).collect();
        let mut keep = self.ranked_keep(&past, t, mf_threshold);
        let after: Vec<i64> = self.tracked.range(s + 1..).map(|(f, _)| *f).collect();
        for (f, feat) in self.ranked_keep(&after, s + 1, mf_threshold) {
            *keep.entry(f).or_insert(false) |= feat;
        }
        self.apply_keep(&past, &keep);
    }

    /// Whether the head holds everything SAM 3's reverse scan from `s` can read, however the
    /// video goes on: `MAX_OBJ_PTRS - 1` valid tracked frames after `s` (the scan stops there).
    pub fn sam3_reverse_ring_full(&self, s: i64, threshold: f32) -> bool {
        let valid = self
            .tracked
            .range(s + 1..)
            .filter(|(_, e)| e.score.is_some_and(|x| x > threshold))
            .count() as i64;
        valid >= MAX_OBJ_PTRS - 1
    }

    /// What a ranked scan over `frames` (nearest first) with must-include `must` reads: frame ->
    /// whether its memory features are read too.
    fn ranked_keep(&self, frames: &[i64], must: i64, threshold: f32) -> BTreeMap<i64, bool> {
        let mut keep = BTreeMap::new();
        let mut valid = 0i64;
        for &f in frames {
            let is_valid = self.tracked[&f].score.is_some_and(|s| s > threshold);
            if is_valid {
                valid += 1;
            }
            if f == must {
                keep.insert(f, true);
            } else if is_valid && valid < MAX_OBJ_PTRS {
                keep.insert(f, valid < NUM_MASKMEM);
            }
        }
        keep
    }

    /// Of the tracked entries of `scanned`, drops those not in `keep` and the features of those
    /// kept without them.
    fn apply_keep(&mut self, scanned: &[i64], keep: &BTreeMap<i64, bool>) {
        for f in scanned {
            match keep.get(f) {
                None => {
                    self.tracked.remove(f);
                }
                Some(false) => {
                    if let Some(e) = self.tracked.get_mut(f) {
                        e.features = None;
                    }
                }
                Some(true) => {}
            }
        }
    }

    /// Keeps only the tracked entries with frame index in `range` (used when handing a bank from
    /// one pass to another).
    pub fn retain_tracked(&mut self, keep: impl Fn(i64) -> bool) {
        self.tracked.retain(|&f, _| keep(f));
    }
}

/// Serialises banks (one per object) to bytes.
pub fn save_banks(banks: &[ObjectBank]) -> Result<Vec<u8>, BankError> {
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (o, b) in banks.iter().enumerate() {
        for (k, (f, c)) in b.cond.iter().enumerate() {
            let p = format!("o{o}.c{k}.{f}");
            named.push((format!("{p}.feat"), c.features.to_device(Device::Cpu)));
            named.push((format!("{p}.ptr"), c.obj_ptr.to_device(Device::Cpu)));
            named.push((format!("{p}.low"), c.low_res.to_device(Device::Cpu)));
            named.push((
                format!("{p}.meta"),
                Tensor::from_slice(&[c.score_logit, c.iou]),
            ));
        }
        for (f, e) in b.tracked.iter() {
            let p = format!("o{o}.t.{f}");
            named.push((format!("{p}.ptr"), e.obj_ptr.to_device(Device::Cpu)));
            if let Some(x) = &e.features {
                named.push((format!("{p}.feat"), x.to_device(Device::Cpu)));
            }
            if let Some(sc) = e.score {
                named.push((format!("{p}.score"), Tensor::from_slice(&[sc])));
            }
        }
    }
    named.push((
        "n_objects".into(),
        Tensor::from_slice(&[banks.len() as i64]),
    ));
    let mut buf: Vec<u8> = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut buf)?;
    Ok(buf)
}

/// Restores banks saved by [`save_banks`] onto `device`.
pub fn load_banks(bytes: &[u8], device: Device) -> Result<Vec<ObjectBank>, BankError> {
    let named = Tensor::load_multi_from_stream_with_device(Cursor::new(bytes), device)?;
    let bad = |s: &str| BankError::Malformed(s.to_string());
    let n = named
        .iter()
        .find(|(k, _)| k == "n_objects")
        .map(|(_, t)| t.int64_value(&[0]))
        .ok_or_else(|| bad("no n_objects"))?;
    if !(0..1_000_000).contains(&n) {
        return Err(bad("object count out of range"));
    }
    // (object, cond slot) -> (frame, parts)
    type Parts = BTreeMap<String, Tensor>;
    let mut conds: BTreeMap<(usize, usize), (i64, Parts)> = BTreeMap::new();
    let mut tracked: BTreeMap<(usize, i64), Parts> = BTreeMap::new();
    for (k, t) in named {
        if k == "n_objects" {
            continue;
        }
        let parts: Vec<&str> = k.split('.').collect();
        let parse_o = |s: &str| s.strip_prefix('o').and_then(|x| x.parse::<usize>().ok());
        match parts.as_slice() {
            [o, c, f, what] if c.starts_with('c') => {
                let o = parse_o(o).ok_or_else(|| bad(&k))?;
                let slot = c[1..].parse::<usize>().map_err(|_| bad(&k))?;
                let f = f.parse::<i64>().map_err(|_| bad(&k))?;
                let e = conds.entry((o, slot)).or_insert_with(|| (f, Parts::new()));
                e.1.insert(what.to_string(), t);
            }
            [o, "t", f, what] => {
                let o = parse_o(o).ok_or_else(|| bad(&k))?;
                let f = f.parse::<i64>().map_err(|_| bad(&k))?;
                tracked
                    .entry((o, f))
                    .or_default()
                    .insert(what.to_string(), t);
            }
            _ => return Err(bad(&k)),
        }
    }
    let mut banks: Vec<ObjectBank> = (0..n).map(|_| ObjectBank::default()).collect();
    for ((o, _), (f, mut p)) in conds {
        let b = banks
            .get_mut(o)
            .ok_or_else(|| bad("object index out of range"))?;
        let mut take = |w: &str| {
            p.remove(w)
                .ok_or_else(|| bad(&format!("cond part {w} missing")))
        };
        let meta = take("meta")?.to_kind(Kind::Double);
        b.cond.push((
            f,
            CondEntry {
                features: take("feat")?,
                obj_ptr: take("ptr")?,
                low_res: take("low")?,
                score_logit: meta.double_value(&[0]),
                iou: meta.double_value(&[1]),
            },
        ));
    }
    for ((o, f), mut p) in tracked {
        let b = banks
            .get_mut(o)
            .ok_or_else(|| bad("object index out of range"))?;
        let obj_ptr = p
            .remove("ptr")
            .ok_or_else(|| bad("tracked pointer missing"))?;
        b.tracked.insert(
            f,
            TrackedEntry {
                features: p.remove("feat"),
                obj_ptr,
                score: p
                    .remove("score")
                    .map(|x| x.to_kind(Kind::Float).double_value(&[0]) as f32),
            },
        );
    }
    Ok(banks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: i64) -> SelectCfg {
        SelectCfg {
            num_frames: n,
            max_cond: -1,
            stride: 1,
            signed_ptr_pos: true,
            policy: MemoryPolicy::Sam2,
        }
    }

    #[test]
    fn forward_read_set_matches_official_rule() {
        // Cond frames 10 and 3 (insertion order), tracked 0..=19 except cond frames.
        let tracked = |i: i64| (0..20).contains(&i) && i != 10 && i != 3;
        let rs = select(20, false, &cfg(100), &[10, 3], &tracked);
        let mems: Vec<_> = rs.memories.clone();
        assert_eq!(
            mems,
            vec![
                (Src::Cond(10), 6),
                (Src::Cond(3), 6),
                (Src::Tracked(14), 5),
                (Src::Tracked(15), 4),
                (Src::Tracked(16), 3),
                (Src::Tracked(17), 2),
                (Src::Tracked(18), 1),
                (Src::Tracked(19), 0),
            ]
        );
        assert_eq!(rs.max_ptr, 16);
        let mut want = vec![(Src::Cond(10), 10), (Src::Cond(3), 17)];
        // d = 1..15 -> frames 19..5, frame 10 is cond (not tracked) and skipped.
        for d in 1..16 {
            if 20 - d != 10 {
                want.push((Src::Tracked(20 - d), d));
            }
        }
        assert_eq!(rs.pointers, want);
    }

    #[test]
    fn missing_entries_are_skipped_not_replaced() {
        // Frame 12 cond, tracked only 13 and 15: t = 16 reads 15 (tpos 0), 13 (tpos 2);
        // cond 12 not repeated, nothing older fills the gaps.
        let tracked = |i: i64| i == 13 || i == 15;
        let rs = select(16, false, &cfg(30), &[12], &tracked);
        assert_eq!(
            rs.memories,
            vec![
                (Src::Cond(12), 6),
                (Src::Tracked(13), 2),
                (Src::Tracked(15), 0)
            ]
        );
        assert_eq!(
            rs.pointers,
            vec![
                (Src::Cond(12), 4),
                (Src::Tracked(15), 1),
                (Src::Tracked(13), 3)
            ]
        );
    }

    #[test]
    fn reverse_and_future_cond_frames() {
        // Reverse at t = 5 with cond frames 8 (future in reverse terms: >= t, so a pointer) and
        // 2 (past side of reverse: not a pointer). 2.0 uses absolute positions.
        let tracked = |i: i64| (6..=20).contains(&i) && i != 8;
        let c = SelectCfg {
            signed_ptr_pos: false,
            ..cfg(12)
        };
        let rs = select(5, true, &c, &[8, 2], &tracked);
        assert_eq!(rs.max_ptr, 12);
        assert_eq!(
            rs.memories,
            vec![
                (Src::Cond(8), 6),
                (Src::Cond(2), 6),
                (Src::Tracked(11), 5),
                (Src::Tracked(10), 4),
                (Src::Tracked(9), 3),
                (Src::Tracked(7), 1),
                (Src::Tracked(6), 0),
            ]
        );
        // pointers: cond 8 (>= 5), pos |5-8| = 3; then d = 1..11 while frame < 12.
        let ptr: Vec<_> = rs.pointers.clone();
        assert_eq!(ptr[0], (Src::Cond(8), 3));
        assert_eq!(
            &ptr[1..],
            &[
                (Src::Tracked(6), 1),
                (Src::Tracked(7), 2),
                (Src::Tracked(9), 4),
                (Src::Tracked(10), 5),
                (Src::Tracked(11), 6)
            ]
        );
        // Signed (2.1) in reverse: (t - c) * -1 = 3.
        let rs = select(5, true, &cfg(12), &[8, 2], &tracked);
        assert_eq!(rs.pointers[0], (Src::Cond(8), 3));
        // An object tracked before its own prompt: forward at 0 with cond at 8: no pointers.
        let rs = select(0, false, &cfg(12), &[8], &|_| false);
        assert_eq!(rs.memories, vec![(Src::Cond(8), 6)]);
        assert!(rs.pointers.is_empty());
    }

    #[test]
    fn max_cond_frames_selection() {
        let conds = [0, 10, 20, 30, 40];
        let (sel, unsel) = select_cond(22, &conds, 3);
        assert_eq!(sel, vec![20, 30, 10]);
        assert_eq!(unsel, vec![0, 40]);
        // An unselected cond frame in the recent window is read as a tracked one.
        let (sel, unsel) = select_cond(41, &[0, 10, 36, 39, 40], 2);
        assert_eq!(sel, vec![40, 39]);
        assert_eq!(unsel, vec![0, 10, 36]);
        let c = SelectCfg {
            max_cond: 2,
            ..cfg(100)
        };
        let rs = select(41, false, &c, &[0, 10, 36, 39, 40], &|_| false);
        assert_eq!(
            rs.memories,
            vec![
                (Src::Cond(40), 6),
                (Src::Cond(39), 6),
                (Src::UnselectedCond(36), 4)
            ]
        );
        assert_eq!(
            rs.pointers,
            vec![
                (Src::Cond(40), 1),
                (Src::Cond(39), 2),
                (Src::UnselectedCond(36), 5)
            ]
        );
    }

    #[test]
    fn temporal_stride_and_bounds() {
        let c = SelectCfg {
            stride: 3,
            ..cfg(100)
        };
        let rs = select(20, false, &c, &[], &|_| true);
        // t_rel 6..2: ((18)//3)*3 - (t_rel-2)*3 = 18 - 12, -9, -6, -3, -0 ; t_rel 1: 19.
        let frames: Vec<_> = rs.memories.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            frames,
            vec![
                Src::Tracked(6),
                Src::Tracked(9),
                Src::Tracked(12),
                Src::Tracked(15),
                Src::Tracked(18),
                Src::Tracked(19)
            ]
        );
        assert_eq!(c.read_bounds(20, false), (5, 6));
        let rs = select(20, true, &c, &[], &|_| true);
        let frames: Vec<_> = rs.memories.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            frames,
            vec![
                Src::Tracked(36),
                Src::Tracked(33),
                Src::Tracked(30),
                Src::Tracked(27),
                Src::Tracked(24),
                Src::Tracked(21)
            ]
        );
        assert_eq!(c.read_bounds(20, true), (36, 36));
        assert_eq!(cfg(100).read_bounds(20, false), (5, 14));
        assert_eq!(cfg(100).read_bounds(20, true), (35, 26));
    }

    #[test]
    fn prune_keeps_exactly_the_read_set() {
        let c = cfg(100);
        let mut b = ObjectBank::default();
        for f in 0..30 {
            b.insert_tracked(
                f,
                TrackedEntry {
                    features: Some(Tensor::zeros([1], (Kind::Float, Device::Cpu))),
                    obj_ptr: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
                    score: None,
                },
            );
        }
        b.prune(29, false, &c);
        assert_eq!(*b.tracked.keys().next().unwrap(), 15);
        let with_feat: Vec<i64> = b
            .tracked
            .iter()
            .filter(|(_, e)| e.features.is_some())
            .map(|(f, _)| *f)
            .collect();
        assert_eq!(with_feat, (24..30).collect::<Vec<_>>());
        // Every entry frame 30 reads is still there.
        let rs = b.read_set(30, false, &c);
        assert_eq!(rs.pointers.len(), 15);
        assert!(rs.memories.iter().all(|(s, _)| b.memory(*s).is_some()));
    }

    #[test]
    fn ranked_retention_keeps_exactly_what_the_filter_reads() {
        // 300 frames, cond frame 0, scores: long invalid stretches, some exactly at the
        // threshold; forward and reverse. The pruned bank reads the same as the unpruned one,
        // and stays bounded.
        let thr = 0.01f32;
        for reverse in [false, true] {
            let n = 300i64;
            let c = SelectCfg {
                policy: MemoryPolicy::Sam3 {
                    mf_threshold: thr,
                    use_memory_selection: true,
                },
                ..cfg(n)
            };
            let cond = if reverse { n - 1 } else { 0 };
            let score = |f: i64| match f % 37 {
                0..=3 => 0.5,
                4 => thr,
                5..=30 => 0.0,
                _ => 0.2,
            };
            let mut full = ObjectBank::default();
            let mut pruned = ObjectBank::default();
            for b in [&mut full, &mut pruned] {
                b.insert_cond(
                    cond,
                    CondEntry {
                        features: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
                        obj_ptr: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
                        low_res: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
                        score_logit: 1.0,
                        iou: 1.0,
                    },
                );
            }
            let frames: Vec<i64> = if reverse {
                (0..n - 1).rev().collect()
            } else {
                (1..n).collect()
            };
            for &t in &frames {
                let a = full.read_set(t, reverse, &c);
                let b = pruned.read_set(t, reverse, &c);
                assert_eq!(a, b, "frame {t} reverse {reverse}");
                assert!(b.memories.iter().all(|(s, _)| pruned.memory(*s).is_some()));
                assert!(b.pointers.iter().all(|(s, _)| pruned.pointer(*s).is_some()));
                for bank in [&mut full, &mut pruned] {
                    bank.insert_tracked(
                        t,
                        TrackedEntry {
                            features: Some(Tensor::zeros([1], (Kind::Float, Device::Cpu))),
                            obj_ptr: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
                            score: Some(score(t)),
                        },
                    );
                }
                pruned.prune(t, reverse, &c);
                assert!(pruned.tracked.len() <= 16, "{}", pruned.tracked.len());
                let feats = pruned.tracked.values().filter(|e| e.features.is_some());
                assert!(feats.count() <= 7);
            }
        }
    }

    #[test]
    fn head_retention_keeps_what_the_reverse_pass_and_the_rest_read() {
        // Prompt at s = 20 of 400 frames; a long head with few valid frames. After every head
        // frame the pruned bank stays bounded; at the end of the head, a reverse pass from s
        // and the next forward frame read the same from the pruned bank as from the whole one.
        let (n, s, thr) = (400i64, 20i64, 0.01f32);
        let c = SelectCfg {
            policy: MemoryPolicy::Sam3 {
                mf_threshold: thr,
                use_memory_selection: true,
            },
            ..cfg(n)
        };
        let score = |f: i64| if f % 23 == 0 || f % 17 == 3 { 0.3 } else { 0.0 };
        let z = || Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let entry = |f: i64| TrackedEntry {
            features: Some(z()),
            obj_ptr: z(),
            score: Some(score(f)),
        };
        let mut full = ObjectBank::default();
        let mut pruned = ObjectBank::default();
        for b in [&mut full, &mut pruned] {
            b.insert_cond(
                s,
                CondEntry {
                    features: z(),
                    obj_ptr: z(),
                    low_res: z(),
                    score_logit: 1.0,
                    iou: 1.0,
                },
            );
        }
        let mut he = s;
        for t in s + 1..n - 100 {
            assert_eq!(full.read_set(t, false, &c), pruned.read_set(t, false, &c));
            full.insert_tracked(t, entry(t));
            pruned.insert_tracked(t, entry(t));
            pruned.prune_head(t, s, &c);
            assert!(pruned.tracked.len() <= 32, "{}", pruned.tracked.len());
            he = t;
            if pruned.sam3_reverse_ring_full(s, thr) {
                break;
            }
        }
        assert!(he > s + 100, "the valid frames must be sparse ({he})");
        assert_eq!(
            full.read_set(he + 1, false, &c),
            pruned.read_set(he + 1, false, &c)
        );
        // The reverse pass on copies of the head's banks.
        let (mut rf, mut rp) = (full.clone(), pruned.clone());
        for t in (0..s).rev() {
            let a = rf.read_set(t, true, &c);
            assert_eq!(a, rp.read_set(t, true, &c), "reverse frame {t}");
            assert!(a.memories.iter().all(|(x, _)| rp.memory(*x).is_some()));
            assert!(a.pointers.iter().all(|(x, _)| rp.pointer(*x).is_some()));
            for b in [&mut rf, &mut rp] {
                b.insert_tracked(t, entry(t + 1000));
                b.prune(t, true, &c);
            }
        }
    }

    #[test]
    fn ranked_read_set_has_the_off_by_one_pointer_bound() {
        // V = [t-1] alone: its memory is read (t_pos 0), its pointer is not.
        let rs = select_ranked(5, false, &cfg(20), &[0], &|i| i == 4, &[4]);
        assert_eq!(rs.memories, vec![(Src::Cond(0), 6), (Src::Tracked(4), 0)]);
        assert_eq!(rs.pointers, vec![(Src::Cond(0), 5)]);
        // V = [1, 3, 4]: memories by rank (tpos 2, 1, 0), pointers 4, 3 at positions 1, 2.
        let rs = select_ranked(5, false, &cfg(20), &[0], &|i| i > 0, &[1, 3, 4]);
        assert_eq!(
            rs.memories,
            vec![
                (Src::Cond(0), 6),
                (Src::Tracked(1), 2),
                (Src::Tracked(3), 1),
                (Src::Tracked(4), 0)
            ]
        );
        assert_eq!(
            rs.pointers,
            vec![
                (Src::Cond(0), 5),
                (Src::Tracked(4), 1),
                (Src::Tracked(3), 2)
            ]
        );
    }

    #[test]
    fn undoing_a_tracked_result_restores_the_bank() {
        let e = |v: f32| TrackedEntry {
            features: None,
            obj_ptr: Tensor::from_slice(&[v]),
            score: None,
        };
        let mut b = ObjectBank::default();
        assert!(b.insert_tracked(4, e(1.0)).is_none());
        let replaced = b.insert_tracked(4, e(2.0));
        let fresh = b.insert_tracked(5, e(3.0));
        b.undo_tracked(5, fresh);
        b.undo_tracked(4, replaced);
        assert_eq!(b.tracked.keys().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!(b.tracked[&4].obj_ptr, Tensor::from_slice(&[1.0f32]));
    }

    #[test]
    fn save_load_roundtrip() {
        let mut b = ObjectBank::default();
        let t = |v: f32| Tensor::from_slice(&[v, v + 1.0]);
        b.insert_cond(
            7,
            CondEntry {
                features: t(1.0),
                obj_ptr: t(2.0),
                low_res: t(3.0),
                score_logit: 0.5,
                iou: 0.25,
            },
        );
        b.insert_cond(
            2,
            CondEntry {
                features: t(4.0),
                obj_ptr: t(5.0),
                low_res: t(6.0),
                score_logit: -1.0,
                iou: 1.0,
            },
        );
        b.insert_tracked(
            8,
            TrackedEntry {
                features: None,
                obj_ptr: t(7.0),
                score: None,
            },
        );
        b.insert_tracked(
            9,
            TrackedEntry {
                features: Some(t(8.0)),
                obj_ptr: t(9.0),
                score: Some(0.125),
            },
        );
        let bytes = save_banks(&[ObjectBank::default(), b]).unwrap();
        let l = load_banks(&bytes, Device::Cpu).unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].cond.is_empty() && l[0].tracked.is_empty());
        assert_eq!(l[1].cond_frames(), vec![7, 2]);
        let c = l[1].cond_entry(2).unwrap();
        assert_eq!((c.score_logit, c.iou), (-1.0, 1.0));
        assert_eq!(c.low_res, t(6.0));
        assert!(l[1].tracked[&8].features.is_none());
        assert_eq!(l[1].tracked[&9].features.as_ref().unwrap(), &t(8.0));
        assert_eq!(l[1].tracked[&9].score, Some(0.125));
        assert_eq!(l[1].tracked[&8].score, None);
        assert!(load_banks(b"garbage", Device::Cpu).is_err());
    }
}
