//! Process-wide settings of glibc's malloc, which libtorch's CPU tensors also use; applied by
//! `main` before any work (libtorch's static initialisers have run, but no tensor exists yet).
//!
//! glibc serves blocks above its mmap threshold (dynamic, at most 32 MiB) with a fresh `mmap`
//! and unmaps them on free. Batched tracking frees and re-allocates such blocks for every layer
//! of every frame (e.g. at 512 with 8 objects the memory-attention keys/values and FFN
//! activations are 15–64 MiB each), and each new mapping is zero-filled page by page by the
//! kernel: measured 5.1 s of system time in a 38 s run (scripts/bench-tracker-speed, 8
//! objects). With mmap off (`M_MMAP_MAX` 0) and trimming off (`M_TRIM_THRESHOLD` at its
//! maximum) freed blocks go back to malloc's free lists and are reused: system time 0.5 s, and
//! a lower peak RSS (the heap keeps the largest working set once instead of fresh mappings
//! adding up while the previous ones are still in use). Memory stays bounded because the
//! working set is: see scripts/bench-tracker-memory.
//!
//! A user's own `MALLOC_*` tuning (environment variables or `GLIBC_TUNABLES`) is left alone.

/// Turns glibc's mmap for large blocks and heap trimming off (Linux with glibc only; a no-op
/// elsewhere or when the environment already tunes malloc).
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
        });
        if !tuned {
            // SAFETY: mallopt only changes allocator parameters; it is called before any other
            // thread of ours exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        }
    }
}
