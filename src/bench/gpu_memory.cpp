// CUDA runtime queries for EmbedBench's monitors (compiled with EMBEDKIT_BENCH_CUDA in CUDA
// builds; without it both answer "unknown").
#include <optional>
#include <string>

#ifdef EMBEDKIT_BENCH_CUDA
#include <cuda_runtime.h>
#endif

#include "bench/monitors.h"

namespace embedkit::bench {

std::optional<size_t> cuda_memory_used() {
#ifdef EMBEDKIT_BENCH_CUDA
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state for the engine
    return std::nullopt;
  }
  return total_b - free_b;
#else
  return std::nullopt;
#endif
}

std::string cuda_pci_bus_id() {
#ifdef EMBEDKIT_BENCH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return "";
  }
  char buf[32] = {};
  if (cudaDeviceGetPCIBusId(buf, sizeof buf, 0) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return buf;
#else
  return "";
#endif
}

}  // namespace embedkit::bench
