//! Optional per-stage time accounting (`densam annotate --profile`): where a run's wall time
//! goes, split into the model's stages (image encoder, memory attention, mask decoder, memory
//! encoder) and the tracker's output step (video-resolution masks, device-to-host copy, RLE).
//!
//! Off by default and then free (one relaxed atomic load per scope). When on for a CUDA run,
//! every scope boundary synchronises the device so that asynchronous kernels are charged to the
//! stage that launched them; that removes CPU/GPU overlap, so a profiled run is somewhat slower
//! than a plain one and its totals are an upper bound per stage.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// A timed stage. Scopes of different stages never nest, so the totals add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ImageEncoder,
    MemoryAttention,
    MaskDecoder,
    MemoryEncoder,
    /// Hole filling, memory/pointer bookkeeping and score read-back after a tracking step.
    StepPost,
    /// Video-resolution masks, device-to-host copy and run-length encoding of written frames.
    Output,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::ImageEncoder,
        Stage::MemoryAttention,
        Stage::MaskDecoder,
        Stage::MemoryEncoder,
        Stage::StepPost,
        Stage::Output,
    ];

    /// The key used in logs and `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ImageEncoder => "image_encoder",
            Stage::MemoryAttention => "memory_attention",
            Stage::MaskDecoder => "mask_decoder",
            Stage::MemoryEncoder => "memory_encoder",
            Stage::StepPost => "step_post",
            Stage::Output => "output_masks",
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

/// An open timing scope; charges its stage when dropped.
#[must_use = "a scope measures until it is dropped"]
pub struct Scope {
    stage: Stage,
    start: Option<Instant>,
}

/// Opens a scope for `stage` (a no-op when accounting is off or a scope is already open, so a
/// stage called from inside another is charged to the outer one).
pub fn scope(stage: Stage) -> Scope {
    if !enabled() || OPEN.swap(true, Ordering::Relaxed) {
        return Scope { stage, start: None };
    }
    sync();
    Scope {
        stage,
        start: Some(Instant::now()),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            sync();
            let i = Stage::ALL
                .iter()
                .position(|s| *s == self.stage)
                .unwrap_or(0);
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
            OPEN.store(false, Ordering::Relaxed);
        }
    }
}

/// Seconds per stage so far, in [`Stage::ALL`] order.
pub fn totals() -> Vec<(&'static str, f64)> {
    Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name(), NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9))
        .collect()
}

/// Number of scopes closed per stage, in [`Stage::ALL`] order.
pub fn calls() -> Vec<(&'static str, u64)> {
    Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name(), CALLS[i].load(Ordering::Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_charge_the_outer_stage() {
        enable(None);
        {
            let _a = scope(Stage::MaskDecoder);
            let _b = scope(Stage::MemoryEncoder);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let t = totals();
        assert!(t[2].1 >= 0.004, "{t:?}");
        assert_eq!(calls()[3].1, 0);
    }
}
