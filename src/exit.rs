//! The process exit codes of every densam command (`annotate`, `merge`, `export`, `render`,
//! `eval`, `plan`), in one place so that every layer reports bad input, damaged state and output
//! failures alike; the README's exit-code table and the Python package's exceptions follow them.

/// Success, or a finished run re-run (nothing changed).
pub const EXIT_OK: i32 = 0;
/// A failure while running (tracking, internal error).
pub const EXIT_FAILURE: i32 = 1;
/// Bad options (clap's own usage errors also exit 2).
pub const EXIT_USAGE: i32 = 2;
/// Bad input: video missing or undecodable, prompts malformed or unusable, unknown video id,
/// a prompt warning under `--strict`.
pub const EXIT_INPUT: i32 = 3;
/// A checkpoint or finished result made with other parameters (without `--restart`), another
/// video's result or checkpoint in the output folder, or a damaged checkpoint or partial output.
pub const EXIT_CHECKPOINT: i32 = 4;
/// The output folder is not writable, or writing failed (disk full).
pub const EXIT_OUTPUT: i32 = 5;
/// The model checkpoint is missing or invalid, or the device is unusable.
pub const EXIT_MODEL: i32 = 6;
/// The run finished, but some frames could not be decoded: their lines are missing and the
/// objects were re-seeded from their prompts after them (listed in `run.json` under
/// `failures`). Without `--strict` only.
pub const EXIT_FRAMES_FAILED: i32 = 7;
/// The output folder is in use: another `annotate` run holds its lock. Nothing was changed.
pub const EXIT_BUSY: i32 = 8;
/// Stopped by SIGTERM, SIGINT or SIGUSR1 after checkpointing (EX_TEMPFAIL): re-run the same
/// command to continue.
pub const EXIT_INTERRUPTED: i32 = 75;
