//! `densam merge DIR... --out FILE`: joins the outputs of window-parallel runs (`--window K`,
//! one output folder each) into one JSONL identical in form to a sequential run: lines in frame
//! order, each frame once, one video id. Written under a temporary name and renamed into place
//! (`crate::output::atomic`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::JobError;
use crate::output::atomic::PartialFile;

/// Options of `densam merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// Output folders of window runs (each holds one `dense_annotations_<id>.jsonl`), any order.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged JSONL.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(serde::Deserialize)]
struct Head {
    video_id: Option<String>,
    frame_number: u64,
}

/// The one result file of a window folder.
fn part_file(dir: &Path) -> Result<PathBuf, JobError> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| JobError::Input(format!("{}: {e}", dir.display())))?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dense_annotations_") && n.ends_with(".jsonl"))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(JobError::Input(format!(
            "{}: no dense_annotations_*.jsonl (window not finished?)",
            dir.display()
        ))),
        _ => Err(JobError::Input(format!(
            "{}: several dense_annotations_*.jsonl",
            dir.display()
        ))),
    }
}

/// Merges the parts; returns the number of lines written.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<usize, JobError> {
    // (first frame, file, (frame, line)s) per part.
    type Part = (u64, PathBuf, Vec<(u64, String)>);
    let mut parts: Vec<Part> = Vec::new();
    let mut vid: Option<String> = None;
    for d in dirs {
        let p = part_file(d)?;
        let f = std::fs::File::open(&p)
            .map_err(|e| JobError::Input(format!("{}: {e}", p.display())))?;
        let mut lines = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| JobError::Input(format!("{}: {e}", p.display())))?;
            let h: Head = serde_json::from_str(&line).map_err(|e| {
                JobError::Input(format!("{}:{}:{}: {e}", p.display(), i + 1, e.column()))
            })?;
            match (&vid, &h.video_id) {
                (Some(a), Some(b)) if a != b => {
                    return Err(JobError::Input(format!(
                        "{}:{}: video id `{b}`, other parts have `{a}`",
                        p.display(),
                        i + 1
                    )));
                }
                (None, Some(b)) => vid = Some(b.clone()),
                _ => {}
            }
            lines.push((h.frame_number, line));
        }
        let first = lines.first().map(|l| l.0).unwrap_or(u64::MAX);
        parts.push((first, p, lines));
    }
    parts.sort_by_key(|p| p.0);
    let partial = PartialFile::new(out).map_err(|e| JobError::Output(e.to_string()))?;
    let tmp = partial.path().to_path_buf();
    let io = |p: &Path, e: std::io::Error| JobError::Output(format!("{}: {e}", p.display()));
    let n = {
        let f = partial
            .create()
            .map_err(|e| JobError::Output(e.to_string()))?;
        let mut w = std::io::BufWriter::new(f);
        let mut last: Option<(u64, &Path)> = None;
        let mut n = 0;
        for (_, p, lines) in &parts {
            for (frame, line) in lines {
                if let Some((lf, lp)) = last
                    && *frame <= lf
                {
                    return Err(JobError::Input(format!(
                        "frame {frame} of {} does not follow frame {lf} of {} (overlapping or \
                         duplicate windows)",
                        p.display(),
                        lp.display()
                    )));
                }
                w.write_all(line.as_bytes()).map_err(|e| io(&tmp, e))?;
                w.write_all(b"\n").map_err(|e| io(&tmp, e))?;
                last = Some((*frame, p));
                n += 1;
            }
        }
        w.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        n
    };
    partial
        .commit()
        .map_err(|e| JobError::Output(e.to_string()))?;
    Ok(n)
}

/// Runs `densam merge` and returns its exit code (errors printed on stderr).
pub fn main(args: &MergeArgs) -> i32 {
    match merge(&args.dirs, &args.out) {
        Ok(n) => {
            eprintln!("densam merge: wrote {} ({n} frames)", args.out.display());
            super::EXIT_OK
        }
        Err(e) => {
            eprintln!("densam merge: error: {e}");
            e.exit_code()
        }
    }
}
