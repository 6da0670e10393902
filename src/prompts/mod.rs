//! Prompt input: the generic densam prompts file (JSON or JSON Lines) and its validation
//! against the video, producing per-object, per-frame prompts in the form the tracker takes
//! ([`crate::tracker::prompt`]).
//!
//! File format (JSON): `{"objects": [{"id": "cup-1", "label": "cup", "prompts": [
//! {"frame": 12, "box": [x0,y0,x1,y1]}, {"frame": 40, "points": [[x,y],...], "labels": [1,0]},
//! {"frame": 90, "mask": {"size": [h,w], "counts": "<COCO RLE>"}}]}]}`. JSON Lines: one object
//! (`{"id", "label", "prompts"}`) a line; a JSON array of such objects works too. A UTF-8 byte
//! order mark is ignored. The file is deserialised straight from its text, so every error
//! names the file, line and column. Coordinates are original video pixels. Several entries
//! of one object on one frame combine as one official `add_new_points_or_box` call (box corners
//! first, then the points in file order); a mask on a frame is applied first (`add_new_mask`),
//! points on the same frame then refine it, as the official calls in that order would.
//!
//! Validation never panics and allocates nothing from a declared size it has not checked:
//! problems that make an entry unusable (a box or all points wholly outside the image, a frame
//! past the end, an empty or malformed mask, a mask larger than the video, an object left
//! without prompts, a duplicate id) are skipped with a warning naming object and frame, or are
//! errors with `strict`. A box partly outside the image is used as given (the official code
//! accepts any coordinates), with a warning; so is a mask smaller than the video (resized to
//! the model input, as `add_new_mask` does).

pub mod hd_epic;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};

use crate::mask::{BinaryMask, CocoRle, RleError};
use crate::tracker::FrameNo;
use crate::tracker::prompt::{FramePrompt, ObjectPrompts, PromptSet};

/// Errors reading or validating a prompts file (or the HD-EPIC files).
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: cannot read: {msg}")]
    Read { path: String, msg: String },
    /// A malformed file: where (1-based line and column) and what.
    #[error("{path}:{line}:{column}: {msg}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
    /// Another problem of a file; the text names the file.
    #[error("{0}")]
    Parse(String),
    /// HD-EPIC: the video id is not a key of assoc_info (`video_ids`: the keys it has).
    #[error("video id `{video_id}` is not in {path} ({} videos)", video_ids.len())]
    UnknownVideo {
        path: String,
        video_id: String,
        video_ids: Vec<String>,
    },
    /// A file with nothing but white space.
    #[error("{path}: the prompts file is empty")]
    Empty { path: String },
    #[error("prompts (strict): {0}")]
    Strict(String),
    /// The file is well formed but lists no object.
    #[error("prompts: the file lists no objects")]
    NoObjects,
    #[error("prompts: no usable object prompts ({0} problem(s) reported above)")]
    NothingUsable(usize),
}

impl PromptError {
    /// A serde_json error of the file `path` as a [`PromptError::Syntax`] at its position.
    pub fn json(path: &Path, e: &serde_json::Error) -> Self {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        PromptError::Syntax {
            path: path.display().to_string(),
            line: e.line(),
            column: e.column(),
            msg,
        }
    }
}

/// The text of a JSON input file: UTF-8, a leading byte order mark dropped; invalid UTF-8 is
/// an error at its line and column.
pub fn json_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, PromptError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let ok = &bytes[..e.valid_up_to()];
        let line = ok.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = ok.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        PromptError::Syntax {
            path: path.display().to_string(),
            line,
            column: ok.len() - start + 1,
            msg: "not UTF-8 text".into(),
        }
    })
}

/// Object ids may be written as strings or integers; they are kept as strings.
#[derive(Debug, Clone)]
pub enum RawId {
    String(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for RawId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object id (a string or an integer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawId, E> {
                Ok(RawId::String(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawId, E> {
                Ok(RawId::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawId, E> {
                Ok(i64::try_from(v).map_or_else(|_| RawId::String(v.to_string()), RawId::Int))
            }
        }
        d.deserialize_any(V)
    }
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
    pub mask: Option<CocoRle>,
}

/// One object of the file, before validation.
#[derive(Debug, Clone, Deserialize)]
pub struct RawObject {
    pub id: RawId,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub prompts: Vec<RawPrompt>,
    /// Keys of the object other than `id`, `label` and `prompts`, in file order: ignored, with a
    /// warning (an error with `--strict`).
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
}

/// The keys of an object of the prompts file.
const OBJECT_KEYS: [&str; 3] = ["id", "label", "prompts"];

/// The keys of each object (values skipped), to name the unknown ones.
type ObjectKeys = Vec<(String, IgnoredAny)>;

/// An object's keys in file order.
#[derive(Default)]
struct Keys(ObjectKeys);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = m.next_entry::<String, IgnoredAny>()? {
                    v.push((k, x));
                }
                Ok(Keys(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct KeysFile {
    objects: Vec<Keys>,
}

/// Records on each object the keys it has beyond [`OBJECT_KEYS`] (`keys`: each object's keys,
/// in the objects' order; the text already parsed, so this cannot fail).
fn note_unknown_keys(objects: &mut [RawObject], keys: Vec<Keys>) {
    for (o, k) in objects.iter_mut().zip(keys) {
        o.unknown_keys =
            k.0.into_iter()
                .map(|(k, _)| k)
                .filter(|k| !OBJECT_KEYS.contains(&k.as_str()))
                .collect();
    }
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
    let bytes = crate::files::read_input(path).map_err(|e| PromptError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    parse_prompts_file(path, &bytes)
}

/// Parses the bytes of the prompts file `path` (UTF-8, a leading byte order mark ignored);
/// every error names the file, line and column.
pub fn parse_prompts_file(path: &Path, bytes: &[u8]) -> Result<Vec<RawObject>, PromptError> {
    parse_text(path, json_text(path, bytes)?)
}

/// Parses prompts text (JSON with `objects`, a JSON array of objects, or JSON Lines); errors
/// name the file `<prompts>`.
pub fn parse_prompts(text: &str) -> Result<Vec<RawObject>, PromptError> {
    parse_prompts_file(Path::new("<prompts>"), text.as_bytes())
}

/// The 1-based line and column of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - start + 1)
}

/// The three forms, told apart by the first value: an array is a list of objects; an object
/// with `objects` is the whole file; an object with an object's keys (`id`, `label`,
/// `prompts`) is the first of a sequence of objects (JSON Lines). Each form is deserialised
/// straight from the text, so serde's errors keep their line and column.
fn parse_text(path: &Path, text: &str) -> Result<Vec<RawObject>, PromptError> {
    let err = |e: serde_json::Error| PromptError::json(path, &e);
    // JSON's white space only (`str::trim_start` would also skip e.g. a vertical tab).
    let start = text.len() - text.trim_start_matches([' ', '\t', '\n', '\r']).len();
    match text.as_bytes().get(start) {
        None => Err(PromptError::Empty {
            path: path.display().to_string(),
        }),
        Some(b'[') => {
            let mut v = serde_json::from_str::<Vec<RawObject>>(text).map_err(err)?;
            let keys = serde_json::from_str::<Vec<Keys>>(text).unwrap_or_default();
            note_unknown_keys(&mut v, keys);
            Ok(v)
        }
        Some(b'{') => {
            let first = serde_json::Deserializer::from_str(text)
                .into_iter::<BTreeMap<String, IgnoredAny>>()
                .next()
                .unwrap_or_else(|| Ok(BTreeMap::new()))
                .map_err(err)?;
            if first.contains_key("objects") {
                let mut v = serde_json::from_str::<RawFile>(text)
                    .map(|f| f.objects)
                    .map_err(err)?;
                let keys = serde_json::from_str::<KeysFile>(text)
                    .map_or_else(|_| Vec::new(), |f| f.objects);
                note_unknown_keys(&mut v, keys);
                Ok(v)
            } else if OBJECT_KEYS.iter().any(|k| first.contains_key(*k)) {
                let mut v = serde_json::Deserializer::from_str(text)
                    .into_iter::<RawObject>()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let keys = serde_json::Deserializer::from_str(text)
                    .into_iter::<Keys>()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_default();
                note_unknown_keys(&mut v, keys);
                Ok(v)
            } else {
                let (line, column) = position(text, start);
                let keys: Vec<&str> = first.keys().map(String::as_str).collect();
                Err(PromptError::Syntax {
                    path: path.display().to_string(),
                    line,
                    column,
                    msg: format!(
                        "no `objects` list: expected {{\"objects\": [...]}} or one object \
                         (with an \"id\") a line, found an object with keys {keys:?}"
                    ),
                })
            }
        }
        Some(_) => {
            // Not an object or array: serde names what it found where.
            serde_json::from_str::<IgnoredAny>(text).map_err(err)?;
            let (line, column) = position(text, start);
            Err(PromptError::Syntax {
                path: path.display().to_string(),
                line,
                column,
                msg: "expected {\"objects\": [...]}, a JSON array of objects or JSON Lines".into(),
            })
        }
    }
}

/// Validates raw objects against the video. Returns the usable prompts and the warnings
/// (already logged through `tracing`). With `strict`, any skipped entry is an error.
pub fn validate(
    raw: Vec<RawObject>,
    video: VideoGeometry,
    strict: bool,
) -> Result<(PromptSet, Vec<String>), PromptError> {
    if raw.is_empty() {
        return Err(PromptError::NoObjects);
    }
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
        if !obj.unknown_keys.is_empty() {
            skips.push(format!(
                "object `{id}`: unknown key(s) {:?} ignored (known: id, label, prompts)",
                obj.unknown_keys
            ));
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
                // The model takes coordinates in f32: every check is on the f32 values, so
                // that e.g. 1e39 (+inf in f32) or corners that become equal are refused here.
                let bf = b.map(|v| v as f32);
                if b.iter().any(|v| !v.is_finite()) || bf.iter().any(|v| !v.is_finite()) {
                    skips.push(format!(
                        "{at}: box {b:?} has a coordinate that is not a finite single-precision \
                         (f32) number, skipped"
                    ));
                } else if bf[2] <= bf[0] || bf[3] <= bf[1] {
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
                } else if pts
                    .iter()
                    .flatten()
                    .any(|&v| !v.is_finite() || !(v as f32).is_finite())
                {
                    skips.push(format!(
                        "{at}: point coordinates that are not finite single-precision (f32) \
                         numbers, points skipped"
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
                // The declared size is checked before anything is decoded (a mask is decoded
                // into height x width bytes): at most the video's size.
                match m.to_rle_within(video.height, video.width) {
                    Err(RleError::TooLarge { .. }) => skips.push(format!(
                        "{at}: mask size {}x{} is larger than the video ({}x{}), skipped",
                        m.height(),
                        m.width(),
                        video.height,
                        video.width
                    )),
                    Err(e) => skips.push(format!("{at}: bad mask RLE ({e}), skipped")),
                    Ok(rle) if rle.area() == 0 => {
                        skips.push(format!("{at}: mask is empty, skipped"));
                    }
                    Ok(_) if masks.contains_key(&f) => {
                        skips.push(format!("{at}: a second mask on the same frame, skipped"));
                    }
                    Ok(rle) => {
                        if (rle.height, rle.width) != (video.height, video.width) {
                            warnings.push(format!(
                                "{at}: mask size {}x{} differs from the video's {}x{}; it is resized to \
                                 the model input as the official add_new_mask does",
                                rle.height, rle.width, video.height, video.width
                            ));
                        }
                        masks.insert(f, BinaryMask::from_rle(&rle));
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

    /// The message of the error of parsing `text` as the file `prompts.json`.
    fn parse_error(text: &[u8]) -> String {
        match parse_prompts_file(Path::new("prompts.json"), text) {
            Ok(o) => panic!(
                "parsed {} object(s) from {:?}",
                o.len(),
                String::from_utf8_lossy(text)
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parse_errors_say_what_and_where() {
        for (text, want) in [
            (&b"{\"things\": [{\"id\": \"a\"}]}"[..], "prompts.json:1:1: no `objects` list"),
            (b"\n  {\"version\": 2}", "prompts.json:2:3: no `objects` list"),
            (
                b"{\"objects\": [\n {\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"box\": [1e400, 0, 5, 5]}]}]}",
                "prompts.json:2:",
            ),
            (b"[{\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"box\": [0, 0, 1e400, 5]}]}]", "number out of range"),
            (b"{\"objects\": [\n {\"id\": \"a\",\n  \"prompts\": [{\"frame\": 1, \"bo", "prompts.json:3:30: EOF"),
            (
                b"{\"objects\": [\n {\"id\": \"a\", \"prompts\": [{\"frame\": \"1\"}]}]}",
                "prompts.json:2:38: invalid type: string \"1\", expected i64",
            ),
            (b"{\"objects\": [{\"id\": 1.5}]}", "expected an object id"),
            (b"{\"objects\": 5}", "prompts.json:1:13: invalid type: integer `5`"),
            (b"{\"objects\": []} {\"objects\": []}", "prompts.json:1:17: trailing characters"),
            (
                b"{\"id\": \"a\", \"prompts\": []}\n{\"id\": \"b\", \"prompts\": [{\"frame\": 1, \"boxx\": 2}]}",
                "prompts.json:2:",
            ),
            (
                b"{\"id\": \"a\", \"prompts\": [{\"frame\": 1, \"mask\": {\"size\": [2, 2], \"counts\": [1, 5000000000]}}]}",
                "expected u32",
            ),
            (b"", "prompts.json: the prompts file is empty"),
            (b" \n\t\r\n", "prompts.json: the prompts file is empty"),
            (b"\xef\xbb\xbf", "prompts.json: the prompts file is empty"),
            (b"{\"objects\": [\n{\"id\": \"\xff\"}]}", "prompts.json:2:9: not UTF-8"),
            (b"not json", "prompts.json:1:2:"),
            (b"\"a string\"", "prompts.json:1:1: expected"),
        ] {
            let e = parse_error(text);
            assert!(e.contains(want), "{:?}: {e} (want {want:?})", String::from_utf8_lossy(text));
        }
        // A byte order mark is skipped.
        let bom = b"\xef\xbb\xbf{\"objects\": [{\"id\": \"a\", \"prompts\": []}]}";
        assert_eq!(
            parse_prompts_file(Path::new("p.json"), bom).unwrap().len(),
            1
        );
        // An empty list of objects parses, and validation says so.
        let e = run("{\"objects\": []}", false).unwrap_err().to_string();
        assert!(e.contains("the file lists no objects"), "{e}");
    }

    #[test]
    fn a_huge_mask_is_refused_before_decoding() {
        // 200000 x 200000 = 4e10 pixels, counts summing to exactly that: decoding would
        // allocate 40 GB.
        let runs = std::iter::once("0".to_string())
            .chain(std::iter::repeat_n("4000000000".to_string(), 10))
            .collect::<Vec<_>>()
            .join(",");
        let j = format!(
            r#"{{"objects":[{{"id":"a","prompts":[{{"frame":1,"mask":{{"size":[200000,200000],"counts":[{runs}]}}}},{{"frame":2,"box":[1,1,5,5]}}]}}]}}"#
        );
        let (set, warns) = run(&j, false).unwrap();
        assert_eq!(
            set.objects[0].frames.keys().copied().collect::<Vec<_>>(),
            vec![FrameNo(2)]
        );
        let all = warns.join("\n");
        assert!(
            all.contains("object `a`, frame 1: mask size 200000x200000 is larger than the video (80x100), skipped"),
            "{all}"
        );
        let e = run(&j, true).unwrap_err().to_string();
        assert!(
            e.contains("strict") && e.contains("object `a`, frame 1: mask size"),
            "{e}"
        );
        // Counts that do not cover the declared size: named with object and frame.
        let j = r#"{"objects":[{"id":"b","prompts":[{"frame":3,"mask":{"size":[80,100],"counts":[5,7]}}]}]}"#;
        let e = run(j, true).unwrap_err().to_string();
        assert!(
            e.contains(
                "object `b`, frame 3: bad mask RLE (RLE counts sum to 12, expected 80x100 = 8000)"
            ),
            "{e}"
        );
        // A smaller mask is still resized, with a warning.
        let j = r#"{"objects":[{"id":"c","prompts":[{"frame":3,"mask":{"size":[2,2],"counts":[1,3]}}]}]}"#;
        let (set, warns) = run(j, false).unwrap();
        assert_eq!(
            set.objects[0].frames[&FrameNo(3)]
                .mask
                .as_ref()
                .unwrap()
                .area(),
            3
        );
        assert!(
            warns[0].contains("differs from the video's 80x100"),
            "{warns:?}"
        );
    }

    #[test]
    fn nothing_usable_and_parse_errors_are_errors() {
        let j = r#"{"objects": [{"id": "a", "prompts": [{"frame": 99, "box": [1, 1, 2, 2]}]}]}"#;
        assert!(matches!(run(j, false), Err(PromptError::NothingUsable(_))));
        assert!(parse_prompts("{\"id\": 1, \"prompts\": [{\"frame\": 1, \"boxx\": []}]}").is_err());
        assert!(parse_prompts("not json").is_err());
    }
}
