//! Where to look: flags the stretches of object-frames of a result that most likely need a
//! human, from what the result itself says (presence, the model's IoU estimate, mask area,
//! shape and box motion over time), in one streaming pass over the JSONL.
//!
//! Per object the written frames are observed in order (an object missing from a line is
//! absent there). Each object-frame gets at most one *primary reason*, the first that applies of
//! `lost` (absent after having been present), `reappeared` (present again after an absence),
//! `fragmented`, `box_jump`, `area_jump`, `low_iou`; consecutive object-frames with the same
//! reason form one [`Flag`]. The baselines of the shape and motion checks (recent areas, box
//! centres) learn from unflagged frames only, so a defect does not teach itself as normal; a
//! reason that persists for [`Thresholds::relearn_after`] frames is taken as the new normal and
//! the baselines start over. Memory: a few numbers per object, whatever the video's length.

pub mod cli;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::Serialize;

use crate::mask::components::component_sizes;
use crate::output::jsonl::{FrameRecord, JsonlReader, OutputError};

/// Why an object-frame is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Absent after having been present (the model lost it, or it left the view).
    Lost,
    /// Present again after an absence (it may be another object now).
    Reappeared,
    /// A large share of the mask lies outside its largest connected part.
    Fragmented,
    /// The box centre moved far from where its recent motion predicts.
    BoxJump,
    /// The area changed by a large factor against its recent median.
    AreaJump,
    /// The model's own estimate of the mask's IoU is low.
    LowIou,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Lost => "lost",
            Reason::Reappeared => "reappeared",
            Reason::Fragmented => "fragmented",
            Reason::BoxJump => "box_jump",
            Reason::AreaJump => "area_jump",
            Reason::LowIou => "low_iou",
        }
    }
}

/// How urgently a flag needs a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// The thresholds of the checks (the reasoning behind each default is in the README).
#[derive(Debug, Clone, PartialEq, Serialize, clap::Args)]
pub struct Thresholds {
    /// `low_iou` below this predicted IoU.
    #[arg(long, default_value_t = 0.5)]
    pub low_iou: f64,
    /// `area_jump` when the area is this many times larger or smaller than the median of the
    /// last 5 unflagged frames.
    #[arg(long, default_value_t = 2.0)]
    pub area_jump: f64,
    /// `fragmented` when this share of the mask lies outside its largest connected part.
    #[arg(long, default_value_t = 0.25)]
    pub fragment_share: f64,
    /// `box_jump` when the box centre lands this many box diagonals away from where the last
    /// two unflagged frames' motion puts it.
    #[arg(long, default_value_t = 0.5)]
    pub box_jump: f64,
    /// Frames an object must have been present before its absence counts as `lost`.
    #[arg(long, default_value_t = 3)]
    pub min_present: u64,
    /// A reason that persists this many frames is the new normal: the baselines start over.
    #[arg(long, default_value_t = 10)]
    pub relearn_after: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            low_iou: 0.5,
            area_jump: 2.0,
            fragment_share: 0.25,
            box_jump: 0.5,
            min_present: 3,
            relearn_after: 10,
        }
    }
}

/// One flagged stretch of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// The result's object id.
    pub object: String,
    /// Frame numbers, inclusive.
    pub first_frame: u64,
    pub last_frame: u64,
    pub first_time_s: f64,
    pub last_time_s: f64,
    pub reason: Reason,
    pub severity: Severity,
    /// The worst value of the stretch: frames absent (`lost`, `reappeared`), the share outside
    /// the largest part (`fragmented`), box diagonals (`box_jump`), the area factor
    /// (`area_jump`), the lowest predicted IoU (`low_iou`).
    pub value: f64,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// Written frames in the stretch.
    pub frames: u64,
}

/// Per object: how much of it is flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectSummary {
    pub id: String,
    pub label: String,
    /// Written frames from its first presence on.
    pub frames: u64,
    pub present: u64,
    pub flagged: u64,
    pub flags: u64,
}

/// The result of a review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// Lines (written frames) read.
    pub frames: u64,
    pub objects: Vec<ObjectSummary>,
    pub flags: Vec<Flag>,
    pub thresholds: Thresholds,
}

/// One object on one written frame, as the checks see it.
#[derive(Debug, Clone, Copy)]
struct Obs {
    frame: u64,
    time_s: f64,
    present: bool,
    iou: f64,
    area: f64,
    /// Box centre and diagonal.
    centre: (f64, f64),
    diag: f64,
    /// Share of the area outside the largest connected part.
    outside: f64,
}

#[derive(Debug)]
struct Open {
    reason: Reason,
    first: (u64, f64),
    last: (u64, f64),
    value: f64,
    frames: u64,
}

#[derive(Debug, Default)]
struct ObjectState {
    label: String,
    present_frames: u64,
    absent_run: u64,
    areas: VecDeque<f64>,
    /// The last unflagged present frames' (centre, diagonal), newest last.
    centres: VecDeque<((f64, f64), f64)>,
    persist: u64,
    open: Option<Open>,
    summary_frames: u64,
    flagged: u64,
    flags: u64,
}

/// The streaming checker: feed it the result's lines in order with [`Reviewer::frame`], then
/// [`Reviewer::finish`].
#[derive(Debug)]
pub struct Reviewer {
    t: Thresholds,
    objects: BTreeMap<String, ObjectState>,
    /// First-seen order of the object ids.
    order: Vec<String>,
    frames: u64,
    flags: Vec<Flag>,
}

fn median(v: &VecDeque<f64>) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Reviewer {
    pub fn new(t: Thresholds) -> Self {
        Reviewer {
            t,
            objects: BTreeMap::new(),
            order: Vec::new(),
            frames: 0,
            flags: Vec::new(),
        }
    }

    /// One result line (frames in increasing order); `outside[i]` is the share of object `i`'s
    /// mask outside its largest connected part.
    fn frame_with(&mut self, rec: &FrameRecord, outside: &[f64]) {
        self.frames += 1;
        let mut here = BTreeMap::new();
        for (o, &share) in rec.objects.iter().zip(outside) {
            if !self.objects.contains_key(&o.id) {
                self.order.push(o.id.clone());
                self.objects.insert(
                    o.id.clone(),
                    ObjectState {
                        label: o.label.clone(),
                        ..Default::default()
                    },
                );
            }
            let [x0, y0, x1, y1] = o.bbox.map(f64::from);
            here.insert(
                o.id.as_str(),
                Obs {
                    frame: rec.frame_number,
                    time_s: rec.time_s,
                    present: o.area > 0,
                    iou: f64::from(o.iou),
                    area: o.area as f64,
                    centre: ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
                    diag: ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt().max(1.0),
                    outside: share,
                },
            );
        }
        let absent = Obs {
            frame: rec.frame_number,
            time_s: rec.time_s,
            present: false,
            iou: 0.0,
            area: 0.0,
            centre: (0.0, 0.0),
            diag: 1.0,
            outside: 0.0,
        };
        let t = self.t.clone();
        for id in &self.order {
            let obs = here.get(id.as_str()).copied().unwrap_or(absent);
            let st = self.objects.get_mut(id).expect("known object");
            if let Some(f) = step(&t, id, st, &obs) {
                self.flags.push(f);
            }
        }
    }

    /// One result line; masks are decoded for the fragmentation check (on their runs).
    pub fn frame(&mut self, rec: &FrameRecord) -> Result<(), crate::mask::RleError> {
        let mut outside = Vec::with_capacity(rec.objects.len());
        for o in &rec.objects {
            let sizes = component_sizes(&o.rle()?);
            let total: u64 = sizes.iter().sum();
            outside.push(match sizes.first() {
                Some(&big) if total > 0 => 1.0 - big as f64 / total as f64,
                _ => 0.0,
            });
        }
        self.frame_with(rec, &outside);
        Ok(())
    }

    /// Closes the open stretches and returns the review.
    pub fn finish(mut self) -> Review {
        let mut objects = Vec::with_capacity(self.order.len());
        for id in &self.order {
            let st = self.objects.get_mut(id).expect("known object");
            if let Some(open) = st.open.take() {
                st.flags += 1;
                self.flags.push(close(&self.t, id, open));
            }
            objects.push(ObjectSummary {
                id: id.clone(),
                label: st.label.clone(),
                frames: st.summary_frames,
                present: st.present_frames,
                flagged: st.flagged,
                flags: st.flags,
            });
        }
        self.flags.sort_by(|a, b| {
            (a.first_frame, &a.object, a.reason).cmp(&(b.first_frame, &b.object, b.reason))
        });
        Review {
            frames: self.frames,
            objects,
            flags: self.flags,
            thresholds: self.t,
        }
    }
}

/// The primary reason of one object-frame and its value, updating the object's baselines.
fn classify(t: &Thresholds, st: &mut ObjectState, o: &Obs) -> Option<(Reason, f64)> {
    if !o.present {
        if st.present_frames >= t.min_present {
            st.absent_run += 1;
            return Some((Reason::Lost, st.absent_run as f64));
        }
        if st.present_frames > 0 {
            st.absent_run += 1;
        }
        return None;
    }
    let was_absent = std::mem::take(&mut st.absent_run);
    st.present_frames += 1;
    if was_absent > 0 && st.present_frames > t.min_present {
        // Motion across the gap says nothing: the baselines start over.
        st.centres.clear();
        st.areas.clear();
        return Some((Reason::Reappeared, was_absent as f64));
    }
    let mut reason = None;
    if o.outside > t.fragment_share {
        reason = Some((Reason::Fragmented, o.outside));
    } else if st.centres.len() == 2 {
        let (c0, _) = st.centres[0];
        let (c1, d1) = st.centres[1];
        let pred = (2.0 * c1.0 - c0.0, 2.0 * c1.1 - c0.1);
        let dist = ((o.centre.0 - pred.0).powi(2) + (o.centre.1 - pred.1).powi(2)).sqrt() / d1;
        if dist > t.box_jump {
            reason = Some((Reason::BoxJump, dist));
        }
    }
    if reason.is_none() && st.areas.len() >= 3 {
        let m = median(&st.areas).max(1.0);
        let factor = (o.area / m).max(m / o.area.max(1.0));
        if factor > t.area_jump {
            reason = Some((Reason::AreaJump, factor));
        }
    }
    if reason.is_none() && o.iou < t.low_iou {
        reason = Some((Reason::LowIou, o.iou));
    }
    let shape_or_motion = matches!(
        reason,
        Some((Reason::Fragmented | Reason::BoxJump | Reason::AreaJump, _))
    );
    if shape_or_motion {
        st.persist += 1;
        if st.persist >= t.relearn_after {
            st.persist = 0;
            st.centres.clear();
            st.areas.clear();
        }
    } else {
        st.persist = 0;
        st.centres.push_back((o.centre, o.diag));
        if st.centres.len() > 2 {
            st.centres.pop_front();
        }
        st.areas.push_back(o.area);
        if st.areas.len() > 5 {
            st.areas.pop_front();
        }
    }
    reason
}

fn step(t: &Thresholds, id: &str, st: &mut ObjectState, o: &Obs) -> Option<Flag> {
    let seen_before = st.present_frames > 0;
    let reason = classify(t, st, o);
    if seen_before || o.present {
        st.summary_frames += 1;
    }
    if reason.is_some() {
        st.flagged += 1;
    }
    let mut closed = None;
    match (&mut st.open, reason) {
        (Some(open), Some((r, v))) if open.reason == r => {
            open.last = (o.frame, o.time_s);
            open.frames += 1;
            open.value = worst(r, open.value, v);
        }
        (open, new) => {
            if let Some(prev) = open.take() {
                st.flags += 1;
                closed = Some(close(t, id, prev));
            }
            *open = new.map(|(r, v)| Open {
                reason: r,
                first: (o.frame, o.time_s),
                last: (o.frame, o.time_s),
                value: v,
                frames: 1,
            });
        }
    }
    closed
}

/// The worse of two values of `r` (the lowest IoU, the largest of the others).
fn worst(r: Reason, a: f64, b: f64) -> f64 {
    if r == Reason::LowIou {
        a.min(b)
    } else {
        a.max(b)
    }
}

fn close(t: &Thresholds, id: &str, o: Open) -> Flag {
    let secs = o.last.1 - o.first.1;
    let (threshold, severity) = match o.reason {
        Reason::Lost => (t.min_present as f64, level(secs >= 2.0, secs >= 0.5)),
        Reason::Reappeared => (t.min_present as f64, level(o.value >= 30.0, true)),
        Reason::Fragmented => (t.fragment_share, level(o.value >= 0.5, o.value >= 0.35)),
        Reason::BoxJump => (t.box_jump, level(o.value >= 2.0, o.value >= 1.0)),
        Reason::AreaJump => (t.area_jump, level(o.value >= 4.0, o.value >= 3.0)),
        Reason::LowIou => (t.low_iou, level(o.value < 0.3, o.value < 0.4)),
    };
    Flag {
        object: id.to_string(),
        first_frame: o.first.0,
        last_frame: o.last.0,
        first_time_s: o.first.1,
        last_time_s: o.last.1,
        reason: o.reason,
        severity,
        value: o.value,
        threshold,
        frames: o.frames,
    }
}

fn level(high: bool, medium: bool) -> Severity {
    if high {
        Severity::High
    } else if medium {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// Reviews a result file in one streaming pass; errors name the file, the line, the frame and
/// the object.
pub fn review_file(path: &Path, t: Thresholds) -> Result<Review, OutputError> {
    let mut reader = JsonlReader::open(path)?;
    let mut rv = Reviewer::new(t);
    while let Some(rec) = reader.next() {
        let rec = rec?;
        if let Err(e) = rv.frame(&rec) {
            return Err(OutputError::invalid(
                path,
                reader.line(),
                rec.frame_number,
                None,
                e.to_string(),
            ));
        }
    }
    Ok(rv.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(frame: u64, present: bool, area: f64, cx: f64, iou: f64) -> Obs {
        Obs {
            frame,
            time_s: frame as f64 / 30.0,
            present,
            iou,
            area,
            centre: (cx, 50.0),
            diag: 20.0,
            outside: 0.0,
        }
    }

    fn run(seq: &[Obs]) -> Vec<Flag> {
        let t = Thresholds::default();
        let mut st = ObjectState::default();
        let mut out: Vec<Flag> = seq
            .iter()
            .filter_map(|o| step(&t, "a", &mut st, o))
            .collect();
        if let Some(o) = st.open.take() {
            out.push(close(&t, "a", o));
        }
        out
    }

    #[test]
    fn a_clean_track_has_no_flags() {
        let seq: Vec<Obs> = (0..100)
            .map(|f| obs(f, true, 400.0 + (f % 3) as f64, 10.0 + f as f64, 0.9))
            .collect();
        assert!(run(&seq).is_empty());
    }

    #[test]
    fn a_vanishing_mask_is_lost_then_reappeared_not_an_area_jump() {
        let seq: Vec<Obs> = (0..40)
            .map(|f| {
                let gone = (10..20).contains(&f);
                obs(
                    f,
                    !gone,
                    if gone { 0.0 } else { 400.0 },
                    10.0 + f as f64,
                    0.9,
                )
            })
            .collect();
        let flags = run(&seq);
        let got: Vec<(Reason, u64, u64)> = flags
            .iter()
            .map(|f| (f.reason, f.first_frame, f.last_frame))
            .collect();
        assert_eq!(got, [(Reason::Lost, 10, 19), (Reason::Reappeared, 20, 20)]);
        assert_eq!(flags[0].value, 10.0);
    }

    #[test]
    fn an_object_not_yet_seen_is_not_lost() {
        let seq: Vec<Obs> = (0..20)
            .map(|f| {
                obs(
                    f,
                    f >= 10,
                    if f >= 10 { 400.0 } else { 0.0 },
                    10.0 + f as f64,
                    0.9,
                )
            })
            .collect();
        assert!(run(&seq).is_empty());
    }
}
