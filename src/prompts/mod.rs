//! Prompt input: the generic densam prompts file (JSON or JSON Lines) and its validation
//! against the video, producing per-object, per-frame prompts in the form the tracker takes
//! ([`crate::tracker::prompt`]).
//!
//! File format (JSON): `{"objects": [{"id": "cup-1", "label": "cup", "prompts": [
//! {"frame": 12, "box": [x0,y0,x1,y1]}, {"frame": 40, "points": [[x,y],...], "labels": [1,0]},
//! {"frame": 90, "mask": {"size": [h,w], "counts": "<COCO RLE>"}}]}]}`. JSON Lines: one object
//! (`{"id", "label", "prompts"}`) a line. Coordinates are original video pixels. Several entries
//! of one object on one frame combine as one official `add_new_points_or_box` call (box corners
//! first, then the points in file order); a mask on a frame is applied first (`add_new_mask`),
//! points on the same frame then refine it, as the official calls in that order would.
//!
//! Validation never panics: problems that make an entry unusable (a box or all points wholly
//! outside the image, a frame past the end, an empty or malformed mask, an object left without
//! prompts, a duplicate id) are skipped with a warning naming object and frame, or are errors with
//! `strict`. A box partly outside the image is used as given (the official code accepts any
//! coordinates), with a warning.

pub mod hd_epic;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::output::rle::Rle;
use crate::tracker::FrameNo;
use crate::tracker::prompt::{FramePrompt, ObjectPrompts, PromptSet};

/// A decoded binary mask, row-major, `data[y * width + x]` in {0, 1}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl BinaryMask {
    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }
}

/// Decodes a prompt mask (compressed counts string or list of runs) with the shared COCO RLE
/// codec.
fn decode_mask(m: &RleSpec) -> Result<BinaryMask, String> {
    let [h, w] = m.size;
    let (h32, w32) = (
        u32::try_from(h).map_err(|_| format!("mask height {h} too large"))?,
        u32::try_from(w).map_err(|_| format!("mask width {w} too large"))?,
    );
    let rle = match &m.counts {
        RleCounts::String(s) => Rle::from_counts_string(s, h32, w32),
        RleCounts::Runs(r) => {
            let runs = r
                .iter()
                .map(|&c| u32::try_from(c).map_err(|_| format!("run length {c} too large")))
                .collect::<Result<Vec<u32>, String>>()?;
            Rle::from_counts(h32, w32, runs)
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(BinaryMask {
        height: h,
        width: w,
        data: rle.decode_row_major(),
    })
}

/// Errors reading or validating a prompts file.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: cannot read prompts file: {msg}")]
    Read { path: String, msg: String },
    #[error("prompts file: {0}")]
    Parse(String),
    #[error("prompts (strict): {0}")]
    Strict(String),
    #[error("prompts: no usable object prompts ({0} problem(s) reported above)")]
    NothingUsable(usize),
}

/// A COCO RLE as written in the prompts file: `counts` is the compressed string or a list of
/// run lengths.
#[derive(Debug, Clone, Deserialize)]
pub struct RleSpec {
    pub size: [usize; 2],
    pub counts: RleCounts,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RleCounts {
    String(String),
    Runs(Vec<u64>),
}

/// Object ids may be written as strings or numbers; they are kept as strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawId {
    String(String),
    Int(i64),
}

impl RawId {
    fn into_string(self) -> String {
        match self {
            RawId::String(s) => s,
            RawId::Int(i) => i.to_string(),
        }
    }
}

/// One prompt entry of the file, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrompt {
    pub frame: i64,
    #[serde(rename = "box", default)]
    pub bbox: Option<[f64; 4]>,
    #[serde(default)]
    pub points: Option<Vec<[f64; 2]>>,
    #[serde(default)]
    pub labels: Option<Vec<i64>>,
    #[serde(default)]
    pub mask: Option<RleSpec>,
}

/// One object of the file, before validation.
#[derive(Debug, Clone, Deserialize)]
pub struct RawObject {
    pub id: RawId,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub prompts: Vec<RawPrompt>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawFile {
    objects: Vec<RawObject>,
}

/// What the prompts are validated against.
#[derive(Debug, Clone, Copy)]
pub struct VideoGeometry {
    pub num_frames: u64,
    pub width: u32,
    pub height: u32,
}

/// Reads a prompts file (JSON with `objects`, a JSON array of objects, or JSON Lines).
pub fn read_prompts_file(path: &Path) -> Result<Vec<RawObject>, PromptError> {
    let text = std::fs::read_to_string(path).map_err(|e| PromptError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    parse_prompts(&text)
}

/// Parses the prompts text (JSON with `objects`, a JSON array of objects, or JSON Lines).
pub fn parse_prompts(text: &str) -> Result<Vec<RawObject>, PromptError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str::<Vec<RawObject>>(text)
            .map_err(|e| PromptError::Parse(format!("JSON array of objects: {e}")));
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        && v.get("objects").is_some()
    {
        return serde_json::from_value::<RawFile>(v)
            .map(|f| f.objects)
            .map_err(|e| PromptError::Parse(e.to_string()));
    }
    // JSON Lines: one object a line (blank lines ignored).
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let o = serde_json::from_str::<RawObject>(line)
            .map_err(|e| PromptError::Parse(format!("line {}: {e}", i + 1)))?;
        out.push(o);
    }
    Ok(out)
}

/// Validates raw objects against the video. Returns the usable prompts and the warnings
/// (already logged through `tracing`). With `strict`, any skipped entry is an error.
pub fn validate(
    raw: Vec<RawObject>,
    video: VideoGeometry,
    strict: bool,
) -> Result<(PromptSet, Vec<String>), PromptError> {
    let mut warnings: Vec<String> = Vec::new();
    let mut skips: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut objects = Vec::new();
    let (w, h) = (video.width as f64, video.height as f64);
    for obj in raw {
        let id = obj.id.into_string();
        if !seen.insert(id.clone()) {
            skips.push(format!(
                "object `{id}`: duplicate id, this later object is skipped"
            ));
            continue;
        }
        let mut frames: BTreeMap<FrameNo, FramePrompt> = BTreeMap::new();
        // Box first on every frame, then points in file order.
        let mut boxes: BTreeMap<u64, [f64; 4]> = BTreeMap::new();
        let mut points: BTreeMap<u64, (Vec<[f32; 2]>, Vec<i32>)> = BTreeMap::new();
        let mut masks: BTreeMap<u64, BinaryMask> = BTreeMap::new();
        for p in obj.prompts {
            let at = format!("object `{id}`, frame {}", p.frame);
            if p.frame < 0 || p.frame as u64 >= video.num_frames {
                skips.push(format!(
                    "{at}: frame is outside the video (0..{}), prompt skipped",
                    video.num_frames
                ));
                continue;
            }
            let f = p.frame as u64;
            if p.bbox.is_none() && p.points.is_none() && p.mask.is_none() {
                skips.push(format!("{at}: entry has no box, points or mask, skipped"));
                continue;
            }
            if let Some(b) = p.bbox {
                if b.iter().any(|v| !v.is_finite()) || b[2] <= b[0] || b[3] <= b[1] {
                    skips.push(format!(
                        "{at}: box {b:?} is not [x0,y0,x1,y1] with x1>x0, y1>y0, skipped"
                    ));
                } else if b[2] <= 0.0 || b[3] <= 0.0 || b[0] >= w || b[1] >= h {
                    skips.push(format!(
                        "{at}: box {b:?} lies wholly outside the {w}x{h} image, skipped"
                    ));
                } else if let std::collections::btree_map::Entry::Vacant(slot) = boxes.entry(f) {
                    if b[0] < 0.0 || b[1] < 0.0 || b[2] > w || b[3] > h {
                        warnings.push(format!(
                            "{at}: box {b:?} is partly outside the {w}x{h} image; used as given"
                        ));
                    }
                    slot.insert(b);
                } else {
                    skips.push(format!("{at}: a second box on the same frame, skipped"));
                }
            }
            if p.points.is_some() || p.labels.is_some() {
                let pts = p.points.clone().unwrap_or_default();
                let labs = p.labels.clone().unwrap_or_default();
                if pts.len() != labs.len() || pts.is_empty() {
                    skips.push(format!(
                        "{at}: {} point(s) but {} label(s), points skipped",
                        pts.len(),
                        labs.len()
                    ));
                } else if labs.iter().any(|&l| l != 0 && l != 1) {
                    skips.push(format!(
                        "{at}: point labels must be 1 (positive) or 0 (negative), points skipped"
                    ));
                } else if pts.iter().any(|q| !q[0].is_finite() || !q[1].is_finite()) {
                    skips.push(format!(
                        "{at}: non-finite point coordinates, points skipped"
                    ));
                } else {
                    let inside = |q: &[f64; 2]| q[0] >= 0.0 && q[1] >= 0.0 && q[0] < w && q[1] < h;
                    let n_in = pts.iter().filter(|q| inside(q)).count();
                    if n_in == 0 {
                        skips.push(format!(
                            "{at}: every point lies outside the {w}x{h} image, points skipped"
                        ));
                    } else {
                        if n_in < pts.len() {
                            warnings.push(format!(
                                "{at}: {} point(s) outside the {w}x{h} image; used as given",
                                pts.len() - n_in
                            ));
                        }
                        let e = points.entry(f).or_default();
                        for (q, l) in pts.iter().zip(labs.iter()) {
                            e.0.push([q[0] as f32, q[1] as f32]);
                            e.1.push(*l as i32);
                        }
                    }
                }
            }
            if let Some(m) = &p.mask {
                let decoded = decode_mask(m);
                match decoded {
                    Err(e) => skips.push(format!("{at}: bad mask RLE ({e}), skipped")),
                    Ok(bm) if bm.area() == 0 => {
                        skips.push(format!("{at}: mask is empty, skipped"));
                    }
                    Ok(_) if masks.contains_key(&f) => {
                        skips.push(format!("{at}: a second mask on the same frame, skipped"));
                    }
                    Ok(bm) => {
                        if bm.height != video.height as usize || bm.width != video.width as usize {
                            warnings.push(format!(
                                "{at}: mask size {}x{} differs from the video's {}x{}; it is resized to \
                                 the model input as the official add_new_mask does",
                                bm.height, bm.width, video.height, video.width
                            ));
                        }
                        masks.insert(f, bm);
                    }
                }
            }
        }
        let all: std::collections::BTreeSet<u64> = boxes
            .keys()
            .chain(points.keys())
            .chain(masks.keys())
            .copied()
            .collect();
        for f in all {
            let mut fp = FramePrompt {
                mask: masks.remove(&f),
                points: vec![],
                labels: vec![],
            };
            if let Some(b) = boxes.get(&f) {
                fp.points.push([b[0] as f32, b[1] as f32]);
                fp.points.push([b[2] as f32, b[3] as f32]);
                fp.labels.extend([2, 3]);
            }
            if let Some((p, l)) = points.remove(&f) {
                fp.points.extend(p);
                fp.labels.extend(l);
            }
            frames.insert(FrameNo(f), fp);
        }
        if frames.is_empty() {
            skips.push(format!("object `{id}`: no usable prompts, object skipped"));
            continue;
        }
        objects.push(ObjectPrompts {
            id,
            label: obj.label,
            frames,
        });
    }
    for wmsg in &warnings {
        tracing::warn!("{wmsg}");
    }
    if strict && !skips.is_empty() {
        return Err(PromptError::Strict(skips.join("; ")));
    }
    for s in &skips {
        tracing::warn!("{s}");
    }
    let n_problems = skips.len();
    warnings.extend(skips);
    if objects.is_empty() {
        return Err(PromptError::NothingUsable(n_problems));
    }
    Ok((PromptSet { objects }, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: VideoGeometry = VideoGeometry {
        num_frames: 50,
        width: 100,
        height: 80,
    };

    fn run(text: &str, strict: bool) -> Result<(PromptSet, Vec<String>), PromptError> {
        validate(parse_prompts(text).unwrap(), GEO, strict)
    }

    #[test]
    fn parses_json_and_jsonl() {
        let j = r#"{"objects": [{"id": "cup-1", "label": "cup", "prompts": [
            {"frame": 12, "box": [10, 10, 40, 50]},
            {"frame": 12, "points": [[20, 20], [30, 30]], "labels": [1, 0]},
            {"frame": 40, "points": [[5, 6]], "labels": [1]}]}]}"#;
        let (set, warns) = run(j, true).unwrap();
        assert!(warns.is_empty());
        let o = &set.objects[0];
        assert_eq!(o.id, "cup-1");
        assert_eq!(o.label.as_deref(), Some("cup"));
        let f12 = &o.frames[&FrameNo(12)];
        assert_eq!(f12.labels, vec![2, 3, 1, 0]);
        assert_eq!(f12.points[0], [10.0, 10.0]);
        assert_eq!(f12.points[1], [40.0, 50.0]);
        assert_eq!(f12.points[3], [30.0, 30.0]);
        assert_eq!(set.prompted_frames(), vec![FrameNo(12), FrameNo(40)]);

        let l = "{\"id\": 7, \"prompts\": [{\"frame\": 0, \"box\": [1,1,5,5]}]}\n\n\
                 {\"id\": \"b\", \"prompts\": [{\"frame\": 3, \"mask\": {\"size\": [80,100], \"counts\": [10, 5, 7985]}}]}\n";
        let (set, _) = run(l, true).unwrap();
        assert_eq!(set.objects.len(), 2);
        assert_eq!(set.objects[0].id, "7");
        assert_eq!(
            set.objects[1].frames[&FrameNo(3)]
                .mask
                .as_ref()
                .unwrap()
                .area(),
            5
        );
    }

    #[test]
    fn warns_and_skips_bad_entries() {
        let j = r#"{"objects": [
            {"id": "a", "prompts": [{"frame": 1, "box": [-10, -10, 20, 20]},
                                    {"frame": 2, "box": [200, 200, 300, 300]},
                                    {"frame": 60, "box": [1, 1, 5, 5]}]},
            {"id": "a", "prompts": [{"frame": 1, "box": [1, 1, 5, 5]}]},
            {"id": "empty", "prompts": []},
            {"id": "m", "prompts": [{"frame": 4, "mask": {"size": [80, 100], "counts": [8000]}},
                                    {"frame": 5, "points": [[1, 1]], "labels": [1, 1]}]}
        ]}"#;
        let (set, warns) = run(j, false).unwrap();
        assert_eq!(set.objects.len(), 1);
        assert_eq!(
            set.objects[0].frames.keys().copied().collect::<Vec<_>>(),
            vec![FrameNo(1)]
        );
        let all = warns.join("\n");
        assert!(all.contains("object `a`, frame 1: box"), "{all}");
        assert!(all.contains("partly outside"), "{all}");
        assert!(
            all.contains("object `a`, frame 2") && all.contains("wholly outside"),
            "{all}"
        );
        assert!(
            all.contains("object `a`, frame 60") && all.contains("outside the video"),
            "{all}"
        );
        assert!(all.contains("object `a`: duplicate id"), "{all}");
        assert!(all.contains("object `empty`: no usable prompts"), "{all}");
        assert!(all.contains("object `m`, frame 4: mask is empty"), "{all}");
        assert!(
            all.contains("object `m`, frame 5: 1 point(s) but 2 label(s)"),
            "{all}"
        );

        let err = run(j, true).unwrap_err().to_string();
        assert!(
            err.contains("strict") && err.contains("object `a`, frame 2"),
            "{err}"
        );
    }

    #[test]
    fn partly_outside_box_is_not_strict_error() {
        let j =
            r#"{"objects": [{"id": "a", "prompts": [{"frame": 1, "box": [-10, -10, 20, 20]}]}]}"#;
        let (set, warns) = run(j, true).unwrap();
        assert_eq!(set.objects[0].frames[&FrameNo(1)].points[0], [-10.0, -10.0]);
        assert_eq!(warns.len(), 1);
    }

    #[test]
    fn nothing_usable_and_parse_errors_are_errors() {
        let j = r#"{"objects": [{"id": "a", "prompts": [{"frame": 99, "box": [1, 1, 2, 2]}]}]}"#;
        assert!(matches!(run(j, false), Err(PromptError::NothingUsable(_))));
        assert!(parse_prompts("{\"id\": 1, \"prompts\": [{\"frame\": 1, \"boxx\": []}]}").is_err());
        assert!(parse_prompts("not json").is_err());
    }
}
