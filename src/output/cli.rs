//! The arguments and entry points of `densam export` and `densam render` (main.rs only
//! forwards to these), with their exit codes: those of `densam annotate` and `merge`, 3 for a
//! missing or malformed input (the result file, the video) and 5 when the output cannot be
//! written.

use crate::exit::{EXIT_INPUT, EXIT_OK, EXIT_OUTPUT};
use crate::output::export::{CocoCategories, export_boxes_csv, export_coco, export_davis};
use crate::output::jsonl::OutputError;
use crate::output::render::{RenderOptions, RenderTarget, render};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// The exit code of an export or render error: bad input when it is about one of `inputs` (or
/// a line of the result), else an output failure.
fn exit_code(e: &OutputError, inputs: &[&Path]) -> i32 {
    match e {
        OutputError::Parse { .. } | OutputError::Invalid { .. } => EXIT_INPUT,
        e if inputs.contains(&e.path()) => EXIT_INPUT,
        _ => EXIT_OUTPUT,
    }
}

/// Prints `densam <command>: error: <e>` once and returns the exit code.
fn fail(command: &str, e: &OutputError, inputs: &[&Path]) -> i32 {
    eprintln!("densam {command}: error: {e}");
    exit_code(e, inputs)
}

/// Runs `densam export` and returns its exit code.
pub fn export_main(a: &ExportArgs) -> i32 {
    match run_export(a) {
        Ok(()) => EXIT_OK,
        Err(e) => fail("export", &e, &[&a.result]),
    }
}

/// Runs `densam render` and returns its exit code.
pub fn render_main(a: &RenderArgs) -> i32 {
    match run_render(a) {
        Ok(()) => EXIT_OK,
        Err(e) => fail("render", &e, &[&a.result, &a.video]),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// COCO instances JSON (frames as images, RLE segmentations, track ids).
    Coco,
    /// DAVIS indexed PNGs `OUT/<video_id>/<frame:05d>.png` + `objects.json`.
    Davis,
    /// CSV of boxes, one row per object-frame.
    BoxesCsv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CategoryMode {
    /// One category per label.
    Labels,
    /// One category per object id.
    Objects,
}

/// `densam export RESULT.jsonl --format coco|davis|boxes-csv --out PATH`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A densam result (`dense_annotations_<video>.jsonl`).
    pub result: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output file (coco, boxes-csv) or folder (davis).
    #[arg(long)]
    pub out: PathBuf,
    /// COCO categories: by label or by object.
    #[arg(long, value_enum, default_value = "labels")]
    pub categories: CategoryMode,
    /// DAVIS: the sub-folder name (default: the video id from the result file name).
    #[arg(long)]
    pub video_id: Option<String>,
}

pub fn run_export(a: &ExportArgs) -> Result<(), OutputError> {
    let s = match a.format {
        ExportFormat::Coco => {
            let c = match a.categories {
                CategoryMode::Labels => CocoCategories::Labels,
                CategoryMode::Objects => CocoCategories::Objects,
            };
            let s = export_coco(&a.result, &a.out, c)?;
            eprintln!("wrote {}", a.out.display());
            s
        }
        ExportFormat::Davis => {
            let (dir, s) = export_davis(&a.result, &a.out, a.video_id.as_deref())?;
            eprintln!("wrote {}", dir.display());
            s
        }
        ExportFormat::BoxesCsv => {
            let s = export_boxes_csv(&a.result, &a.out)?;
            eprintln!("wrote {}", a.out.display());
            s
        }
    };
    eprintln!(
        "{} frames, {} objects, {} object-frames",
        s.frames, s.objects, s.annotations
    );
    Ok(())
}

/// `densam render RESULT.jsonl --video VIDEO (--out overlay.mp4 | --png-dir DIR)`
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A densam result.
    pub result: PathBuf,
    /// The video (file, frame directory) the result was made from.
    #[arg(long)]
    pub video: PathBuf,
    /// H.264 MP4 output (FFmpeg libraries in-process; the `ffmpeg` program as fallback).
    #[arg(long, conflicts_with = "png_dir", required_unless_present = "png_dir")]
    pub out: Option<PathBuf>,
    /// Write one PNG per frame into this folder instead.
    #[arg(long)]
    pub png_dir: Option<PathBuf>,
    /// Mask opacity.
    #[arg(long, default_value_t = 0.5, value_parser = alpha)]
    pub alpha: f32,
    /// No boxes.
    #[arg(long)]
    pub no_boxes: bool,
    /// No labels, frame numbers or times.
    #[arg(long)]
    pub no_text: bool,
    /// x264 CRF of the MP4.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=51))]
    pub crf: u32,
}

/// `--alpha`: a number from 0 to 1 (clap's usage error, exit 2).
fn alpha(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be from 0 to 1".into())
    }
}

pub fn run_render(a: &RenderArgs) -> Result<(), OutputError> {
    let target = match (&a.out, &a.png_dir) {
        (_, Some(d)) => RenderTarget::PngDir(d.clone()),
        (Some(o), None) => RenderTarget::Mp4(o.clone()),
        (None, None) => {
            return Err(OutputError::other(&a.result, "give --out or --png-dir"));
        }
    };
    let opts = RenderOptions {
        alpha: a.alpha,
        boxes: !a.no_boxes,
        text: !a.no_text,
        crf: a.crf,
    };
    let s = render(&a.result, &a.video, &target, &opts)?;
    eprintln!("rendered {} frames", s.frames);
    Ok(())
}
