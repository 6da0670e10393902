//! Optional per-section time accounting (`densam annotate --profile`): where a run's wall time
//! goes, split into sections: the model's stages (image encoder, memory attention, mask decoder,
//! memory encoder) and the tracker's output step (video-resolution masks, device-to-host copy,
//! RLE).
//!
//! Off by default and then free (one relaxed atomic load per scope). When on for a CUDA run,
//! every scope boundary synchronises the device so that asynchronous kernels are charged to the
//! section that launched them; that removes CPU/GPU overlap, so a profiled run is somewhat slower
//! than a plain one and its totals are an upper bound per section.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// A timed section of the run (named `Section`, not `Stage`: the tracker's `Stage` is its resume
/// point). Scopes of different sections never nest, so the totals add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    ImageEncoder,
    MemoryAttention,
    MaskDecoder,
    MemoryEncoder,
    /// Hole filling, memory/pointer bookkeeping and score read-back after a tracking step.
    StepPost,
    /// Video-resolution masks, device-to-host copy and run-length encoding of written frames.
    Output,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::ImageEncoder,
        Section::MemoryAttention,
        Section::MaskDecoder,
        Section::MemoryEncoder,
        Section::StepPost,
        Section::Output,
    ];

    /// The key used in logs and `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            Section::ImageEncoder => "image_encoder",
            Section::MemoryAttention => "memory_attention",
            Section::MaskDecoder => "mask_decoder",
            Section::MemoryEncoder => "memory_encoder",
            Section::StepPost => "step_post",
            Section::Output => "output_masks",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// CUDA device index to synchronise at scope boundaries, or -1.
static SYNC_DEVICE: AtomicI64 = AtomicI64::new(-1);
static NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static CALLS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// Set while a scope is open (scopes are taken on the tracking thread only).
static OPEN: AtomicBool = AtomicBool::new(false);

/// Turns accounting on; `cuda_device`: the CUDA device to synchronise at scope boundaries.
pub fn enable(cuda_device: Option<usize>) {
    SYNC_DEVICE.store(cuda_device.map_or(-1, |d| d as i64), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether accounting is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn sync() {
    let d = SYNC_DEVICE.load(Ordering::Relaxed);
    if d >= 0 {
        tch::Cuda::synchronize(d);
    }
}

/// An open timing scope; charges its section when dropped.
#[must_use = "a scope measures until it is dropped"]
pub struct Scope {
    section: Section,
    start: Option<Instant>,
}

/// Opens a scope for `section` (a no-op when accounting is off or a scope is already open, so
/// a section entered from inside another is charged to the outer one).
pub fn scope(section: Section) -> Scope {
    if !enabled() || OPEN.swap(true, Ordering::Relaxed) {
        return Scope {
            section,
            start: None,
        };
    }
    sync();
    Scope {
        section,
        start: Some(Instant::now()),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            sync();
            let i = Section::ALL
                .iter()
                .position(|s| *s == self.section)
                .unwrap_or(0);
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
            OPEN.store(false, Ordering::Relaxed);
        }
    }
}

/// Seconds per section so far, in [`Section::ALL`] order.
pub fn totals() -> Vec<(&'static str, f64)> {
    Section::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name(), NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9))
        .collect()
}

/// Number of scopes closed per section, in [`Section::ALL`] order.
pub fn calls() -> Vec<(&'static str, u64)> {
    Section::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name(), CALLS[i].load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_charge_the_outer_section() {
        enable(None);
        {
            let _a = scope(Section::MaskDecoder);
            let _b = scope(Section::MemoryEncoder);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let t = totals();
        assert!(t[2].1 >= 0.004, "{t:?}");
        assert_eq!(calls()[3].1, 0);
    }
}
