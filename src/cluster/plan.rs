//! `densam plan`: the task list of a SLURM array over videos (one task per video) or over the
//! windows of each video (`--split-windows`, one task per `annotate --window K`), with the probe
//! facts that size the tasks (frames, fps, duration, windows), and the `sbatch` lines to run it.
//!
//! The task list is tab-separated text: `#` lines are comments (the first one names the
//! columns), then one line per task in [`COLUMNS`] order; `-` marks an empty field. Window
//! arithmetic is the one `annotate` uses ([`crate::job::window`]), so a task's window is exactly
//! the one `annotate --window K` runs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::job::window::{WindowRange, video_fps, window_count, window_frames};
use crate::job::{self, JobError};
use crate::video::VideoSource;

/// The columns of a task line.
pub const COLUMNS: [&str; 14] = [
    "task",
    "video_id",
    "video",
    "window",
    "windows",
    "frames",
    "fps",
    "duration_s",
    "first_frame",
    "end_frame",
    "window_duration",
    "window_overlap",
    "prompts",
    "out",
];

/// Video file extensions a directory scan picks up (case-insensitive).
const VIDEO_EXTENSIONS: [&str; 9] = [
    "mp4", "mkv", "mov", "avi", "webm", "m4v", "mpg", "mpeg", "ts",
];

/// Options of `densam plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Videos: video files, frame directories (`--frame-dirs`), or directories scanned
    /// (recursively) for video files.
    #[arg(conflicts_with_all = ["list", "hd_epic_assoc"])]
    pub videos: Vec<PathBuf>,
    /// A list file: one video (file or frame directory) per line, optionally followed by a tab
    /// and its prompts file; `#` comments; relative paths are taken from the list file's folder.
    #[arg(long, conflicts_with = "hd_epic_assoc")]
    pub list: Option<PathBuf>,
    /// HD-EPIC `assoc_info.json`: one video per video id, at VIDEOS_ROOT/<P0x>/<id>.mp4 (pass
    /// the same --hd-epic-assoc/--hd-epic-masks to the array job).
    #[arg(long, requires = "videos_root")]
    pub hd_epic_assoc: Option<PathBuf>,
    /// Folder holding the HD-EPIC videos as <P0x>/<video id>.mp4.
    #[arg(long, alias = "video_path")]
    pub videos_root: Option<PathBuf>,
    /// Generic prompts: the prompts of video ID are PROMPTS_DIR/ID.json (or ID.jsonl).
    #[arg(long)]
    pub prompts_dir: Option<PathBuf>,
    /// Take the directories given as videos as frame directories (one video each) instead of
    /// scanning them for video files.
    #[arg(long)]
    pub frame_dirs: bool,
    /// One task per window of each video (`annotate --window K`; `merge.sbatch` joins them).
    #[arg(long)]
    pub split_windows: bool,
    /// Split only the videos longer than S seconds into windows (the others: one task each).
    #[arg(long, value_name = "S")]
    pub split_longer_than: Option<f64>,
    /// Window length in seconds (as `annotate --window-duration`; passed to every task).
    #[arg(long, alias = "window_duration", default_value_t = 300.0)]
    pub window_duration: f64,
    /// Window overlap in seconds (as `annotate --window-overlap`; passed to every task).
    #[arg(long, alias = "window_overlap", default_value_t = 30.0)]
    pub window_overlap: f64,
    /// The task list to write (tab-separated).
    #[arg(long)]
    pub out: PathBuf,
    /// Output root of the array: task outputs go to OUT_ROOT/<video id>[/window-<K>].
    #[arg(long, default_value = "densam-out")]
    pub out_root: PathBuf,
    /// At most M tasks running at once (the `%M` of `--array=0-N%M`).
    #[arg(long, default_value_t = 8)]
    pub max_running: usize,
    /// Expected processed frames per second of one task on the cluster's nodes: prints a
    /// `--time` for the longest task (with 50% margin).
    #[arg(long)]
    pub speed: Option<f64>,
    /// The array job script named in the printed sbatch line.
    #[arg(long, default_value = "scripts/slurm/annotate-array.sbatch")]
    pub script: PathBuf,
}

/// One video of the plan, probed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlannedVideo {
    pub video_id: String,
    pub video: PathBuf,
    pub prompts: Option<PathBuf>,
    pub frames: u64,
    pub fps: f64,
    pub duration_s: f64,
    pub window_frames: u64,
    pub windows: u64,
}

/// One array task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Task {
    pub task: usize,
    pub video: usize,
    /// `annotate --window K`, or the whole video.
    pub window: Option<u64>,
    /// The frames the task writes: `first_frame..end_frame`.
    pub first_frame: u64,
    pub end_frame: u64,
    /// Output folder, relative to the output root.
    pub out: PathBuf,
}

/// A plan: videos and tasks.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub videos: Vec<PlannedVideo>,
    pub tasks: Vec<Task>,
    pub window_duration: f64,
    pub window_overlap: f64,
}

/// A video to plan, before probing.
#[derive(Debug, Clone)]
struct Source {
    video_id: String,
    video: PathBuf,
    prompts: Option<PathBuf>,
}

fn input_err(p: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::Input(format!("{}: {e}", p.display()))
}

fn is_video_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Video files under `dir`, recursively, sorted.
fn scan_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), JobError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| input_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            scan_dir(&p, out)?;
        } else if is_video_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn source_of(video: PathBuf, prompts: Option<PathBuf>) -> Source {
    Source {
        video_id: job::input::video_stem(&video),
        video,
        prompts,
    }
}

/// The videos named by the options, in a stable order.
fn sources(a: &PlanArgs) -> Result<Vec<Source>, JobError> {
    if let Some(assoc) = &a.hd_epic_assoc {
        let root = a
            .videos_root
            .as_ref()
            .ok_or_else(|| JobError::Usage("--hd-epic-assoc needs --videos-root".into()))?;
        let bytes = crate::files::read_input(assoc).map_err(|e| input_err(assoc, e))?;
        let ids: BTreeSet<String> = crate::prompts::hd_epic::video_ids(assoc, &bytes)
            .map_err(|e| JobError::Input(e.to_string()))?
            .into_iter()
            .collect();
        return Ok(ids
            .into_iter()
            .map(|id| Source {
                video: crate::prompts::hd_epic::video_path(root, &id),
                video_id: id,
                prompts: None,
            })
            .collect());
    }
    let mut out = Vec::new();
    if let Some(list) = &a.list {
        let text = crate::files::read_input(list)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|e| input_err(list, e))?;
        let base = list.parent().unwrap_or(Path::new(""));
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let mut cols = line.split('\t');
            let video = base.join(cols.next().unwrap_or("").trim());
            let prompts = cols
                .next()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| base.join(s));
            out.push(source_of(video, prompts));
        }
        return Ok(out);
    }
    if a.videos.is_empty() {
        return Err(JobError::Usage(
            "give videos or directories, --list FILE, or --hd-epic-assoc with --videos-root".into(),
        ));
    }
    for v in &a.videos {
        if v.is_dir() && !a.frame_dirs {
            let mut found = Vec::new();
            scan_dir(v, &mut found)?;
            if found.is_empty() {
                return Err(input_err(
                    v,
                    format!(
                        "no video files ({}) in this folder (a frame directory? use --frame-dirs)",
                        VIDEO_EXTENSIONS.join(", ")
                    ),
                ));
            }
            out.extend(found.into_iter().map(|p| source_of(p, None)));
        } else {
            out.push(source_of(v.clone(), None));
        }
    }
    Ok(out)
}

/// The prompts file of a video under `--prompts-dir`.
fn prompts_in(dir: &Path, video_id: &str) -> Result<PathBuf, JobError> {
    for ext in ["json", "jsonl"] {
        let p = dir.join(format!("{video_id}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(input_err(
        dir,
        format!("no prompts for video `{video_id}` ({video_id}.json or {video_id}.jsonl)"),
    ))
}

/// Probes the videos and lays out the tasks.
pub fn make_plan(a: &PlanArgs) -> Result<Plan, JobError> {
    if !(a.window_duration > 0.0 && a.window_overlap >= 0.0) {
        return Err(JobError::Usage(
            "--window-duration must be > 0 and --window-overlap >= 0".into(),
        ));
    }
    let srcs = sources(a)?;
    if srcs.is_empty() {
        return Err(JobError::Input("no videos to plan".into()));
    }
    // The id rule annotate applies (`--video-id`): a task annotate would refuse is refused here.
    let bad: Vec<String> = srcs
        .iter()
        .filter_map(|s| {
            crate::id::check_named("video id", &s.video_id)
                .err()
                .map(|e| format!("{e} ({})", s.video.display()))
        })
        .collect();
    if !bad.is_empty() {
        return Err(JobError::Input(bad.join("; ")));
    }
    let mut seen = BTreeSet::new();
    for s in &srcs {
        if !seen.insert(s.video_id.clone()) {
            return Err(JobError::Input(format!(
                "two videos have the id `{}` (their outputs would collide): {}",
                s.video_id,
                srcs.iter()
                    .filter(|t| t.video_id == s.video_id)
                    .map(|t| t.video.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut videos = Vec::new();
    let mut errors = Vec::new();
    for s in srcs {
        let prompts = match (&s.prompts, &a.prompts_dir) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(dir)) => match prompts_in(dir, &s.video_id) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(e.to_string());
                    None
                }
            },
            (None, None) => None,
        };
        let v = match VideoSource::open(&s.video) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("video {}: {e}", s.video.display()));
                continue;
            }
        };
        let fps = video_fps(&v);
        let (window_frames, _) = window_frames(a.window_duration, a.window_overlap, fps);
        let frames = v.frame_count() as u64;
        videos.push(PlannedVideo {
            video_id: s.video_id,
            video: s.video,
            prompts,
            frames,
            fps,
            duration_s: v.info().duration_s,
            window_frames,
            windows: window_count(frames, window_frames),
        });
    }
    if !errors.is_empty() {
        return Err(JobError::Input(format!(
            "{} problem(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        )));
    }
    let mut tasks = Vec::new();
    for (i, v) in videos.iter().enumerate() {
        let split = match a.split_longer_than {
            Some(s) => v.duration_s > s,
            None => a.split_windows,
        };
        if split {
            let (wf, of) = window_frames(a.window_duration, a.window_overlap, v.fps);
            for k in 0..v.windows {
                let w = WindowRange::new(k, wf, of, v.frames, 1)?;
                tasks.push(Task {
                    task: tasks.len(),
                    video: i,
                    window: Some(k),
                    first_frame: w.own_from,
                    end_frame: w.end,
                    out: Path::new(&v.video_id).join(format!("window-{k}")),
                });
            }
        } else {
            tasks.push(Task {
                task: tasks.len(),
                video: i,
                window: None,
                first_frame: 0,
                end_frame: v.frames,
                out: PathBuf::from(&v.video_id),
            });
        }
    }
    Ok(Plan {
        videos,
        tasks,
        window_duration: a.window_duration,
        window_overlap: a.window_overlap,
    })
}

fn field(p: &Path) -> Result<String, JobError> {
    // Written lossily, a name that is not UTF-8 would name another file in the task list.
    let s = p.to_str().map(str::to_string).ok_or_else(|| {
        JobError::Input(format!(
            "path `{}` is not UTF-8: it cannot go in the task list (rename it)",
            p.display()
        ))
    })?;
    if s.contains(['\t', '\n', '\r']) || s.is_empty() || s == "-" {
        return Err(JobError::Input(format!(
            "path `{s}` cannot go in a tab-separated task list"
        )));
    }
    Ok(s)
}

/// The task list text (header comments, then one line per task).
pub fn task_list(plan: &Plan) -> Result<String, JobError> {
    let mut s = String::new();
    let _ = writeln!(s, "# {}", COLUMNS.join("\t"));
    let _ = writeln!(
        s,
        "# densam plan: {} video(s), {} task(s); window {} s, overlap {} s",
        plan.videos.len(),
        plan.tasks.len(),
        plan.window_duration,
        plan.window_overlap
    );
    for t in &plan.tasks {
        let v = &plan.videos[t.video];
        let prompts = match &v.prompts {
            Some(p) => field(&absolute(p))?,
            None => "-".into(),
        };
        let cols = [
            t.task.to_string(),
            v.video_id.clone(),
            field(&absolute(&v.video))?,
            t.window.map_or("-".into(), |k| k.to_string()),
            v.windows.to_string(),
            v.frames.to_string(),
            format!("{}", v.fps),
            format!("{:.3}", v.duration_s),
            t.first_frame.to_string(),
            t.end_frame.to_string(),
            format!("{}", plan.window_duration),
            format!("{}", plan.window_overlap),
            prompts,
            field(&t.out)?,
        ];
        let _ = writeln!(s, "{}", cols.join("\t"));
    }
    Ok(s)
}

/// `p` made absolute against the current directory (tasks run from anywhere).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn hms(seconds: f64) -> String {
    let s = seconds.ceil().max(60.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The report printed after writing the list: sizes and the sbatch lines.
pub fn report(plan: &Plan, a: &PlanArgs) -> String {
    let mut s = String::new();
    let total_frames: u64 = plan.videos.iter().map(|v| v.frames).sum();
    let total_s: f64 = plan.videos.iter().map(|v| v.duration_s).sum();
    let longest = plan
        .tasks
        .iter()
        .map(|t| t.end_frame - t.first_frame)
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        s,
        "{} video(s), {total_frames} frames, {:.1} h; {} task(s) ({}); longest task {longest} \
         frames",
        plan.videos.len(),
        total_s / 3600.0,
        plan.tasks.len(),
        match (a.split_windows, a.split_longer_than) {
            (_, Some(_)) => "one per window of the longer videos, one per other video",
            (true, None) => "one per window",
            (false, None) => "one per video",
        }
    );
    for v in &plan.videos {
        let _ = writeln!(
            s,
            "  {}: {} frames, {:.3} fps, {:.1} s, {} window(s) of {} frames",
            v.video_id, v.frames, v.fps, v.duration_s, v.windows, v.window_frames
        );
    }
    let n = plan.tasks.len();
    let m = a.max_running.max(1).min(n.max(1));
    let list = absolute(&a.out);
    let logs = list.parent().unwrap_or(Path::new(".")).join("logs");
    let time = a
        .speed
        .filter(|f| *f > 0.0)
        .map(|f| format!(" --time={}", hms(longest as f64 / f * 1.5 + 300.0)))
        .unwrap_or_default();
    let _ = writeln!(s, "task list: {}", list.display());
    let _ = writeln!(s, "run it with:");
    let _ = writeln!(
        s,
        "  jid=$(sbatch --parsable --array=0-{}%{m}{time} --output={}/%A_%a.log {} {} {} \
         --checkpoint MODEL.pt [annotate options])",
        n.saturating_sub(1),
        logs.display(),
        a.script.display(),
        list.display(),
        absolute(&a.out_root).display(),
    );
    let merge = a.script.with_file_name("merge.sbatch");
    let _ = writeln!(
        s,
        "  sbatch --dependency=afterok:$jid --output={}/merge-%j.log {} {} {}",
        logs.display(),
        merge.display(),
        list.display(),
        absolute(&a.out_root).display(),
    );
    s
}

/// Runs `densam plan` and returns its exit code (errors printed on stderr).
pub fn main(a: &PlanArgs) -> i32 {
    let res = (|| -> Result<String, JobError> {
        let plan = make_plan(a)?;
        let text = task_list(&plan)?;
        let out_err =
            |p: &Path, e: std::io::Error| JobError::Output(format!("{}: {e}", p.display()));
        if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
        }
        let logs = absolute(&a.out)
            .parent()
            .unwrap_or(Path::new("."))
            .join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| out_err(&logs, e))?;
        let tmp = a.out.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| out_err(&tmp, e))?;
        std::fs::rename(&tmp, &a.out).map_err(|e| out_err(&a.out, e))?;
        Ok(report(&plan, a))
    })();
    match res {
        Ok(r) => {
            print!("{r}");
            crate::exit::EXIT_OK
        }
        Err(e) => {
            eprintln!("densam plan: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_hms() {
        assert_eq!(COLUMNS.len(), 14);
        assert_eq!(hms(3661.2), "1:01:02");
        assert_eq!(hms(5.0), "0:01:00");
        assert!(field(Path::new("a\tb")).is_err());
    }
}
