//! The arguments and entry point of `densam eval` (main.rs only forwards to these). Every
//! error is about an input (the result file, the ground truth, the HD-EPIC files): exit 3, as
//! for `densam annotate`.

use crate::eval::{EvalError, EvalOptions, GtFormat, evaluate};
use crate::exit::{EXIT_INPUT, EXIT_OK};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GtFormatArg {
    /// `<frame_number>.png` object-index PNGs.
    Davis,
    /// `<mask_id>.png` masks with --mask-info and --assoc-info.
    HdEpic,
}

/// `densam eval RESULT.jsonl --gt DIR --gt-format davis|hd-epic [--json]`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A densam result.
    pub result: PathBuf,
    /// Ground-truth folder.
    #[arg(long)]
    pub gt: PathBuf,
    #[arg(long, value_enum, default_value = "davis")]
    pub gt_format: GtFormatArg,
    /// HD-EPIC mask_info.json (frame number and box of every mask id).
    #[arg(long)]
    pub mask_info: Option<PathBuf>,
    /// HD-EPIC assoc_info.json (which masks belong to which object).
    #[arg(long)]
    pub assoc_info: Option<PathBuf>,
    /// HD-EPIC video id (default: from `dense_annotations_<video_id>.jsonl`).
    #[arg(long)]
    pub video_id: Option<String>,
    /// HD-EPIC: JSON list of the held-out mask ids to score (the others were prompts).
    #[arg(long)]
    pub hold_out: Option<PathBuf>,
    /// DAVIS: JSON map object index -> result id (e.g. the objects.json of `export --format
    /// davis`); default: the index is the id.
    #[arg(long)]
    pub id_map: Option<PathBuf>,
    /// DAVIS: also score the first and last frames.
    #[arg(long)]
    pub all_frames: bool,
    /// Boundary tolerance: fraction of the image diagonal, or pixels when >= 1.
    #[arg(long, default_value_t = 0.008, value_parser = bound_th)]
    pub bound_th: f64,
    /// Print JSON (with per-frame values) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The largest `--bound-th` in pixels.
pub const MAX_BOUND_PIXELS: f64 = 1000.0;

/// `--bound-th`: finite, > 0 and at most [`MAX_BOUND_PIXELS`] (clap's usage error, exit 2).
fn bound_th(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= MAX_BOUND_PIXELS {
        Ok(v)
    } else {
        Err(format!(
            "must be > 0: a fraction of the image diagonal below 1, or pixels from 1 up to \
             {MAX_BOUND_PIXELS}"
        ))
    }
}

/// Runs `densam eval` and returns its exit code (an error printed once on stderr).
pub fn eval_main(a: &EvalArgs) -> i32 {
    match run_eval(a) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("densam eval: error: {e}");
            EXIT_INPUT
        }
    }
}

pub fn run_eval(a: &EvalArgs) -> Result<(), EvalError> {
    let format = match a.gt_format {
        GtFormatArg::Davis => GtFormat::Davis,
        GtFormatArg::HdEpic => GtFormat::HdEpic,
    };
    let mut o = EvalOptions::new(&a.gt, format);
    o.mask_info = a.mask_info.clone();
    o.assoc_info = a.assoc_info.clone();
    o.video_id = a.video_id.clone();
    o.hold_out = a.hold_out.clone();
    o.id_map = a.id_map.clone();
    o.all_frames = a.all_frames;
    o.bound_th = a.bound_th;
    let rep = evaluate(&a.result, &o)?;
    if a.json {
        let s = serde_json::to_string_pretty(&rep)
            .map_err(|e| EvalError::Input(format!("cannot serialise the report: {e}")))?;
        println!("{s}");
    } else {
        print!("{}", rep.table());
    }
    Ok(())
}
