//! Where a run starts ([`decide`]), from what the output folder holds, the run's parameters and
//! `--restart`: afresh, from the checkpoint (same parameters, checkpoint and the output it
//! counts intact), or not at all (the result is complete with the same parameters). Refusals
//! (exit 4) change nothing: another video's result or checkpoint in the folder, a result or
//! checkpoint made with other parameters (without `--restart`), a damaged checkpoint or
//! partial output. [`tidy`] then clears what the chosen start does not need.

use super::manifest::{self, Recorded};
use super::params::RunParams;
use super::state::{self, Checkpoint};
use super::{JobError, OutPaths, fault};

/// How a run starts.
#[derive(Debug)]
pub enum Start {
    /// From the beginning.
    Fresh,
    /// From this checkpoint.
    Resume(Box<Checkpoint>),
    /// The output is complete with the same parameters: nothing to do.
    AlreadyComplete { failed_frames: usize },
}

impl Start {
    /// The checkpoint resumed from.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self {
            Start::Resume(c) => Some(c),
            _ => None,
        }
    }
}

/// Another video's result or checkpoint in the output folder: refused, whatever `--restart` says
/// (it discards this video's state, not another's).
fn other_video(paths: &OutPaths, ours: &str, theirs: &str, what: &str) -> JobError {
    JobError::Checkpoint(format!(
        "{} holds {what} of another video, `{theirs}` (dense_annotations_{theirs}.jsonl; see \
         its run.json): annotate `{ours}` into another --out folder",
        paths.dir.display()
    ))
}

/// Decides how the run starts. Reads only: nothing in the folder is changed. Without
/// `--restart`, `params` of a `--batch-objects auto` run take the number of objects per batch
/// of the finished result or checkpoint they otherwise equal ([`RunParams::adopt_auto_batch`]).
pub fn decide(paths: &OutPaths, params: &mut RunParams, restart: bool) -> Result<Start, JobError> {
    let recorded = Recorded::read(&paths.manifest);
    if let Some(r) = &recorded
        && let Some(theirs) = r.video_id.as_deref()
        && theirs != params.video_id
        && let Some(output) = manifest::existing_output(&paths.dir, r)
    {
        return Err(other_video(
            paths,
            &params.video_id,
            theirs,
            &format!("the result {}", output.display()),
        ));
    }
    if paths.output.exists() {
        let r = recorded.unwrap_or_default();
        let theirs = r.params.as_ref().and_then(RunParams::from_recorded);
        if let Some(p) = &theirs
            && !restart
        {
            params.adopt_unrecorded(p);
            params.adopt_auto_batch(p);
        }
        let same = theirs.as_ref().is_some_and(|p| p == params);
        if r.complete() && same && !restart {
            return Ok(Start::AlreadyComplete {
                failed_frames: r.failed_frames,
            });
        }
        if !restart {
            let diff = match &r.params {
                Some(p) => {
                    let hint = theirs.as_ref().map(|t| params.threads_hint(t));
                    params.diff_recorded(p).join("; ") + &hint.unwrap_or_default()
                }
                None => "no readable run.json".into(),
            };
            return Err(JobError::Checkpoint(format!(
                "{} exists from a run with other parameters ({diff}); use --restart to replace it",
                paths.output.display()
            )));
        }
    }
    fault::at(fault::Point::CheckpointLoad);
    if !paths.dir.is_dir() {
        // (not there yet, or not a folder: creating it says why)
        return Ok(Start::Fresh);
    }
    let checkpoint = match state::read(&paths.dir) {
        Ok(c) => c,
        // A damaged checkpoint is what --restart discards.
        Err(_) if restart => None,
        Err(e) => return Err(e),
    };
    let Some(checkpoint) = checkpoint else {
        return Ok(Start::Fresh);
    };
    let meta = &checkpoint.meta;
    if meta.params.video_id != params.video_id {
        return Err(other_video(
            paths,
            &params.video_id,
            &meta.params.video_id,
            &format!("the checkpoint {}", state::path(&paths.dir).display()),
        ));
    }
    if restart {
        return Ok(Start::Fresh);
    }
    params.adopt_unrecorded(&meta.params);
    params.adopt_auto_batch(&meta.params);
    if meta.params != *params {
        return Err(JobError::Checkpoint(format!(
            "{} holds a checkpoint made with other parameters ({}{}); re-run with the same \
             options to resume, or use --restart to discard it",
            paths.dir.display(),
            params.diff(&meta.params).join("; "),
            params.threads_hint(&meta.params)
        )));
    }
    let crc = state::verify_output(&paths.partial, meta)?;
    let mut checkpoint = checkpoint;
    // (a format-2 checkpoint has none: the output's checksum goes on from here)
    checkpoint.meta.output_crc32 = Some(crc);
    Ok(Start::Resume(Box::new(checkpoint)))
}

/// Clears what the start does not need: temporary files of a killed run; on a fresh start with
/// `--restart` the checkpoint and the previous output; a spool no checkpoint refers to.
pub fn tidy(paths: &OutPaths, start: &Start, restart: bool) {
    state::remove_stale(&paths.dir);
    if restart {
        state::remove(&paths.dir);
        let _ = std::fs::remove_file(&paths.output);
        let _ = std::fs::remove_file(&paths.partial);
    }
    let spool_needed = start
        .checkpoint()
        .is_some_and(|c| c.meta.stage.in_first_stretch());
    if !spool_needed {
        state::remove_spool(&paths.dir);
    }
}
