// Timing and comparison helpers shared by the CUTLASS probes (bench/cutlass_*_probe.cu).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "cuda/kernels.cuh"

namespace probe {

// cuBLASLt as the encoder calls it (lt_linear): a handle, a 32 MB workspace, the algorithm cache.
// y = x·Wᵀ + b with epilogue e (+ residual as C), fp16, default stream.
struct Lt {
  cublasLtHandle_t handle = nullptr;
  static constexpr size_t kWorkspaceBytes = 32u << 20;
  void* ws = nullptr;
  embedkit::cuda::LtAlgoCache algos;
  Lt() {
    cublasLtCreate(&handle);
    cudaMalloc(&ws, kWorkspaceBytes);
  }
  void linear(const __half* x, int M, int K, const __half* W, const __half* b, int N, __half* y, cublasLtEpilogue_t e,
              const __half* residual = nullptr) {
    embedkit::cuda::lt_linear(handle, CUDA_R_16F, x, M, K, W, b, N, y, e, ws, kWorkspaceBytes, 0, &algos, residual);
  }
};

// Mean ms of fn over reps runs after one warm-up, by CUDA events on the default stream.
template <class F>
float time_ms(F fn, int reps = 20) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  fn();
  cudaDeviceSynchronize();
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) fn();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}

inline std::vector<float> down(const __half* d, size_t n) {
  std::vector<__half> h(n);
  cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = __half2float(h[i]);
  return f;
}

// ‖a − b‖ / ‖b‖ of two fp16 device arrays.
inline double rel_l2(const __half* a, const __half* b, size_t n) {
  const auto x = down(a, n), y = down(b, n);
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) num += (x[i] - y[i]) * double(x[i] - y[i]), den += double(y[i]) * y[i];
  return std::sqrt(num / (den + 1e-30));
}

}  // namespace probe
