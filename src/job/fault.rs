//! Fault injection for the job's kill / stop / resume tests, compiled only with the cargo
//! feature `fault-injection` (off by default: release binaries have no hooks; without the
//! feature every function here is an empty inline call).
//!
//! The hooks, read from the environment once:
//! - `DENSAM_TEST_SIGTERM_AT=start|checkpoint-load|model-load|prepass` raises SIGTERM at that
//!   point of the start-up ([`Point`]);
//! - `DENSAM_TEST_KILL_AT_FRAME=N` raises SIGKILL when frame N has been tracked (before the
//!   checkpoint after it);
//! - `DENSAM_TEST_SIGTERM_AT_FRAME=N` raises SIGTERM there.

/// A point of the start-up where `DENSAM_TEST_SIGTERM_AT` can stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Right after the signal handlers are installed.
    Start,
    /// Before the job checkpoint is read.
    CheckpointLoad,
    /// Before the model is loaded.
    ModelLoad,
    /// At the first prompted frame of the prompt pre-pass.
    Prepass,
}

#[cfg(feature = "fault-injection")]
mod hooks {
    use std::sync::OnceLock;

    use super::Point;

    struct Hooks {
        sigterm_at: Option<String>,
        kill_at_frame: Option<u64>,
        sigterm_at_frame: Option<u64>,
    }

    fn hooks() -> &'static Hooks {
        static H: OnceLock<Hooks> = OnceLock::new();
        H.get_or_init(|| {
            let frame = |k: &str| std::env::var(k).ok().and_then(|s| s.parse().ok());
            Hooks {
                sigterm_at: std::env::var("DENSAM_TEST_SIGTERM_AT").ok(),
                kill_at_frame: frame("DENSAM_TEST_KILL_AT_FRAME"),
                sigterm_at_frame: frame("DENSAM_TEST_SIGTERM_AT_FRAME"),
            }
        })
    }

    fn raise(sig: libc::c_int) {
        // SAFETY: raising a signal on this process.
        unsafe { libc::raise(sig) };
    }

    pub fn at(point: Point) {
        let name = match point {
            Point::Start => "start",
            Point::CheckpointLoad => "checkpoint-load",
            Point::ModelLoad => "model-load",
            Point::Prepass => "prepass",
        };
        if hooks().sigterm_at.as_deref() == Some(name) {
            raise(libc::SIGTERM);
        }
    }

    pub fn tracked(frame: u64) {
        let h = hooks();
        if h.kill_at_frame == Some(frame) {
            raise(libc::SIGKILL);
        }
        if h.sigterm_at_frame == Some(frame) {
            raise(libc::SIGTERM);
        }
    }
}

/// The start-up reached `point`.
#[inline(always)]
pub fn at(point: Point) {
    #[cfg(feature = "fault-injection")]
    hooks::at(point);
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// Original frame `frame` was tracked (either pass).
#[inline(always)]
pub fn tracked(frame: u64) {
    #[cfg(feature = "fault-injection")]
    hooks::tracked(frame);
    #[cfg(not(feature = "fault-injection"))]
    let _ = frame;
}
