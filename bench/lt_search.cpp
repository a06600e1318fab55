// cuBLASLt algorithm search for one of the encoder's GEMM shapes, beyond the heuristic's answers:
// is there a kernel for the FFN up-projection with the bias + GELU epilogue that is not slower
// than the same GEMM without it? (Nsight Compute: the GELU epilogue makes it 1.3-1.47x slower than
// the FFN down-projection of equal FLOPs; docs/benchmarks.md.)
//
//   embedkit_lt_search --tokens 65536 --n-in 384 --n-out 1536 [--epilogue gelu_bias|bias] [--reps 10] [--graph 1]
//
// --graph 1 times the reps as one CUDA graph replay: for small GEMMs (a few µs) the host's launch
// of each cublasLtMatmul is slower than the kernel, so a plain loop measures the host.
//
// Times, on random fp16 operands laid out as lt_linear() lays them out (cuda/kernels.cuh): the
// heuristic's answers (up to 64), then every algorithm id x tile x stage configuration that
// cublasLtMatmulAlgoCheck accepts. Prints the fastest ones with their configuration, and the
// heuristic's first answer for reference.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#define CK(x)                                                                       \
  do {                                                                              \
    auto e_ = (x);                                                                  \
    if (int(e_) != 0) {                                                             \
      std::fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #x, int(e_)); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

struct Found {
  std::string what;
  float ms;
};

int main(int argc, char** argv) {
  int T = 65536, n_in = 384, n_out = 1536, reps = 10, graph = 0;
  std::string epi_name = "gelu_bias";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tokens") T = std::atoi(argv[i + 1]);
    else if (a == "--n-in") n_in = std::atoi(argv[i + 1]);
    else if (a == "--n-out") n_out = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--graph") graph = std::atoi(argv[i + 1]);
    else if (a == "--epilogue") epi_name = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  const cublasLtEpilogue_t epi = epi_name == "bias" ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
  // Operands: x [T, n_in], W [n_out, n_in], bias [n_out], y [T, n_out], fp16, values ~N(0, 0.5).
  auto fill = [](size_t n, unsigned seed) {
    std::vector<__half> h(n);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 0.5f);
    for (auto& v : h) v = __float2half(nd(rng));
    void* d = nullptr;
    CK(cudaMalloc(&d, n * 2));
    CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
  };
  void* x = fill(size_t(T) * n_in, 1);
  void* W = fill(size_t(n_out) * n_in, 2);
  void* bias = fill(size_t(n_out), 3);
  void* y = nullptr;
  CK(cudaMalloc(&y, size_t(T) * n_out * 2));
  const size_t ws_bytes = 32u << 20;
  void* ws = nullptr;
  CK(cudaMalloc(&ws, ws_bytes));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasLtHandle_t lt;
  CK(cublasLtCreate(&lt));

  cublasLtMatmulDesc_t op;
  CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  cublasLtMatrixLayout_t la, lb, lc;
  CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, n_in, n_out, n_in));
  CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, n_in, T, n_in));
  CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16F, n_out, T, n_out));
  const float one = 1.f, zero = 0.f;

  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // Milliseconds per GEMM (median-free: mean over reps after one warm-up), or < 0 when it fails.
  auto time = [&](const cublasLtMatmulAlgo_t& a) -> float {
    if (cublasLtMatmul(lt, op, &one, W, la, x, lb, &zero, y, lc, y, lc, &a, ws, ws_bytes, stream) != CUBLAS_STATUS_SUCCESS)
      return -1.f;
    cudaGraphExec_t exec = nullptr;
    if (graph) {
      CK(cudaStreamSynchronize(stream));
      cudaGraph_t g;
      CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      bool ok = true;
      for (int r = 0; r < reps && ok; ++r)
        ok = cublasLtMatmul(lt, op, &one, W, la, x, lb, &zero, y, lc, y, lc, &a, ws, ws_bytes, stream) ==
             CUBLAS_STATUS_SUCCESS;
      CK(cudaStreamEndCapture(stream, &g));
      if (!ok) {
        cudaGraphDestroy(g);
        return -1.f;
      }
      CK(cudaGraphInstantiate(&exec, g, 0));
      cudaGraphDestroy(g);
      CK(cudaGraphLaunch(exec, stream));  // warm-up
    }
    CK(cudaEventRecord(e0, stream));
    if (exec) {
      CK(cudaGraphLaunch(exec, stream));
    } else {
      for (int r = 0; r < reps; ++r)
        if (cublasLtMatmul(lt, op, &one, W, la, x, lb, &zero, y, lc, y, lc, &a, ws, ws_bytes, stream) != CUBLAS_STATUS_SUCCESS)
          return -1.f;
    }
    CK(cudaEventRecord(e1, stream));
    if (exec) {
      CK(cudaEventSynchronize(e1));
      cudaGraphExecDestroy(exec);
    }
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    return ms / float(reps);
  };
  auto describe = [](const cublasLtMatmulAlgo_t& a) {
    int id = -1, tile = -1, stages = -1, splitk = -1, swizzle = -1, cluster = -1, inner = -1;
    size_t w = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swizzle, sizeof swizzle, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &inner, sizeof inner, &w);
    char buf[160];
    std::snprintf(buf, sizeof buf, "algo %d tile %d stages %d splitk %d swizzle %d cluster %d inner %d", id, tile,
                  stages, splitk, swizzle, cluster, inner);
    return std::string(buf);
  };
  const double flop = 2.0 * T * n_in * n_out;
  std::vector<Found> found;

  // 1. The heuristic's answers.
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
  std::vector<cublasLtMatmulHeuristicResult_t> res(64);
  int n_res = 0;
  CK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 64, res.data(), &n_res));
  float first_ms = -1;
  for (int i = 0; i < n_res; ++i) {
    const float ms = time(res[size_t(i)].algo);
    if (i == 0) first_ms = ms;
    if (ms > 0) found.push_back({"heuristic #" + std::to_string(i) + ": " + describe(res[size_t(i)].algo), ms});
  }
  std::printf("%dx%dx%d %s: heuristic gave %d answers; #0 %.3f ms (%.0f TFLOP/s)\n", T, n_in, n_out, epi_name.c_str(),
              n_res, first_ms, flop / first_ms / 1e9);

  // 2. Every algorithm id x tile x stages configuration that checks.
  int ids[256];
  int n_ids = 0;
  CK(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, 256,
                              ids, &n_ids));
  int checked = 0;
  for (int k = 0; k < n_ids; ++k) {
    cublasLtMatmulAlgo_t a;
    if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                               ids[k], &a) != CUBLAS_STATUS_SUCCESS)
      continue;
    size_t w = 0;
    std::vector<int> tiles(64), stages(64);
    cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_TILE_IDS, nullptr, 0, &w);
    const size_t n_tiles = std::min<size_t>(64, w / sizeof(int));
    if (n_tiles) cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_TILE_IDS, tiles.data(), n_tiles * sizeof(int), &w);
    cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_STAGES_IDS, nullptr, 0, &w);
    const size_t n_stages = std::min<size_t>(64, w / sizeof(int));
    if (n_stages)
      cublasLtMatmulAlgoCapGetAttribute(&a, CUBLASLT_ALGO_CAP_STAGES_IDS, stages.data(), n_stages * sizeof(int), &w);
    for (size_t t = 0; t < std::max<size_t>(1, n_tiles); ++t)
      for (size_t s = 0; s < std::max<size_t>(1, n_stages); ++s) {
        cublasLtMatmulAlgo_t c = a;
        if (n_tiles) cublasLtMatmulAlgoConfigSetAttribute(&c, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[t], sizeof(int));
        if (n_stages) cublasLtMatmulAlgoConfigSetAttribute(&c, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages[s], sizeof(int));
        cublasLtMatmulHeuristicResult_t chk{};
        if (cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &c, &chk) != CUBLAS_STATUS_SUCCESS) continue;
        if (chk.workspaceSize > ws_bytes) continue;
        ++checked;
        const float ms = time(c);
        if (ms > 0) found.push_back({"search: " + describe(c), ms});
      }
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.ms < b.ms; });
  std::printf("%d algorithm ids, %d configurations checked; fastest of %zu:\n", n_ids, checked, found.size());
  for (size_t i = 0; i < std::min<size_t>(8, found.size()); ++i)
    std::printf("  %.3f ms (%.0f TFLOP/s, %.2fx of heuristic #0)  %s\n", found[i].ms, flop / found[i].ms / 1e9,
                first_ms / found[i].ms, found[i].what.c_str());
  return 0;
}
