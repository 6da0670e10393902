//! Input resolution: which video, which video id, which prompts (generic file or HD-EPIC
//! `assoc_info` + `mask_info`), with errors that say where (file, line, column) and, for an
//! unknown video id, the near matches.

use std::path::{Path, PathBuf};

use super::JobError;
use super::args::InputArgs;
use crate::hash::Fnv1a;
use crate::prompts::hd_epic::{self, HdEpicPromptKind, HdEpicVideo, MaskSource};
use crate::prompts::{self, PromptError, RawObject};

/// The resolved input of a job.
#[derive(Debug)]
pub struct Input {
    pub video: PathBuf,
    pub video_id: String,
    pub objects: Vec<RawObject>,
    /// Warnings of the input adapter (validation adds its own).
    pub warnings: Vec<String>,
    /// Whether objects are HD-EPIC associations (output carries `assoc_id` / `assoc_name`).
    pub hd_epic: bool,
    /// A hash of the prompt input (files' bytes and the video id).
    pub prompts_hash: String,
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, JobError> {
    crate::files::read_input(path).map_err(|e| JobError::Input(format!("{}: {e}", path.display())))
}

/// Levenshtein distance (for near matches of ids).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to five keys closest to `id` (edit distance, then name).
pub fn near_matches<'a>(id: &str, keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<(usize, &String)> = keys.map(|k| (edit_distance(id, k), k)).collect();
    v.sort();
    v.into_iter().take(5).map(|(_, k)| k.clone()).collect()
}

/// Gives the (width, height) of the video at a path.
pub type VideoSize<'a> = dyn FnMut(&Path) -> Result<(u32, u32), JobError> + 'a;

/// Resolves video, id and prompts. `video_size` is asked only for HD-EPIC mask prompts, whose
/// PNGs must match the video.
pub fn resolve(a: &InputArgs, video_size: &mut VideoSize<'_>) -> Result<Input, JobError> {
    let video = match (&a.video, &a.videos_root, &a.video_id) {
        (Some(v), _, _) => v.clone(),
        (None, Some(root), Some(id)) => prompts::hd_epic::video_path(root, id),
        _ => {
            return Err(JobError::Usage(
                "give --video, or --videos-root with --video-id".into(),
            ));
        }
    };
    let video_id = match &a.video_id {
        Some(id) => id.clone(),
        None => video_stem(&video),
    };
    crate::id::check_named("video id", &video_id).map_err(JobError::Usage)?;
    if let Some(assoc_path) = &a.hd_epic_assoc {
        let masks_path = a
            .hd_epic_masks
            .as_ref()
            .ok_or_else(|| JobError::Usage("--hd-epic-assoc needs --hd-epic-masks".into()))?;
        let ab = read_bytes(assoc_path)?;
        let mb = read_bytes(masks_path)?;
        let associations =
            hd_epic::parse_assoc_info(assoc_path, &ab, &video_id).map_err(|e| match &e {
                PromptError::UnknownVideo { video_ids, .. } => {
                    let near = near_matches(&video_id, video_ids.iter());
                    JobError::UnknownVideo(format!(
                        "{e}; nearest: {}",
                        if near.is_empty() {
                            "none".to_string()
                        } else {
                            near.join(", ")
                        }
                    ))
                }
                _ => JobError::Input(e.to_string()),
            })?;
        let masks = hd_epic::parse_mask_info(masks_path, &mb, &video_id)
            .map_err(|e| JobError::Input(e.to_string()))?;
        let hd_video = HdEpicVideo {
            associations,
            masks,
        };
        let kind = a.hd_epic_prompt;
        let dir = match (kind, &a.hd_epic_mask_dir) {
            (HdEpicPromptKind::Box, _) => None,
            (_, None) => {
                return Err(JobError::Usage(
                    "--hd-epic-prompt mask or both needs --hd-epic-mask-dir".into(),
                ));
            }
            (_, Some(d)) if !d.is_dir() => {
                return Err(JobError::Input(format!(
                    "--hd-epic-mask-dir {}: not a folder",
                    d.display()
                )));
            }
            (_, Some(d)) => Some(d.clone()),
        };
        let source = MaskSource {
            kind,
            video_size: match dir {
                Some(_) => Some(video_size(&video)?),
                None => None,
            },
            dir,
        };
        let p = hd_epic::hd_epic_prompts(&hd_video, &source)
            .map_err(|e| JobError::Input(e.to_string()))?;
        let mut h = Fnv1a::new();
        h.update(&ab).update(&mb).update(video_id.as_bytes());
        if kind != HdEpicPromptKind::Box {
            // The prompt kind and the mask PNGs used (a changed PNG changes the results).
            h.update(format!("{kind:?}").as_bytes());
            for f in &p.mask_files {
                h.update(f.as_os_str().as_encoded_bytes());
                h.update(&read_bytes(f)?);
            }
        }
        return Ok(Input {
            video,
            video_id,
            objects: p.objects,
            warnings: p.warnings,
            hd_epic: true,
            prompts_hash: h.hex(),
        });
    }
    if a.hd_epic_prompt != HdEpicPromptKind::Box {
        return Err(JobError::Usage(
            "--hd-epic-prompt applies to HD-EPIC input (--hd-epic-assoc)".into(),
        ));
    }
    let Some(pp) = &a.prompts else {
        return Err(JobError::Usage(
            "give --prompts, or --hd-epic-assoc with --hd-epic-masks and --video-id".into(),
        ));
    };
    let bytes = read_bytes(pp)?;
    let objects =
        prompts::parse_prompts_file(pp, &bytes).map_err(|e| JobError::Input(e.to_string()))?;
    Ok(Input {
        video,
        video_id,
        objects,
        warnings: Vec::new(),
        hd_epic: false,
        prompts_hash: Fnv1a::new().update(&bytes).hex(),
    })
}

/// A video's name without extension (a frame directory's own name).
pub fn video_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_matches_rank_by_distance() {
        let keys: Vec<String> = ["P01-20240202-171220", "P01-20240202-171221", "P02-x"]
            .map(String::from)
            .to_vec();
        let n = near_matches("P01-20240202-171222", keys.iter());
        assert_eq!(n[0], "P01-20240202-171220");
        assert_eq!(n.len(), 3);
        assert_eq!(
            prompts::hd_epic::video_path(Path::new("v"), "P07-1-2"),
            Path::new("v/P07/P07-1-2.mp4")
        );
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
