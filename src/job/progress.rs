//! What a run tells while it runs: a progress bar on a terminal (not with `--quiet`), plain log
//! lines at most every 5 s otherwise; one line per finished window with its timings and memory
//! figures ([`WindowClock`], also the windows of `run.json`); the peak resident set size.

use std::io::IsTerminal;
use std::time::Instant;

use super::state::WindowRecord;
use super::window::window_of;
use crate::tracker::{FrameNo, ProcIdx, Schedule};

/// Seconds between two plain progress lines.
const LOG_EVERY_S: f64 = 5.0;

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak RSS in MiB (0 when unknown), for log lines.
fn peak_rss_mib() -> u64 {
    peak_rss_bytes().unwrap_or(0) >> 20
}

/// Progress of the tracking: a bar or periodic log lines.
pub struct ProgressReport {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
    /// The last frame (and pass) whose objects were reported.
    objects_reported: Option<(bool, FrameNo)>,
}

impl ProgressReport {
    /// A bar over `total` processed frames when stderr is a terminal and not `quiet`, else
    /// log lines.
    pub fn new(total: usize, quiet: bool) -> Self {
        let bar = (std::io::stderr().is_terminal() && !quiet).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        ProgressReport {
            bar,
            last_log: Instant::now(),
            objects_reported: None,
        }
    }

    /// A prompted frame was run in the pre-pass.
    pub fn prompted(&mut self, frame: FrameNo) {
        match &self.bar {
            Some(b) => b.set_message(format!("prompts: frame {frame}")),
            None => tracing::debug!("prompt pre-pass: frame {frame}"),
        }
    }

    /// Original frame `frame` was tracked: `done` of `total` processed frames (both passes).
    pub fn tracked(&mut self, frame: FrameNo, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("frame {frame}, RSS peak {} MiB", peak_rss_mib()));
        } else if self.last_log.elapsed().as_secs_f64() >= LOG_EVERY_S || done == total {
            self.last_log = Instant::now();
            tracing::info!(
                "tracked {done}/{total} processed frames (frame {frame}); peak RSS {} MiB",
                peak_rss_mib()
            );
        }
    }

    /// Objects run so far on one frame with many (`prompting`: in the pre-pass): on the bar, in
    /// a log line every few seconds, otherwise once per frame and pass at debug level.
    pub fn objects(&mut self, prompting: bool, frame: FrameNo, done: usize, total: usize) {
        let what = if prompting {
            "prompt pre-pass"
        } else {
            "tracking"
        };
        if let Some(b) = &self.bar {
            b.set_message(format!("{what}: frame {frame}, objects {done}/{total}"));
        } else if self.last_log.elapsed().as_secs_f64() >= LOG_EVERY_S {
            self.last_log = Instant::now();
            tracing::info!("{what}: frame {frame}: {done}/{total} objects");
        } else if self.objects_reported != Some((prompting, frame)) {
            tracing::debug!("{what}: frame {frame}: {done}/{total} objects");
        }
        self.objects_reported = Some((prompting, frame));
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The windows finished so far in a sequential run (and when): their records, a log line each.
pub struct WindowClock {
    windows: Vec<WindowRecord>,
    last_window_end: Instant,
    processed_at_window_end: usize,
    window_frames: u64,
    num_frames: u64,
    device: tch::Device,
}

impl WindowClock {
    /// A clock that goes on from `windows` (those of a checkpoint), at processed index `next`.
    pub fn new(
        windows: Vec<WindowRecord>,
        next: usize,
        window_frames: u64,
        num_frames: u64,
        device: tch::Device,
    ) -> Self {
        WindowClock {
            windows,
            last_window_end: Instant::now(),
            processed_at_window_end: next,
            window_frames,
            num_frames,
            device,
        }
    }

    /// The windows finished so far.
    pub fn windows(&self) -> &[WindowRecord] {
        &self.windows
    }

    /// The windows finished so far, taken.
    pub fn into_windows(self) -> Vec<WindowRecord> {
        self.windows
    }

    /// Records the windows finished before processed index `next` of the final stretch;
    /// whether any was (a checkpoint is then due).
    pub fn advance(&mut self, schedule: &Schedule, next: ProcIdx) -> bool {
        let (window_frames, device) = (self.window_frames, self.device);
        let frame = |t: usize| schedule.frame(ProcIdx(t)).get();
        let next = next.get();
        // Windows finished: every window before the one of the next processed frame.
        let done_before = if next >= schedule.len() {
            u64::MAX
        } else {
            window_of(frame(next), window_frames)
        };
        let first_open = self.windows.last().map(|w| w.index + 1).unwrap_or(0);
        let last_done = window_of(frame(next - 1), window_frames);
        if !(done_before > first_open && last_done >= first_open) {
            return false;
        }
        let upto = last_done.min(done_before.saturating_sub(1));
        let n_new = upto + 1 - first_open;
        let wall = self.last_window_end.elapsed().as_secs_f64();
        let nproc = next - self.processed_at_window_end;
        for k in first_open..=upto {
            let first_frame = k * window_frames;
            let last_frame = ((k + 1) * window_frames - 1).min(self.num_frames - 1);
            self.windows.push(WindowRecord {
                index: k,
                first_frame,
                last_frame,
                wall_seconds: wall,
                processed_frames: nproc,
                fps: nproc as f64 / wall.max(1e-9),
                peak_rss_bytes: peak_rss_bytes(),
                peak_gpu_bytes: crate::model::cuda::peak_allocated_bytes(device),
                in_first_stretch: n_new > 1 || next == schedule.head_end().get() + 1,
            });
            tracing::info!(
                "window {k} (frames {first_frame}..={last_frame}) done: {nproc} processed frames \
                 in {wall:.1} s; peak RSS {} MiB{}",
                peak_rss_mib(),
                crate::model::cuda::peak_allocated_bytes(device)
                    .map(|b| format!("; peak GPU {} MiB", b >> 20))
                    .unwrap_or_default()
            );
        }
        crate::model::cuda::reset_peak_memory(device);
        self.last_window_end = Instant::now();
        self.processed_at_window_end = next;
        true
    }
}
