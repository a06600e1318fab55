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
}  // namespace

bool ln_fold_usable() {
  static const bool usable = current_device_is_sm90();
  return usable;
}

// Launch shapes from the probe (bench/cutlass_ln_fold_probe.cu; H100, 65,536 tokens; ms folded vs
// cuBLASLt on the materialized LN(x), MiniLM d 384 / BERT-base d 768; 2026-11-26, fourth session):
//   q|k|v      ping-pong 128×192 (0.115 vs 0.110); with 2-CTA clusters at d 768 (0.329 vs 0.358)
//   attn out   cooperative 128×128 at d 384 (0.064 vs 0.067); ping-pong 128×192 at d 768 (0.143 vs 0.139)
//   FFN up     ping-pong 128×192, 2-CTA clusters (0.169 vs 0.172; 0.470 vs 0.527)
//   FFN down   ping-pong 128×192 (0.126 vs 0.132; 0.432 vs 0.437)
// 128×192 tiles against the 128×128 ping-pong / 256×128 cooperative ones chosen before: a BERT-base
// layer's four GEMMs 1.457 → 1.373 ms (−5.8%), MiniLM's −2…3% each. Also tried: cooperative
// 128×128, 256×128 (2-CTA clusters too), 128×256, 256×192, ping-pong 64×256, 128-deep K tiles.
// Attention out (K = N) and FFN down (K = I).
template <FoldKind KIND>
void residual(const Operands& o, int sms, cudaStream_t stream, bool t192) {
  if (o.K == o.N && o.N <= 384) FoldGemm<KIND, CO, COE, T128>::run(o, sms, stream);
  else if (t192) FoldGemm<KIND, PP, PPE, T192>::run(o, sms, stream);
  else if (o.K == o.N) FoldGemm<KIND, PP, PPE, T128>::run(o, sms, stream);
  else FoldGemm<KIND, CO, COE, T256>::run(o, sms, stream);
}

void ln_fold_gemm(FoldKind kind, int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                  const float* r, const float* n, const float* v1, const float* v2, cudaStream_t stream, float* sum,
                  float* sum_sq) {
  if (M == 0) return;
  EK_CHECK(kind != FoldKind::LnResidualSums || (sum && sum_sq), "folded GEMM: row sums need their buffers");
  const Operands o{M, N, K, A, W, C, D, r, n, v1, v2, sum, sum_sq};
  const int sms = current_device_sm_count();
  // N not a multiple of 192 (d 1024, I 4096, …): the 128-wide tiles chosen before, no partial tiles.
  const bool t192 = N % 192 == 0;
  switch (kind) {
    case FoldKind::Fold:
      if (!t192) FoldGemm<FoldKind::Fold, PP, PPE, T128, C2>::run(o, sms, stream);
      else if (K <= 384) FoldGemm<FoldKind::Fold, PP, PPE, T192>::run(o, sms, stream);
      else FoldGemm<FoldKind::Fold, PP, PPE, T192, C2>::run(o, sms, stream);
      break;
    case FoldKind::FoldGelu:
      if (!t192) FoldGemm<FoldKind::FoldGelu, PP, PPE, T128, C2>::run(o, sms, stream);
      else FoldGemm<FoldKind::FoldGelu, PP, PPE, T192, C2>::run(o, sms, stream);
      break;
    case FoldKind::LnResidual:
      residual<FoldKind::LnResidual>(o, sms, stream, t192);
      break;
    case FoldKind::LnResidualSums:
      residual<FoldKind::LnResidualSums>(o, sms, stream, t192);
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
