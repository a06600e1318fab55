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

// The same kernels with BERT's post-LayerNorms folded in (as ln_fold_gemm.h, but for small
// batches: 64-row tiles, PDL, and each LayerNorm's row statistics computed in the epilogue from
// the row sums the residual GEMM before it accumulated, so no statistics kernel sits between them;
// a small pass loses its 12 LayerNorm kernels). With r = 1/sqrt(Σ²/d − (Σ/d)² + eps) and
// n = −(Σ/d)·r from (Σ, Σ²) of the LayerNorm input's rows:
enum class SmallFold {
  Fold,            // D = r ⊙ (A·W′ᵀ) + n ⊗ s + c  = LN(A)·Wᵀ + b          (stats of A; v1 = s, v2 = c)
  FoldGelu,        // D = GELU_tanh(the same)
  LnResidualSums,  // D = A·Wᵀ + (C·r + n) ⊙ γ + bb = A·Wᵀ + b + LN(C)     (stats of C; v1 = γ, v2 = b + β)
                   //     and Σ, Σ² of D's rows (fp32, before rounding) added atomically to sum_out, sq_out
};
struct SmallFoldArgs {
  const float *sum_in, *sq_in;  // [M] row sums of the LayerNorm's input
  const float *v1, *v2;         // [N]
  float inv_d, eps;             // 1 / the LayerNorm's width, its epsilon
  float *sum_out = nullptr, *sq_out = nullptr;  // [M], zeroed before (LnResidualSums)
};
void small_fold_gemm(SmallFold kind, int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                     const SmallFoldArgs& f, cudaStream_t stream, bool pdl);

}  // namespace embedkit::cuda
