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

template <SmallEpilogue EPI, class Tile>
struct SmallGemm {
  using Row = cutlass::layout::RowMajor;
  using Bias = fu::Sm90RowBroadcast<0, Tile, Half, float, Stride<_0, _1, int64_t>>;  // one value per column (N)
  template <template <class> class F, class Out = float>
  using Op = fu::Sm90Compute<F, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using AccBias = fu::Sm90EVT<Op<cutlass::plus>, fu::Sm90AccFetch, Bias>;
  static constexpr bool kResidual = EPI == SmallEpilogue::BiasResidual;
  using Tree = cute::conditional_t<
      EPI == SmallEpilogue::Bias, fu::Sm90EVT<Op<cutlass::plus, Half>, fu::Sm90AccFetch, Bias>,
      cute::conditional_t<EPI == SmallEpilogue::BiasGelu, fu::Sm90EVT<Op<cutlass::epilogue::thread::GELU_taylor, Half>, AccBias>,
                          fu::Sm90EVT<Op<cutlass::plus, Half>, AccBias, fu::Sm90SrcFetch<Half>>>>;
  using ElementC = cute::conditional_t<kResidual, Half, void>;
  using Cluster = Shape<_1, _1, _1>;
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

  static void run(int M, int N, int K, const __half* A, const __half* W, const __half* b, const __half* C, __half* D,
                  int sms, cudaStream_t stream, bool pdl) {
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = sms;
    const Stride<_0, _1, int64_t> per_col{};
    const typename Bias::Arguments bias{reinterpret_cast<const Half*>(b), Half(0), per_col};
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {M, N, K, 1},
        {reinterpret_cast<const Half*>(A), cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, make_shape(M, K, 1)),
         reinterpret_cast<const Half*>(W), cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(N, K, 1))},
        {{},
         reinterpret_cast<const Half*>(kResidual ? C : nullptr),
         cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, make_shape(M, N, 1)),
         reinterpret_cast<Half*>(D),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(M, N, 1))},
        hw};
    // Tree arguments: children in order, then the node's own ({} for the computes).
    if constexpr (EPI == SmallEpilogue::Bias) args.epilogue.thread = {{}, bias, {}};
    else if constexpr (EPI == SmallEpilogue::BiasGelu) args.epilogue.thread = {{{}, bias, {}}, {}};
    else args.epilogue.thread = {{{}, bias, {}}, {}, {}};
    EK_CHECK(Gemm::can_implement(args) == cutlass::Status::kSuccess,
             "small GEMM: CUTLASS cannot run M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
    EK_CHECK(Gemm::get_workspace_size(args) == 0, "small GEMM: unexpected CUTLASS workspace");
    static const cudaError_t smem_ok = cudaFuncSetAttribute(
        cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Kernel::SharedStorageSize));
    EK_CHECK(smem_ok == cudaSuccess, std::string("small GEMM: shared memory attribute: ") + cudaGetErrorString(smem_ok));
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    EK_CHECK(Gemm::run(params, stream, nullptr, pdl) == cutlass::Status::kSuccess, "small GEMM: CUTLASS launch failed");
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

#else  // built without CUTLASS's headers

bool small_gemm_usable() { return false; }
void small_gemm(SmallEpilogue, int, int, int, const __half*, const __half*, const __half*, const __half*, __half*,
                cudaStream_t, bool) {
  throw Error("small GEMMs: this build has no CUTLASS (configure with EMBEDKIT_CUTLASS_INCLUDE)");
}

#endif

}  // namespace embedkit::cuda
