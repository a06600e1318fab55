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

}  // namespace embedkit::cuda
