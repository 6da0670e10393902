//! `--batch-objects auto`: how many objects a tracked frame runs through the model together
//! (docs/sam2-inference.md §7.10), chosen at the start of a run. On CUDA from the device's free
//! memory and an estimate of the bytes one object of a batch needs ([`Footprint`]); on the CPU
//! a fixed [`CPU_AUTO`]. The number chosen changes the masks by about fp32 rounding (a batch pads
//! its objects' memories to the longest and masks the padding), so it is a run parameter:
//! recorded in the checkpoint and `run.json`, and a resume or re-run with `auto` takes the
//! recorded number instead of choosing again (`RunParams::adopt_auto_batch`).

use crate::model::config::{MAX_OBJ_PTRS, MEM_DIM, NUM_MASKMEM};
use crate::model::layers::Precision;

/// `auto` on the CPU: 16, the default number. There is no device memory to size against (the
/// tensors live in the same RAM as everything else, sized by `--mem` on a cluster), and larger
/// batches are not expected to make the CPU faster (not measured): each op already uses every
/// thread, and what batching shares across objects (the first memory-attention layer's
/// self-attention over the frame's features) is shared by 16 as well as by more. A fixed number also keeps a CPU run's
/// parameters, and so its results, independent of the machine's free memory.
pub const CPU_AUTO: usize = 16;

/// What the per-object estimate depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// The model input side S (the memory features are S/16 square).
    pub image_size: i64,
    /// Video width and height (the masks are upsampled to it).
    pub video_size: [u32; 2],
    /// Objects in the run.
    pub objects: usize,
    /// The most conditioning frames any object attends to (its prompted frames, at most
    /// `--max-cond-frames`).
    pub cond_frames: usize,
    /// The model checkpoint's size in bytes (its fp32 weights).
    pub checkpoint_bytes: u64,
    pub dtype: Precision,
}

/// Bytes of an f32; every term below counts f32 tensors, also where bf16 runs (bf16 halves
/// the activations: more margin).
const F32: u64 = 4;

impl Footprint {
    /// Side of the memory features, S/16, and their token count L.
    fn tokens(&self) -> u64 {
        let f = (self.image_size.max(16) / 16) as u64;
        f * f
    }

    /// Transient device bytes per object of a batch, as the sum of the stages' largest
    /// tensors (L = (S/16)² tokens, Nk = M·L + 4·16 memory-attention keys for M = conditioning
    /// + 6 recent memories and 16 object pointers of 4 tokens):
    /// - memory attention, cross-attention of one layer: the memories, their position encoding
    ///   and their sum (3 · Nk · 64), keys projected to 256 and rotated (RoPE in f32, about three
    ///   Nk · 256 tensors) and the projected values (5 · Nk · 256 in all), and the queries and
    ///   residual stream (8 · L · 256);
    /// - mask decoder: its upscaled features (3 · 32 · 16L) and up to 4 masks upsampled to S²
    ///   (4 · 256L);
    /// - memory encoder: the mask downsampler (about 8 · S² = 8 · 256L) and the fuser's
    ///   1024-channel blocks (4 · 1024 · L);
    /// - the mask at video size and its run-length boundaries (about 4 f32 per pixel).
    ///
    /// The stages run one after the other and free their tensors, so the sum is about twice
    /// the largest (the memory attention) — the margin for the caching allocator's rounding and
    /// for kernels' workspaces. At 1024 with one prompted frame and a 1408² video: ~360 MiB.
    pub fn per_object_bytes(&self) -> u64 {
        let l = self.tokens();
        let m = (self.cond_frames.max(1) as u64) + (NUM_MASKMEM as u64 - 1);
        let nk = m * l + 4 * MAX_OBJ_PTRS as u64;
        let mem = MEM_DIM as u64;
        let attention = 3 * nk * mem + 5 * nk * 256 + 8 * l * 256;
        let decoder = 3 * 32 * 16 * l + 4 * 256 * l;
        let encoder = 8 * 256 * l + 4 * 1024 * l;
        let [w, h] = self.video_size;
        let output = 4 * u64::from(w) * u64::from(h);
        (attention + decoder + encoder + output) * F32
    }

    /// Bytes each object's bank keeps on the device for the whole run, batched or not: the
    /// memory features of its conditioning frames and of the recent frames (64 · L each, at
    /// most M + the frame in hand), and its conditioning frames' low-res masks ((S/4)² each).
    pub fn bank_bytes(&self) -> u64 {
        let l = self.tokens();
        let m = (self.cond_frames.max(1) as u64) + NUM_MASKMEM as u64;
        let low_res = 16 * l;
        (m * MEM_DIM as u64 * l + self.cond_frames.max(1) as u64 * low_res) * F32
    }

    /// Bytes the run needs besides the objects: the weights (plus one bf16 copy of each under
    /// bf16), the image encoder's activations on one frame (Hiera's first stage holds a few
    /// dozen (S/4)² × 96 tensors at its peak: budgeted as 40) and 512 MiB for the libraries'
    /// workspaces (cuBLAS, cuDNN): ~1.7 GiB for tiny at 1024 under bf16.
    pub fn fixed_bytes(&self) -> u64 {
        let weights = match self.dtype {
            Precision::Bf16 => self.checkpoint_bytes + self.checkpoint_bytes / 2,
            _ => self.checkpoint_bytes,
        };
        let quarter = (self.image_size.max(4) / 4) as u64;
        let encoder = 40 * quarter * quarter * 96 * F32;
        weights + encoder + (512 << 20)
    }
}

/// The number chosen and why (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub batch: usize,
    pub reason: String,
}

/// The share of the memory left after the fixed costs and the banks that batches may take
/// (the rest absorbs the caching allocator's fragmentation and the estimate's misses).
const USABLE: f64 = 0.8;

/// `auto` on CUDA: `B = ⌊0.8 · (available − fixed − objects · bank) / per_object⌋`, clamped
/// to 1 ..= objects, where `available` is the driver's free memory plus what the caching
/// allocator holds unused. `available` is `None` when the free memory could not be read: then
/// [`CPU_AUTO`], as on the CPU.
pub fn choose_cuda(available: Option<u64>, fp: &Footprint) -> Choice {
    let objects = fp.objects.max(1);
    let Some(available) = available else {
        return Choice {
            batch: CPU_AUTO.min(objects),
            reason: format!("the GPU's free memory could not be read: {CPU_AUTO}"),
        };
    };
    let per_object = fp.per_object_bytes();
    let banks = fp.bank_bytes().saturating_mul(objects as u64);
    let budget = available
        .saturating_sub(fp.fixed_bytes())
        .saturating_sub(banks);
    let fits = (budget as f64 * USABLE / per_object.max(1) as f64).floor() as usize;
    let batch = fits.clamp(1, objects);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    Choice {
        batch,
        reason: format!(
            "{:.0} MiB available, {:.0} MiB fixed, banks {objects} × {:.0} MiB, {:.0} MiB per \
             object of a batch: room for {fits}, {objects} object(s)",
            mib(available),
            mib(fp.fixed_bytes()),
            mib(fp.bank_bytes()),
            mib(per_object),
        ),
    }
}

/// `auto` on the CPU: [`CPU_AUTO`].
pub fn choose_cpu() -> Choice {
    Choice {
        batch: CPU_AUTO,
        reason: format!("on the CPU: {CPU_AUTO}"),
    }
}

/// `auto` on `device`: [`choose_cuda`] with the device's free memory plus the caching
/// allocator's unused blocks, or [`choose_cpu`].
pub fn choose(device: tch::Device, fp: &Footprint) -> Choice {
    if !device.is_cuda() {
        return choose_cpu();
    }
    let available = crate::model::cuda::free_memory(device).map(|(free, _total)| {
        let cached = crate::model::cuda::memory_stats(device)
            .map_or(0, |s| s.reserved.saturating_sub(s.allocated));
        free + cached
    });
    choose_cuda(available, fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(objects: usize) -> Footprint {
        Footprint {
            image_size: 1024,
            video_size: [1408, 1408],
            objects,
            cond_frames: 1,
            checkpoint_bytes: 156_000_000,
            dtype: Precision::Bf16,
        }
    }

    #[test]
    fn the_estimate_at_1024() {
        let fp = footprint(8);
        let mib = |b: u64| b >> 20;
        // The doc's figures: ~360 MiB per object, ~8 MiB of bank, ~1.7 GiB fixed.
        assert_eq!(mib(fp.per_object_bytes()), 359);
        assert_eq!(mib(fp.bank_bytes()), 8);
        assert_eq!(mib(fp.fixed_bytes()), 1695);
        // More conditioning frames read, more keys.
        let more = Footprint {
            cond_frames: 3,
            ..fp.clone()
        };
        assert!(more.per_object_bytes() > fp.per_object_bytes());
        // A quarter of the pixels at 512.
        let small = Footprint {
            image_size: 512,
            ..fp
        };
        assert!(small.per_object_bytes() * 3 < footprint(8).per_object_bytes());
    }

    #[test]
    fn cuda_choice_follows_free_memory_and_stays_in_range() {
        let gib = 1u64 << 30;
        let fp = footprint(40);
        let on = |free: u64| choose_cuda(Some(free), &fp).batch;
        // An 80 GB card holds all 40 objects; a busy one fewer; none left still gives 1.
        assert_eq!(on(78 * gib), 40);
        let b = on(8 * gib);
        assert!((1..40).contains(&b), "{b}");
        // (8 GiB − 1.7 GiB − 40 × 8 MiB) × 0.8 / 359 MiB = 13.7
        assert_eq!(b, 13);
        assert_eq!(on(gib), 1);
        assert_eq!(on(0), 1);
        assert!(on(16 * gib) > b);
        // Never more than the objects.
        assert_eq!(choose_cuda(Some(78 * gib), &footprint(3)).batch, 3);
        // Unreadable free memory: the CPU's number (at most the objects).
        assert_eq!(choose_cuda(None, &fp).batch, CPU_AUTO);
        assert_eq!(choose_cuda(None, &footprint(2)).batch, 2);
    }

    #[test]
    fn cpu_choice_is_fixed() {
        assert_eq!(choose(tch::Device::Cpu, &footprint(40)).batch, CPU_AUTO);
        assert_eq!(choose(tch::Device::Cpu, &footprint(2)).batch, CPU_AUTO);
        assert_eq!(CPU_AUTO, 16);
    }
}
