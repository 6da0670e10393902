//! The result-determining parameters of a run ([`RunParams`]): recorded in every checkpoint and
//! in `run.json`, and compared on every start, so that a checkpoint is only resumed, and a
//! finished result only kept, for the same video, prompts, model and tracking options.
//!
//! The JSON form is the one earlier versions wrote (the same keys, values and key order), so
//! their finished results and checkpoints are still recognised. Unknown keys are refused: a
//! parameter this version does not know could have changed the results.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::JobError;
use super::args::{AnnotateJobArgs, BatchObjects, SpanMode};
use super::prepare::Prepared;
use crate::model::layers::Precision;
use crate::tracker::policy::MemoryPolicy;

/// What a run's results depend on. Fields in alphabetical order: the key order of the JSON
/// object earlier versions built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Objects per batch: the number given, or the one `--batch-objects auto` chose.
    pub batch_objects: usize,
    /// `--batch-objects auto` chose `batch_objects` (absent for a number given, as in earlier
    /// versions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch_objects_auto: bool,
    /// The model checkpoint (canonical path) and its size in bytes.
    pub checkpoint: PathBuf,
    pub checkpoint_bytes: u64,
    /// FNV-1a of the checkpoint's bytes: other weights of the same size are another model.
    /// Absent in records of earlier versions (which then match, as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_fnv1a: Option<String>,
    /// On the CPU, libtorch's intra-op threads (`OMP_NUM_THREADS`, else the cores): reductions
    /// split by thread, so the masks' last bits depend on it. Absent on a GPU, and in records
    /// of earlier versions (which then match any count, as they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<usize>,
    /// The device as `tch` names it (`Cpu`, `Cuda(0)`).
    pub device: String,
    pub dtype: Precision,
    pub fill_hole_area: i64,
    pub frame_interval: u64,
    /// Objects are HD-EPIC associations.
    pub hd_epic: bool,
    pub image_size: i64,
    pub max_cond_frames: i64,
    /// `--memory-policy`, every key resolved (absent for `sam2`, as in earlier versions).
    #[serde(default, skip_serializing_if = "MemoryPolicy::is_sam2")]
    pub memory_policy: MemoryPolicy,
    pub memory_temporal_stride: i64,
    /// The hash of the prompt input (see [`super::input::Input::prompts_hash`]).
    pub prompts: String,
    /// `--span prompts` (absent with the default `video`, as in earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<SpanParams>,
    /// `--static-shapes` (absent when off, as in earlier versions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub static_shapes: bool,
    pub track_stride: u64,
    /// The video (canonical path), its frame count, size and id.
    pub video: PathBuf,
    /// [`crate::hash::sample_fingerprint`] of the video: another video of the same size and
    /// length at the same path is another input. Absent in records of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_fingerprint: Option<String>,
    pub video_frames: u64,
    pub video_id: String,
    pub video_scale_factor: f64,
    pub video_size: [u32; 2],
    /// `--window K` (`null` for a whole-video run).
    pub window: Option<WindowParams>,
}

/// `--span prompts` and its margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanParams {
    pub margin_frames: u64,
    pub margin_s: f64,
    pub mode: SpanMode,
}

/// The frames of a window-parallel run (see [`super::window::WindowRange`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    pub end_frame: u64,
    pub first_frame: u64,
    pub index: u64,
    pub warm_from: u64,
}

impl RunParams {
    /// The parameters of a run of `args` over the prepared inputs on `device`, with
    /// `batch_objects` objects per batch (`--batch-objects`, or what `auto` chose).
    pub fn new(
        args: &AnnotateJobArgs,
        job: &Prepared,
        device: tch::Device,
        batch_objects: usize,
    ) -> Result<Self, JobError> {
        let ta = &args.track;
        let ckpt = &args.input.checkpoint;
        let ckpt_meta = std::fs::metadata(ckpt)
            .map_err(|e| JobError::Model(format!("model checkpoint {}: {e}", ckpt.display())))?;
        let (track_stride, frame_interval) = ta.strides();
        Ok(RunParams {
            batch_objects,
            batch_objects_auto: ta.batch_objects == BatchObjects::Auto,
            checkpoint: std::fs::canonicalize(ckpt).unwrap_or(ckpt.clone()),
            checkpoint_bytes: ckpt_meta.len(),
            checkpoint_fnv1a: Some(
                crate::hash::fnv1a_file(ckpt)
                    .map_err(|e| {
                        JobError::Model(format!("model checkpoint {}: {e}", ckpt.display()))
                    })?
                    .hex(),
            ),
            cpu_threads: (device == tch::Device::Cpu)
                .then(|| usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1)),
            device: format!("{device:?}"),
            dtype: ta.dtype,
            fill_hole_area: ta.fill_hole_area(),
            frame_interval,
            hd_epic: job.hd_epic,
            image_size: ta.image_size(),
            max_cond_frames: ta.max_cond_frames(),
            memory_policy: ta.memory_policy(),
            memory_temporal_stride: ta.memory_temporal_stride,
            prompts: job.prompts_hash.clone(),
            span: (ta.span == SpanMode::Prompts).then_some(SpanParams {
                margin_frames: job.margin_frames,
                margin_s: ta.span_margin,
                mode: SpanMode::Prompts,
            }),
            static_shapes: ta.static_shapes,
            track_stride,
            video: std::fs::canonicalize(&job.video_path).unwrap_or(job.video_path.clone()),
            video_fingerprint: Some(
                crate::hash::sample_fingerprint(&job.video_path)
                    .map_err(|e| JobError::Input(format!("{}: {e}", job.video_path.display())))?
                    .hex(),
            ),
            video_frames: job.geo.num_frames,
            video_id: job.video_id.clone(),
            video_scale_factor: ta.video_scale_factor,
            video_size: [job.geo.width, job.geo.height],
            window: job.window.map(|w| WindowParams {
                end_frame: w.end,
                first_frame: w.own_from,
                index: w.index,
                warm_from: w.warm_from,
            }),
        })
    }

    /// Over a record of an earlier version, which did not record the CPU threads or the
    /// checkpoint's and video's content: drops ours of those it lacks, so that it compares as it
    /// did then.
    pub fn adopt_unrecorded(&mut self, recorded: &RunParams) {
        if recorded.cpu_threads.is_none() {
            self.cpu_threads = None;
        }
        if recorded.checkpoint_fnv1a.is_none() {
            self.checkpoint_fnv1a = None;
        }
        if recorded.video_fingerprint.is_none() {
            self.video_fingerprint = None;
        }
    }

    /// A hint for a difference in CPU threads (empty if there is none): how to resume.
    pub fn threads_hint(&self, recorded: &RunParams) -> String {
        match (recorded.cpu_threads, self.cpu_threads) {
            (Some(theirs), Some(ours)) if theirs != ours => format!(
                "; it ran with {theirs} CPU threads, this run has {ours}: set OMP_NUM_THREADS={theirs}"
            ),
            _ => String::new(),
        }
    }

    /// `--batch-objects auto` again, over a checkpoint or finished result of an `auto` run with
    /// otherwise equal parameters: takes its number of objects per batch (the masks depend on
    /// it, and the free memory `auto` chose from may have changed since). Returns whether it
    /// did; any other difference leaves `self` as it is.
    pub fn adopt_auto_batch(&mut self, recorded: &RunParams) -> bool {
        if !(self.batch_objects_auto && recorded.batch_objects_auto)
            || self.batch_objects == recorded.batch_objects
        {
            return false;
        }
        let ours = RunParams {
            batch_objects: recorded.batch_objects,
            ..self.clone()
        };
        if ours != *recorded {
            return false;
        }
        *self = ours;
        true
    }

    /// The parameters recorded in a checkpoint or `run.json`: `None` when they are not
    /// parameters of this version (other keys, other types).
    pub fn from_recorded(v: &serde_json::Value) -> Option<Self> {
        RunParams::deserialize(v).ok()
    }

    /// The fields that differ from `other`, as `name: theirs -> ours` (JSON values).
    pub fn diff(&self, other: &RunParams) -> Vec<String> {
        self.diff_recorded(&serde_json::to_value(other).unwrap_or_default())
    }

    /// [`Self::diff`] against recorded parameters that need not be of this version: every
    /// top-level key whose value differs, as `name: recorded -> ours` (`-`: absent).
    pub fn diff_recorded(&self, recorded: &serde_json::Value) -> Vec<String> {
        let ours = serde_json::to_value(self).unwrap_or_default();
        let (Some(a), Some(b)) = (recorded.as_object(), ours.as_object()) else {
            return vec!["(all)".into()];
        };
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |v: Option<&serde_json::Value>| v.map_or("-".into(), |v| v.to_string());
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k))))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parameters as a run of the job clip would record them.
    pub(crate) fn sample() -> RunParams {
        RunParams {
            batch_objects: 16,
            batch_objects_auto: false,
            checkpoint: "/m/model.pt".into(),
            checkpoint_bytes: 156000151,
            checkpoint_fnv1a: None,
            cpu_threads: None,
            device: "Cpu".into(),
            dtype: Precision::Fp32,
            fill_hole_area: 8,
            frame_interval: 1,
            hd_epic: false,
            image_size: 256,
            max_cond_frames: -1,
            memory_policy: MemoryPolicy::Sam2,
            memory_temporal_stride: 1,
            prompts: "d174747556414119".into(),
            span: None,
            static_shapes: false,
            track_stride: 1,
            video: "/tmp/jobc/clip.mp4".into(),
            video_fingerprint: None,
            video_frames: 30,
            video_id: "clip".into(),
            video_scale_factor: 1.0,
            video_size: [128, 96],
            window: None,
        }
    }

    /// The exact text an earlier version wrote (its `json!` object, compact) for these
    /// parameters.
    const EARLIER: &str = r#"{"batch_objects":16,"checkpoint":"/m/model.pt","checkpoint_bytes":156000151,"device":"Cpu","dtype":"fp32","fill_hole_area":8,"frame_interval":1,"hd_epic":false,"image_size":256,"max_cond_frames":-1,"memory_temporal_stride":1,"prompts":"d174747556414119","track_stride":1,"video":"/tmp/jobc/clip.mp4","video_frames":30,"video_id":"clip","video_scale_factor":1.0,"video_size":[128,96],"window":null}"#;

    #[test]
    fn same_json_as_earlier_versions() {
        let p = sample();
        assert_eq!(serde_json::to_string(&p).unwrap(), EARLIER);
        let back: serde_json::Value = serde_json::from_str(EARLIER).unwrap();
        assert_eq!(RunParams::from_recorded(&back), Some(p.clone()));
        // With a span and a window: nested keys in alphabetical order too.
        let mut q = p.clone();
        q.span = Some(SpanParams {
            margin_frames: 3,
            margin_s: 0.3,
            mode: SpanMode::Prompts,
        });
        q.window = Some(WindowParams {
            end_frame: 20,
            first_frame: 10,
            index: 1,
            warm_from: 5,
        });
        let text = serde_json::to_string(&q).unwrap();
        assert!(
            text.contains(r#""span":{"margin_frames":3,"margin_s":0.3,"mode":"prompts"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""window":{"end_frame":20,"first_frame":10,"index":1,"warm_from":5}"#),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(RunParams::from_recorded(&v), Some(q));
    }

    #[test]
    fn memory_policy_recorded_resolved_and_absent_for_sam2() {
        let p = sample();
        let mut q = p.clone();
        q.memory_policy = "sam3".parse().unwrap();
        let text = serde_json::to_string(&q).unwrap();
        assert!(
            text.contains(r#""max_cond_frames":-1,"memory_policy":"sam3:mf_threshold=0.01,use_memory_selection=true","memory_temporal_stride""#),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(RunParams::from_recorded(&v), Some(q.clone()));
        assert_eq!(
            q.diff(&p),
            [r#"memory_policy: - -> "sam3:mf_threshold=0.01,use_memory_selection=true""#]
        );
    }

    #[test]
    fn cpu_threads_recorded_compared_and_unknown_in_earlier_records() {
        let old = sample();
        let mut ours = sample();
        ours.cpu_threads = Some(4);
        let text = serde_json::to_string(&ours).unwrap();
        assert!(text.contains(r#""checkpoint_bytes":156000151,"cpu_threads":4,"device""#));
        // An earlier record (no count) matches any count, as it did.
        let mut a = ours.clone();
        a.adopt_unrecorded(&old);
        assert_eq!(a, old);
        // A recorded count must match; the hint says how.
        let mut theirs = sample();
        theirs.cpu_threads = Some(2);
        let mut b = ours.clone();
        b.adopt_unrecorded(&theirs);
        assert_ne!(b, theirs);
        assert_eq!(b.diff(&theirs), ["cpu_threads: 2 -> 4"]);
        assert!(b.threads_hint(&theirs).contains("set OMP_NUM_THREADS=2"));
        assert!(ours.threads_hint(&ours).is_empty());
    }

    #[test]
    fn diff_names_the_fields_and_unknown_keys_are_refused() {
        let p = sample();
        let mut q = p.clone();
        q.max_cond_frames = 1;
        q.track_stride = 2;
        assert_eq!(
            q.diff(&p),
            ["max_cond_frames: -1 -> 1", "track_stride: 1 -> 2"]
        );
        assert!(p.diff(&p).is_empty());
        let mut v = serde_json::to_value(&p).unwrap();
        v["future_option"] = serde_json::json!(true);
        assert_eq!(RunParams::from_recorded(&v), None);
        assert_eq!(p.diff_recorded(&v), ["future_option: true -> -"]);
    }

    #[test]
    fn auto_batch_is_recorded_and_adopted_only_between_auto_runs() {
        let mut auto = sample();
        auto.batch_objects = 12;
        auto.batch_objects_auto = true;
        let text = serde_json::to_string(&auto).unwrap();
        assert!(
            text.starts_with(r#"{"batch_objects":12,"batch_objects_auto":true,"checkpoint""#),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(RunParams::from_recorded(&v), Some(auto.clone()));
        // A later `auto` run that would choose 40 takes the recorded 12 ...
        let mut now = RunParams {
            batch_objects: 40,
            ..auto.clone()
        };
        assert_eq!(now.diff(&auto), ["batch_objects: 12 -> 40"]);
        assert!(now.adopt_auto_batch(&auto));
        assert_eq!(now, auto);
        // ... but not when anything else differs (the difference is reported as it is) ...
        let mut other = RunParams {
            batch_objects: 40,
            track_stride: 2,
            ..auto.clone()
        };
        assert!(!other.adopt_auto_batch(&auto));
        assert_eq!(other.batch_objects, 40);
        // ... nor between a number given and `auto`, either way.
        let mut fixed = RunParams {
            batch_objects: 40,
            batch_objects_auto: false,
            ..auto.clone()
        };
        assert!(!fixed.adopt_auto_batch(&auto));
        let mut now = RunParams {
            batch_objects: 40,
            ..auto.clone()
        };
        let given = RunParams {
            batch_objects_auto: false,
            ..auto.clone()
        };
        assert!(!now.adopt_auto_batch(&given));
        assert_eq!(
            given.diff(&now),
            ["batch_objects: 40 -> 12", "batch_objects_auto: true -> -"]
        );
    }
}
