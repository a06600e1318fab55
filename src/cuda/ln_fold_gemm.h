// BERT's post-LayerNorms folded into the GEMMs around them (Hopper, sm_90a, CUTLASS epilogue
// visitor trees); see ln_fold_gemm.cu. Built when CUTLASS's headers are found (CMake:
// EMBEDKIT_CUTLASS_INCLUDE, fetched by scripts/install-deps.sh); callers check ln_fold_usable().
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "util/error.h"

namespace embedkit::cuda {

// True when the folded GEMMs were compiled in and the current device runs them (compute
// capability 9.0).
bool ln_fold_usable();

enum class FoldKind {
  Fold,        // D = r ⊙ (A·W′ᵀ) + n ⊗ s + c            = LN(A)·Wᵀ + b       (r, n: A's row stats)
  FoldGelu,    // D = GELU_tanh(the same)                  = GELU(LN(A)·Wᵀ + b)
  LnResidual,  // D = A·Wᵀ + (C·r + n) ⊙ γ + (b + β)       = A·Wᵀ + b + LN(C)   (r, n: C's row stats)
  LnResidualSums,  // the same, and each row's Σ and Σ² of D (fp32) added atomically into sum, sum_sq
};

// fp16, row-major A [M, K], W [N, K], C and D [M, N]; r, n per row (fp32 [M]); v1, v2 per
// column (fp32 [N]): s, c for the folds, γ, b + β for LnResidual. K and N multiples of 8.
// LnResidualSums: sum and sum_sq (fp32 [M]) receive the row sums (zeroed first).
void ln_fold_gemm(FoldKind kind, int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                  const float* r, const float* n, const float* v1, const float* v2, cudaStream_t stream,
                  float* sum = nullptr, float* sum_sq = nullptr);

// fp32 → fp16 → fp32 (round to nearest): a value as the device stores it.
inline float round_to_fp16(float x) { return __half2float(__float2half_rn(x)); }

// Host side of the fold for a linear layer y = LN(x)·Wᵀ + b, LN(x) = (x − μ)·rstd ⊙ γ + β:
// W′ = W·diag(γ) (rounded to fp16, as the device stores it), s = W′·1 and c = W·β + b (fp32,
// summed in double). W is [N, K] row-major.
inline void fold_layernorm_into_linear(const std::vector<float>& W, const std::vector<float>& b,
                                       const std::vector<float>& gamma, const std::vector<float>& beta, int N, int K,
                                       std::vector<float>& W_folded, std::vector<float>& s, std::vector<float>& c) {
  EK_CHECK(W.size() == size_t(N) * size_t(K) && b.size() == size_t(N) && gamma.size() == size_t(K) &&
               beta.size() == size_t(K),
           "fold_layernorm_into_linear: shapes do not match W [" + std::to_string(N) + ", " + std::to_string(K) + "]");
  W_folded.resize(W.size());
  s.assign(N, 0.f);
  c.assign(N, 0.f);
  for (int j = 0; j < N; ++j) {
    double ss = 0, cc = b[j];
    for (int k = 0; k < K; ++k) {
      const float w = round_to_fp16(W[size_t(j) * K + k] * gamma[k]);
      W_folded[size_t(j) * K + k] = w;
      ss += w;
      cc += double(W[size_t(j) * K + k]) * beta[k];
    }
    s[j] = float(ss);
    c[j] = float(cc);
  }
}

}  // namespace embedkit::cuda
