//! A whole run: the pre-pass, then the legs of the schedule's run order (the forward head, the
//! reverse pass in chunks, the replay of the spool, the rest), from the start or from a saved
//! state; idle frames (no object active: not decoded) and failed frames (not delivered by the
//! frame source: the objects re-seeded); the observer told of every resume point; saving and
//! restoring the run state.

use super::bank::{self, ObjectBank};
use super::schedule::Leg;
use super::spool::{self, Spool};
use super::state::{self, Saved};
use super::step::{Processed, Slot};
use super::{
    FrameInput, FrameNo, FrameSource, Observer, Pass, ProcIdx, Progress, ResultSink, RunEnd, Stage,
    TrackError, Tracker, bad_frame, missing_frame, stop_if,
};

impl Tracker<'_> {
    /// The whole run: the pre-pass, the forward head, the reverse pass, the rest.
    ///
    /// `resume`: a state saved by [`Self::save_state`] from a run of the same schedule, prompts
    /// and model, whose sink has everything written before that state (nothing, inside the
    /// first stretch); the pre-pass runs again (it provides the memory PE), then the run goes
    /// on from the saved stage. A state or spool that is damaged is an error
    /// ([`TrackError::State`], [`TrackError::SpoolDamaged`]).
    ///
    /// Frames a source does not deliver (it skipped them as undecodable) are failed frames:
    /// nothing is written for them, and every object's tracked memories are dropped, so the
    /// next frame is tracked from the conditioning memories alone (re-seeded from the prompts).
    /// A prompted frame the source does not deliver is an error.
    pub fn run(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        resume: Option<&[u8]>,
        obs: &mut dyn Observer,
    ) -> Result<RunEnd, TrackError> {
        let _g = tch::no_grad_guard();
        let res = self.run_inner(frames, sink, resume, obs);
        self.run.spool = None;
        self.run.head_banks = None;
        match res {
            Ok(()) => Ok(RunEnd::Finished),
            Err(TrackError::Stopped(at)) => Ok(RunEnd::Stopped(at)),
            Err(e) => Err(e),
        }
    }

    fn run_inner(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        resume: Option<&[u8]>,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        let n = self.setup.prompts.objects.len();
        self.run.banks = (0..n).map(|_| ObjectBank::default()).collect();
        self.run.head_banks = None;
        self.run.stage = Stage::Start;
        self.run.done = 0;
        let least = self.setup.schedule.min_head_end();
        self.setup.schedule.set_head_end(least);
        // A saved state and its spool are checked before the pre-pass (which can be long).
        let saved = resume.map(|b| self.check_saved(b)).transpose()?;
        self.prepass(frames, obs)?;
        let stage = match saved {
            Some(saved) => self.restore(saved)?,
            None => {
                self.run.spool = Some(self.new_spool()?);
                Stage::Head(self.setup.schedule.start())
            }
        };
        self.run.stage = stage;
        let mut stage = stage;
        'legs: loop {
            // At the head's end, a ranked policy may need a longer head; the decision depends
            // on the banks alone, so a resumed run takes it as the uninterrupted one did.
            if stage == Stage::Head(self.setup.schedule.head_end().next()) && self.head_too_short()
            {
                self.setup.schedule.extend_head();
            }
            let legs = self
                .setup
                .schedule
                .legs(stage, self.setup.cfg.reverse_chunk);
            for leg in legs {
                match leg {
                    Leg::Forward { pass, from, to } => {
                        self.forward(frames, sink, obs, pass, from, to)?;
                        if pass == Pass::Head {
                            stage = Stage::Head(to);
                            continue 'legs;
                        }
                    }
                    Leg::Reverse { lo, hi } => {
                        if self.run.head_banks.is_none() {
                            // The reverse pass tracks on a copy: the rest goes on from the head's.
                            self.run.head_banks = Some(self.run.banks.clone());
                        }
                        self.reverse_chunk(frames, sink, obs, lo, hi)?;
                    }
                    Leg::Replay => self.replay(sink, obs)?,
                }
            }
            return Ok(());
        }
    }

    /// Whether SAM 3's reverse scan from the first prompt `s` could read forward results the
    /// head has not tracked yet (docs/sam2-inference.md §7.14): some object that the reverse
    /// pass tracks and the forward pass goes on tracking after the head has fewer than
    /// `MAX_OBJ_PTRS - 1` valid frames after `s`. Never for `sam2` (its head is long enough by
    /// construction, §7.4) or without a reverse pass.
    fn head_too_short(&self) -> bool {
        let Some(mf_threshold) = self.setup.select.policy.ranked() else {
            return false;
        };
        let schedule = &self.setup.schedule;
        let (s, he) = (schedule.start(), schedule.head_end());
        if s.0 == 0 || he.0 + 1 >= schedule.len() {
            return false;
        }
        self.run
            .banks
            .iter()
            .zip(schedule.spans())
            .any(|(b, &(lo, hi))| {
                lo <= s && hi > he && !b.sam3_reverse_ring_full(s.key(), mf_threshold)
            })
    }

    fn new_spool(&self) -> Result<Spool, TrackError> {
        match &self.setup.cfg.spool_file {
            Some(p) => Spool::create_at(p),
            None => Spool::create(&self.setup.cfg.spool_dir),
        }
    }

    /// The end of the first stretch: the head's banks back (after a reverse pass), the spool
    /// replayed in ascending frame order (on `s` the reverse pass's result, recorded later,
    /// wins), the banks pruned to what the rest reads; then the resume point
    /// `Rest(head_end + 1)`.
    fn replay(
        &mut self,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        if self.setup.schedule.start().0 > 0 {
            self.run.banks = self.run.head_banks.take().ok_or_else(|| {
                TrackError::Invalid("reverse pass without the head's banks".into())
            })?;
        }
        let mut spool = self
            .run
            .spool
            .take()
            .ok_or_else(|| TrackError::Invalid("first stretch without a spool".into()))?;
        spool.replay_ascending(&mut |n, b| sink.write(n, b))?;
        drop(spool);
        let head_end = self.setup.schedule.head_end();
        let select = &self.setup.select;
        for b in self.run.banks.iter_mut() {
            b.prune(head_end.key(), false, select);
        }
        self.drop_finished(head_end);
        self.run.stage = Stage::Rest(head_end.next());
        stop_if(obs.at_resume_point(self, self.run.stage)?, self.run.stage)
    }

    /// A frame the source did not deliver: every object's tracked memories are dropped (the
    /// conditioning ones stay), so tracking starts again from the prompts after it.
    fn frame_failed(&mut self, counted: bool) {
        for b in self.run.banks.iter_mut() {
            b.retain_tracked(|_| false);
        }
        if counted {
            self.run.done += 1;
        }
    }

    /// A forward leg over processed indices `from .. to` of the head (results to the spool,
    /// banks unpruned) or the rest (results to the sink, banks pruned): the active frames
    /// decoded in one go, the idle ones in between processed without decoding.
    fn forward(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
        pass: Pass,
        from: ProcIdx,
        to: ProcIdx,
    ) -> Result<(), TrackError> {
        let numbers = self.setup.schedule.decoded(from, to);
        let idle = self.idle_seconds(frames, from, to)?;
        let mut idle = idle.into_iter();
        let mut next = from;
        {
            let mut cb = |fi: FrameInput| -> Result<(), TrackError> {
                let t = self
                    .setup
                    .schedule
                    .index_of(fi.number)
                    .filter(|&t| t >= next && t < to)
                    .ok_or_else(|| bad_frame(fi.number))?;
                while next < t {
                    self.forward_gap(next, &mut idle, pass, sink, obs)?;
                    next = next.next();
                }
                self.forward_one(t, Slot::Decoded(fi), pass, sink, obs)?;
                next = t.next();
                Ok(())
            };
            frames.for_each_frame(&numbers, &mut cb)?;
        }
        while next < to {
            self.forward_gap(next, &mut idle, pass, sink, obs)?;
            next = next.next();
        }
        Ok(())
    }

    /// A processed index of a forward leg that the source did not deliver: an idle frame is
    /// processed as such; an active one was skipped by the source (a failed frame).
    fn forward_gap(
        &mut self,
        t: ProcIdx,
        idle: &mut dyn Iterator<Item = f64>,
        pass: Pass,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        if self.setup.schedule.any_active(t) {
            self.frame_failed(true);
            return Ok(());
        }
        // The idle frames' times come in ascending order.
        let slot = self.idle_slot(t, || idle.next())?;
        self.forward_one(t, slot, pass, sink, obs)
    }

    /// One processed frame of a forward leg: tracked, its result to the spool (head) or the
    /// sink, progress, then the observer at the new stage.
    fn forward_one(
        &mut self,
        t: ProcIdx,
        slot: Slot,
        pass: Pass,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        let number = slot.number();
        let bytes = match self.process(t, slot, pass, sink, obs)? {
            Processed::Done(b) => b,
            Processed::StopRequested => return self.stop_in_frame(obs),
        };
        if let Some(bytes) = bytes {
            match (pass.spooled(), self.run.spool.as_mut()) {
                (true, Some(sp)) => sp.push(number, &bytes)?,
                (true, None) => {
                    return Err(TrackError::Invalid("head without a spool".into()));
                }
                (false, _) => sink.write(number, &bytes)?,
            }
        }
        self.tracked(pass, t, number, obs)
    }

    /// After processed frame `t` of `pass`: counted, progress, the new stage, the observer.
    fn tracked(
        &mut self,
        pass: Pass,
        t: ProcIdx,
        number: FrameNo,
        obs: &mut dyn Observer,
    ) -> Result<(), TrackError> {
        if self.setup.schedule.counted(pass, t) {
            self.run.done += 1;
        }
        obs.progress(Progress::Tracked {
            frame: number,
            done: self.run.done,
            total: self.setup.schedule.len(),
        });
        self.run.stage = Stage::after(pass, t);
        stop_if(obs.at_resume_point(self, self.run.stage)?, self.run.stage)
    }

    /// The observer stopped a frame half-way (undone): it sees the stage before the frame again,
    /// so that it can save it, and the run stops there.
    fn stop_in_frame(&mut self, obs: &mut dyn Observer) -> Result<(), TrackError> {
        let at = self.run.stage;
        obs.at_resume_point(self, at)?;
        Err(TrackError::Stopped(at))
    }

    /// The times of the written idle frames of processed indices `from .. to` (ascending),
    /// from the frame source without decoding where it can.
    fn idle_seconds(
        &self,
        frames: &mut dyn FrameSource,
        from: ProcIdx,
        to: ProcIdx,
    ) -> Result<Vec<f64>, TrackError> {
        let numbers = self.setup.schedule.idle_written(from, to);
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let secs = frames.frame_seconds(&numbers)?;
        if secs.len() != numbers.len() {
            return Err(TrackError::Video(format!(
                "asked for the times of {} frames from {}, got {}",
                numbers.len(),
                numbers[0],
                secs.len()
            )));
        }
        Ok(secs)
    }

    /// The idle slot of processed index `t` (which no object is active on; else the frame was
    /// not delivered), taking its time from `next_seconds` (the next of
    /// [`Self::idle_seconds`] in the pass's order) if it is written.
    fn idle_slot(
        &self,
        t: ProcIdx,
        next_seconds: impl FnOnce() -> Option<f64>,
    ) -> Result<Slot, TrackError> {
        let number = self.setup.schedule.frame(t);
        if self.setup.schedule.any_active(t) {
            return Err(missing_frame(number));
        }
        let seconds = if self.setup.schedule.is_written(t) {
            next_seconds().ok_or_else(|| missing_frame(number))?
        } else {
            f64::NAN
        };
        Ok(Slot::Idle { number, seconds })
    }

    /// A chunk of the reverse pass (on the reverse banks): the active frames of `lo ..= hi`
    /// decoded first, then processed from `hi` down to `lo`, results to the spool.
    fn reverse_chunk(
        &mut self,
        frames: &mut dyn FrameSource,
        sink: &mut dyn ResultSink,
        obs: &mut dyn Observer,
        lo: ProcIdx,
        hi: ProcIdx,
    ) -> Result<(), TrackError> {
        let s = self.setup.schedule.start();
        let numbers = self.setup.schedule.decoded(lo, hi.next());
        let mut imgs: Vec<Option<FrameInput>> = (0..numbers.len()).map(|_| None).collect();
        frames.for_each_frame(&numbers, &mut |fi| {
            let k = numbers
                .binary_search(&fi.number)
                .map_err(|_| bad_frame(fi.number))?;
            imgs[k] = Some(fi);
            Ok(())
        })?;
        let idle = self.idle_seconds(frames, lo, hi.next())?;
        // Descending here: the decoded frames and the idle times are taken from the end.
        let (mut ka, mut ki) = (numbers.len(), idle.len());
        for t in (lo.0..=hi.0).rev().map(ProcIdx) {
            let number = self.setup.schedule.frame(t);
            let slot = if self.setup.schedule.any_active(t) {
                ka = ka.checked_sub(1).ok_or_else(|| missing_frame(number))?;
                match imgs[ka].take() {
                    Some(fi) => Slot::Decoded(fi),
                    None => {
                        // Skipped by the source: a failed frame.
                        self.frame_failed(t != s);
                        continue;
                    }
                }
            } else {
                self.idle_slot(t, || {
                    ki = ki.checked_sub(1)?;
                    idle.get(ki).copied()
                })?
            };
            let bytes = match self.process(t, slot, Pass::Reverse, sink, obs)? {
                Processed::Done(b) => b,
                Processed::StopRequested => return self.stop_in_frame(obs),
            };
            if let Some(bytes) = bytes {
                self.run
                    .spool
                    .as_mut()
                    .ok_or_else(|| TrackError::Invalid("reverse without a spool".into()))?
                    .push(number, &bytes)?;
            }
            self.tracked(Pass::Reverse, t, number, obs)?;
        }
        Ok(())
    }

    /// The run's state at its current stage (not [`Stage::Start`]; see [`Self::can_save`]):
    /// the banks, inside the reverse pass also the head's banks, and inside the first stretch
    /// the spool's length and checksum (the spool is synced to disk first; it must stay as it
    /// is up to that length).
    pub fn save_state(&self) -> Result<Vec<u8>, TrackError> {
        let stage = self.run.stage;
        if !self.can_save() {
            return Err(TrackError::Invalid(format!(
                "no resumable state at {stage:?}{}",
                if self.setup.cfg.spool_file.is_none() {
                    " (no spool file set)"
                } else {
                    ""
                }
            )));
        }
        let spool = match (stage.in_first_stretch(), &self.run.spool) {
            (true, Some(sp)) => Some(sp.sync()?),
            (true, None) => {
                return Err(TrackError::Invalid("first stretch without a spool".into()));
            }
            (false, _) => None,
        };
        let banks = bank::save_banks(&self.run.banks)?;
        let head = match (&self.run.head_banks, stage) {
            (Some(f), Stage::Reverse(_)) => Some(bank::save_banks(f)?),
            _ => None,
        };
        state::encode(&Saved {
            stage,
            spool,
            banks: &banks,
            head_banks: head.as_deref(),
            head_end: Some(self.setup.schedule.head_end()),
        })
    }

    /// Checks a state of [`Self::save_state`] (its checksum, that it fits the schedule) and
    /// reopens the spool it refers to (checked against its checksum).
    fn check_saved<'b>(&mut self, bytes: &'b [u8]) -> Result<Saved<'b>, TrackError> {
        let saved = state::decode(bytes)?;
        let stage = saved.stage;
        if let Some(he) = saved.head_end {
            // Only a ranked policy extends the head.
            let fits = (he == self.setup.schedule.min_head_end()
                || self.setup.select.policy.ranked().is_some())
                && self.setup.schedule.set_head_end(he);
            if !fits {
                return Err(TrackError::State(format!(
                    "saved with head end {he}, which does not fit this run (head end {} under \
                     memory policy {}, {} processed frames)",
                    self.setup.schedule.min_head_end(),
                    self.setup.select.policy,
                    self.setup.schedule.len()
                )));
            }
        }
        let schedule = &self.setup.schedule;
        let head_needed = matches!(stage, Stage::Reverse(_));
        if !schedule.fits(stage) || head_needed != saved.head_banks.is_some() {
            return Err(TrackError::State(format!(
                "saved at {stage:?}, which does not fit this run (first prompt {}, head end {}, \
                 {} processed frames)",
                schedule.start(),
                schedule.head_end(),
                schedule.len()
            )));
        }
        if let Some(mark) = saved.spool {
            let path = self.setup.cfg.spool_file.as_ref().ok_or_else(|| {
                TrackError::Invalid("a first-stretch state needs the spool file".into())
            })?;
            self.run.spool = Some(spool::Spool::reopen(path, mark)?);
        }
        Ok(saved)
    }

    /// Restores a checked state (after the pre-pass, whose banks it replaces).
    fn restore(&mut self, saved: Saved<'_>) -> Result<Stage, TrackError> {
        let stage = saved.stage;
        let n = self.run.banks.len();
        let load = |b: &[u8], what: &str| -> Result<Vec<ObjectBank>, TrackError> {
            let banks = bank::load_banks(b, self.device())?;
            if banks.len() != n {
                return Err(TrackError::State(format!(
                    "{what} hold {} objects, the run has {n}",
                    banks.len()
                )));
            }
            Ok(banks)
        };
        let banks = load(saved.banks, "saved banks")?;
        let head = saved
            .head_banks
            .map(|h| load(h, "saved head banks"))
            .transpose()?;
        self.run.banks = banks;
        self.run.head_banks = head;
        self.run.done = self.setup.schedule.done_before(stage);
        Ok(stage)
    }
}
