//! Evaluation of a result JSONL against ground truth: DAVIS-style index PNG folders or
//! HD-EPIC mask PNGs (`<mask_id>.png`, located through `mask_info.json` and grouped into
//! objects by `assoc_info.json`), with the DAVIS 2017 metrics of [`metrics`] per object and
//! overall, and box IoU at the annotated (e.g. held-out) frames. Results and ground truth are
//! streamed side by side in frame order, so long videos do not have to fit in memory.

pub mod cli;
pub mod metrics;

use crate::mask::png::{PngError, read_index_png, read_mask_png};
use crate::output::jsonl::{FrameRecord, JsonlReader, OutputError};
use crate::prompts::PromptError;
use crate::prompts::hd_epic::{HdEpicVideo, MaskId};
use metrics::{Dims, Stats, boundary_f, box_iou, region_j, statistics};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// Errors of an evaluation: bad result lines (file, line, frame, object) or bad ground truth.
#[derive(Debug, Error)]
pub enum EvalError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Png(#[from] PngError),
    #[error("{0}")]
    Input(String),
}

fn input(msg: impl Into<String>) -> EvalError {
    EvalError::Input(msg.into())
}

/// Ground-truth layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtFormat {
    /// A folder of `<frame_number>.png` object-index PNGs (0 background, 1..N objects, 255 void
    /// = background as in the semi-supervised reference).
    Davis,
    /// A folder of `<mask_id>.png` binary masks plus `mask_info.json` and `assoc_info.json`.
    HdEpic,
}

impl FromStr for GtFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "davis" => Ok(Self::Davis),
            "hd-epic" | "hdepic" => Ok(Self::HdEpic),
            _ => Err(format!("unknown ground-truth format {s:?} (davis|hd-epic)")),
        }
    }
}

/// What to evaluate against.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub gt: PathBuf,
    pub format: GtFormat,
    /// HD-EPIC `mask_info.json` (or `frame_info.json`).
    pub mask_info: Option<PathBuf>,
    /// HD-EPIC `assoc_info.json`.
    pub assoc_info: Option<PathBuf>,
    /// HD-EPIC video id; default: from `dense_annotations_<video_id>.jsonl`.
    pub video_id: Option<String>,
    /// DAVIS: JSON mapping object index -> result id (`{"1": "cup-1"}` or the
    /// `{"1": {"id": ..}}` written by `densam export --format davis`); default: index = id.
    pub id_map: Option<PathBuf>,
    /// HD-EPIC: JSON list of the mask ids to evaluate (the held-out ones).
    pub hold_out: Option<PathBuf>,
    /// DAVIS: also score the first and last ground-truth frames (the semi-supervised protocol
    /// leaves them out).
    pub all_frames: bool,
    /// Boundary tolerance (fraction of the diagonal, or pixels when >= 1); DAVIS uses 0.008.
    pub bound_th: f64,
}

impl EvalOptions {
    pub fn new(gt: impl Into<PathBuf>, format: GtFormat) -> Self {
        Self {
            gt: gt.into(),
            format,
            mask_info: None,
            assoc_info: None,
            video_id: None,
            id_map: None,
            hold_out: None,
            all_frames: false,
            bound_th: 0.008,
        }
    }
}

/// Scores of one ground-truth object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectScores {
    /// The ground-truth object (DAVIS index or HD-EPIC association id).
    pub gt_object: String,
    /// The result id it was matched to.
    pub id: String,
    pub label: String,
    /// Frames with a ground-truth mask.
    pub mask_frames: usize,
    pub j: Option<Stats>,
    pub f: Option<Stats>,
    /// (J mean + F mean) / 2.
    pub jf: Option<f64>,
    /// Frames with a ground-truth box.
    pub box_frames: usize,
    pub box_iou: Option<f64>,
    /// Per-frame values, in frame order: (frame, J, F).
    pub per_frame: Vec<(u64, f64, f64)>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub result: String,
    pub gt: String,
    pub format: String,
    /// Ground-truth frames scored.
    pub frames: usize,
    pub objects: Vec<ObjectScores>,
    /// Means over objects of the per-object statistics.
    pub j_mean: Option<f64>,
    pub j_recall: Option<f64>,
    pub j_decay: Option<f64>,
    pub f_mean: Option<f64>,
    pub f_recall: Option<f64>,
    pub f_decay: Option<f64>,
    pub jf_mean: Option<f64>,
    /// Mean box IoU over all ground-truth boxes.
    pub box_iou_mean: Option<f64>,
    pub box_count: usize,
    /// Result ids that no ground-truth object maps to.
    pub unmatched_result_ids: Vec<String>,
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl EvalReport {
    fn finish(&mut self) {
        let js: Vec<Stats> = self.objects.iter().filter_map(|o| o.j).collect();
        let fs: Vec<Stats> = self.objects.iter().filter_map(|o| o.f).collect();
        self.j_mean = mean(js.iter().map(|s| s.mean));
        self.j_recall = mean(js.iter().map(|s| s.recall));
        self.j_decay = mean(js.iter().map(|s| s.decay));
        self.f_mean = mean(fs.iter().map(|s| s.mean));
        self.f_recall = mean(fs.iter().map(|s| s.recall));
        self.f_decay = mean(fs.iter().map(|s| s.decay));
        self.jf_mean = match (self.j_mean, self.f_mean) {
            (Some(j), Some(f)) => Some((j + f) / 2.0),
            _ => None,
        };
    }

    /// A plain-text table: one row per object, then the overall means.
    pub fn table(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7}",
            "object",
            "label",
            "masks",
            "J",
            "J-rec",
            "J-dec",
            "F",
            "F-rec",
            "F-dec",
            "J&F",
            "boxes",
            "boxIoU"
        );
        for o in &self.objects {
            let name = if o.gt_object == o.id {
                o.id.clone()
            } else {
                format!("{}={}", o.gt_object, o.id)
            };
            let _ = writeln!(
                s,
                "{:<24} {:<16} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7}",
                name,
                o.label,
                o.mask_frames,
                num(o.j.map(|x| x.mean)),
                num(o.j.map(|x| x.recall)),
                num(o.j.map(|x| x.decay)),
                num(o.f.map(|x| x.mean)),
                num(o.f.map(|x| x.recall)),
                num(o.f.map(|x| x.decay)),
                num(o.jf),
                o.box_frames,
                num(o.box_iou),
            );
        }
        let _ = writeln!(
            s,
            "{:<24} {:<16} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7}",
            "ALL (mean of objects)",
            "",
            self.frames,
            num(self.j_mean),
            num(self.j_recall),
            num(self.j_decay),
            num(self.f_mean),
            num(self.f_recall),
            num(self.f_decay),
            num(self.jf_mean),
            self.box_count,
            num(self.box_iou_mean),
        );
        if !self.unmatched_result_ids.is_empty() {
            let _ = writeln!(
                s,
                "result ids without ground truth: {}",
                self.unmatched_result_ids.join(", ")
            );
        }
        s
    }
}

/// Evaluates `result` (a densam JSONL) against the ground truth in `opts`.
pub fn evaluate(result: &Path, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    match opts.format {
        GtFormat::Davis => evaluate_davis(result, opts),
        GtFormat::HdEpic => evaluate_hd_epic(result, opts),
    }
}

/// Walks result lines in step with ascending ground-truth frames.
struct Cursor {
    reader: JsonlReader<BufReader<File>>,
    peeked: Option<FrameRecord>,
    seen_ids: BTreeSet<String>,
}

impl Cursor {
    fn open(path: &Path) -> Result<Self, EvalError> {
        Ok(Self {
            reader: JsonlReader::open(path)?,
            peeked: None,
            seen_ids: BTreeSet::new(),
        })
    }

    /// The result line of `frame`; `what` names the ground truth asking for it.
    fn line_for(&mut self, frame: u64, what: &str) -> Result<FrameRecord, EvalError> {
        loop {
            let rec = match self.peeked.take() {
                Some(r) => r,
                None => match self.reader.next() {
                    Some(r) => r?,
                    None => break,
                },
            };
            self.seen_ids
                .extend(rec.objects.iter().map(|o| o.id.clone()));
            if rec.frame_number < frame {
                continue;
            }
            if rec.frame_number == frame {
                return Ok(rec);
            }
            self.peeked = Some(rec);
            break;
        }
        Err(input(format!(
            "{}: no result line for frame {frame} ({what}); was the frame written \
             (--frame-interval)?",
            self.reader.path().display()
        )))
    }

    /// Decoded row-major masks of the objects of `rec`, checked against the GT size.
    fn masks(
        &self,
        rec: &FrameRecord,
        d: Dims,
        what: &str,
    ) -> Result<HashMap<String, Vec<u8>>, EvalError> {
        let mut out = HashMap::new();
        for o in &rec.objects {
            let rle = self.reader.decode(rec.frame_number, o)?;
            if (rle.height as usize, rle.width as usize) != (d.height, d.width) {
                return Err(OutputError::invalid(
                    self.reader.path(),
                    self.reader.line(),
                    rec.frame_number,
                    Some(&o.id),
                    format!(
                        "mask size {}x{} differs from the ground truth {}x{} ({what})",
                        rle.height, rle.width, d.height, d.width
                    ),
                )
                .into());
            }
            out.insert(o.id.clone(), rle.decode_row_major());
        }
        Ok(out)
    }
}

/// A small JSON input (id map, hold-out list); errors name the file, line and column.
fn read_json(path: &Path) -> Result<Value, EvalError> {
    let bytes =
        crate::files::read_input(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let text = crate::prompts::json_text(path, &bytes).map_err(|e| input(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| input(PromptError::json(path, &e).to_string()))
}

fn list_gt_frames(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| input(format!("{}: {e}", dir.display())))?;
    let mut frames = Vec::new();
    for entry in rd {
        let p = entry
            .map_err(|e| input(format!("{}: {e}", dir.display())))?
            .path();
        if p.extension().and_then(|e| e.to_str()) != Some("png") {
            continue;
        }
        let Some(n) = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        frames.push((n, p));
    }
    frames.sort();
    if let Some(w) = frames.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(input(format!(
            "{}: two ground-truth PNGs for frame {}: {} and {}",
            dir.display(),
            w[0].0,
            w[0].1.display(),
            w[1].1.display()
        )));
    }
    if frames.is_empty() {
        return Err(input(format!(
            "{}: no <frame_number>.png ground-truth files",
            dir.display()
        )));
    }
    Ok(frames)
}

fn load_id_map(path: &Path) -> Result<BTreeMap<u8, String>, EvalError> {
    let v = read_json(path)?;
    let obj = v
        .as_object()
        .ok_or_else(|| input(format!("{}: expected a JSON object", path.display())))?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let idx: u8 = k.parse().map_err(|_| {
            input(format!(
                "{}: key {k:?} is not an index 1..254",
                path.display()
            ))
        })?;
        let id = match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => match o.get("id") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    return Err(input(format!(
                        "{}: entry {k} has no \"id\"",
                        path.display()
                    )));
                }
            },
            _ => {
                return Err(input(format!(
                    "{}: entry {k}: expected an id",
                    path.display()
                )));
            }
        };
        out.insert(idx, id);
    }
    Ok(out)
}

/// Per-object accumulation of per-frame scores.
#[derive(Default)]
struct Acc {
    per_frame: Vec<(u64, f64, f64)>,
    boxes: Vec<f64>,
    label: String,
}

fn scores(gt_object: String, id: String, acc: Acc) -> ObjectScores {
    let j: Vec<f64> = acc.per_frame.iter().map(|x| x.1).collect();
    let f: Vec<f64> = acc.per_frame.iter().map(|x| x.2).collect();
    let (js, fs) = if j.is_empty() {
        (None, None)
    } else {
        (Some(statistics(&j)), Some(statistics(&f)))
    };
    ObjectScores {
        gt_object,
        id,
        label: acc.label,
        mask_frames: j.len(),
        jf: js.zip(fs).map(|(a, b)| (a.mean + b.mean) / 2.0),
        j: js,
        f: fs,
        box_frames: acc.boxes.len(),
        box_iou: mean(acc.boxes.iter().copied()),
        per_frame: acc.per_frame,
    }
}

fn evaluate_davis(result: &Path, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    let mut frames = list_gt_frames(&opts.gt)?;
    // The objects of the first ground-truth frame are scored even where they are absent later
    // (as the reference counts objects on the first frame, also when it is not scored).
    let first = read_index_png(&frames[0].1, None)?;
    // Every other frame must declare the first one's size (checked before it is decoded).
    let gt_size = Some((first.width, first.height));
    let first_objects: BTreeSet<u8> = first
        .data
        .into_iter()
        .filter(|&v| v != 0 && v != 255)
        .collect();
    if !opts.all_frames {
        if frames.len() < 3 {
            return Err(input(format!(
                "{}: {} ground-truth frame(s); the semi-supervised protocol skips the first and \
                 last, so nothing is left (use --all-frames)",
                opts.gt.display(),
                frames.len()
            )));
        }
        frames = frames[1..frames.len() - 1].to_vec();
    }
    let id_map = opts.id_map.as_deref().map(load_id_map).transpose()?;
    let id_of = |k: u8| -> String {
        id_map
            .as_ref()
            .and_then(|m| m.get(&k).cloned())
            .unwrap_or_else(|| k.to_string())
    };
    let mut cur = Cursor::open(result)?;
    // Objects seen so far (index -> scores), and for back-filling objects that appear late:
    // the area of every result mask on every scored frame and the frame's pixel count.
    let mut accs: BTreeMap<u8, Acc> = first_objects.iter().map(|&k| (k, Acc::default())).collect();
    let mut history: Vec<(u64, HashMap<String, u64>, u64)> = Vec::new();
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut boxes_all = Vec::new();
    for (frame, path) in &frames {
        let what = format!("ground truth {}", path.display());
        let gt = read_index_png(path, gt_size)?;
        let d = Dims {
            height: gt.height as usize,
            width: gt.width as usize,
        };
        let rec = cur.line_for(*frame, &what)?;
        let masks = cur.masks(&rec, d, &what)?;
        for o in &rec.objects {
            labels
                .entry(o.id.clone())
                .or_insert_with(|| o.label.clone());
        }
        let present: BTreeSet<u8> = gt
            .data
            .iter()
            .copied()
            .filter(|&v| v != 0 && v != 255)
            .collect();
        for &k in &present {
            if accs.contains_key(&k) {
                continue;
            }
            // Back-fill the frames before this object's first ground-truth pixel: empty GT.
            let id = id_of(k);
            let mut acc = Acc::default();
            for (f, areas, n) in &history {
                let a = areas.get(&id).copied().unwrap_or(0);
                let j = if a == 0 { 1.0 } else { 0.0 };
                // A uniform mask has no boundary: empty or full behaves like an empty one.
                let fv = if a == 0 || a == *n { 1.0 } else { 0.0 };
                acc.per_frame.push((*f, j, fv));
            }
            accs.insert(k, acc);
        }
        // Pixel-edge boxes of every index present.
        let mut gt_boxes = [[usize::MAX, usize::MAX, 0, 0]; 256];
        for (i, &v) in gt.data.iter().enumerate() {
            let (y, x) = (i / d.width, i % d.width);
            let b = &mut gt_boxes[v as usize];
            *b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
        }
        let empty = vec![0u8; d.height * d.width];
        for (&k, acc) in accs.iter_mut() {
            let gt_k: Vec<u8> = gt.data.iter().map(|&v| u8::from(v == k)).collect();
            let id = id_of(k);
            let res = masks.get(&id).unwrap_or(&empty);
            let j = region_j(&gt_k, res);
            let f = boundary_f(&gt_k, res, d, opts.bound_th);
            acc.per_frame.push((*frame, j, f));
            if present.contains(&k) {
                // Box IoU where the object has ground truth: its mask box against the result's.
                let gb = gt_boxes[k as usize].map(|v| v as f64);
                let rb = rec.objects.iter().find(|o| o.id == id);
                let iou = rb.map_or(0.0, |o| box_iou(gb, o.bbox.map(f64::from)));
                acc.boxes.push(iou);
                boxes_all.push(iou);
            }
        }
        let areas = masks
            .iter()
            .map(|(id, m)| (id.clone(), m.iter().map(|&v| u64::from(v)).sum()))
            .collect();
        history.push((*frame, areas, (d.height * d.width) as u64));
    }
    let gt_ids: BTreeSet<String> = accs.keys().map(|&k| id_of(k)).collect();
    if !gt_ids.is_empty() && gt_ids.is_disjoint(&cur.seen_ids) {
        return Err(input(format!(
            "no result object matches a ground-truth object: ground truth has {:?}, {} has {:?}; \
             map them with --id-map",
            gt_ids,
            result.display(),
            cur.seen_ids
        )));
    }
    let unmatched = cur.seen_ids.difference(&gt_ids).cloned().collect();
    let objects = accs
        .into_iter()
        .map(|(k, mut acc)| {
            let id = id_of(k);
            acc.label = labels.get(&id).cloned().unwrap_or_default();
            scores(k.to_string(), id, acc)
        })
        .collect();
    let mut rep = EvalReport {
        result: result.display().to_string(),
        gt: opts.gt.display().to_string(),
        format: "davis".into(),
        frames: frames.len(),
        objects,
        j_mean: None,
        j_recall: None,
        j_decay: None,
        f_mean: None,
        f_recall: None,
        f_decay: None,
        jf_mean: None,
        box_iou_mean: mean(boxes_all.iter().copied()),
        box_count: boxes_all.len(),
        unmatched_result_ids: unmatched,
    };
    rep.finish();
    Ok(rep)
}

fn str_or_num(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One HD-EPIC ground-truth entry.
struct HdEntry {
    frame: u64,
    mask_id: String,
    assoc: String,
    bbox: Option<[f64; 4]>,
}

fn evaluate_hd_epic(result: &Path, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    let mi_path = opts
        .mask_info
        .as_deref()
        .ok_or_else(|| input("--gt-format hd-epic needs --mask-info mask_info.json"))?;
    let ai_path = opts
        .assoc_info
        .as_deref()
        .ok_or_else(|| input("--gt-format hd-epic needs --assoc-info assoc_info.json"))?;
    let vid = match &opts.video_id {
        Some(v) => v.clone(),
        None => {
            let stem = result.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            stem.strip_prefix("dense_annotations_")
                .unwrap_or(stem)
                .to_string()
        }
    };
    let hint = |e: PromptError| match e {
        PromptError::UnknownVideo { .. } | PromptError::Parse(_) => {
            input(format!("{e} (give --video-id)"))
        }
        _ => input(e.to_string()),
    };
    let HdEpicVideo {
        associations: assocs,
        masks,
    } = HdEpicVideo::read(ai_path, mi_path, &vid).map_err(hint)?;
    let hold_out: Option<BTreeSet<String>> = match &opts.hold_out {
        None => None,
        Some(p) => {
            let v = read_json(p)?;
            let list = v
                .as_array()
                .or_else(|| v.get("mask_ids").and_then(Value::as_array))
                .ok_or_else(|| input(format!("{}: expected a list of mask ids", p.display())))?;
            Some(list.iter().filter_map(str_or_num).collect())
        }
    };
    let mut entries = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for (assoc, a) in &assocs {
        names.insert(assoc.clone(), a.name.clone().unwrap_or_default());
        for t in &a.tracks {
            for MaskId(mid) in &t.masks {
                if hold_out.as_ref().is_some_and(|h| !h.contains(mid)) {
                    continue;
                }
                let m = masks.get(mid).ok_or_else(|| {
                    input(format!(
                        "{}: association {assoc} refers to mask {mid}, which {} lacks",
                        ai_path.display(),
                        mi_path.display()
                    ))
                })?;
                // The mask id names `<mask_id>.png` in the ground-truth folder.
                crate::id::check_named(&format!("{}: mask id", mi_path.display()), mid)
                    .map_err(input)?;
                let frame = u64::try_from(m.frame_number).map_err(|_| {
                    input(format!(
                        "{}: mask {mid} has a negative frame_number",
                        mi_path.display()
                    ))
                })?;
                entries.push(HdEntry {
                    frame,
                    mask_id: mid.clone(),
                    assoc: assoc.clone(),
                    bbox: m.bbox,
                });
            }
        }
    }
    entries.sort_by(|a, b| (a.frame, &a.mask_id).cmp(&(b.frame, &b.mask_id)));
    let mut cur = Cursor::open(result)?;
    let mut accs: BTreeMap<String, (String, Acc)> = BTreeMap::new();
    let mut boxes_all = Vec::new();
    let mut frames = BTreeSet::new();
    let mut i = 0;
    while i < entries.len() {
        let frame = entries[i].frame;
        let end = i + entries[i..].iter().take_while(|e| e.frame == frame).count();
        let what = format!("mask {} of {}", entries[i].mask_id, mi_path.display());
        let rec = cur.line_for(frame, &what)?;
        frames.insert(frame);
        for e in &entries[i..end] {
            let obj = rec
                .objects
                .iter()
                .find(|o| o.assoc_id.as_deref() == Some(&e.assoc) || o.id == e.assoc);
            let (id, acc) = accs.entry(e.assoc.clone()).or_insert_with(|| {
                let acc = Acc {
                    label: names.get(&e.assoc).cloned().unwrap_or_default(),
                    ..Acc::default()
                };
                (String::new(), acc)
            });
            if let Some(o) = obj {
                *id = o.id.clone();
            }
            if let Some(gb) = e.bbox {
                let iou = obj.map_or(0.0, |o| box_iou(gb, o.bbox.map(f64::from)));
                acc.boxes.push(iou);
                boxes_all.push(iou);
            }
            let png = opts.gt.join(format!("{}.png", e.mask_id));
            if png.is_file() {
                let gt = read_mask_png(&png, None)?;
                let d = Dims {
                    height: gt.height as usize,
                    width: gt.width as usize,
                };
                let res = match obj {
                    Some(o) => {
                        let rle = cur.reader.decode(frame, o)?;
                        if (rle.height, rle.width) != (gt.height, gt.width) {
                            return Err(OutputError::invalid(
                                cur.reader.path(),
                                cur.reader.line(),
                                frame,
                                Some(&o.id),
                                format!(
                                    "mask size {}x{} differs from {} ({}x{})",
                                    rle.height,
                                    rle.width,
                                    png.display(),
                                    gt.height,
                                    gt.width
                                ),
                            )
                            .into());
                        }
                        rle.decode_row_major()
                    }
                    None => vec![0u8; d.height * d.width],
                };
                let j = region_j(&gt.data, &res);
                let f = boundary_f(&gt.data, &res, d, opts.bound_th);
                acc.per_frame.push((frame, j, f));
            }
        }
        i = end;
    }
    let matched: BTreeSet<String> = cur
        .seen_ids
        .iter()
        .filter(|id| accs.contains_key(*id) || accs.values().any(|(i, _)| i == *id))
        .cloned()
        .collect();
    let unmatched = cur.seen_ids.difference(&matched).cloned().collect();
    let objects = accs
        .into_iter()
        .map(|(assoc, (id, acc))| {
            let id = if id.is_empty() { assoc.clone() } else { id };
            scores(assoc, id, acc)
        })
        .collect();
    let mut rep = EvalReport {
        result: result.display().to_string(),
        gt: opts.gt.display().to_string(),
        format: "hd-epic".into(),
        frames: frames.len(),
        objects,
        j_mean: None,
        j_recall: None,
        j_decay: None,
        f_mean: None,
        f_recall: None,
        f_decay: None,
        jf_mean: None,
        box_iou_mean: mean(boxes_all.iter().copied()),
        box_count: boxes_all.len(),
        unmatched_result_ids: unmatched,
    };
    rep.finish();
    Ok(rep)
}
