// What the current CUDA device is, for kernels that exist only as arch-specific code.
#pragma once
#include <cuda_runtime.h>

namespace embedkit::cuda {

// Compute capability 9.0 (H100/H200): where sm_90a code (wgmma, the CUTLASS sm90 kernels) runs.
inline bool current_device_is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;
}

// The current device's SM count, read once (CUTLASS's persistent schedulers size their grids by it).
inline int current_device_sm_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms;
  }();
  return n;
}

}  // namespace embedkit::cuda
