//! The end of a run: `run.json` with how it ended, and for a complete run the partial output
//! renamed into place (after `run.json`, so that a kill between the two leaves a run that
//! finishes at once when re-run), the checkpoint removed, the failed frames summed up; a window
//! run without prompted objects written at once ([`empty_window`]).

use std::path::PathBuf;

use super::checkpointer::CheckpointsEnd;
use super::io::{self, JobSink};
use super::manifest::{self, EmptyWindowManifest, Manifest, Status};
use super::params::RunParams;
use super::prepare::Prepared;
use super::state::{self, FailedFrame};
use super::{EXIT_FRAMES_FAILED, EXIT_INTERRUPTED, JobError, OutPaths, Outcome, out_err, signals};
use crate::tracker::{RunEnd, TrackError};

/// What the tracking left: how it ended, the checkpoints' bookkeeping, the frames that could
/// not be decoded, and the run's `run.json` (status and failures still to be set).
pub struct Ran<'a> {
    pub end: Result<RunEnd, TrackError>,
    pub checkpoints: CheckpointsEnd,
    pub failed: Vec<FailedFrame>,
    pub manifest: Manifest<'a>,
}

/// Ends a run that tracked: `run.json`, the output, the checkpoint, the logs; the outcome.
pub fn conclude(
    paths: &OutPaths,
    job: &Prepared,
    keep_checkpoints: bool,
    ran: Ran<'_>,
    sink: JobSink<'_>,
) -> Result<Outcome, JobError> {
    let Ran {
        end,
        checkpoints,
        mut failed,
        manifest,
    } = ran;
    let mut manifest = manifest;
    // Frames the container lists past the end of the file come last.
    failed.extend(job.unreadable.iter().cloned());
    manifest.failed_frames = failed.len();
    manifest.failures = manifest::failures_by_window(&failed, job.window_frames);
    let set_status = |status: Status, errors: Vec<String>| Manifest {
        status,
        errors,
        ..manifest
    };
    // The spool goes unless a checkpoint still refers to it.
    if !checkpoints.spool_in_checkpoint {
        state::remove_spool(&paths.dir);
    }
    if let Some(e) = checkpoints.error {
        let _ = manifest::write(
            &paths.manifest,
            &set_status(Status::Failed, vec![e.to_string()]),
        );
        return Err(e);
    }
    match end {
        Ok(RunEnd::Finished) => {
            let mut sink = sink;
            sink.sync()?;
            drop(sink);
            let summary = manifest::failure_summary(&failed, job.window_frames);
            let m = set_status(Status::Complete, summary.clone());
            let (written_frames, wall, peak) = (m.written_frames, m.wall_seconds, m.peak_rss_bytes);
            let processed = m.processed_frames;
            // run.json first: a kill (or a full disk) between the two leaves the partial output
            // and the final checkpoint, and a re-run finishes at once.
            manifest::write(&paths.manifest, &m)?;
            std::fs::rename(&paths.partial, &paths.output).map_err(out_err(&paths.output))?;
            if !keep_checkpoints {
                state::remove(&paths.dir);
            }
            tracing::info!(
                "wrote {} ({written_frames} frames, {processed} processed) in {wall:.1} s; peak \
                 RSS {} MiB",
                paths.output.display(),
                peak.unwrap_or(0) >> 20
            );
            log_failures(&summary, failed.len(), job.unreadable.len(), paths);
            Ok(Outcome::Complete {
                output: paths.output.clone(),
                written_frames,
                failed_frames: failed.len(),
            })
        }
        Ok(RunEnd::Stopped(at)) => {
            let sig = signals::signal_name(signals::signal_number());
            let resumable = state::path(&paths.dir).exists();
            let mut m = set_status(Status::Interrupted, Vec::new());
            m.interrupted = Some(manifest::Interrupted {
                signal: sig,
                at,
                checkpoint: resumable,
            });
            let _ = manifest::write(&paths.manifest, &m);
            let mut sink = sink;
            let _ = sink.sync();
            tracing::warn!(
                "stopped by {sig}; {}; re-run the same command to continue (exit {EXIT_INTERRUPTED})",
                if checkpoints.checkpointed {
                    "checkpoint written"
                } else if resumable {
                    "the previous checkpoint stays"
                } else {
                    "no resumable point yet: the next run starts again from the beginning"
                }
            );
            Ok(Outcome::Interrupted {
                checkpointed: resumable,
            })
        }
        Err(e) => {
            let err = JobError::from(e);
            let _ = manifest::write(
                &paths.manifest,
                &set_status(Status::Failed, vec![err.to_string()]),
            );
            Err(err)
        }
    }
}

/// The error lines of a complete run with failed frames.
fn log_failures(summary: &[String], failed: usize, unreadable: usize, paths: &OutPaths) {
    for line in summary {
        tracing::error!("{line}");
    }
    if failed == 0 {
        return;
    }
    let past_end = if unreadable > 0 {
        format!(
            "; {unreadable} of them are listed by the container past the end of the file \
             (truncated video)"
        )
    } else {
        String::new()
    };
    tracing::error!(
        "{failed} frame(s) could not be decoded: their lines are missing and the objects were \
         re-seeded from their prompts after them{past_end} (exit {EXIT_FRAMES_FAILED}; see \
         `failures` in {})",
        paths.manifest.display()
    );
}

/// The output of a window without prompted objects: one empty line per written frame.
pub fn empty_window(
    paths: &OutPaths,
    job: &Prepared,
    frame_interval: u64,
    params: &RunParams,
) -> Result<Outcome, JobError> {
    let range = job.range();
    let (from, end) = (range.write_from.get(), range.end.get());
    let mut text = Vec::new();
    let mut n_lines = 0;
    for n in (from.div_ceil(frame_interval) * frame_interval..end).step_by(frame_interval as usize)
    {
        let info = job
            .video
            .frame_info(n as usize)
            .map_err(|e| JobError::Input(e.to_string()))?;
        let rec = crate::output::jsonl::FrameRecord {
            frame_number: n,
            time_s: info.seconds,
            objects: Vec::new(),
        };
        text.extend(io::line_bytes(&job.video_id, rec)?);
        n_lines += 1;
    }
    std::fs::write(&paths.partial, text).map_err(out_err(&paths.partial))?;
    std::fs::rename(&paths.partial, &paths.output).map_err(out_err(&paths.output))?;
    let failed = &job.unreadable;
    let m = EmptyWindowManifest {
        status: Status::Complete,
        written_frames: n_lines,
        params,
        note: "no prompted object in this window",
        failed_frames: failed.len(),
        failures: manifest::failures_by_window(failed, job.window_frames),
    };
    manifest::write(&paths.manifest, &m)?;
    let output: PathBuf = paths.output.clone();
    Ok(Outcome::Complete {
        output,
        written_frames: n_lines,
        failed_frames: failed.len(),
    })
}
