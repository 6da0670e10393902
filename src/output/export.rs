//! Exporters of a result JSONL, all streaming (the result is read line by line, twice where
//! a summary must come first; memory grows with the number of frames and objects, never with
//! the masks):
//!
//! - COCO instances JSON: one image per output frame (`id` = frame number + 1, `frame_id` =
//!   frame number, `file_name` = `<frame:05d>.jpg`, one `videos` entry), categories by label
//!   (or one per object), annotations with RLE segmentation, `bbox` as COCO `[x, y, w, h]`,
//!   `track_id` (1-based object index) and `object_id` (the densam id).
//! - DAVIS indexed PNGs `OUT/<video_id>/<frame:05d>.png` (0 background, objects 1..N in order
//!   of first appearance, later objects drawn over earlier ones where masks overlap, the DAVIS
//!   palette) and `OUT/<video_id>/objects.json` mapping index -> id / label.
//! - A CSV of boxes, one row per object-frame.
//!
//! Each output is written under a temporary name and renamed into place when complete
//! ([`crate::output::atomic`]): a failed export leaves no partial file.

use crate::mask::png::{Plane, write_index_png};
use crate::output::atomic::{PartialDir, PartialFile};
use crate::output::jsonl::{FrameRecord, JsonlReader, OutputError};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How COCO categories are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CocoCategories {
    /// One category per distinct label (objects told apart by `track_id`).
    #[default]
    Labels,
    /// One category per object id.
    Objects,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub frames: u64,
    pub annotations: u64,
    pub objects: u64,
}

/// The video id of a result file: `dense_annotations_<video_id>.jsonl` -> `<video_id>`.
pub fn video_id_of(result: &Path) -> String {
    let stem = result
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("video");
    stem.strip_prefix("dense_annotations_")
        .unwrap_or(stem)
        .to_string()
}

/// First pass: frames, the mask size, objects in order of first appearance with labels.
struct Scan {
    frames: Vec<(u64, f64)>,
    size: Option<[u32; 2]>,
    objects: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

fn scan(result: &Path) -> Result<Scan, OutputError> {
    let mut s = Scan {
        frames: Vec::new(),
        size: None,
        objects: Vec::new(),
        index: HashMap::new(),
    };
    let mut reader = JsonlReader::open(result)?;
    while let Some(rec) = reader.next() {
        let rec = rec?;
        s.frames.push((rec.frame_number, rec.time_s));
        for o in &rec.objects {
            let size = o.segmentation.size;
            match s.size {
                None => s.size = Some(size),
                Some(prev) if prev != size => {
                    return Err(OutputError::invalid(
                        result,
                        reader.line(),
                        rec.frame_number,
                        Some(&o.id),
                        format!(
                            "mask size {}x{} differs from earlier masks ({}x{})",
                            size[0], size[1], prev[0], prev[1]
                        ),
                    ));
                }
                _ => {}
            }
            if !s.index.contains_key(&o.id) {
                s.index.insert(o.id.clone(), s.objects.len());
                s.objects.push((o.id.clone(), o.label.clone()));
            }
        }
    }
    Ok(s)
}

/// The writer of `path` under its temporary name (see [`crate::output::atomic`]).
fn create(path: &Path) -> Result<(PartialFile, BufWriter<File>), OutputError> {
    let partial = PartialFile::new(path)?;
    let f = BufWriter::new(partial.create()?);
    Ok((partial, f))
}

/// Flushes `f` and puts the complete file in place.
fn finish(partial: PartialFile, f: BufWriter<File>, path: &Path) -> Result<(), OutputError> {
    f.into_inner()
        .map_err(|e| OutputError::io(path, e.into_error()))?;
    partial.commit()
}

/// Streams `result` into a COCO instances JSON at `out`.
pub fn export_coco(
    result: &Path,
    out: &Path,
    categories: CocoCategories,
) -> Result<ExportSummary, OutputError> {
    let s = scan(result)?;
    let [h, w] = s.size.unwrap_or([0, 0]);
    let vid = video_id_of(result);
    // Category ids, 1-based, in order of first appearance.
    let mut cat_ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut cats: Vec<String> = Vec::new();
    for (id, label) in &s.objects {
        let key = match categories {
            CocoCategories::Labels => label.clone(),
            CocoCategories::Objects => id.clone(),
        };
        if let std::collections::btree_map::Entry::Vacant(e) = cat_ids.entry(key.clone()) {
            cats.push(key);
            e.insert(cats.len() as u64);
        }
    }
    let io = |e: std::io::Error| OutputError::io(out, e);
    let js = |e: serde_json::Error| OutputError::other(out, e.to_string());
    let (partial, mut f) = create(out)?;
    write!(
        f,
        "{{\"info\":{},\"videos\":[{}],\"images\":[",
        json!({"description": format!("densam export of {}", result.display())}),
        json!({"id": 1, "name": vid, "width": w, "height": h, "length": s.frames.len()})
    )
    .map_err(io)?;
    for (i, (n, t)) in s.frames.iter().enumerate() {
        if i > 0 {
            f.write_all(b",").map_err(io)?;
        }
        let img = json!({"id": n + 1, "video_id": 1, "frame_id": n, "time_s": t,
            "file_name": format!("{vid}/{n:05}.jpg"), "width": w, "height": h});
        serde_json::to_writer(&mut f, &img).map_err(js)?;
    }
    f.write_all(b"],\"annotations\":[").map_err(io)?;
    let reader = JsonlReader::open(result)?;
    let mut ann = 0u64;
    for rec in reader {
        let rec = rec?;
        for o in &rec.objects {
            let [x0, y0, x1, y1] = o.bbox;
            let key = match categories {
                CocoCategories::Labels => &o.label,
                CocoCategories::Objects => &o.id,
            };
            let a = json!({
                "id": ann + 1,
                "image_id": rec.frame_number + 1,
                "video_id": 1,
                "category_id": cat_ids.get(key).copied().unwrap_or(0),
                "track_id": s.index.get(&o.id).map_or(0, |i| i + 1),
                "object_id": o.id,
                "segmentation": o.segmentation,
                "area": o.area,
                "bbox": [x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0)],
                "iscrowd": 0,
                "score": o.score,
                "iou": o.iou,
            });
            if ann > 0 {
                f.write_all(b",").map_err(io)?;
            }
            serde_json::to_writer(&mut f, &a).map_err(js)?;
            ann += 1;
        }
    }
    f.write_all(b"],\"categories\":[").map_err(io)?;
    for (i, c) in cats.iter().enumerate() {
        if i > 0 {
            f.write_all(b",").map_err(io)?;
        }
        serde_json::to_writer(
            &mut f,
            &json!({"id": i + 1, "name": c, "supercategory": ""}),
        )
        .map_err(js)?;
    }
    f.write_all(b"]}\n").map_err(io)?;
    finish(partial, f, out)?;
    Ok(ExportSummary {
        frames: s.frames.len() as u64,
        annotations: ann,
        objects: s.objects.len() as u64,
    })
}

/// Paints the objects of one frame into an index plane (objects by first-appearance index,
/// later indices over earlier ones).
fn paint(
    rec: &FrameRecord,
    reader: &JsonlReader<BufReader<File>>,
    index: &HashMap<String, usize>,
    plane: &mut Plane,
) -> Result<(), OutputError> {
    plane.data.fill(0);
    let mut objs: Vec<_> = rec
        .objects
        .iter()
        .map(|o| (index.get(&o.id).copied().unwrap_or(0), o))
        .collect();
    objs.sort_by_key(|(i, _)| *i);
    for (i, o) in objs {
        let rle = reader.decode(rec.frame_number, o)?;
        if (rle.height, rle.width) != (plane.height, plane.width) {
            return Err(OutputError::invalid(
                reader.path(),
                reader.line(),
                rec.frame_number,
                Some(&o.id),
                format!(
                    "mask size {}x{} differs from earlier masks ({}x{})",
                    rle.height, rle.width, plane.height, plane.width
                ),
            ));
        }
        let v = (i + 1) as u8;
        let h = rle.height as usize;
        let w = plane.width as usize;
        let mut pos = 0usize;
        for (k, &c) in rle.counts.iter().enumerate() {
            let end = pos + c as usize;
            if k % 2 == 1 {
                for p in pos..end {
                    plane.data[(p % h) * w + p / h] = v;
                }
            }
            pos = end;
        }
    }
    Ok(())
}

/// Writes DAVIS-style indexed PNGs under `out/<video_id>/`; returns the folder and summary.
pub fn export_davis(
    result: &Path,
    out: &Path,
    video_id: Option<&str>,
) -> Result<(PathBuf, ExportSummary), OutputError> {
    let s = scan(result)?;
    if s.objects.len() > 254 {
        return Err(OutputError::other(
            result,
            format!(
                "{} objects; DAVIS index PNGs hold at most 254 (255 is void)",
                s.objects.len()
            ),
        ));
    }
    let Some([h, w]) = s.size else {
        return Err(OutputError::other(
            result,
            "no masks in the result: the frame size is unknown",
        ));
    };
    let vid = video_id.map_or_else(|| video_id_of(result), str::to_string);
    crate::id::check_named("video id", &vid).map_err(|e| OutputError::other(result, e))?;
    let dir = out.join(&vid);
    let partial = PartialDir::new(&dir)?;
    let mut plane = Plane {
        height: h,
        width: w,
        data: vec![0; h as usize * w as usize],
    };
    let mut reader = JsonlReader::open(result)?;
    let mut ann = 0;
    while let Some(rec) = reader.next() {
        let rec = rec?;
        paint(&rec, &reader, &s.index, &mut plane)?;
        ann += rec.objects.len() as u64;
        write_index_png(
            &partial.path().join(format!("{:05}.png", rec.frame_number)),
            &plane,
        )?;
    }
    let map: serde_json::Map<String, serde_json::Value> = s
        .objects
        .iter()
        .enumerate()
        .map(|(i, (id, label))| ((i + 1).to_string(), json!({"id": id, "label": label})))
        .collect();
    let mp = partial.path().join("objects.json");
    let text =
        serde_json::to_string_pretty(&map).map_err(|e| OutputError::other(&mp, e.to_string()))?;
    std::fs::write(&mp, text + "\n").map_err(|e| OutputError::io(&mp, e))?;
    partial.commit()?;
    Ok((
        dir,
        ExportSummary {
            frames: s.frames.len() as u64,
            annotations: ann,
            objects: s.objects.len() as u64,
        },
    ))
}

/// One text field of the boxes CSV. A field that a spreadsheet would take for a formula (its
/// first character `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'` (the OWASP
/// rule against CSV injection), so it is shown as text; then the usual CSV quoting.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Streams the boxes of `result` into a CSV:
/// `frame_number,time_s,id,label,assoc_id,assoc_name,xmin,ymin,xmax,ymax,score,iou,area`.
pub fn export_boxes_csv(result: &Path, out: &Path) -> Result<ExportSummary, OutputError> {
    let io = |e: std::io::Error| OutputError::io(out, e);
    let (partial, mut f) = create(out)?;
    writeln!(
        f,
        "frame_number,time_s,id,label,assoc_id,assoc_name,xmin,ymin,xmax,ymax,score,iou,area"
    )
    .map_err(io)?;
    let reader = JsonlReader::open(result)?;
    let mut sum = ExportSummary::default();
    let mut ids = std::collections::HashSet::new();
    for rec in reader {
        let rec = rec?;
        sum.frames += 1;
        for o in &rec.objects {
            let [x0, y0, x1, y1] = o.bbox;
            writeln!(
                f,
                "{},{},{},{},{},{},{x0},{y0},{x1},{y1},{},{},{}",
                rec.frame_number,
                rec.time_s,
                csv_field(&o.id),
                csv_field(&o.label),
                csv_field(o.assoc_id.as_deref().unwrap_or("")),
                csv_field(o.assoc_name.as_deref().unwrap_or("")),
                o.score,
                o.iou,
                o.area
            )
            .map_err(io)?;
            sum.annotations += 1;
            ids.insert(o.id.clone());
        }
    }
    sum.objects = ids.len() as u64;
    finish(partial, f, out)?;
    Ok(sum)
}
