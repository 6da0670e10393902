//! The options of `densam annotate` as grouped config structs (input, tracking, job control),
//! including the flag names of the seed script densam replaces ("seed" in the glossary,
//! docs/ARCHITECTURE.md §5: `--video_id`, `--video_path`, `--window_duration`,
//! `--window_overlap`, `--frame_interval`, `--video_scale_factor`) as aliases with the seed's
//! meaning, and the rules on their values ([`rules`]): checked by clap while parsing and by
//! [`AnnotateJobArgs::validate`] for arguments built in code, both before anything is created.

use std::path::PathBuf;

use super::JobError;
use crate::model::config::Family;
use crate::model::device::DeviceChoice;
use crate::model::layers::Precision;
pub use crate::prompts::hd_epic::HdEpicPromptKind;
use crate::tracker::policy::MemoryPolicy;

/// Everything `densam annotate` takes.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct AnnotateJobArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

/// What is annotated, with what, and where the results go.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct InputArgs {
    /// Video file, frame directory or image (default with HD-EPIC: VIDEOS_ROOT/<P0x>/<VIDEO_ID>.mp4).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Folder holding the HD-EPIC videos as <P0x>/<video id>.mp4 (seed: `--video_path`).
    #[arg(long, alias = "video_path")]
    pub videos_root: Option<PathBuf>,
    /// Video id: names the output (`dense_annotations_<id>.jsonl`), is written on every line and
    /// selects the video's entries in the HD-EPIC files (default: the video's file stem).
    #[arg(long, alias = "video_id")]
    pub video_id: Option<String>,
    /// Generic prompts file (JSON `{"objects": [...]}` or JSON Lines, one object a line).
    #[arg(long, conflicts_with_all = ["hd_epic_assoc", "hd_epic_masks"])]
    pub prompts: Option<PathBuf>,
    /// HD-EPIC `assoc_info.json` (with --hd-epic-masks and --video-id).
    #[arg(long, requires_all = ["hd_epic_masks", "video_id"])]
    pub hd_epic_assoc: Option<PathBuf>,
    /// HD-EPIC `mask_info.json` (or the older `frame_info.json`).
    #[arg(long, requires = "hd_epic_assoc")]
    pub hd_epic_masks: Option<PathBuf>,
    /// Folder of the released HD-EPIC mask PNGs (`<mask_id>.png`, binary, video resolution),
    /// for --hd-epic-prompt mask or both.
    #[arg(long, value_name = "DIR", requires = "hd_epic_assoc")]
    pub hd_epic_mask_dir: Option<PathBuf>,
    /// What each HD-EPIC mask id prompts on its frame: its `box` (mask_info's bbox), its `mask`
    /// (DIR/<mask_id>.png) or `both` (the mask, refined by the box). Boxes and masks come from
    /// different teams and can disagree. A missing, undecodable, wrong-size or empty PNG is a
    /// warning and that prompt is skipped (an error with --strict).
    #[arg(long, value_enum, default_value_t = HdEpicPromptKind::Box)]
    pub hd_epic_prompt: HdEpicPromptKind,
    /// SAM 2 / 2.1 checkpoint (official .pt or safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder: holds `dense_annotations_<video id>.jsonl`, `run.json` and, while the job
    /// runs, its checkpoint.
    #[arg(long)]
    pub out: PathBuf,
}

/// The tracking parameters (all of them change the results, so a checkpoint records them).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct TrackArgs {
    /// Model input size. SAM 2 / 2.1: a multiple of 64 in 256..=1024 (default 1024); SAM 3: a
    /// multiple of 14 in 336..=1008 (default 1008).
    #[arg(long, value_parser = checked(rules::image_size))]
    pub image_size: Option<i64>,
    /// Fill background holes of at most this many low-res pixels; 0 = off. Default: the
    /// model's own (SAM 2 / 2.1: 8, SAM 3: 0).
    #[arg(long)]
    pub fill_hole_area: Option<i64>,
    /// Process every N-th frame (plus every written and prompted frame).
    #[arg(long, default_value_t = 1, value_parser = checked(rules::at_least_one))]
    pub track_stride: u64,
    /// Write every N-th frame.
    #[arg(long, default_value_t = 1, value_parser = checked(rules::at_least_one))]
    pub frame_interval: u64,
    /// The seed's `--frame_interval N`: process and write every N-th frame (sets both
    /// --track-stride and --frame-interval).
    #[arg(long = "frame_interval", value_name = "N", value_parser = checked(rules::at_least_one))]
    pub seed_frame_interval: Option<u64>,
    /// Downscale frames by F before SAM 2's own resize to the model input (the seed's
    /// `--video_scale_factor`); prompts and outputs stay in original pixels.
    #[arg(long, alias = "video_scale_factor", default_value_t = 1.0, allow_negative_numbers = true,
          value_parser = checked(rules::scale_factor))]
    pub video_scale_factor: f64,
    /// Attend to at most N conditioning frames, the temporally closest (-1 = all). Default: the
    /// model's own (SAM 2 / 2.1: -1, SAM 3: 4).
    #[arg(long, allow_negative_numbers = true, value_parser = checked(rules::max_cond_frames))]
    pub max_cond_frames: Option<i64>,
    /// Which processed frames each object is tracked on. `video`: all of them, as SAM 2 does.
    /// `prompts`: only from its first prompt minus --span-margin to its last prompt plus
    /// --span-margin; frames where no object is tracked are not decoded or run through the
    /// model but still get their (empty) output line. With HD-EPIC's ~45 briefly moved objects
    /// per video this is the difference between hours and minutes per video.
    #[arg(long, value_enum, default_value_t = SpanMode::Video)]
    pub span: SpanMode,
    /// Seconds tracked before an object's first and after its last prompt with `--span
    /// prompts`. The default 2 covers the reach before and the release after an HD-EPIC
    /// movement (median 4 s between its two boxes) while keeping each object's tracking to
    /// about twice its annotated length; the further from a prompt, the less reliable the masks.
    #[arg(long, value_name = "S", default_value_t = 2.0, allow_negative_numbers = true,
          value_parser = checked(rules::non_negative))]
    pub span_margin: f64,
    /// Take the recent memories t-2 ... t-6 from every N-th processed frame (the official
    /// `memory_temporal_stride_for_eval`; 1 in every official config). t-1 is always read.
    #[arg(long, default_value_t = 1, value_parser = checked(rules::stride))]
    pub memory_temporal_stride: i64,
    /// Which stored frames each tracked frame reads: `sam2` (the official SAM 2.1 rule) or
    /// `sam3[:mf_threshold=T]` (SAM 3's frame filter: only frames whose memory score
    /// `(osl > 0 ? 2σ(osl) − 1 : 0) · IoU` is above T, default 0.01, are read; needs
    /// --memory-temporal-stride 1). See docs/sam2-inference.md §7.14. Default: the model's
    /// own (SAM 2 / 2.1: sam2, SAM 3: sam3).
    #[arg(long, value_name = "NAME[:key=value,...]", value_parser = checked(rules::memory_policy))]
    pub memory_policy: Option<MemoryPolicy>,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Compute precision: fp32 (bit-exact with the official fp32 model; no TF32 on CUDA) or
    /// bf16 (the regions the official code runs in bf16 under `torch.autocast("cuda",
    /// torch.bfloat16)`; masks within ~1e-2 of fp32).
    #[arg(long, default_value = "fp32")]
    pub dtype: Precision,
    /// Objects tracked per batch (1 = one by one, as the official predictor), or `auto`: on
    /// CUDA as many as the GPU's free memory holds (estimated per object from the model's input
    /// size, the memories read and the video size; at most all objects), on the CPU 16. The
    /// batching moves masks by about fp32 rounding, so the number chosen is recorded in the
    /// checkpoint and `run.json` (`params.batch_objects`) and a resume or re-run with `auto`
    /// takes the recorded one, whatever memory is free then.
    #[arg(long, value_name = "B|auto", default_value = "16",
          value_parser = checked(rules::batch_objects))]
    pub batch_objects: BatchObjects,
    /// Pad each object's memory to fixed capacities (masked zero slots) so that every
    /// steady-state frame runs on the same tensor shapes, the prerequisite for CUDA graphs.
    /// Off by default until measured on a GPU; on the CPU the masks are the same.
    #[arg(long)]
    pub static_shapes: bool,
    /// Processed frames decoded per chunk of the reverse pass (memory only, not results).
    #[arg(long, default_value_t = 16, value_parser = checked(rules::count))]
    pub reverse_chunk: usize,
    /// Treat every prompt warning as an error.
    #[arg(long)]
    pub strict: bool,
}

/// `--span`: which processed frames each object is tracked on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SpanMode {
    /// Every processed frame (SAM 2's behaviour).
    Video,
    /// From the object's first prompt minus the margin to its last prompt plus the margin.
    Prompts,
}

/// `--batch-objects`: a number of objects per batch, or `auto` (see [`super::batch`]).
/// Written in `run.json`'s options as the number or the string `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchObjects {
    /// This many objects per batch.
    Fixed(usize),
    /// Chosen at the start of the run from the device ([`super::batch::choose`]).
    Auto,
}

impl std::str::FromStr for BatchObjects {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(BatchObjects::Auto);
        }
        s.parse::<usize>()
            .map(BatchObjects::Fixed)
            .map_err(|e| format!("{e} (expected a number of objects or `auto`)"))
    }
}

impl std::fmt::Display for BatchObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchObjects::Fixed(n) => write!(f, "{n}"),
            BatchObjects::Auto => f.write_str("auto"),
        }
    }
}

impl serde::Serialize for BatchObjects {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchObjects::Fixed(n) => s.serialize_u64(*n as u64),
            BatchObjects::Auto => s.serialize_str("auto"),
        }
    }
}

impl TrackArgs {
    /// Fills the options left to the model with `family`'s values and checks the image size
    /// against the family's rule (a usage error naming the option and the rule).
    pub fn resolve_for(&mut self, family: Family) -> Result<(), JobError> {
        let s = *self
            .image_size
            .get_or_insert_with(|| family.default_image_size());
        family
            .check_image_size(s)
            .map_err(|e| JobError::Usage(format!("--image-size: {e}")))?;
        self.fill_hole_area
            .get_or_insert_with(|| family.default_fill_hole_area());
        self.max_cond_frames
            .get_or_insert_with(|| family.default_max_cond_frames());
        self.memory_policy.get_or_insert_with(|| match family {
            Family::Sam2 => MemoryPolicy::Sam2,
            Family::Sam3 => MemoryPolicy::sam3(),
        });
        Ok(())
    }

    /// The model input size ([`Self::resolve_for`] sets it; SAM 2's default before).
    pub fn image_size(&self) -> i64 {
        self.image_size
            .unwrap_or_else(|| Family::Sam2.default_image_size())
    }

    /// `--fill-hole-area` as resolved (SAM 2's default before [`Self::resolve_for`]).
    pub fn fill_hole_area(&self) -> i64 {
        self.fill_hole_area
            .unwrap_or_else(|| Family::Sam2.default_fill_hole_area())
    }

    /// `--max-cond-frames` as resolved (SAM 2's default before [`Self::resolve_for`]).
    pub fn max_cond_frames(&self) -> i64 {
        self.max_cond_frames
            .unwrap_or_else(|| Family::Sam2.default_max_cond_frames())
    }

    /// `--memory-policy` as resolved (`sam2` before [`Self::resolve_for`]).
    pub fn memory_policy(&self) -> MemoryPolicy {
        self.memory_policy.unwrap_or(MemoryPolicy::Sam2)
    }

    /// (track stride, frame interval) after the seed's `--frame_interval`.
    pub fn strides(&self) -> (u64, u64) {
        match self.seed_frame_interval {
            Some(n) => (n, n),
            None => (self.track_stride, self.frame_interval),
        }
    }
}

/// How the job runs: windows, checkpoints, restarts, logging.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct JobArgs {
    /// Window length in seconds: the unit of checkpointing and of `run.json`'s timings. In the
    /// default sequential mode the memory bank crosses window borders (results are identical to
    /// a run without windows).
    #[arg(long, alias = "window_duration", default_value_t = 300.0, allow_negative_numbers = true,
          value_parser = checked(rules::positive))]
    pub window_duration: f64,
    /// Overlap in seconds before a window (recorded; used by window-parallel runs).
    #[arg(long, alias = "window_overlap", default_value_t = 30.0, allow_negative_numbers = true,
          value_parser = checked(rules::non_negative))]
    pub window_overlap: f64,
    /// Run window K alone (window-parallel, e.g. one cluster task per window): its bank warms up
    /// over the overlap before the window (objects prompted there or in the window), and it
    /// writes only the frames it owns; `densam merge` joins the parts.
    #[arg(long, value_name = "K")]
    pub window: Option<u64>,
    /// Write a checkpoint at least every S seconds of wall time (and at every window end); 0:
    /// after every frame.
    #[arg(long, value_name = "S", default_value_t = 60.0, allow_negative_numbers = true,
          value_parser = checked(rules::interval))]
    pub checkpoint_every: f64,
    /// Discard an existing checkpoint or finished result made with other parameters.
    #[arg(long)]
    pub restart: bool,
    /// Keep the checkpoint after a complete run.
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// Only warnings and errors on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Debug logging (wins over --quiet).
    #[arg(long)]
    pub verbose: bool,
    /// Time each stage (image encoder, memory attention, mask decoder, memory encoder, output)
    /// into run.json's `this_run.stage_seconds` and the final log line. On a GPU this
    /// synchronises the device at every stage boundary, so the run is somewhat slower.
    #[arg(long)]
    pub profile: bool,
    /// Append one JSON line per tracked object-frame to FILE: `{"frame", "object", "pass",
    /// "score" (the memory policy's, `null` under sam2), "iou", "mask" (which of the three
    /// multimask outputs was kept, 0-2), "memories", "pointers"}` with
    /// the frames read in attention order (conditioning frames included). For checking what a
    /// memory policy reads; not a result (not recorded in run.json).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// The rules on option values, one function per kind of value: what clap checks while parsing
/// ([`checked`]) and [`AnnotateJobArgs::validate`] checks for arguments built in code. Each says
/// what a good value is.
pub mod rules {
    /// A model input size: a multiple of 64 in 256..=1024.
    pub fn image_size(v: &i64) -> Result<(), String> {
        crate::model::config::check_image_size_any(*v).map_err(|e| e.to_string())
    }

    /// A stride or interval in frames: at least 1.
    pub fn at_least_one(v: &u64) -> Result<(), String> {
        at_least(*v, 1)
    }

    /// A memory stride in processed frames: at least 1.
    pub fn stride(v: &i64) -> Result<(), String> {
        at_least(*v, 1)
    }

    /// A number of frames per chunk: at least 1.
    pub fn count(v: &usize) -> Result<(), String> {
        at_least(*v, 1)
    }

    /// `--batch-objects`: at least 1 object, or `auto`.
    pub fn batch_objects(v: &super::BatchObjects) -> Result<(), String> {
        match v {
            super::BatchObjects::Fixed(n) => {
                at_least(*n, 1).map_err(|e| format!("{e} (or `auto`)"))
            }
            super::BatchObjects::Auto => Ok(()),
        }
    }

    /// `--memory-policy`: any policy that parsed (the keys are checked by the parser).
    pub fn memory_policy(_: &crate::tracker::policy::MemoryPolicy) -> Result<(), String> {
        Ok(())
    }

    /// `--max-cond-frames`: -1 (all) or at least 1.
    pub fn max_cond_frames(v: &i64) -> Result<(), String> {
        if *v == -1 || *v >= 1 {
            Ok(())
        } else {
            Err("must be -1 (all) or at least 1".into())
        }
    }

    /// A downscale factor: a finite number of at least 1.
    pub fn scale_factor(v: &f64) -> Result<(), String> {
        if v.is_finite() && *v >= 1.0 {
            Ok(())
        } else {
            Err("must be a finite factor >= 1".into())
        }
    }

    /// A duration in seconds: finite and above 0.
    pub fn positive(v: &f64) -> Result<(), String> {
        if v.is_finite() && *v > 0.0 {
            Ok(())
        } else {
            Err("must be a finite number of seconds > 0".into())
        }
    }

    /// A margin or overlap in seconds: finite and at least 0.
    pub fn non_negative(v: &f64) -> Result<(), String> {
        if v.is_finite() && *v >= 0.0 {
            Ok(())
        } else {
            Err("must be a finite number of seconds >= 0".into())
        }
    }

    /// A time between checkpoints in seconds: at least 0 (`inf`: only at window ends and stops).
    pub fn interval(v: &f64) -> Result<(), String> {
        if *v >= 0.0 {
            Ok(())
        } else {
            Err("must be a number of seconds >= 0 (inf: at window ends and stops only)".into())
        }
    }

    fn at_least<T: PartialOrd + std::fmt::Display>(v: T, min: T) -> Result<(), String> {
        if v >= min {
            Ok(())
        } else {
            Err(format!("must be at least {min}"))
        }
    }
}

/// A clap value parser: the value as `T`, then `rule`.
fn checked<T>(
    rule: fn(&T) -> Result<(), String>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + 'static,
    T::Err: std::fmt::Display,
{
    move |s: &str| {
        let v: T = s.trim().parse().map_err(|e| format!("`{s}`: {e}"))?;
        rule(&v)?;
        Ok(v)
    }
}

impl AnnotateJobArgs {
    /// Checks every option value against [`rules`] (what clap already did for a command line):
    /// a usage error (exit 2) naming the option.
    pub fn validate(&self) -> Result<(), JobError> {
        let (t, j) = (&self.track, &self.job);
        let checks = [
            (
                "--image-size",
                t.image_size.as_ref().map_or(Ok(()), rules::image_size),
            ),
            ("--track-stride", rules::at_least_one(&t.track_stride)),
            ("--frame-interval", rules::at_least_one(&t.frame_interval)),
            (
                "--frame_interval",
                t.seed_frame_interval
                    .as_ref()
                    .map_or(Ok(()), rules::at_least_one),
            ),
            (
                "--video-scale-factor",
                rules::scale_factor(&t.video_scale_factor),
            ),
            (
                "--max-cond-frames",
                t.max_cond_frames
                    .as_ref()
                    .map_or(Ok(()), rules::max_cond_frames),
            ),
            ("--span-margin", rules::non_negative(&t.span_margin)),
            (
                "--memory-temporal-stride",
                rules::stride(&t.memory_temporal_stride),
            ),
            ("--batch-objects", rules::batch_objects(&t.batch_objects)),
            (
                "--memory-policy",
                if t.memory_policy().ranked().is_none() || t.memory_temporal_stride == 1 {
                    Ok(())
                } else {
                    Err(
                        "SAM 3's memory selection needs --memory-temporal-stride 1 (or \
                         use_memory_selection=false)"
                            .into(),
                    )
                },
            ),
            ("--reverse-chunk", rules::count(&t.reverse_chunk)),
            ("--window-duration", rules::positive(&j.window_duration)),
            ("--window-overlap", rules::non_negative(&j.window_overlap)),
            ("--checkpoint-every", rules::interval(&j.checkpoint_every)),
        ];
        for (name, res) in checks {
            if let Err(e) = res {
                return Err(JobError::Usage(format!("{name}: {e}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: AnnotateJobArgs,
    }

    fn parse(extra: &[&str]) -> Result<AnnotateJobArgs, clap::Error> {
        let mut v = vec!["densam", "--checkpoint", "m.pt", "--out", "o"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).map(|c| c.args)
    }

    #[test]
    fn clap_and_validate_apply_the_same_rules() {
        let ok = parse(&["--max-cond-frames", "-1", "--checkpoint-every", "inf"]).unwrap();
        ok.validate().unwrap();
        for bad in [
            ["--batch-objects", "0"],
            ["--checkpoint-every", "NaN"],
            ["--image-size", "4096"],
            ["--span-margin", "-0.5"],
        ] {
            let e = parse(&bad).expect_err("refused by clap");
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
        let mut a = parse(&[]).unwrap();
        a.track.batch_objects = BatchObjects::Fixed(0);
        a.job.checkpoint_every = f64::NAN;
        match a.validate() {
            Err(JobError::Usage(m)) => {
                assert_eq!(m, "--batch-objects: must be at least 1 (or `auto`)")
            }
            other => panic!("{other:?}"),
        }
        a.track.batch_objects = BatchObjects::Fixed(1);
        assert!(
            matches!(a.validate(), Err(JobError::Usage(m)) if m.contains("--checkpoint-every"))
        );
    }

    #[test]
    fn batch_objects_is_a_number_or_auto() {
        assert_eq!(
            parse(&[]).unwrap().track.batch_objects,
            BatchObjects::Fixed(16)
        );
        for (arg, want) in [
            ("1", BatchObjects::Fixed(1)),
            ("48", BatchObjects::Fixed(48)),
            ("auto", BatchObjects::Auto),
            ("AUTO", BatchObjects::Auto),
        ] {
            let a = parse(&["--batch-objects", arg]).unwrap();
            assert_eq!(a.track.batch_objects, want, "{arg}");
            a.validate().unwrap();
        }
        for bad in ["0", "many", "", "1.5"] {
            let e = parse(&["--batch-objects", bad]).expect_err(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert!(parse(&["--batch-objects", "-1"]).is_err());
        // run.json's options: the number as before, or the string.
        let json = |b| serde_json::to_value(b).unwrap();
        assert_eq!(json(BatchObjects::Fixed(16)), serde_json::json!(16));
        assert_eq!(json(BatchObjects::Auto), serde_json::json!("auto"));
        assert_eq!(BatchObjects::Auto.to_string(), "auto");
    }
}
