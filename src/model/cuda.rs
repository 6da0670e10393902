//! CUDA runtime settings and statistics through densam's C++ shim (`csrc/torch_shim.cpp`,
//! compiled by build.rs): the TF32 policy, the caching allocator's peak memory, the device's free
//! memory, and pinned host copies for asynchronous uploads.
//!
//! TF32 policy: on CUDA, TF32 is disabled in cuDNN convolutions and cuBLAS matmuls (libtorch's
//! default allows it in cuDNN), so `--dtype fp32` matches the official fp32 reference run with
//! TF32 off. Under `--dtype bf16` every convolution and matmul runs in bf16, so TF32 changes
//! nothing there; it is disabled all the same, as `scripts/bench-gpu` does for the official run.

use std::sync::atomic::{AtomicU64, Ordering};

use tch::Device;

use super::layers::Precision;

unsafe extern "C" {
    fn densam_set_allow_tf32(allow: i32) -> i32;
    fn densam_get_allow_tf32() -> i32;
    fn densam_has_cuda_stats() -> i32;
    fn densam_cuda_memory_stats(device: i32, out: *mut i64) -> i32;
    fn densam_cuda_reset_peak(device: i32) -> i32;
    fn densam_pin_memory(t: *mut std::ffi::c_void) -> *mut std::ffi::c_void;
    fn densam_cuda_mem_info(device: i32, out: *mut i64) -> i32;
}

/// A pinned (page-locked) copy of the host tensor `t`, for an asynchronous copy to a GPU
/// (libtorch's caching host allocator reuses the blocks); `None` when pinning is unavailable.
/// Unlike tch's `Tensor::pin_memory(device)`, it does not make libtorch 2.11 print a
/// deprecation warning at every call.
pub fn pinned(t: &tch::Tensor) -> Option<tch::Tensor> {
    // SAFETY: `as_ptr` is tch's `at::Tensor*`, which the shim only reads; a non-null result is a
    // new heap `at::Tensor` whose ownership passes to the returned tch tensor.
    unsafe {
        let p = densam_pin_memory(t.as_ptr() as *mut std::ffi::c_void);
        (!p.is_null()).then(|| tch::Tensor::from_ptr(p as *mut torch_sys::C_tensor))
    }
}

/// The host tensor `t` on `device`: on a GPU through a pinned copy ([`pinned`]), asynchronously
/// on the current stream, so the host does not wait for the GPU (a plain `to_device` from
/// pageable memory synchronises the stream); elsewhere, or when pinning fails, `to_device`.
/// The values are the same either way.
pub fn upload(t: &tch::Tensor, device: Device) -> tch::Tensor {
    if device.is_cuda()
        && t.device() == Device::Cpu
        && let Some(p) = pinned(t)
    {
        return p.to_device_(device, p.kind(), true, false);
    }
    t.to_device(device)
}

/// Whether TF32 is allowed in (cuDNN convolutions, cuBLAS matmuls); `None` on a libtorch error.
pub fn tf32_allowed() -> Option<(bool, bool)> {
    // SAFETY: a plain C call into the shim; it catches every C++ exception.
    let r = unsafe { densam_get_allow_tf32() };
    (r >= 0).then_some((r & 1 != 0, r & 2 != 0))
}

/// Allows or forbids TF32 in both cuDNN and cuBLAS. Returns false on a libtorch error.
pub fn set_tf32(allow: bool) -> bool {
    // SAFETY: as above.
    unsafe { densam_set_allow_tf32(i32::from(allow)) == 0 }
}

/// Applies the TF32 policy of the module doc for a run on `device` in `precision`.
/// (`_precision` is kept for a policy that would differ per precision; today both disable it.)
pub fn apply_tf32_policy(device: Device, _precision: Precision) {
    if device.is_cuda() && !set_tf32(false) {
        tracing::warn!("could not disable TF32; fp32 convolutions may run in TF32");
    }
}

/// CUDA caching-allocator statistics of one device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    pub peak_allocated: u64,
    pub peak_reserved: u64,
    pub allocated: u64,
    pub reserved: u64,
}

/// The largest peak seen before the last reset (for the whole-run figure).
static RUN_PEAK: AtomicU64 = AtomicU64::new(0);

/// The allocator statistics of `device`; `None` on the CPU, without CUDA, or in a build whose
/// libtorch has no CUDA.
pub fn memory_stats(device: Device) -> Option<MemoryStats> {
    let Device::Cuda(index) = device else {
        return None;
    };
    // SAFETY: plain C calls; `out` holds the 4 values the shim writes.
    unsafe {
        if densam_has_cuda_stats() == 0 || !tch::Cuda::is_available() {
            return None;
        }
        let mut out = [0i64; 4];
        if densam_cuda_memory_stats(index as i32, out.as_mut_ptr()) != 0 {
            return None;
        }
        let u = |v: i64| v.max(0) as u64;
        Some(MemoryStats {
            peak_allocated: u(out[0]),
            peak_reserved: u(out[1]),
            allocated: u(out[2]),
            reserved: u(out[3]),
        })
    }
}

/// Peak bytes allocated on `device` since the last [`reset_peak_memory`].
pub fn peak_allocated_bytes(device: Device) -> Option<u64> {
    memory_stats(device).map(|s| s.peak_allocated)
}

/// Peak bytes allocated on `device` over the whole process (across resets).
pub fn run_peak_allocated_bytes(device: Device) -> Option<u64> {
    peak_allocated_bytes(device).map(|p| p.max(RUN_PEAK.load(Ordering::Relaxed)))
}

/// Starts a new peak-measuring period on `device` (a no-op off CUDA).
pub fn reset_peak_memory(device: Device) {
    if let (Some(p), Device::Cuda(index)) = (peak_allocated_bytes(device), device) {
        RUN_PEAK.fetch_max(p, Ordering::Relaxed);
        // SAFETY: a plain C call; the shim catches C++ exceptions.
        unsafe {
            densam_cuda_reset_peak(index as i32);
        }
    }
}

/// The free and total bytes of `device` as the CUDA driver reports them (memory the caching
/// allocator holds unused counts as used: add `reserved - allocated` of [`memory_stats`] for
/// what this process can still use). `None` on the CPU, without CUDA, or on a libtorch error.
/// Initialises CUDA on `device` first (a one-element tensor), as any use of it would.
pub fn free_memory(device: Device) -> Option<(u64, u64)> {
    let Device::Cuda(index) = device else {
        return None;
    };
    if !tch::Cuda::is_available() {
        return None;
    }
    let _init = tch::Tensor::f_zeros([1], (tch::Kind::Float, device)).ok()?;
    let mut out = [0i64; 2];
    // SAFETY: a plain C call; `out` holds the 2 values the shim writes; it catches exceptions.
    let r = unsafe { densam_cuda_mem_info(index as i32, out.as_mut_ptr()) };
    (r == 0).then(|| (out[0].max(0) as u64, out[1].max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_switch_round_trips_and_cpu_has_no_stats() {
        assert_eq!(memory_stats(Device::Cpu), None);
        assert_eq!(free_memory(Device::Cpu), None);
        assert_eq!(peak_allocated_bytes(Device::Cpu), None);
        reset_peak_memory(Device::Cpu);
        let before = tf32_allowed().expect("shim works");
        assert!(set_tf32(false));
        assert_eq!(tf32_allowed(), Some((false, false)));
        assert!(set_tf32(true));
        assert_eq!(tf32_allowed(), Some((true, true)));
        set_tf32(before.0);
    }

    #[test]
    fn pinned_copy_is_equal_or_unavailable() {
        // Without a GPU libtorch cannot pin (None, no crash); with one the copy is equal.
        let t = tch::Tensor::from_slice(&[1u8, 2, 3, 250]).view([2, 2]);
        if let Some(p) = pinned(&t) {
            assert!(p.equal(&t));
        }
    }
}
