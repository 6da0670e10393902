//! The `densam` command line: subcommands only; the work lives in the library.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "densam",
    version,
    about = "Dense SAM 2 annotations for videos of any length"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Track prompted objects through a video: dense per-frame masks as JSONL.
    Annotate(densam::job::AnnotateJobArgs),
    /// Write the task list of a SLURM array over many videos (or their windows) and print the
    /// sbatch lines (scripts/slurm/).
    Plan(densam::cluster::plan::PlanArgs),
    /// Join the outputs of window-parallel `annotate --window K` runs into one JSONL.
    Merge(densam::job::merge::MergeArgs),
    /// Export a result to COCO instances JSON, DAVIS indexed PNGs or a CSV of boxes.
    Export(densam::output::cli::ExportArgs),
    /// Draw a result over its video (H.264 MP4 or PNGs) to check it by eye.
    Render(densam::output::cli::RenderArgs),
    /// Score a result against ground truth: J, F, J&F (DAVIS 2017) and box IoU.
    Eval(densam::eval::cli::EvalArgs),
    /// Flag the stretches of object-frames of a result that most likely need a human (lost,
    /// reappeared, fragmented, box or area jumps, low predicted IoU): flags.jsonl, flags.csv.
    Review(densam::review::cli::ReviewArgs),
    /// Describe a video (file, frame directory or image) as JSON: size, exact frame count, fps,
    /// duration, codec, VFR, first/last pts.
    Probe {
        video: std::path::PathBuf,
        /// Also decode every frame and report the decoded count (a double check of the index).
        #[arg(long)]
        decode_count: bool,
    },
    /// Write frame N of a video as an RGB PNG, or as the S×S model input (uint8, before
    /// normalisation).
    Extract {
        video: std::path::PathBuf,
        /// Frame number (presentation order, from 0).
        #[arg(long)]
        frame: usize,
        #[arg(long)]
        out: std::path::PathBuf,
        /// Write the model input (Pillow bicubic resize to S×S) instead of the frame.
        #[arg(long)]
        model_input: bool,
        /// Model input size S.
        #[arg(long, default_value_t = densam::video::DEFAULT_IMAGE_SIZE, requires = "model_input")]
        image_size: usize,
    },
    /// Decode benchmark (scripts/bench-decode): index pass, decode-only and per-frame costs.
    #[command(hide = true)]
    BenchDecode {
        video: std::path::PathBuf,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value_t = densam::video::DEFAULT_IMAGE_SIZE)]
        image_size: usize,
        #[arg(long, default_value_t = 30)]
        resize_frames: usize,
    },
}

/// Runs the command; errors are printed as one line (with their causes), never a backtrace.
fn main() -> std::process::ExitCode {
    densam::alloc::configure(); // malloc settings before any tensor exists (src/alloc.rs)
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints a video command's error once and returns its exit code (`densam::exit`).
fn video_failed(command: &str, e: &densam::video::VideoError) -> i32 {
    use densam::exit::{EXIT_FAILURE, EXIT_INPUT, EXIT_OUTPUT, EXIT_USAGE};
    use densam::video::ErrorKind;
    eprintln!("densam {command}: error: {e}");
    match e.kind() {
        ErrorKind::Usage => EXIT_USAGE,
        ErrorKind::Input => EXIT_INPUT,
        ErrorKind::Output => EXIT_OUTPUT,
        ErrorKind::Internal => EXIT_FAILURE,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Annotate(args) => std::process::exit(densam::job::main(&args)),
        Command::Plan(args) => std::process::exit(densam::cluster::plan::main(&args)),
        Command::Merge(args) => std::process::exit(densam::job::merge::main(&args)),
        Command::Export(args) => std::process::exit(densam::output::cli::export_main(&args)),
        Command::Render(args) => std::process::exit(densam::output::cli::render_main(&args)),
        Command::Eval(args) => std::process::exit(densam::eval::cli::eval_main(&args)),
        Command::Review(args) => std::process::exit(densam::review::cli::review_main(&args)),
        Command::Probe {
            video,
            decode_count,
        } => match densam::video::probe_json(&video, decode_count) {
            Ok(json) => println!("{json}"),
            Err(e) => std::process::exit(video_failed("probe", &e)),
        },
        Command::Extract {
            video,
            frame,
            out,
            model_input,
            image_size,
        } => {
            if let Err(e) =
                densam::video::extract(&video, frame, &out, model_input.then_some(image_size))
            {
                std::process::exit(video_failed("extract", &e));
            }
        }
        Command::BenchDecode {
            video,
            threads,
            image_size,
            resize_frames,
        } => {
            let report = densam::video::bench_decode(&video, threads, image_size, resize_frames)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
