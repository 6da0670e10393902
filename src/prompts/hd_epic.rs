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
//! The two files are read typed ([`Association`], [`Track`], [`MaskInfo`]; `eval` reads its
//! HD-EPIC ground truth through the same types): only the requested video's entries are
//! deserialised, the rest of each file is checked for JSON syntax, and every error names the
//! file, line and column.
//!
//! Problems that concern one mask id or association (a mask id missing from mask_info, a mask
//! without a box, a mask PNG missing, undecodable, of the wrong size or empty, an association
//! without prompts) are warnings naming the ids, the file and the frame; the rest of the video
//! runs. Frame-range and image-bounds checks are the generic validation's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{PromptError, RawId, RawObject, RawPrompt};
use crate::mask::{CocoRle, Rle};

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

/// A mask id, written as a string or a number; kept as a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaskId(pub String);

impl<'de> Deserialize<'de> for MaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MaskId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mask id (a string or an integer)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaskId, E> {
                Ok(MaskId(s.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaskId, E> {
                Ok(MaskId(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaskId, E> {
                Ok(MaskId(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One track of an association: its mask ids (`masks`, or `all_frames` in the first release).
#[derive(Debug, Clone, Deserialize)]
pub struct Track {
    /// Shown in warnings only.
    #[serde(default)]
    pub track_id: Option<serde_json::Value>,
    #[serde(default, alias = "all_frames")]
    pub masks: Vec<MaskId>,
}

/// One association of `assoc_info.json`: an object, its name and its tracks.
#[derive(Debug, Clone, Deserialize)]
pub struct Association {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tracks: Vec<Track>,
}

/// One mask id's entry of `mask_info.json` (or `frame_info.json`): its frame and box.
#[derive(Debug, Clone, Deserialize)]
pub struct MaskInfo {
    pub frame_number: i64,
    /// `[x0, y0, x1, y1]`, original pixels.
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
}

/// The HD-EPIC annotations of one video, typed: its associations (association id ->
/// association, from assoc_info) and its masks (mask id -> frame and box, from mask_info).
#[derive(Debug, Clone, Default)]
pub struct HdEpicVideo {
    pub associations: BTreeMap<String, Association>,
    pub masks: BTreeMap<String, MaskInfo>,
}

/// Selects one video's entry of a JSON object keyed by video id: that entry is deserialised as
/// `T`, every other entry is only checked for syntax; all keys are collected.
struct VideoEntry<'a, T> {
    video_id: &'a str,
    entry: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for VideoEntry<'_, T> {
    type Value = (Option<T>, Vec<String>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object keyed by video id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.video_id {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            keys.push(key);
        }
        Ok((found, keys))
    }
}

/// The entry of `video_id` in the file `path` (a JSON object keyed by video id, its bytes
/// given) and the file's video ids; errors name the file, line and column.
fn video_entry<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    video_id: &str,
) -> Result<(Option<T>, Vec<String>), PromptError> {
    let text = super::json_text(path, bytes)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = VideoEntry {
        video_id,
        entry: PhantomData,
    };
    let out = de
        .deserialize_map(seed)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| PromptError::json(path, &e))?;
    Ok(out)
}

/// Where HD-EPIC keeps a video under the videos root: `ROOT/<participant>/<video id>.mp4`, the
/// participant being the id's first `-`-separated part (`P01-20240202-171220` -> `P01`).
pub fn video_path(root: &Path, video_id: &str) -> PathBuf {
    let participant = video_id.split('-').next().unwrap_or(video_id);
    root.join(participant).join(format!("{video_id}.mp4"))
}

/// Every video id of a file keyed by video id (`assoc_info.json`), in file order; the entries
/// are only checked for JSON syntax.
pub fn video_ids(path: &Path, bytes: &[u8]) -> Result<Vec<String>, PromptError> {
    // Every entry, the selected one too, is skipped as `IgnoredAny`.
    Ok(video_entry::<IgnoredAny>(path, bytes, "")?.1)
}

/// The associations of `video_id` in `assoc_info.json` (`bytes`, read from `path`); a video id
/// that is not in the file is [`PromptError::UnknownVideo`], listing the file's ids.
pub fn parse_assoc_info(
    path: &Path,
    bytes: &[u8],
    video_id: &str,
) -> Result<BTreeMap<String, Association>, PromptError> {
    match video_entry(path, bytes, video_id)? {
        (Some(a), _) => Ok(a),
        (None, video_ids) => Err(PromptError::UnknownVideo {
            path: path.display().to_string(),
            video_id: video_id.to_string(),
            video_ids,
        }),
    }
}

/// The masks of `video_id` in `mask_info.json` (`bytes`, read from `path`); a video that is
/// missing there or has no masks is an error naming the file.
pub fn parse_mask_info(
    path: &Path,
    bytes: &[u8],
    video_id: &str,
) -> Result<BTreeMap<String, MaskInfo>, PromptError> {
    match video_entry::<BTreeMap<String, MaskInfo>>(path, bytes, video_id)? {
        (Some(m), _) if !m.is_empty() => Ok(m),
        _ => Err(PromptError::Parse(format!(
            "{}: no masks of video `{video_id}`",
            path.display()
        ))),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, PromptError> {
    crate::files::read_input(path).map_err(|e| PromptError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

impl HdEpicVideo {
    /// Reads the video's entries of `assoc_info.json` and `mask_info.json`.
    pub fn read(
        assoc_path: &Path,
        mask_info_path: &Path,
        video_id: &str,
    ) -> Result<Self, PromptError> {
        let associations = parse_assoc_info(assoc_path, &read_bytes(assoc_path)?, video_id)?;
        let masks = parse_mask_info(mask_info_path, &read_bytes(mask_info_path)?, video_id)?;
        Ok(Self {
            associations,
            masks,
        })
    }
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
fn load_mask(path: &Path, video_size: Option<(u32, u32)>) -> Result<CocoRle, String> {
    // The declared size is checked against the video's before the pixels are decoded.
    let plane = crate::mask::png::read_mask_png(path, video_size).map_err(|e| e.to_string())?;
    if plane.data.iter().all(|&v| v == 0) {
        return Err(format!("{}: mask is empty", path.display()));
    }
    let rle = Rle::encode_row_major(&plane.data, plane.height, plane.width)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(CocoRle::uncompressed(rle))
}

/// Builds the prompts of one video, each mask id prompting what `source` says (a mask, its
/// box or both).
pub fn hd_epic_prompts(
    video: &HdEpicVideo,
    source: &MaskSource,
) -> Result<HdEpicPrompts, PromptError> {
    let want_box = source.kind != HdEpicPromptKind::Mask;
    let want_mask = source.kind != HdEpicPromptKind::Box;
    let mask_dir = match (&source.dir, want_mask) {
        (Some(d), true) => Some(d.as_path()),
        (None, true) => {
            return Err(PromptError::Parse(
                "mask prompts need the folder of mask PNGs".into(),
            ));
        }
        (_, false) => None,
    };
    let infos = &video.masks;
    let mut warnings = Vec::new();
    let mut objects = Vec::new();
    let mut mask_files = Vec::new();
    for (assoc_id, a) in &video.associations {
        let mut prompts: BTreeMap<i64, RawPrompt> = BTreeMap::new();
        for track in &a.tracks {
            for MaskId(mask_id) in &track.masks {
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
                let mask = match (mask_dir, crate::id::check(mask_id)) {
                    (None, _) => None,
                    (Some(_), Err(why)) => {
                        warnings.push(format!(
                            "{at}: not usable as a file name ({why}); mask prompt skipped"
                        ));
                        None
                    }
                    (Some(dir), Ok(())) => {
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
            id: RawId::String(assoc_id.clone()),
            label: a.name.clone(),
            prompts: prompts.into_values().collect(),
            unknown_keys: Vec::new(),
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

    /// The typed video `id` of an assoc_info and a mask_info document.
    fn video(
        assoc: &serde_json::Value,
        info: &serde_json::Value,
        id: &str,
    ) -> Result<HdEpicVideo, PromptError> {
        let (a, m) = (assoc.to_string(), info.to_string());
        Ok(HdEpicVideo {
            associations: parse_assoc_info(Path::new("assoc_info.json"), a.as_bytes(), id)?,
            masks: parse_mask_info(Path::new("mask_info.json"), m.as_bytes(), id)?,
        })
    }

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
        let p = hd_epic_prompts(
            &video(&assoc, &info, "P01-1").unwrap(),
            &MaskSource::default(),
        )
        .unwrap();
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
        let p = hd_epic_prompts(
            &video(&assoc, &info, "P01-1").unwrap(),
            &src(HdEpicPromptKind::Mask),
        )
        .unwrap();
        assert_eq!(p.objects.len(), 1, "{:?}", p.warnings);
        let q = &p.objects[0].prompts;
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].frame, q[0].bbox), (3, None));
        let all = p.warnings.join("\n");
        for (id, frame, why) in [
            ("m-empty", 4, "mask is empty"),
            (
                "m-small",
                5,
                "declares 20x15 pixels where 40x30 (the video's) are expected",
            ),
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
        let p = hd_epic_prompts(
            &video(&assoc, &info, "P01-1").unwrap(),
            &src(HdEpicPromptKind::Both),
        )
        .unwrap();
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
        let p = hd_epic_prompts(
            &video(&assoc, &info, "P01-1").unwrap(),
            &src(HdEpicPromptKind::Box),
        )
        .unwrap();
        assert!(p.mask_files.is_empty() && p.warnings.is_empty());
        // Mask prompts without a folder: an error.
        let none = MaskSource {
            kind: HdEpicPromptKind::Mask,
            ..MaskSource::default()
        };
        assert!(hd_epic_prompts(&video(&assoc, &info, "P01-1").unwrap(), &none).is_err());
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let assoc = "\u{feff}{\"v\": {\"a1\": {\"name\": \"cup\", \"tracks\": [{\"masks\": [7, \"m2\"]}]}},\n \"w\": [1, {}]}";
        let a = parse_assoc_info(Path::new("assoc_info.json"), assoc.as_bytes(), "v").unwrap();
        let ids: Vec<&str> = a["a1"].tracks[0]
            .masks
            .iter()
            .map(|m| m.0.as_str())
            .collect();
        assert_eq!(ids, ["7", "m2"]);
        let videos = video_ids(Path::new("assoc_info.json"), assoc.as_bytes()).unwrap();
        assert_eq!(videos, ["v", "w"]);
        // A type error in mask_info names mask_info, with its line and column.
        let info = "{\"v\": {\n  \"7\": {\"frame_number\": \"x\"}}}";
        let e = parse_mask_info(Path::new("mask_info.json"), info.as_bytes(), "v")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("mask_info.json:2:") && e.contains("i64"),
            "{e}"
        );
        // Other videos' entries are only checked for syntax.
        let info = "{\"w\": 5, \"v\": {\"7\": {\"frame_number\": 3}}}";
        let m = parse_mask_info(Path::new("mask_info.json"), info.as_bytes(), "v").unwrap();
        assert_eq!(m["7"].frame_number, 3);
        let e = parse_mask_info(Path::new("mask_info.json"), info.as_bytes(), "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mask_info.json: no masks of video `u`"), "{e}");
        let e = parse_mask_info(Path::new("m.json"), b"{\"v\": {}\n,", "v")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.json:2:"), "{e}");
        let e = parse_assoc_info(Path::new("a.json"), b"[1]", "v")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.json:1:") && e.contains("keyed by video id"),
            "{e}"
        );
    }

    #[test]
    fn unknown_video_is_an_error() {
        let err = video(&json!({}), &json!({}), "P09-x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("P09-x"), "{err}");
    }
}
