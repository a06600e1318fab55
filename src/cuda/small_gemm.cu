// Small-batch GEMMs (a few hundred to a few thousand tokens) as CUTLASS sm90 TMA warp-specialized
// kernels with the bias, GELU and residual in epilogue visitor trees, launched with
// programmatic dependent launch.
//
// Why: a small batch's pass is ~44 dependent kernels of a few µs (docs/benchmarks.md); our own
// kernels already overlap their launch with the kernel before them (PDL), but cuBLASLt's GEMMs,
// 24 of the 44, cannot be asked to — each starts only after the kernel before it has completed
// and gone through the front end. CUTLASS's sm90 kernels wait (griddepcontrol.wait) before their
// first global read when compiled with CUTLASS_ENABLE_GDC_FOR_SM90, and trigger their dependents
// after the main loop, so every edge of the pass can be programmatic.
#include "cuda/small_gemm.h"

#include <string>

#include "cuda/device_caps.h"
#include "util/error.h"

#ifdef EMBEDKIT_HAVE_CUTLASS
#include "cuda/ln_fold_gemm.cuh"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#endif

namespace embedkit::cuda {

#ifdef EMBEDKIT_HAVE_CUTLASS
namespace {
using namespace cute;
namespace fu = cutlass::epilogue::fusion;
using Half = cutlass::half_t;

// The sm90 TMA warp-specialized ping-pong GEMM for an epilogue tree: row-major A [M, K], W [N, K]
// (nn.Linear), fp16 in and out, fp32 accumulation; ElementC the source C's type (void: none).
template <class Tree, class ElementC, class Tile, class Cluster = Shape<_1, _1, _1>>
struct Sm90Gemm {
  using Row = cutlass::layout::RowMajor;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, Row, 8, Half, Row, 8,
      cutlass::epilogue::TmaWarpSpecialized, Tree>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Half, Row, 8, Half, cutlass::layout::ColumnMajor, 8, float,
      Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using Arguments = typename Gemm::Arguments;

  // Arguments with the tree's own left default ({}): the caller fills args.epilogue.thread.
  static Arguments arguments(int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D, int sms) {
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = sms;
    return Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {M, N, K, 1},
        {reinterpret_cast<const Half*>(A), cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, make_shape(M, K, 1)),
         reinterpret_cast<const Half*>(W), cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(N, K, 1))},
        {{},
         reinterpret_cast<const Half*>(C),
         cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, make_shape(M, N, 1)),
         reinterpret_cast<Half*>(D),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(M, N, 1))},
        hw};
  }

  static void launch(const Arguments& args, cudaStream_t stream, bool pdl, const char* what) {
    EK_CHECK(Gemm::can_implement(args) == cutlass::Status::kSuccess,
             std::string(what) + ": CUTLASS cannot run M=" + std::to_string(get<0>(args.problem_shape)) +
                 " N=" + std::to_string(get<1>(args.problem_shape)) + " K=" + std::to_string(get<2>(args.problem_shape)) +
                 " (K and N must be multiples of 8)");
    EK_CHECK(Gemm::get_workspace_size(args) == 0, std::string(what) + ": unexpected CUTLASS workspace");
    static const cudaError_t smem_ok = cudaFuncSetAttribute(
        cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Kernel::SharedStorageSize));
    EK_CHECK(smem_ok == cudaSuccess, std::string(what) + ": shared memory attribute: " + cudaGetErrorString(smem_ok));
    // Params and launch without GemmUniversalAdapter::initialize() (its workspace set-up calls the
    // driver API, which this binary does not link).
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    EK_CHECK(Gemm::run(params, stream, nullptr, pdl) == cutlass::Status::kSuccess, std::string(what) + ": CUTLASS launch failed");
  }
};

template <SmallEpilogue EPI, class Tile>
struct SmallGemm {
  using Bias = fu::Sm90RowBroadcast<0, Tile, Half, float, Stride<_0, _1, int64_t>>;  // one value per column (N)
  template <template <class> class F, class Out = float>
  using Op = fu::Sm90Compute<F, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using AccBias = fu::Sm90EVT<Op<cutlass::plus>, fu::Sm90AccFetch, Bias>;
  static constexpr bool kResidual = EPI == SmallEpilogue::BiasResidual;
  using Tree = cute::conditional_t<
      EPI == SmallEpilogue::Bias, fu::Sm90EVT<Op<cutlass::plus, Half>, fu::Sm90AccFetch, Bias>,
      cute::conditional_t<EPI == SmallEpilogue::BiasGelu, fu::Sm90EVT<Op<cutlass::epilogue::thread::GELU_taylor, Half>, AccBias>,
                          fu::Sm90EVT<Op<cutlass::plus, Half>, AccBias, fu::Sm90SrcFetch<Half>>>>;
  using G = Sm90Gemm<Tree, cute::conditional_t<kResidual, Half, void>, Tile>;

  static void run(int M, int N, int K, const __half* A, const __half* W, const __half* b, const __half* C, __half* D,
                  int sms, cudaStream_t stream, bool pdl) {
    auto args = G::arguments(M, N, K, A, W, kResidual ? C : nullptr, D, sms);
    const Stride<_0, _1, int64_t> per_col{};
    const typename Bias::Arguments bias{reinterpret_cast<const Half*>(b), Half(0), per_col};
    // Tree arguments: children in order, then the node's own ({} for the computes).
    if constexpr (EPI == SmallEpilogue::Bias) args.epilogue.thread = {{}, bias, {}};
    else if constexpr (EPI == SmallEpilogue::BiasGelu) args.epilogue.thread = {{{}, bias, {}}, {}};
    else args.epilogue.thread = {{{}, bias, {}}, {}, {}};
    G::launch(args, stream, pdl, "small GEMM");
  }
};

// ---- the folded LayerNorms (SmallFold): per-element functors for Sm90Compute, over fragments
// (cutlass::Array<float, N>); Arguments reach them as the node's parameters.
struct LnConstants {
  float inv_d, eps;
};
// r = 1/sqrt(var + eps), n = −mean·r from a row's Σ and Σ² (as layernorm_stats_from_sums_kernel).
CUTLASS_DEVICE void row_norm(float sum, float sq, const LnConstants& k, float& r, float& n) {
  const float mean = sum * k.inv_d, var = fmaxf(sq * k.inv_d - mean * mean, 0.f);
  r = rsqrtf(var + k.eps);
  n = -mean * r;
}
template <class T>
struct FoldFn {  // (acc, Σ, Σ², s, c) → r·acc + n·s + c
  using Arguments = LnConstants;
  CUTLASS_DEVICE T operator()(const T& acc, const T& sum, const T& sq, const T& s, const T& c, const Arguments& k) const {
    T out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < T::kElements; ++i) {
      float r, n;
      row_norm(sum[i], sq[i], k, r, n);
      out[i] = r * acc[i] + (n * s[i] + c[i]);
    }
    return out;
  }
};
template <class T>
struct FoldGeluFn {  // GELU_tanh of FoldFn's value
  using Arguments = LnConstants;
  CUTLASS_DEVICE T operator()(const T& acc, const T& sum, const T& sq, const T& s, const T& c, const Arguments& k) const {
    const T v = FoldFn<T>{}(acc, sum, sq, s, c, k);
    return cutlass::epilogue::thread::GELU_taylor<T>{}(v);
  }
};
template <class T>
struct LnResidualFn {  // (acc, C, Σ, Σ² of C, γ, bb) → acc + bb + (C·r + n)·γ
  using Arguments = LnConstants;
  CUTLASS_DEVICE T operator()(const T& acc, const T& src, const T& sum, const T& sq, const T& g, const T& bb,
                              const Arguments& k) const {
    T out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < T::kElements; ++i) {
      float r, n;
      row_norm(sum[i], sq[i], k, r, n);
      out[i] = (src[i] * r + n) * g[i] + (acc[i] + bb[i]);
    }
    return out;
  }
};

template <SmallFold KIND, class Tile>
struct SmallFoldGemm {
  // The big-batch folds' per-token and per-feature vectors and atomic row sums (ln_fold_gemm.cuh).
  using PerRow = typename ln_fold::Trees<Tile>::RowVec;  // one value per token (M)
  using PerCol = typename ln_fold::Trees<Tile>::ColVec;  // one value per feature (N)
  using RowSum = typename ln_fold::Trees<Tile>::RowSum;  // Σ over the tile's columns, added atomically per row
  template <template <class> class F, class Out>
  using Op = fu::Sm90Compute<F, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;
  template <template <class> class F, class Out>
  using FoldTree = fu::Sm90EVT<Op<F, Out>, fu::Sm90AccFetch, PerRow, PerRow, PerCol, PerCol>;
  template <class Out>
  using ResidualTree = fu::Sm90EVT<Op<LnResidualFn, Out>, fu::Sm90AccFetch, fu::Sm90SrcFetch<Half>, PerRow, PerRow, PerCol, PerCol>;
  // The residual GEMM's value y, written as D, with Σy and Σy² of its rows (fp32, before rounding).
  using ResidualSums = fu::Sm90SplitTreeVisitor<
      ResidualTree<float>,                                                                 // y (input tree)
      fu::Sm90EVT<Op<cutlass::epilogue::thread::Identity, Half>, fu::Sm90SplitTreeFetch>,  // D = y
      fu::Sm90EVT<RowSum, fu::Sm90SplitTreeFetch>,                                         // Σy
      fu::Sm90EVT<RowSum, fu::Sm90EVT<Op<cutlass::square, float>, fu::Sm90SplitTreeFetch>>>;  // Σy²
  static constexpr bool kResidual = KIND == SmallFold::LnResidualSums;
  using Tree = cute::conditional_t<KIND == SmallFold::Fold, FoldTree<FoldFn, Half>,
                                   cute::conditional_t<KIND == SmallFold::FoldGelu, FoldTree<FoldGeluFn, Half>, ResidualSums>>;
  using G = Sm90Gemm<Tree, cute::conditional_t<kResidual, Half, void>, Tile>;

  static void run(int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                  const SmallFoldArgs& f, int sms, cudaStream_t stream, bool pdl) {
    auto args = G::arguments(M, N, K, A, W, kResidual ? C : nullptr, D, sms);
    const Stride<_1, _0, int64_t> per_row{};
    const Stride<_0, _1, int64_t> per_col{};
    const typename PerRow::Arguments sum{f.sum_in, 0.f, per_row}, sq{f.sq_in, 0.f, per_row};
    const typename PerCol::Arguments v1{f.v1, 0.f, per_col}, v2{f.v2, 0.f, per_col};
    const LnConstants k{f.inv_d, f.eps};
    // Tree arguments: children in order, then the node's own; a split tree's: {input tree, the
    // auxiliary trees (Σy, Σy²), output tree}.
    if constexpr (!kResidual) {
      args.epilogue.thread = {{}, sum, sq, v1, v2, k};
    } else {
      args.epilogue.thread = {{{}, {}, sum, sq, v1, v2, k},
                              {{}, {f.sum_out, 0.f, per_row}},
                              {{{}, {}}, {f.sq_out, 0.f, per_row}},
                              {{}, {}}};
    }
    G::launch(args, stream, pdl, "small folded GEMM");
  }
};

using T64 = Shape<_64, _64, _64>;
using T64x128 = Shape<_64, _128, _64>;
}  // namespace

bool small_gemm_usable() {
  static const bool usable = current_device_is_sm90();
  return usable;
}

void small_gemm(SmallEpilogue epi, int M, int N, int K, const __half* A, const __half* W, const __half* b,
                const __half* C, __half* D, cudaStream_t stream, bool pdl) {
  if (M == 0) return;
  const int sms = current_device_sm_count();
  // 64-row tiles: a few hundred tokens still give dozens of CTAs; 128 columns for the wide
  // outputs (q|k|v, FFN up), 64 for d.
  switch (epi) {
    case SmallEpilogue::Bias:
      if (N % 128 == 0) SmallGemm<SmallEpilogue::Bias, T64x128>::run(M, N, K, A, W, b, C, D, sms, stream, pdl);
      else SmallGemm<SmallEpilogue::Bias, T64>::run(M, N, K, A, W, b, C, D, sms, stream, pdl);
      break;
    case SmallEpilogue::BiasGelu:
      SmallGemm<SmallEpilogue::BiasGelu, T64x128>::run(M, N, K, A, W, b, C, D, sms, stream, pdl);
      break;
    case SmallEpilogue::BiasResidual:
      SmallGemm<SmallEpilogue::BiasResidual, T64>::run(M, N, K, A, W, b, C, D, sms, stream, pdl);
      break;
  }
}

void small_fold_gemm(SmallFold kind, int M, int N, int K, const __half* A, const __half* W, const __half* C, __half* D,
                     const SmallFoldArgs& f, cudaStream_t stream, bool pdl) {
  if (M == 0) return;
  EK_CHECK(kind != SmallFold::LnResidualSums || (f.sum_out && f.sq_out && C), "small folded GEMM: the residual needs C and row-sum buffers");
  const int sms = current_device_sm_count();
  // The tiles of small_gemm(): 64 × 128 for the wide outputs (q|k|v, FFN up), 64 × 64 for d.
  switch (kind) {
    case SmallFold::Fold:
      if (N % 128 == 0) SmallFoldGemm<SmallFold::Fold, T64x128>::run(M, N, K, A, W, C, D, f, sms, stream, pdl);
      else SmallFoldGemm<SmallFold::Fold, T64>::run(M, N, K, A, W, C, D, f, sms, stream, pdl);
      break;
    case SmallFold::FoldGelu:
      if (N % 128 == 0) SmallFoldGemm<SmallFold::FoldGelu, T64x128>::run(M, N, K, A, W, C, D, f, sms, stream, pdl);
      else SmallFoldGemm<SmallFold::FoldGelu, T64>::run(M, N, K, A, W, C, D, f, sms, stream, pdl);
      break;
    case SmallFold::LnResidualSums:
      SmallFoldGemm<SmallFold::LnResidualSums, T64>::run(M, N, K, A, W, C, D, f, sms, stream, pdl);
      break;
  }
}

#else  // built without CUTLASS's headers

bool small_gemm_usable() { return false; }
void small_gemm(SmallEpilogue, int, int, int, const __half*, const __half*, const __half*, const __half*, __half*,
                cudaStream_t, bool) {
  throw Error("small GEMMs: this build has no CUTLASS (configure with EMBEDKIT_CUTLASS_INCLUDE)");
}
void small_fold_gemm(SmallFold, int, int, int, const __half*, const __half*, const __half*, __half*,
                     const SmallFoldArgs&, cudaStream_t, bool) {
  throw Error("small folded GEMMs: this build has no CUTLASS (configure with EMBEDKIT_CUTLASS_INCLUDE)");
}

#endif

}  // namespace embedkit::cuda
