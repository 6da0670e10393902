//! `run.json`, the record of a run in its output folder: written when a run ends (complete,
//! failed or interrupted) as a [`Manifest`] (an empty window's as an [`EmptyWindowManifest`]), and
//! read back ([`Recorded`]) to recognise a finished result, its failed frames, and another
//! video's result in the same folder. Also the failed frames grouped by window, as `run.json`
//! lists them and the final log lines say.
//!
//! The JSON has its keys in alphabetical order at every level (written through a
//! `serde_json::Value`), as earlier versions wrote it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::{AnnotateJobArgs, SpanMode};
use super::params::RunParams;
use super::state::{FailedFrame, WindowRecord};
use super::window::window_of;
use super::{JobError, out_err};
use crate::model::layers::Precision;
use crate::tracker::Stage;
use crate::video::VideoInfo;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Failed,
    Interrupted,
}

/// The record of a run that tracked (see the module doc for the key order).
#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub status: Status,
    /// Why it failed (a failed run), or the failed-frame summary lines (a complete one).
    pub errors: Vec<String>,
    /// Only for an interrupted run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<Interrupted>,
    pub densam_version: &'static str,
    pub command: &'static str,
    pub options: &'a AnnotateJobArgs,
    pub params: &'a RunParams,
    pub video_id: &'a str,
    pub video: VideoRecord<'a>,
    pub model: ModelRecord<'a>,
    pub device: String,
    pub dtype: Precision,
    pub peak_gpu_bytes: Option<u64>,
    pub objects: Vec<ObjectRecord<'a>>,
    pub span: SpanMode,
    pub span_margin_s: Option<f64>,
    pub active_frames: usize,
    pub warnings: &'a [String],
    pub window_frames: u64,
    pub windows: Vec<WindowRecord>,
    pub processed_frames: usize,
    pub written_frames: usize,
    pub failed_frames: usize,
    pub failures: Vec<WindowFailures>,
    /// The output file's name (in the same folder).
    pub output: Option<String>,
    pub peak_rss_bytes: Option<u64>,
    /// Wall time of all runs up to this end.
    pub wall_seconds: f64,
    pub this_run: ThisRun,
    pub since_start_seconds: f64,
}

/// Why and where an interrupted run stopped.
#[derive(Debug, Serialize)]
pub struct Interrupted {
    pub signal: &'static str,
    pub at: Stage,
    /// A checkpoint to resume from exists.
    pub checkpoint: bool,
}

/// The video as opened.
#[derive(Debug, Serialize)]
pub struct VideoRecord<'a> {
    pub path: &'a Path,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub fps: f64,
    pub info: &'a VideoInfo,
}

/// The model as loaded.
#[derive(Debug, Serialize)]
pub struct ModelRecord<'a> {
    pub family: crate::model::config::Family,
    /// The SAM 2 size (SAM 3 has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<crate::model::config::ModelSize>,
    pub version: crate::model::config::Sam2Version,
    pub image_size: i64,
    pub checkpoint: &'a Path,
    /// FNV-1a of the checkpoint's bytes, as hex.
    pub checkpoint_fnv1a: Option<String>,
}

/// One tracked object.
#[derive(Debug, Serialize)]
pub struct ObjectRecord<'a> {
    pub id: &'a str,
    pub label: Option<&'a str>,
    pub prompted_frames: Vec<u64>,
    /// `--span prompts`: the first and last original frame it is tracked on.
    pub span_frames: Option<[u64; 2]>,
}

/// Figures of this run alone (a resumed run's are its own).
#[derive(Debug, Serialize)]
pub struct ThisRun {
    pub wall_seconds: f64,
    pub decode_seconds: f64,
    pub decoded_frames: usize,
    pub encoded_frames: usize,
    pub encode_write_seconds: f64,
    /// `--profile`: seconds per stage.
    pub stage_seconds: Option<BTreeMap<String, f64>>,
    pub resumed_at: Option<Stage>,
    /// Processed frames tracked per second of wall time.
    pub fps: f64,
}

/// The `run.json` of a window run without prompted objects.
#[derive(Debug, Serialize)]
pub struct EmptyWindowManifest<'a> {
    pub status: Status,
    pub written_frames: usize,
    pub params: &'a RunParams,
    pub note: &'static str,
    /// Frames the container lists but the file does not hold (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_frames: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<WindowFailures>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The frames of one window that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowFailures {
    pub window: u64,
    /// In the order they failed.
    pub frames: Vec<u64>,
    pub errors: Vec<String>,
}

/// Writes `run.json` atomically, keys sorted at every level.
pub fn write(path: &Path, manifest: &impl Serialize) -> Result<(), JobError> {
    let internal = |e: serde_json::Error| JobError::Internal(format!("run.json: {e}"));
    let value = serde_json::to_value(manifest).map_err(internal)?;
    let text = serde_json::to_string_pretty(&value).map_err(internal)? + "\n";
    let tmp = path.with_extension("json.tmp");
    crate::files::create_new(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(out_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        JobError::Output(format!("{}: {e}", path.display()))
    })
}

/// What a `run.json` found in an output folder says (each part only if readable).
#[derive(Debug, Default)]
pub struct Recorded {
    pub status: Option<String>,
    /// The parameters, as recorded (see [`RunParams::from_recorded`]).
    pub params: Option<serde_json::Value>,
    pub failed_frames: usize,
    /// The video id (from the parameters, else the top level).
    pub video_id: Option<String>,
    /// The output file's name.
    pub output: Option<String>,
}

impl Recorded {
    /// Reads `path`: `None` when it is missing or not a JSON object.
    pub fn read(path: &Path) -> Option<Recorded> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        v.as_object()?;
        let text = |v: Option<&serde_json::Value>| v.and_then(|s| s.as_str()).map(String::from);
        let params = v.get("params").cloned();
        let video_id = text(params.as_ref().and_then(|p| p.get("video_id")))
            .or_else(|| text(v.get("video_id")));
        let output = text(v.get("output")).or_else(|| {
            video_id
                .as_ref()
                .map(|id| format!("dense_annotations_{id}.jsonl"))
        });
        Some(Recorded {
            status: text(v.get("status")),
            failed_frames: v.get("failed_frames").and_then(|n| n.as_u64()).unwrap_or(0) as usize,
            params,
            video_id,
            output,
        })
    }

    /// Whether it records a complete run.
    pub fn complete(&self) -> bool {
        self.status.as_deref() == Some("complete")
    }
}

/// The failed frames grouped by window, windows ascending (frames in the order recorded).
fn group_by_window(failed: &[FailedFrame], window_frames: u64) -> BTreeMap<u64, Vec<&FailedFrame>> {
    let mut by: BTreeMap<u64, Vec<&FailedFrame>> = BTreeMap::new();
    for f in failed {
        by.entry(window_of(f.frame, window_frames))
            .or_default()
            .push(f);
    }
    by
}

/// `run.json`'s `failures`: per window, the frames that could not be decoded and why.
pub fn failures_by_window(failed: &[FailedFrame], window_frames: u64) -> Vec<WindowFailures> {
    group_by_window(failed, window_frames)
        .into_iter()
        .map(|(k, v)| WindowFailures {
            window: k,
            frames: v.iter().map(|f| f.frame).collect(),
            errors: v.iter().map(|f| f.error.clone()).collect(),
        })
        .collect()
}

/// One line per window with failed frames.
pub fn failure_summary(failed: &[FailedFrame], window_frames: u64) -> Vec<String> {
    group_by_window(failed, window_frames)
        .into_iter()
        .map(|(k, frames)| {
            let mut v: Vec<u64> = frames.iter().map(|f| f.frame).collect();
            v.sort_unstable();
            let list: Vec<String> = v.iter().map(|n| n.to_string()).collect();
            format!(
                "window {k}: {} frame(s) could not be decoded: {}",
                v.len(),
                list.join(", ")
            )
        })
        .collect()
}

/// The output file of a recorded run in `dir`, if it exists.
pub fn existing_output(dir: &Path, recorded: &Recorded) -> Option<PathBuf> {
    let p = dir.join(recorded.output.as_ref()?);
    p.exists().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_grouped_by_window() {
        let f = |frame: u64| FailedFrame {
            frame,
            error: format!("e{frame}"),
        };
        let failed = [f(33), f(3), f(34), f(12)];
        let by = failures_by_window(&failed, 10);
        assert_eq!(by.len(), 3);
        assert_eq!((by[0].window, by[0].frames.as_slice()), (0, &[3][..]));
        assert_eq!(by[2].frames, [33, 34]);
        assert_eq!(by[2].errors, ["e33", "e34"]);
        let v = serde_json::to_value(&by[0]).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"errors":["e3"],"frames":[3],"window":0}"#
        );
        assert_eq!(
            failure_summary(&failed, 10)[2],
            "window 3: 2 frame(s) could not be decoded: 33, 34"
        );
    }

    #[test]
    fn recorded_reads_what_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        assert!(Recorded::read(&p).is_none());
        std::fs::write(
            &p,
            r#"{"status": "complete", "failed_frames": 2, "params": {"video_id": "a"}}"#,
        )
        .unwrap();
        let r = Recorded::read(&p).unwrap();
        assert!(r.complete());
        assert_eq!(r.failed_frames, 2);
        assert_eq!(r.video_id.as_deref(), Some("a"));
        assert_eq!(r.output.as_deref(), Some("dense_annotations_a.jsonl"));
        assert!(existing_output(dir.path(), &r).is_none());
        std::fs::write(dir.path().join("dense_annotations_a.jsonl"), b"").unwrap();
        assert!(existing_output(dir.path(), &r).is_some());
        std::fs::write(&p, b"[1]").unwrap();
        assert!(Recorded::read(&p).is_none());
    }
}
