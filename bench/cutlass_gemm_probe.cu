// Probe: the encoder's four GEMM kinds as CUTLASS sm90 kernels with fused epilogues, against
// cuBLASLt as the encoder calls it (lt_linear, heuristic's first answer), fp16, 65,536 tokens,
// all-MiniLM-L6-v2 and BERT-base shapes. For deciding whether our own GEMMs are worth having;
// not part of the build (CUTLASS headers come from the nvidia-cutlass wheel):
//   bash scripts/build-cutlass-probe.sh        (here: ~3 min, 2 cores; binary in .device/bin)
//   device: source scripts/device-env.sh; .device/bin/cutlass_gemm_probe
// Prints ms, TFLOP/s and the relative L2 difference from cuBLASLt's output per shape and kernel.
// y[M=T, N] = epi(x[T, K] · W[N, K]ᵀ + b[N]) — epi: bias; bias + GELU (tanh form, as cuBLASLt's
// GELU_BIAS); bias + residual (y += …, in place, as the encoder's attention-out and FFN-down).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/kernels.cuh"
#include "cutlass_probe_util.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace cute;
enum Epi { kBias, kBiasGelu, kBiasRes };
struct Problem {
  const char* name;
  int M, N, K;
  Epi epi;
};
struct Buffers {
  __half *x, *W, *b, *y, *y0, *ref;
};

void report(const char* kernel, const Problem& p, float ms, float err) {
  if (ms < 0) return (void)std::printf("%-10s %-6s cannot run\n", p.name, kernel);
  std::printf("%-10s %-6s %8.4f ms  %6.1f TFLOP/s  rel_l2 %.1e\n", p.name, kernel, ms,
              2.0 * p.M * p.N * p.K / (ms * 1e-3) / 1e12, err);
}

// One CUTLASS kernel: TN GEMM (x row-major, W [N, K] row-major = column-major K×N), row-major y,
// per-column bias, optional GELU, optional source C = y (residual, beta = 1).
template <Epi EPI, class MainSchedule, class EpiSchedule, class TileShape>
struct CutlassGemm {
  using E = cutlass::half_t;
  using Row = cutlass::layout::RowMajor;
  using ElementC = cute::conditional_t<EPI == kBiasRes, E, void>;
  using Fusion = cute::conditional_t<
      EPI == kBiasGelu,
      cutlass::epilogue::fusion::LinCombPerColBiasEltAct<cutlass::epilogue::thread::GELU_taylor, E, float, E, E, float>,
      cutlass::epilogue::fusion::LinCombPerColBias<E, float, E, E, float>>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Shape<_1, _1, _1>,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, Row, 8, E, Row, 8, EpiSchedule,
      Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, E, Row, 8, E, cutlass::layout::ColumnMajor, 8, float,
      TileShape, Shape<_1, _1, _1>,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static void probe(const char* label, Buffers& B, const Problem& p, int sms) {
    Gemm gemm;
    const int M = p.M, N = p.N, K = p.K;
    cudaMemcpy(B.y, B.y0, size_t(M) * N * 2, cudaMemcpyDeviceToDevice);
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = sms;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {M, N, K, 1},
        {reinterpret_cast<const E*>(B.x), cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, make_shape(M, K, 1)),
         reinterpret_cast<const E*>(B.W), cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, make_shape(N, K, 1))},
        {{},
         reinterpret_cast<const E*>(EPI == kBiasRes ? B.y : nullptr),
         cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, make_shape(M, N, 1)),
         reinterpret_cast<E*>(B.y),
         cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, make_shape(M, N, 1))},
        hw};
    args.epilogue.thread.alpha = 1.f;
    args.epilogue.thread.beta = EPI == kBiasRes ? 1.f : 0.f;
    args.epilogue.thread.bias_ptr = reinterpret_cast<const E*>(B.b);
    void* ws = nullptr;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return report(label, p, -1, -1);
    if (const size_t bytes = Gemm::get_workspace_size(args)) cudaMalloc(&ws, bytes);
    if (gemm.initialize(args, ws) != cutlass::Status::kSuccess) return report(label, p, -1, -1);
    gemm.run();
    cudaDeviceSynchronize();
    const float err = probe::rel_l2(B.y, B.ref, size_t(M) * N);
    report(label, p, probe::time_ms([&] { gemm.run(); }), err);
    cudaFree(ws);
  }
};

template <Epi EPI>
void probe_all(Buffers& B, const Problem& p, int sms) {
  using PP = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
  using PPE = cutlass::epilogue::TmaWarpSpecialized;
  using CO = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using COE = cutlass::epilogue::TmaWarpSpecializedCooperative;
  CutlassGemm<EPI, PP, PPE, Shape<_64, _128, _64>>::probe("PP64", B, p, sms);
  CutlassGemm<EPI, PP, PPE, Shape<_128, _128, _64>>::probe("PP128", B, p, sms);
  CutlassGemm<EPI, CO, COE, Shape<_128, _128, _64>>::probe("CO128", B, p, sms);
  CutlassGemm<EPI, CO, COE, Shape<_256, _128, _64>>::probe("CO256", B, p, sms);
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int T = 65536;
  const std::vector<Problem> problems = {
      {"mini.qkv", T, 1152, 384, kBias},  {"mini.out", T, 384, 384, kBiasRes}, {"mini.up", T, 1536, 384, kBiasGelu},
      {"mini.down", T, 384, 1536, kBiasRes}, {"base.qkv", T, 2304, 768, kBias}, {"base.out", T, 768, 768, kBiasRes},
      {"base.up", T, 3072, 768, kBiasGelu}, {"base.down", T, 768, 3072, kBiasRes}};
  size_t nx = 0, nw = 0, ny = 0;
  for (const auto& p : problems) {
    nx = std::max(nx, size_t(p.M) * p.K);
    nw = std::max(nw, size_t(p.N) * p.K);
    ny = std::max(ny, size_t(p.M) * p.N);
  }
  Buffers B;
  cudaMalloc(&B.x, nx * 2);
  cudaMalloc(&B.W, nw * 2);
  cudaMalloc(&B.b, 4096 * 2);
  cudaMalloc(&B.y, ny * 2);
  cudaMalloc(&B.y0, ny * 2);
  cudaMalloc(&B.ref, ny * 2);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto fill = [&](__half* d, size_t n, float scale) {
    std::vector<__half> h(n);
    for (auto& v : h) v = __float2half(u(rng) * scale);
    cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice);
  };
  fill(B.x, nx, 1.f);
  fill(B.W, nw, 0.05f);
  fill(B.b, 4096, 0.5f);
  fill(B.y0, ny, 1.f);
  probe::Lt lt;
  for (const auto& p : problems) {
    const cublasLtEpilogue_t e = p.epi == kBiasGelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    auto lt_run = [&] {
      lt.linear(B.x, p.M, p.K, B.W, B.b, p.N, B.y, e, p.epi == kBiasRes ? B.y : nullptr);
    };
    cudaMemcpy(B.y, B.y0, size_t(p.M) * p.N * 2, cudaMemcpyDeviceToDevice);
    lt_run();
    cudaDeviceSynchronize();
    cudaMemcpy(B.ref, B.y, size_t(p.M) * p.N * 2, cudaMemcpyDeviceToDevice);
    report("lt", p, probe::time_ms(lt_run), 0.f);
    if (p.epi == kBias) probe_all<kBias>(B, p, sms);
    else if (p.epi == kBiasGelu) probe_all<kBiasGelu>(B, p, sms);
    else probe_all<kBiasRes>(B, p, sms);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess)
      std::printf("CUDA error: %s\n", cudaGetErrorString(err));
  }
  return 0;
}
