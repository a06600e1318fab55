// The folded-LayerNorm GEMMs as CUTLASS sm90 kernel types (epilogue visitor trees), shared by
// ln_fold_gemm.cu and bench/cutlass_ln_fold_probe.cu. Needs CUTLASS 4.2's headers and sm_90a.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/ln_fold_gemm.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"
#include "util/error.h"

namespace embedkit::cuda::ln_fold {
using namespace cute;
namespace fu = cutlass::epilogue::fusion;
using Half = cutlass::half_t;

template <class Tile>
struct Trees {
  using RowVec = fu::Sm90ColBroadcast<0, Tile, float, float, Stride<_1, _0, int64_t>>;  // one value per token (M)
  using ColVec = fu::Sm90RowBroadcast<0, Tile, float, float, Stride<_0, _1, int64_t>>;  // one value per feature (N)
  template <template <class> class F, class Out = float>
  using Op = fu::Sm90Compute<F, Out, float, cutlass::FloatRoundStyle::round_to_nearest>;
  template <class Out>
  using Affine = fu::Sm90EVT<Op<cutlass::homogeneous_multiply_add, Out>, RowVec, fu::Sm90AccFetch,
                             fu::Sm90EVT<Op<cutlass::homogeneous_multiply_add>, RowVec, ColVec, ColVec>>;
  using Fold = Affine<Half>;                                                                    // r·acc + (n·s + c)
  using FoldGelu = fu::Sm90EVT<Op<cutlass::epilogue::thread::GELU_taylor, Half>, Affine<float>>;  // GELU(…)
  template <class Out>
  using LnResidualValue =  // (C·r + n)·γ + (acc + bb)
      fu::Sm90EVT<Op<cutlass::homogeneous_multiply_add, Out>,
                  fu::Sm90EVT<Op<cutlass::homogeneous_multiply_add>, fu::Sm90SrcFetch<Half>, RowVec, RowVec>, ColVec,
                  fu::Sm90EVT<Op<cutlass::plus>, fu::Sm90AccFetch, ColVec>>;
  using LnResidual = LnResidualValue<Half>;
  // The same, plus the output rows' Σy and Σy² (fp32, before rounding), added atomically into
  // per-row sums: the next LayerNorm's statistics without a pass over y (finalized by
  // layernorm_stats_from_sums, kernels.cuh).
  using RowSum = fu::Sm90ColReduction<cutlass::plus, cutlass::plus, cutlass::atomic_add, 0, Tile, float, float,
                                      cutlass::FloatRoundStyle::round_to_nearest, Stride<_1, _0, int64_t>>;
  using LnResidualSums = fu::Sm90SplitTreeVisitor<
      LnResidualValue<float>,                                                                      // y (input tree)
      fu::Sm90EVT<Op<cutlass::epilogue::thread::Identity, Half>, fu::Sm90SplitTreeFetch>,          // D = y
      fu::Sm90EVT<RowSum, fu::Sm90SplitTreeFetch>,                                                 // Σy
      fu::Sm90EVT<RowSum, fu::Sm90EVT<Op<cutlass::square>, fu::Sm90SplitTreeFetch>>>;              // Σy²
};

struct Operands {
  int M, N, K;
  const __half *A, *W, *C;
  __half* D;
  const float *r, *n, *v1, *v2;
  float *sum = nullptr, *sum_sq = nullptr;  // LnResidualSums
};

template <FoldKind KIND, class MainSchedule, class EpiSchedule, class Tile, class Cluster = Shape<_1, _1, _1>>
struct FoldGemm {
  using Row = cutlass::layout::RowMajor;
  using Tr = Trees<Tile>;
  using Tree = cute::conditional_t<
      KIND == FoldKind::Fold, typename Tr::Fold,
      cute::conditional_t<KIND == FoldKind::FoldGelu, typename Tr::FoldGelu,
                          cute::conditional_t<KIND == FoldKind::LnResidual, typename Tr::LnResidual,
                                              typename Tr::LnResidualSums>>>;
  static constexpr bool kResidual = KIND == FoldKind::LnResidual || KIND == FoldKind::LnResidualSums;
  using ElementC = cute::conditional_t<kResidual, Half, void>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, Row, 8, Half, Row, 8, EpiSchedule,
      Tree>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Half, Row, 8, Half, cutlass::layout::ColumnMajor, 8, float,
      Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static void run(const Operands& o, int sms, cudaStream_t stream) {
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = sms;
    [[maybe_unused]] const Stride<_1, _0, int64_t> per_row{};
    [[maybe_unused]] const Stride<_0, _1, int64_t> per_col{};
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {o.M, o.N, o.K, 1},
        {reinterpret_cast<const Half*>(o.A),
         cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, make_shape(o.M, o.K, 1)),
         reinterpret_cast<const Half*>(o.W),
         cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(o.N, o.K, 1))},
        {{},
         reinterpret_cast<const Half*>(kResidual ? o.C : nullptr),
         cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, make_shape(o.M, o.N, 1)),
         reinterpret_cast<Half*>(o.D),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(o.M, o.N, 1))},
        hw};
    // Tree arguments: children in order, then the node's own ({} for the computes).
    if constexpr (KIND == FoldKind::Fold) {
      args.epilogue.thread = {{o.r, 0.f, per_row}, {}, {{o.n, 0.f, per_row}, {o.v1, 0.f, per_col}, {o.v2, 0.f, per_col}, {}}, {}};
    } else if constexpr (KIND == FoldKind::FoldGelu) {
      args.epilogue.thread = {
          {{o.r, 0.f, per_row}, {}, {{o.n, 0.f, per_row}, {o.v1, 0.f, per_col}, {o.v2, 0.f, per_col}, {}}, {}}, {}};
    } else if constexpr (KIND == FoldKind::LnResidual) {
      args.epilogue.thread = {
          {{}, {o.r, 0.f, per_row}, {o.n, 0.f, per_row}, {}}, {o.v1, 0.f, per_col}, {{}, {o.v2, 0.f, per_col}, {}}, {}};
    } else {  // split tree: {input tree, Σy tree, Σy² tree, output tree}
      args.epilogue.thread = {
          {{{}, {o.r, 0.f, per_row}, {o.n, 0.f, per_row}, {}}, {o.v1, 0.f, per_col}, {{}, {o.v2, 0.f, per_col}, {}}, {}},
          {{}, {o.sum, 0.f, per_row}},
          {{{}, {}}, {o.sum_sq, 0.f, per_row}},
          {{}, {}}};
    }
    EK_CHECK(Gemm::can_implement(args) == cutlass::Status::kSuccess,
             "folded GEMM: CUTLASS cannot run M=" + std::to_string(o.M) + " N=" + std::to_string(o.N) +
                 " K=" + std::to_string(o.K) + " (K and N must be multiples of 8)");
    EK_CHECK(Gemm::get_workspace_size(args) == 0, "folded GEMM: unexpected CUTLASS workspace");
    // Params and launch without GemmUniversalAdapter::initialize(): its workspace set-up (which
    // would zero the row sums) calls the driver API directly, and this binary links no libcuda (a
    // CUDA build must start where no driver exists). The sums are zeroed here instead.
    static const cudaError_t smem_ok = cudaFuncSetAttribute(
        cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(Kernel::SharedStorageSize));
    EK_CHECK(smem_ok == cudaSuccess, std::string("folded GEMM: shared memory attribute: ") + cudaGetErrorString(smem_ok));
    if constexpr (KIND == FoldKind::LnResidualSums) {
      EK_CHECK(cudaMemsetAsync(o.sum, 0, size_t(o.M) * sizeof(float), stream) == cudaSuccess &&
                   cudaMemsetAsync(o.sum_sq, 0, size_t(o.M) * sizeof(float), stream) == cudaSuccess,
               "folded GEMM: zeroing the row sums failed");
    }
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    EK_CHECK(Gemm::run(params, stream) == cutlass::Status::kSuccess, "folded GEMM: CUTLASS launch failed");
  }
};

using PP = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PPE = cutlass::epilogue::TmaWarpSpecialized;
using CO = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using COE = cutlass::epilogue::TmaWarpSpecializedCooperative;
using T128 = Shape<_128, _128, _64>;
using T256 = Shape<_256, _128, _64>;
using T192 = Shape<_128, _192, _64>;  // N = 384, 768, 1152, 1536, 2304, 3072: whole tiles
using C2 = Shape<_2, _1, _1>;  // 2-CTA clusters along M (the W tile multicast to both)


}  // namespace embedkit::cuda::ln_fold
