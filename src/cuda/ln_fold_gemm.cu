// BERT's post-LayerNorms folded into the GEMMs around them, as CUTLASS sm90 kernels with epilogue
// visitor trees (compiled for sm_90a; CUTLASS 4.2 headers from the nvidia-cutlass wheel).
//
// A post-LN encoder layer writes h = LN(x) out (one read and one write of [T, d]) for the next
// GEMM and the residual after it. Folded, h is never written: a stats pass reads x once
// (layernorm_stats in kernels.cuh: r = 1/sqrt(var + eps), n = −mean·r per row), and
//   consumer GEMM  LN(x)·Wᵀ + b = r ⊙ (x·W′ᵀ) + n ⊗ s + c,  W′ = W·diag(γ), s = W′·1, c = W·β + b
//   residual GEMM  y·Wᵀ + b + LN(x) = acc + (x·r + n) ⊙ γ + (b + β)   (x read as the source C)
// Measured first with bench/cutlass_ln_fold_probe.cu (H100, 65,536 tokens, docs/benchmarks.md):
// the folded GEMMs run within a few % of cuBLASLt's, and the layer's two LayerNorm passes become
// two read-only stats passes. Launch shapes per GEMM from that probe (see pick() below).
#include "cuda/ln_fold_gemm.h"

#include <string>

#include "cuda/device_caps.h"
#include "util/error.h"

#ifdef EMBEDKIT_HAVE_CUTLASS
#include "cuda/ln_fold_gemm.cuh"
#endif

namespace embedkit::cuda {

#ifdef EMBEDKIT_HAVE_CUTLASS
namespace {
using namespace ln_fold;
int sm_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms;
  }();
  return n;
}
}  // namespace

bool ln_fold_usable() {
  static const bool usable = current_device_is_sm90();
  return usable;
}

// Launch shapes from the probe (H100, 65,536 tokens, two calls; ms folded vs cuBLASLt on the
// materialized LN(x), MiniLM d 384 / BERT-base d 768):
//   q|k|v      ping-pong 128×128 (0.116 vs 0.109); with 2-CTA clusters at d 768 (0.350 vs 0.359)
//   attn out   cooperative 128×128 at d 384 (0.064 vs 0.068); ping-pong 128×128 at d 768 (0.146 vs 0.140)
//   FFN up     ping-pong 128×128, 2-CTA clusters (0.174 vs 0.173; 0.507 vs 0.527)
//   FFN down   ping-pong 128×128 at d 384 (0.131 vs 0.132); cooperative 256×128 at d 768 (0.458 vs 0.437)
// (also tried: cooperative 128×128, 128×256, 256×128 with 2-CTA clusters, ping-pong 64×256.)
void ln_fold_gemm(FoldKind kind, int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                  const float* r, const float* n, const float* v1, const float* v2, cudaStream_t stream, float* sum,
                  float* sum_sq) {
  if (M == 0) return;
  EK_CHECK(kind != FoldKind::LnResidualSums || (sum && sum_sq), "folded GEMM: row sums need their buffers");
  const Operands o{M, N, K, A, W, C, D, r, n, v1, v2, sum, sum_sq};
  const int sms = sm_count();
  switch (kind) {
    case FoldKind::Fold:
      if (K <= 384) FoldGemm<FoldKind::Fold, PP, PPE, T128>::run(o, sms, stream);
      else FoldGemm<FoldKind::Fold, PP, PPE, T128, C2>::run(o, sms, stream);
      break;
    case FoldKind::FoldGelu:
      FoldGemm<FoldKind::FoldGelu, PP, PPE, T128, C2>::run(o, sms, stream);
      break;
    case FoldKind::LnResidual:
      if (K == N) {  // attention out
        if (N <= 384) FoldGemm<FoldKind::LnResidual, CO, COE, T128>::run(o, sms, stream);
        else FoldGemm<FoldKind::LnResidual, PP, PPE, T128>::run(o, sms, stream);
      } else {  // FFN down
        if (N <= 384) FoldGemm<FoldKind::LnResidual, PP, PPE, T128>::run(o, sms, stream);
        else FoldGemm<FoldKind::LnResidual, CO, COE, T256>::run(o, sms, stream);
      }
      break;
    case FoldKind::LnResidualSums:  // same shapes
      if (K == N) {
        if (N <= 384) FoldGemm<FoldKind::LnResidualSums, CO, COE, T128>::run(o, sms, stream);
        else FoldGemm<FoldKind::LnResidualSums, PP, PPE, T128>::run(o, sms, stream);
      } else {
        if (N <= 384) FoldGemm<FoldKind::LnResidualSums, PP, PPE, T128>::run(o, sms, stream);
        else FoldGemm<FoldKind::LnResidualSums, CO, COE, T256>::run(o, sms, stream);
      }
      break;
  }
}

#else  // built without CUTLASS's headers

bool ln_fold_usable() { return false; }
void ln_fold_gemm(FoldKind, int, int, int, const __half*, const __half*, const __half*, __half*, const float*,
                  const float*, const float*, const float*, cudaStream_t, float*, float*) {
  throw Error("folded GEMMs: this build has no CUTLASS (configure with EMBEDKIT_CUTLASS_INCLUDE)");
}

#endif

}  // namespace embedkit::cuda
