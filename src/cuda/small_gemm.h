// Small-batch GEMMs as CUTLASS sm90 kernels launched with programmatic dependent launch (Hopper,
// sm_90a); see small_gemm.cu. Built when CUTLASS's headers are found (as ln_fold_gemm.h);
// callers check small_gemm_usable().
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace embedkit::cuda {

// True when these GEMMs were compiled in and the current device runs them (compute capability 9.0).
bool small_gemm_usable();

enum class SmallEpilogue {
  Bias,          // D = A·Wᵀ + b
  BiasGelu,      // D = GELU_tanh(A·Wᵀ + b)
  BiasResidual,  // D = A·Wᵀ + b + C   (C may be D: in place)
};

// fp16, row-major A [M, K], W [N, K] (nn.Linear), b [N], C and D [M, N]; K and N multiples of 8.
// pdl: launched with the programmatic-stream-serialization attribute (the kernel waits for the
// previous grid before it reads A or C, and lets the next one launch once its main loop is done).
void small_gemm(SmallEpilogue epi, int M, int N, int K, const __half* A, const __half* W, const __half* b,
                const __half* C, __half* D, cudaStream_t stream, bool pdl);

}  // namespace embedkit::cuda
