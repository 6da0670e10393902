//! Stop requests: SIGTERM, SIGINT and SIGUSR1 set a flag (async-signal-safe); the job checks it
//! after every frame, finishes the frame in hand, checkpoints and exits with
//! [`super::EXIT_INTERRUPTED`]. A second SIGINT while stopping ends the process at once.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGINT && STOP.load(Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers (idempotent).
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
        // SAFETY: the handler only touches atomics (async-signal-safe); the cast is the
        // documented way of passing a handler to `signal`.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The signal that requested the stop (0 if none).
pub fn signal_number() -> i32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// Name of a stop signal.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "signal",
    }
}
