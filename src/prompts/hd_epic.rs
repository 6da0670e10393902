//! The HD-EPIC input adapter: `assoc_info.json` + `mask_info.json` (or their older names and
//! field names, `all_frames` / `frame_info.json`) for one video, turned into the generic raw
//! objects of [`super`]: one object per association, one box prompt per box on its
//! `frame_number`, the association id as the object id (stable and collision-free: they are the
//! keys of the association dict) and the association name as its label.
//!
//! Problems that concern one mask id or association (a mask id missing from mask_info, a mask
//! without a box, an association without boxes) are warnings naming the ids; the rest of the
//! video runs. Frame-range and image-bounds checks are the generic validation's.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{PromptError, RawId, RawObject, RawPrompt};

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

/// Builds the prompts of `video_id` from the parsed `assoc_info` and `mask_info` documents.
pub fn hd_epic_prompts(
    assoc: &serde_json::Value,
    mask_info: &serde_json::Value,
    video_id: &str,
) -> Result<HdEpicPrompts, String> {
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
                let Some(bbox) = info.bbox else {
                    warnings.push(format!(
                        "association `{assoc_id}`, mask `{mask_id}`, frame {}: no bbox, skipped",
                        info.frame_number
                    ));
                    continue;
                };
                if let Some(prev) = prompts.get(&info.frame_number) {
                    if prev.bbox != Some(bbox) {
                        warnings.push(format!(
                            "association `{assoc_id}`, mask `{mask_id}`, frame {}: a second, different box on \
                             the same frame; the first is used",
                            info.frame_number
                        ));
                    }
                    continue;
                }
                prompts.insert(
                    info.frame_number,
                    RawPrompt {
                        frame: info.frame_number,
                        bbox: Some(bbox),
                        points: None,
                        labels: None,
                        mask: None,
                    },
                );
            }
        }
        if prompts.is_empty() {
            warnings.push(format!("association `{assoc_id}`: no boxes, skipped"));
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
    Ok(HdEpicPrompts { objects, warnings })
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
    fn unknown_video_is_an_error() {
        let err = hd_epic_prompts(&json!({}), &json!({}), "P09-x").unwrap_err();
        assert!(err.contains("P09-x"), "{err}");
    }
}
