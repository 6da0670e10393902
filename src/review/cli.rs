//! `densam review`: its arguments, the report files it writes (`flags.jsonl`, `flags.csv`,
//! `summary.json`, each renamed into place whole) and its exit codes (3 for a missing or
//! malformed result, 5 when the report cannot be written).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{Review, Thresholds, review_file};
use crate::exit::{EXIT_INPUT, EXIT_OK, EXIT_OUTPUT};
use crate::output::atomic::PartialFile;
use crate::output::export::csv_field;
use crate::output::jsonl::OutputError;

#[derive(Debug, Clone, Args)]
pub struct ReviewArgs {
    /// The result (`dense_annotations_<id>.jsonl`).
    pub result: PathBuf,
    /// The report folder: flags.jsonl, flags.csv, summary.json.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

/// Runs `densam review` and returns its exit code.
pub fn review_main(a: &ReviewArgs) -> i32 {
    let review = match review_file(&a.result, a.thresholds.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("densam review: error: {e}");
            return EXIT_INPUT;
        }
    };
    if let Err(e) = write_report(&a.out, &a.result, &review) {
        eprintln!("densam review: error: {e}");
        return EXIT_OUTPUT;
    }
    let flagged: u64 = review.objects.iter().map(|o| o.flagged).sum();
    let total: u64 = review.objects.iter().map(|o| o.frames).sum();
    eprintln!(
        "densam review: {} flag(s) over {} object(s) and {} written frame(s); {:.1}% of \
         object-frames flagged; report in {}",
        review.flags.len(),
        review.objects.len(),
        review.frames,
        100.0 * flagged as f64 / total.max(1) as f64,
        a.out.display()
    );
    EXIT_OK
}

fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let pf = PartialFile::new(path)?;
    let f = pf.create()?;
    let mut w = std::io::BufWriter::new(f);
    fill(&mut w)
        .and_then(|_| w.flush())
        .map_err(|e| OutputError::io(path, e))?;
    drop(w);
    pf.commit()
}

/// Writes the report files of `review` into `dir`.
pub fn write_report(dir: &Path, result: &Path, review: &Review) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|e| OutputError::io(dir, e))?;
    write_file(&dir.join("flags.jsonl"), |w| {
        for f in &review.flags {
            serde_json::to_writer(&mut *w, f)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    write_file(&dir.join("flags.csv"), |w| {
        writeln!(
            w,
            "object,first_frame,last_frame,first_time_s,last_time_s,reason,severity,value,threshold,frames"
        )?;
        for f in &review.flags {
            writeln!(
                w,
                "{},{},{},{:.3},{:.3},{},{},{},{},{}",
                csv_field(&f.object),
                f.first_frame,
                f.last_frame,
                f.first_time_s,
                f.last_time_s,
                f.reason.as_str(),
                f.severity.as_str(),
                f.value,
                f.threshold,
                f.frames
            )?;
        }
        Ok(())
    })?;
    write_file(&dir.join("summary.json"), |w| {
        let v = serde_json::json!({
            "result": result,
            "frames": review.frames,
            "objects": review.objects,
            "flags": review.flags.len(),
            "thresholds": review.thresholds,
        });
        serde_json::to_writer_pretty(&mut *w, &v)?;
        w.write_all(b"\n")
    })
}
