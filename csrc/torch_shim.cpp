// densam's small C++ shim over libtorch (compiled by build.rs with the `cc` crate):
// the TF32 switches of at::globalContext(), the CUDA caching allocator's statistics and the
// device's free memory, and
// pinning a host tensor without the deprecated device argument.
// The allocator is reached through c10's device-generic registry (c10::getDeviceAllocator), so
// only libc10 is linked and no CUDA header is needed: when libtorch's CUDA library is not
// loaded (CPU-only libtorch, no GPU) the registry has no CUDA allocator and the calls return -1.
// DENSAM_HAVE_CUDA is defined when libtorch ships libc10_cuda.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

extern "C" {

// A pinned (page-locked) copy of the host tensor `t` (an `at::Tensor*`, as tch's C_tensor), or
// null on a libtorch error (no CUDA, ...). `Tensor::pin_memory()` without the device argument,
// which libtorch 2.11 deprecates with a warning printed at every call.
void* densam_pin_memory(void* t) {
  try {
    auto* src = static_cast<at::Tensor*>(t);
    return new at::Tensor(src->pin_memory());
  } catch (...) {
    return nullptr;
  }
}

// Allows (1) or forbids (0) TF32 in cuDNN convolutions and cuBLAS matmuls. Returns 0, or -1 on
// a libtorch error.
int densam_set_allow_tf32(int allow) {
  try {
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    at::globalContext().setAllowTF32CuBLAS(allow != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Bit 0: cuDNN TF32 allowed; bit 1: cuBLAS TF32 allowed; -1 on error.
int densam_get_allow_tf32() {
  try {
    int r = 0;
    if (at::globalContext().allowTF32CuDNN()) r |= 1;
    if (at::globalContext().allowTF32CuBLAS()) r |= 2;
    return r;
  } catch (...) {
    return -1;
  }
}

// Whether this build can read CUDA allocator statistics.
int densam_has_cuda_stats() {
#ifdef DENSAM_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

// Aggregate allocator statistics of `device`: out[0] peak allocated, out[1] peak reserved,
// out[2] current allocated, out[3] current reserved (bytes). Returns 0, or -1 when unavailable.
int densam_cuda_memory_stats(int device, int64_t* out) {
#ifdef DENSAM_HAVE_CUDA
  try {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr || !alloc->initialized()) return -1;
    auto stats = alloc->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = stats.allocated_bytes[0].peak;
    out[1] = stats.reserved_bytes[0].peak;
    out[2] = stats.allocated_bytes[0].current;
    out[3] = stats.reserved_bytes[0].current;
    return 0;
  } catch (...) {
    return -1;
  }
#else
  (void)device;
  (void)out;
  return -1;
#endif
}

// Resets the peak statistics of `device`. Returns 0, or -1 when unavailable.
int densam_cuda_reset_peak(int device) {
#ifdef DENSAM_HAVE_CUDA
  try {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr || !alloc->initialized()) return -1;
    alloc->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
#else
  (void)device;
  return -1;
#endif
}

// Free and total memory of `device` as the CUDA driver reports them (cudaMemGetInfo, through
// the CUDA allocator's getMemoryInfo): out[0] free, out[1] total (bytes). Memory the caching
// allocator holds but has not handed out counts as used here. Returns 0, or -1 when unavailable.
int densam_cuda_mem_info(int device, int64_t* out) {
#ifdef DENSAM_HAVE_CUDA
  try {
    auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (alloc == nullptr) return -1;
    auto info = alloc->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    out[0] = static_cast<int64_t>(info.first);
    out[1] = static_cast<int64_t>(info.second);
    return 0;
  } catch (...) {
    return -1;
  }
#else
  (void)device;
  (void)out;
  return -1;
#endif
}

}  // extern "C"
