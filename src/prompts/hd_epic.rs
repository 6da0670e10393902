//! The HD-EPIC input adapter: `assoc_info.json` + `mask_info.json` (or their older names and
//! field names, `all_frames` / `frame_info.json`) for one video, turned into the generic raw
//! objects of [`super`]: one object per association, one box prompt per box on its
//! `frame_number`, the association id as the object id (stable and collision-free: they are the
//! keys of the association dict) and the association name as its label.
//!
//! With a folder of the released mask PNGs ([`MaskSource`]), a mask id can prompt its
//! `<mask_id>.png` (a binary PNG at video resolution) instead of its box, or both: the mask
//! first, the box refining it, as the generic prompts file combines a mask and a box on a frame.
//!
//! Problems that concern one mask id or association (a mask id missing from mask_info, a mask
//! without a box, a mask PNG missing, undecodable, of the wrong size or empty, an association
//! without prompts) are warnings naming the ids, the file and the frame; the rest of the video
//! runs. Frame-range and image-bounds checks are the generic validation's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{PromptError, RawId, RawObject, RawPrompt, RleCounts, RleSpec};
use crate::output::rle::Rle;

/// What an HD-EPIC mask id prompts on its frame (`--hd-epic-prompt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HdEpicPromptKind {
    /// Its box from mask_info.
    #[default]
    Box,
    /// Its released `<mask_id>.png` mask.
    Mask,
    /// The mask, refined by the box (as the generic prompts file combines them on a frame).
    Both,
}

/// Where the prompts of the mask ids come from.
#[derive(Debug, Clone, Default)]
pub struct MaskSource {
    pub kind: HdEpicPromptKind,
    /// The folder of `<mask_id>.png` files (needed unless `kind` is `Box`).
    pub dir: Option<PathBuf>,
    /// The video's (width, height): a PNG of another size is skipped with a warning.
    pub video_size: Option<(u32, u32)>,
}

#[derive(Debug, Deserialize)]
struct Track {
    #[serde(default)]
    track_id: Option<serde_json::Value>,
    #[serde(default, alias = "all_frames")]
    masks: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Association {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tracks: Vec<Track>,
}

#[derive(Debug, Deserialize)]
struct MaskInfo {
    frame_number: i64,
    #[serde(default)]
    bbox: Option<[f64; 4]>,
}

/// The HD-EPIC objects of one video, in association-id order, and the warnings.
#[derive(Debug)]
pub struct HdEpicPrompts {
    pub objects: Vec<RawObject>,
    pub warnings: Vec<String>,
    /// The mask PNGs used as prompts, in the order read.
    pub mask_files: Vec<PathBuf>,
}

/// Reads `<dir>/<mask_id>.png` as a mask prompt (COCO runs), or says why it cannot be used.
fn load_mask(path: &Path, video_size: Option<(u32, u32)>) -> Result<RleSpec, String> {
    let plane = crate::output::png_io::read_mask_png(path).map_err(|e| e.to_string())?;
    if let Some((w, h)) = video_size
        && (plane.width, plane.height) != (w, h)
    {
        return Err(format!(
            "{}: mask is {}x{}, the video {w}x{h}",
            path.display(),
            plane.width,
            plane.height
        ));
    }
    if plane.data.iter().all(|&v| v == 0) {
        return Err(format!("{}: mask is empty", path.display()));
    }
    let rle = Rle::encode_row_major(&plane.data, plane.height, plane.width)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(RleSpec {
        size: [plane.height as usize, plane.width as usize],
        counts: RleCounts::Runs(rle.counts.iter().map(|&c| u64::from(c)).collect()),
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, PromptError> {
    let text = std::fs::read_to_string(path).map_err(|e| PromptError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| PromptError::Parse(format!("{}: {e}", path.display())))
}

/// Reads the two HD-EPIC files and builds the prompts of `video_id`.
pub fn read_hd_epic(
    assoc_path: &Path,
    mask_info_path: &Path,
    video_id: &str,
) -> Result<HdEpicPrompts, PromptError> {
    let assoc = read_json(assoc_path)?;
    let masks = read_json(mask_info_path)?;
    hd_epic_prompts(&assoc, &masks, video_id)
        .map_err(|e| PromptError::Parse(format!("{}: {e}", assoc_path.display())))
}

/// Builds the box prompts of `video_id` from the parsed `assoc_info` and `mask_info` documents.
pub fn hd_epic_prompts(
    assoc: &serde_json::Value,
    mask_info: &serde_json::Value,
    video_id: &str,
) -> Result<HdEpicPrompts, String> {
    hd_epic_prompts_with(assoc, mask_info, video_id, &MaskSource::default())
}

/// Builds the prompts of `video_id`, each mask id prompting what `source` says.
pub fn hd_epic_prompts_with(
    assoc: &serde_json::Value,
    mask_info: &serde_json::Value,
    video_id: &str,
    source: &MaskSource,
) -> Result<HdEpicPrompts, String> {
    let want_box = source.kind != HdEpicPromptKind::Mask;
    let want_mask = source.kind != HdEpicPromptKind::Box;
    let mask_dir = match (&source.dir, want_mask) {
        (Some(d), true) => Some(d.as_path()),
        (None, true) => return Err("mask prompts need the folder of mask PNGs".into()),
        (_, false) => None,
    };
    let video_assoc = assoc
        .get(video_id)
        .ok_or_else(|| format!("video `{video_id}` has no associations"))?;
    let assocs: BTreeMap<String, Association> = serde_json::from_value(video_assoc.clone())
        .map_err(|e| format!("video `{video_id}`: {e}"))?;
    let empty = serde_json::Value::Object(Default::default());
    let video_masks = mask_info.get(video_id).unwrap_or(&empty);
    let infos: BTreeMap<String, MaskInfo> = serde_json::from_value(video_masks.clone())
        .map_err(|e| format!("mask_info of video `{video_id}`: {e}"))?;
    if video_masks.as_object().is_none_or(|m| m.is_empty()) {
        return Err(format!("mask_info has no entries for video `{video_id}`"));
    }

    let mut warnings = Vec::new();
    let mut objects = Vec::new();
    let mut mask_files = Vec::new();
    for (assoc_id, a) in assocs {
        let mut prompts: BTreeMap<i64, RawPrompt> = BTreeMap::new();
        for track in &a.tracks {
            for mask_id in &track.masks {
                let Some(info) = infos.get(mask_id) else {
                    warnings.push(format!(
                        "association `{assoc_id}`, track {}: mask id `{mask_id}` is not in mask_info, skipped",
                        track.track_id.as_ref().map(|v| v.to_string()).unwrap_or_default()
                    ));
                    continue;
                };
                let f = info.frame_number;
                let at = format!("association `{assoc_id}`, mask `{mask_id}`, frame {f}");
                let bbox = match (want_box, info.bbox) {
                    (false, _) => None,
                    (true, Some(b)) => Some(b),
                    (true, None) => {
                        warnings.push(if want_mask {
                            format!("{at}: no bbox, its mask alone is used")
                        } else {
                            format!("{at}: no bbox, skipped")
                        });
                        None
                    }
                };
                let mask = match mask_dir {
                    None => None,
                    Some(_)
                        if mask_id.is_empty()
                            || mask_id.contains(['/', '\\', '\0'])
                            || mask_id.starts_with('.') =>
                    {
                        warnings.push(format!(
                            "{at}: not usable as a file name; mask prompt skipped"
                        ));
                        None
                    }
                    Some(dir) => {
                        let path = dir.join(format!("{mask_id}.png"));
                        match load_mask(&path, source.video_size) {
                            Ok(m) => {
                                mask_files.push(path);
                                Some(m)
                            }
                            Err(why) => {
                                warnings.push(format!("{at}: {why}; mask prompt skipped"));
                                None
                            }
                        }
                    }
                };
                if bbox.is_none() && mask.is_none() {
                    continue;
                }
                if let Some(prev) = prompts.get_mut(&f) {
                    if bbox.is_some() {
                        if prev.bbox.is_none() {
                            prev.bbox = bbox;
                        } else if prev.bbox != bbox {
                            warnings.push(format!(
                                "{at}: a second, different box on the same frame; the first is used"
                            ));
                        }
                    }
                    if mask.is_some() {
                        if prev.mask.is_none() {
                            prev.mask = mask;
                        } else {
                            warnings.push(format!(
                                "{at}: a second mask on the same frame; the first is used"
                            ));
                        }
                    }
                    continue;
                }
                prompts.insert(
                    f,
                    RawPrompt {
                        frame: f,
                        bbox,
                        points: None,
                        labels: None,
                        mask,
                    },
                );
            }
        }
        if prompts.is_empty() {
            let what = match source.kind {
                HdEpicPromptKind::Box => "boxes",
                HdEpicPromptKind::Mask => "masks",
                HdEpicPromptKind::Both => "boxes or masks",
            };
            warnings.push(format!("association `{assoc_id}`: no {what}, skipped"));
            continue;
        }
        objects.push(RawObject {
            id: RawId::String(assoc_id),
            label: a.name,
            prompts: prompts.into_values().collect(),
        });
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(HdEpicPrompts {
        objects,
        warnings,
        mask_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_one_object_per_association_with_both_field_names() {
        let assoc = json!({"P01-1": {
            "a2": {"name": "plate", "tracks": [
                {"track_id": "t1", "time_segment": [1.0, 2.0], "masks": ["m1", "m2"]},
                {"track_id": "t2", "time_segment": [5.0, 6.0], "all_frames": ["m3"]}]},
            "a1": {"name": "cup", "tracks": [{"track_id": "t3", "masks": ["m4", "missing"]}]},
            "a3": {"name": "pan", "tracks": [{"track_id": "t4", "masks": []}]}
        }});
        let info = json!({"P01-1": {
            "m1": {"frame_number": 30, "bbox": [1.0, 2.0, 30.0, 40.0], "3d_location": [0, 0, 0], "fixture": null},
            "m2": {"frame_number": 60, "bbox": [5.0, 5.0, 20.0, 20.0]},
            "m3": {"frame_number": 150, "bbox": [7.5, 8.5, 20.0, 20.0]},
            "m4": {"frame_number": 10, "bbox": [0.0, 0.0, 10.0, 10.0]}
        }});
        let p = hd_epic_prompts(&assoc, &info, "P01-1").unwrap();
        let ids: Vec<String> = p
            .objects
            .iter()
            .map(|o| match &o.id {
                RawId::String(s) => s.clone(),
                RawId::Int(i) => i.to_string(),
            })
            .collect();
        assert_eq!(ids, vec!["a1", "a2"]);
        assert_eq!(p.objects[1].label.as_deref(), Some("plate"));
        let frames: Vec<i64> = p.objects[1].prompts.iter().map(|q| q.frame).collect();
        assert_eq!(frames, vec![30, 60, 150]);
        assert_eq!(p.objects[1].prompts[2].bbox, Some([7.5, 8.5, 20.0, 20.0]));
        let all = p.warnings.join("\n");
        assert!(
            all.contains("mask id `missing` is not in mask_info"),
            "{all}"
        );
        assert!(all.contains("association `a3`: no boxes"), "{all}");
    }

    #[test]
    fn mask_pngs_as_prompts_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (40u32, 30u32);
        let disc = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if (x as i32 - 10).pow(2) + (y as i32 - 12).pow(2) < 25 {
                255
            } else {
                0
            }])
        });
        disc.save(dir.path().join("m1.png")).unwrap();
        image::GrayImage::new(w, h)
            .save(dir.path().join("m-empty.png"))
            .unwrap();
        image::GrayImage::new(20, 15)
            .save(dir.path().join("m-small.png"))
            .unwrap();
        std::fs::write(dir.path().join("m-bad.png"), b"not a png").unwrap();
        let assoc = json!({"P01-1": {
            "a1": {"name": "disc", "tracks": [{"track_id": "t1",
                   "masks": ["m1", "m-empty", "m-small"]}]},
            "a2": {"name": "other", "tracks": [{"track_id": "t2", "masks": ["m-bad", "m-gone"]}]}
        }});
        let info = json!({"P01-1": {
            "m1": {"frame_number": 3, "bbox": [5.0, 7.0, 15.0, 17.0]},
            "m-empty": {"frame_number": 4, "bbox": [1.0, 1.0, 5.0, 5.0]},
            "m-small": {"frame_number": 5, "bbox": [1.0, 1.0, 5.0, 5.0]},
            "m-bad": {"frame_number": 6, "bbox": [1.0, 1.0, 5.0, 5.0]},
            "m-gone": {"frame_number": 7, "bbox": [1.0, 1.0, 5.0, 5.0]}
        }});
        let src = |kind| MaskSource {
            kind,
            dir: Some(dir.path().to_path_buf()),
            video_size: Some((w, h)),
        };
        let p = hd_epic_prompts_with(&assoc, &info, "P01-1", &src(HdEpicPromptKind::Mask)).unwrap();
        assert_eq!(p.objects.len(), 1, "{:?}", p.warnings);
        let q = &p.objects[0].prompts;
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].frame, q[0].bbox), (3, None));
        let all = p.warnings.join("\n");
        for (id, frame, why) in [
            ("m-empty", 4, "mask is empty"),
            ("m-small", 5, "mask is 20x15, the video 40x30"),
            ("m-bad", 6, "m-bad.png"),
            ("m-gone", 7, "m-gone.png"),
        ] {
            let want = format!("mask `{id}`, frame {frame}: ");
            let line = p.warnings.iter().find(|l| l.contains(&want));
            assert!(
                line.is_some_and(|l| l.contains(why) && l.contains("skipped")),
                "{want} {why}: {all}"
            );
        }
        assert!(all.contains("association `a2`: no masks, skipped"), "{all}");
        assert_eq!(p.mask_files, vec![dir.path().join("m1.png")]);
        // The mask round-trips through the generic validation to the PNG's pixels.
        let geo = crate::prompts::VideoGeometry {
            num_frames: 10,
            width: w,
            height: h,
        };
        let (set, warns) = crate::prompts::validate(p.objects, geo, true).unwrap();
        assert!(warns.is_empty(), "{warns:?}");
        let m = set.objects[0].frames[&crate::tracker::FrameNo(3)]
            .mask
            .as_ref()
            .unwrap();
        let want: Vec<u8> = disc.pixels().map(|p| u8::from(p.0[0] > 0)).collect();
        assert_eq!(m.data, want);
        assert!(
            set.objects[0].frames[&crate::tracker::FrameNo(3)]
                .points
                .is_empty()
        );

        // Both: mask and box on frame 3; boxes alone where the PNG is unusable.
        let p = hd_epic_prompts_with(&assoc, &info, "P01-1", &src(HdEpicPromptKind::Both)).unwrap();
        assert_eq!(p.objects.len(), 2);
        let q = &p.objects[0].prompts;
        assert_eq!(q.iter().map(|r| r.frame).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(q[0].mask.is_some() && q[0].bbox == Some([5.0, 7.0, 15.0, 17.0]));
        assert!(q[1].mask.is_none() && q[1].bbox.is_some());
        let (set, _) = crate::prompts::validate(p.objects, geo, false).unwrap();
        let f3 = &set.objects[0].frames[&crate::tracker::FrameNo(3)];
        assert!(f3.mask.is_some());
        assert_eq!(f3.labels, vec![2, 3]);
        // Box (the default): no PNG is read.
        let p = hd_epic_prompts_with(&assoc, &info, "P01-1", &src(HdEpicPromptKind::Box)).unwrap();
        assert!(p.mask_files.is_empty() && p.warnings.is_empty());
        // Mask prompts without a folder: an error.
        let none = MaskSource {
            kind: HdEpicPromptKind::Mask,
            ..MaskSource::default()
        };
        assert!(hd_epic_prompts_with(&assoc, &info, "P01-1", &none).is_err());
    }

    #[test]
    fn unknown_video_is_an_error() {
        let err = hd_epic_prompts(&json!({}), &json!({}), "P09-x").unwrap_err();
        assert!(err.contains("P09-x"), "{err}");
    }
}
