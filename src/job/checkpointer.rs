//! The checkpoint hook of a run ([`Checkpointer`]), called after every tracked frame of every
//! pass (and every prompted frame of the pre-pass): when a checkpoint is due (a stop request, a
//! window end, the first frame after the first stretch, the end, `--checkpoint-every`), writing
//! it (partial output synced first, its checksum carried on, then the tracker's state and the
//! metadata, atomically), and the spool bookkeeping: the first stretch's spool in the output
//! folder stays while the checkpoint on disk refers to it, and goes with the first checkpoint
//! after it.

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use super::io::Position;
use super::params::RunParams;
use super::progress::WindowClock;
use super::state::{self, FailedFrame, Meta, WindowRecord};
use super::{JobError, OutPaths, out_err, signals, track_error};
use crate::tracker::{Flow, Stage, Tracker};

/// The checksum of the partial output up to the last checkpoint, carried on from checkpoint to
/// checkpoint (only the bytes written since are read back).
struct OutputChecksum {
    file: File,
    pos: Rc<Position>,
    crc: u32,
    len: u64,
}

impl OutputChecksum {
    /// The checksum of the first `pos.offset` bytes.
    fn update(&mut self, path: &Path) -> Result<u32, JobError> {
        let to = self.pos.offset.get();
        self.crc = state::crc32_range(&self.file, self.crc, self.len, to).map_err(out_err(path))?;
        self.len = to;
        Ok(self.crc)
    }
}

/// What the checkpointer leaves at the end of a run.
pub struct CheckpointsEnd {
    /// The windows finished (those of the checkpoint resumed from included).
    pub windows: Vec<WindowRecord>,
    /// A checkpoint was written by this run.
    pub checkpointed: bool,
    /// The checkpoint on disk refers to the spool (it must stay).
    pub spool_in_checkpoint: bool,
    /// Writing a checkpoint failed (the run was stopped there).
    pub error: Option<JobError>,
}

/// Decides when to checkpoint and writes the checkpoints of one run.
pub struct Checkpointer<'a> {
    paths: &'a OutPaths,
    params: &'a RunParams,
    /// `--checkpoint-every`, seconds.
    every: f64,
    last: Instant,
    clock: WindowClock,
    output: OutputChecksum,
    failed: Rc<RefCell<Vec<FailedFrame>>>,
    /// Wall time of the runs before this one, and this run's start.
    wall_before: f64,
    run_start: Instant,
    spool_in_checkpoint: bool,
    checkpointed: bool,
    error: Option<JobError>,
}

impl<'a> Checkpointer<'a> {
    /// `file`: a handle on the partial output, `pos`: where the sink stands in it; `from`: the
    /// point the run starts at (a checkpoint's, or [`Meta::start`]).
    pub fn new(
        paths: &'a OutPaths,
        params: &'a RunParams,
        every: f64,
        clock: WindowClock,
        (file, pos): (File, Rc<Position>),
        failed: Rc<RefCell<Vec<FailedFrame>>>,
        from: &Meta,
    ) -> Self {
        let len = pos.offset.get();
        Checkpointer {
            paths,
            params,
            every,
            last: Instant::now(),
            clock,
            output: OutputChecksum {
                file,
                pos,
                crc: from.output_crc32.unwrap_or(0),
                len,
            },
            failed,
            wall_before: from.wall_seconds,
            run_start: Instant::now(),
            spool_in_checkpoint: from.stage.in_first_stretch(),
            checkpointed: false,
            error: None,
        }
    }

    /// After a tracked frame (or a prompted frame of the pre-pass) at `stage`: records finished
    /// windows, checkpoints when one is due, and says whether the run goes on. A failed
    /// checkpoint stops the run (the error is in [`Self::finish`]'s result).
    pub fn after_frame(&mut self, t: &Tracker<'_>, stage: Stage) -> Flow {
        let stop = signals::stop_requested();
        let flow = if stop { Flow::Stop } else { Flow::Continue };
        let (window_end, force) = match stage {
            Stage::Rest(next) => {
                let schedule = t.schedule();
                // The first checkpoint after the first stretch is always taken: it frees the
                // spool.
                let force = next == schedule.head_end().next() || next.get() >= schedule.len();
                (self.clock.advance(schedule, next), force)
            }
            _ => (false, false),
        };
        if !t.can_save() {
            return flow;
        }
        let timed = self.last.elapsed().as_secs_f64() >= self.every;
        if !(stop || window_end || force || timed) {
            return flow;
        }
        if let Err(e) = self.write(t, stage) {
            self.error = Some(e);
            return Flow::Stop;
        }
        self.checkpointed = true;
        self.last = Instant::now();
        let first = stage.in_first_stretch();
        if self.spool_in_checkpoint && !first {
            state::remove_spool(&self.paths.dir);
        }
        self.spool_in_checkpoint = first;
        tracing::debug!("checkpoint at {stage:?}");
        flow
    }

    /// Writes the checkpoint of `stage`.
    fn write(&mut self, t: &Tracker<'_>, stage: Stage) -> Result<(), JobError> {
        self.output
            .file
            .sync_data()
            .map_err(out_err(&self.paths.partial))?;
        let saved = t
            .save_state()
            .map_err(|e| track_error(e, "saving the tracker state"))?;
        let output_crc32 = self.output.update(&self.paths.partial)?;
        let pos = &self.output.pos;
        let meta = Meta {
            format: state::FORMAT,
            params: self.params.clone(),
            stage,
            next: match stage {
                Stage::Rest(n) => n.get(),
                _ => 0,
            },
            offset: pos.offset.get(),
            written_frames: pos.written.get(),
            windows: self.clock.windows().to_vec(),
            wall_seconds: self.wall_before + self.run_start.elapsed().as_secs_f64(),
            failed_frames: self.failed.borrow().clone(),
            output_crc32: Some(output_crc32),
        };
        state::write(&self.paths.dir, &meta, &saved)
    }

    /// The windows, whether this run checkpointed, the spool's state and a checkpoint error.
    pub fn finish(self) -> CheckpointsEnd {
        CheckpointsEnd {
            windows: self.clock.into_windows(),
            checkpointed: self.checkpointed,
            spool_in_checkpoint: self.spool_in_checkpoint,
            error: self.error,
        }
    }
}
