// Device kernels of the CUDA backend (shared by the encoder and the op tests).
// Element type T is __half or __nv_bfloat16; all reductions accumulate in fp32.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "util/error.h"

#define EK_CUDA(call)                                                                                     \
  do {                                                                                                    \
    cudaError_t err_ = (call);                                                                            \
    if (err_ != cudaSuccess)                                                                              \
      throw ::embedkit::Error(std::string("CUDA error: ") + cudaGetErrorString(err_) + " in " #call " at " \
                              __FILE__ ":" + std::to_string(__LINE__));                                   \
  } while (0)
#define EK_CUBLAS(call)                                                                                       \
  do {                                                                                                        \
    cublasStatus_t st_ = (call);                                                                              \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                         \
      throw ::embedkit::Error(std::string("cuBLASLt error ") + std::to_string(int(st_)) + " in " #call " at " \
                              __FILE__ ":" + std::to_string(__LINE__));                                       \
  } while (0)

namespace embedkit::cuda {

// ------------------------------------------------------------------ programmatic dependent launch
// Hopper's programmatic dependent launch (PDL; CUDA programming guide, "Programmatic Dependent
// Launch and Synchronization"): a kernel launched with the programmatic-stream-serialization
// attribute may be scheduled while the kernel before it in the stream is still draining, instead
// of after that kernel's completion has gone through the front end. Such a kernel must execute
// griddepcontrol.wait before it reads (or overwrites) anything the kernel before it touches: the
// wait returns once that grid has completed and its writes are visible. Every kernel below that
// may be launched this way waits first thing; launched normally, the wait is a no-op, so each
// kernel is correct either way. A small batch's pass is ~46 dependent kernels of a few µs each
// (docs/benchmarks.md), where these gaps are a large share.
__device__ __forceinline__ void wait_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether launch_kernel() on this thread adds the PDL attribute. The BERT encoder sets it (PdlScope)
// around the enqueue or graph capture of a small batch; everything else launches normally.
inline thread_local bool tl_pdl_launch = false;
struct PdlScope {
  bool prev;
  explicit PdlScope(bool on) : prev(tl_pdl_launch) { tl_pdl_launch = on; }
  ~PdlScope() { tl_pdl_launch = prev; }
  PdlScope(const PdlScope&) = delete;
  PdlScope& operator=(const PdlScope&) = delete;
};

// kernel<<<grid, block, smem, stream>>>(args…), with the PDL attribute when tl_pdl_launch is set.
template <typename... KArgs, typename... Args>
void launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  if (!tl_pdl_launch) {
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return;
  }
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  EK_CUDA(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// ------------------------------------------------------------------ GEMM (cuBLASLt)
// Row-major y[T, n_out] = x[T, n_in] · W[n_out, n_in]ᵀ (+ bias[n_out], epilogue), in cuBLASLt's
// column-major terms: yᵀ[n_out, T] = op(Wᵀ as [n_in, n_out])ᵀ · xᵀ[n_in, T]; the bias runs along
// n_out. With `residual` (row-major [T, n_out], may be y itself: cuBLASLt computes in place when C
// and D share pointer and layout), y = x·Wᵀ + bias + residual (beta = 1): the residual add of a
// transformer block rides in the GEMM epilogue.
//
// cuBLASLt's descriptors of one GEMM shape (operation, then A = W, B = x, C = D = y layouts).
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  void destroy() {
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (op) cublasLtMatmulDescDestroy(op);
    *this = LtDescs{};
  }
};
inline LtDescs lt_make_descs(cudaDataType_t dt, int T, int n_in, int n_out, cublasLtEpilogue_t epi) {
  LtDescs d;
  EK_CUBLAS(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  EK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  EK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  EK_CUBLAS(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  EK_CUBLAS(cublasLtMatrixLayoutCreate(&d.la, dt, n_in, n_out, n_in));
  EK_CUBLAS(cublasLtMatrixLayoutCreate(&d.lb, dt, n_in, T, n_in));
  EK_CUBLAS(cublasLtMatrixLayoutCreate(&d.lc, dt, n_out, T, n_out));
  return d;
}

// `algos` (optional) keeps one algorithm per exact shape, so repeated shapes and graph captures
// skip the heuristic. Opt-in (EMBEDKIT_LT_TUNE=n, 2…32): a big GEMM shape (T ≥ kLtTuneMinTokens)
// that comes back in a later batch (the encoder counts batches in `batch`) is timed once instead
// of taken on trust: the heuristic's first n answers each run kLtTuneReps times on the real
// operands (into the output, or into scratch when the residual is y itself), outside stream
// capture, and the fastest stays; at most kLtTuneMaxShapes shapes per encoder. Off by default
// because it does not pay on this hardware (H100, docs/benchmarks.md): +0…3% on long fixed-shape
// workloads, within run-to-run spread, while its one-time cost (n × reps runs per shape, pipeline
// stalls) made `embedkit embed` of 100k short texts 0.44–0.50 s → 0.68 s. Timing at one T and
// reusing the winner for nearby T was tried too: 25–48% lower throughput on such jobs.
// EMBEDKIT_LT_ALGO=k takes the heuristic's k-th answer for every shape (for measuring).
// Each entry also keeps its descriptors (made once, not four creates and destroys per call; the
// server's host time per small batch did not move measurably with it: ~1 ms either way, H100).
struct LtAlgoCache {
  using Key = std::tuple<int, int, int, int, int, int>;  // n_in, n_out, T, dtype, epilogue, residual kind
  struct Entry {
    cublasLtMatmulAlgo_t algo;
    LtDescs descs;
    uint64_t first_batch = 0;  // the batch that first used this shape
    bool final = false;        // timed, or not eligible
  };
  std::map<Key, Entry> exact;
  uint64_t batch = 0;  // incremented by the encoder per batch
  int tuned = 0;       // shapes timed so far
  LtAlgoCache() = default;
  LtAlgoCache(const LtAlgoCache&) = delete;
  LtAlgoCache& operator=(const LtAlgoCache&) = delete;
  ~LtAlgoCache() {
    for (auto& [k, e] : exact) e.descs.destroy();
  }
};
constexpr int kLtTuneMinTokens = 4096, kLtTuneReps = 3, kLtTuneMaxShapes = 64;

// Candidates timed per recurring shape: EMBEDKIT_LT_TUNE=n (2…32); unset or 0: off.
inline int lt_tune_candidates() {
  static const int n = [] {
    const char* e = std::getenv("EMBEDKIT_LT_TUNE");
    if (!e || std::getenv("EMBEDKIT_LT_ALGO")) return 0;
    const int v = std::atoi(e);
    return v <= 0 ? 0 : std::max(2, std::min(32, v));
  }();
  return n;
}

inline void lt_linear(cublasLtHandle_t lt, cudaDataType_t dt, const void* x, int T, int n_in, const void* W,
                      const void* bias, int n_out, void* y, cublasLtEpilogue_t epi, void* ws, size_t ws_bytes,
                      cudaStream_t stream, LtAlgoCache* algos, const void* residual = nullptr) {
  const int res_kind = residual ? (residual == y ? 2 : 1) : 0;
  const auto key = std::make_tuple(n_in, n_out, T, int(dt), int(epi), res_kind);
  LtAlgoCache::Entry* entry = nullptr;
  LtDescs local;  // without a cache: made and destroyed here
  if (algos) {
    auto it = algos->exact.find(key);
    if (it != algos->exact.end()) entry = &it->second;
  }
  const LtDescs& d = entry ? entry->descs : (local = lt_make_descs(dt, T, n_in, n_out, epi));
  struct Cleanup {
    LtDescs& l;
    ~Cleanup() { l.destroy(); }
  } cleanup{local};
  cublasLtMatmulDesc_t op = d.op;
  cublasLtMatrixLayout_t la = d.la, lb = d.lb, lc = d.lc;
  if (bias) EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float one = 1.f, zero = 0.f;
  const void* c_ptr = residual ? residual : y;
  const float* beta = residual ? &one : &zero;
  auto run = [&](const cublasLtMatmulAlgo_t* a, void* out) {
    return cublasLtMatmul(lt, op, &one, W, la, x, lb, beta, c_ptr, lc, out, lc, a, ws, ws_bytes, stream);
  };
  auto heuristic = [&](int n, cublasLtMatmulHeuristicResult_t* res) {
    cublasLtMatmulPreference_t pref;
    EK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    EK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                   sizeof ws_bytes));
    int found = 0;
    EK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, n, res, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (found == 0)
      throw Error("cuBLASLt found no algorithm for a " + std::to_string(T) + "x" + std::to_string(n_in) + "x" +
                  std::to_string(n_out) + " GEMM");
    return found;
  };
  // Times the heuristic's first answers on these operands and returns the fastest.
  auto tune = [&]() {
    cublasLtMatmulHeuristicResult_t res[32];
    const int found = heuristic(lt_tune_candidates(), res);
    if (found == 1) return res[0].algo;
    void* out = y;
    const size_t out_bytes = size_t(T) * size_t(n_out) * (dt == CUDA_R_32F ? 4 : 2);
    if (res_kind == 2) EK_CUDA(cudaMallocAsync(&out, out_bytes, stream));  // y is the residual: keep it
    cudaEvent_t ev[2];
    EK_CUDA(cudaEventCreate(&ev[0]));
    EK_CUDA(cudaEventCreate(&ev[1]));
    int best = 0;
    float best_ms = 1e30f;
    for (int i = 0; i < found; ++i) {
      if (run(&res[i].algo, out) != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; skip what fails
      EK_CUDA(cudaEventRecord(ev[0], stream));
      for (int r = 0; r < kLtTuneReps; ++r) EK_CUBLAS(run(&res[i].algo, out));
      EK_CUDA(cudaEventRecord(ev[1], stream));
      EK_CUDA(cudaEventSynchronize(ev[1]));
      float ms = 0.f;
      EK_CUDA(cudaEventElapsedTime(&ms, ev[0], ev[1]));
      if (ms < best_ms) best_ms = ms, best = i;
    }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    if (res_kind == 2) EK_CUDA(cudaFreeAsync(out, stream));
    return res[best].algo;
  };
  const cublasLtMatmulAlgo_t* algo = nullptr;
  if (algos) {
    auto it = algos->exact.find(key);
    if (it == algos->exact.end()) {
      // First use of this shape: the descriptors move into the cache (the local ones were made above).
      static const int pick = [] {
        const char* e = std::getenv("EMBEDKIT_LT_ALGO");
        return e ? std::max(0, std::min(7, std::atoi(e))) : 0;
      }();
      cublasLtMatmulHeuristicResult_t res[8];
      const int found = heuristic(pick + 1, res);
      LtAlgoCache::Entry e;
      e.algo = res[std::min(pick, found - 1)].algo;
      e.first_batch = algos->batch;
      e.final = lt_tune_candidates() == 0 || T < kLtTuneMinTokens;
      e.descs = local;
      local = LtDescs{};  // owned by the cache now; `op`, `la`… stay valid
      it = algos->exact.emplace(key, e).first;
    } else if (!it->second.final && algos->batch > it->second.first_batch) {
      cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
      EK_CUDA(cudaStreamIsCapturing(stream, &capturing));
      if (capturing == cudaStreamCaptureStatusNone) {
        if (algos->tuned < kLtTuneMaxShapes) {
          it->second.algo = tune();
          ++algos->tuned;
        }
        it->second.final = true;
      }
    }
    algo = &it->second.algo;
  }
  EK_CUBLAS(run(algo, y));
}

// ------------------------------------------------------------------ element types

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }


__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

constexpr int kMaxDPerLane = 32;  // d ≤ 1024 for the warp-per-row kernels

// Element pairs (d % 64 == 0) for the LayerNorm-style row kernels.
template <typename T> struct Pair;
template <> struct Pair<__half> {
  using type = __half2;
  static __device__ __forceinline__ float2 to_f2(__half2 v) { return __half22float2(v); }
  static __device__ __forceinline__ __half2 from_f2(float a, float b) { return __floats2half2_rn(a, b); }
};
template <> struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ float2 to_f2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ __nv_bfloat162 from_f2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

// kPairs element pairs (4, 8 or 16 bytes) per load and store: d = 384 moves 8 bytes a lane, 768
// and 1024 16 bytes, so each warp keeps a whole row's loads in flight with few instructions.
template <typename V, int N>
struct alignas(sizeof(V) * N) PairChunk {
  V v[N];
};

// The row-per-warp kernels below hold a row as v[k][j] (chunk k of this lane, pair j; `per` chunks
// valid) with `sum` its lane's partial sum. Two-pass statistics: mean, then inv = 1/sqrt(var + eps).
template <int kMaxChunks, int kPairs>
__device__ __forceinline__ void row_mean_inv(const float2 (&v)[kMaxChunks][kPairs], int per, float sum, int d,
                                             float eps, float& mean, float& inv) {
  mean = warp_sum(sum) / float(d);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k)
    if (k < per)
#pragma unroll
      for (int j = 0; j < kPairs; ++j)
        var += (v[k][j].x - mean) * (v[k][j].x - mean) + (v[k][j].y - mean) * (v[k][j].y - mean);
  inv = rsqrtf(warp_sum(var) / float(d) + eps);
}
// out_row[lane + 32k] = (v − mean)·inv·γ + β, chunk by chunk.
template <typename T, int kMaxChunks, int kPairs>
__device__ __forceinline__ void store_normalized(const float2 (&v)[kMaxChunks][kPairs], int per, float mean, float inv,
                                                 const T* g, const T* b, T* out_row, int lane) {
  using P = Pair<T>;
  using C = PairChunk<typename P::type, kPairs>;
  const C* gr = reinterpret_cast<const C*>(g);
  const C* br = reinterpret_cast<const C*>(b);
  C* o = reinterpret_cast<C*>(out_row);
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k) {
    if (k < per) {
      const C gg = gr[lane + 32 * k], bb = br[lane + 32 * k];
      C r;
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const float2 gj = P::to_f2(gg.v[j]), bj = P::to_f2(bb.v[j]);
        r.v[j] = P::from_f2((v[k][j].x - mean) * inv * gj.x + bj.x, (v[k][j].y - mean) * inv * gj.y + bj.y);
      }
      o[lane + 32 * k] = r;
    }
  }
}

// ------------------------------------------------------------------ embeddings + LayerNorm
// The embeddings kernel also moves a small batch's integer inputs to the device (zero-copy staging,
// bert_cuda.cu): ids, types and positions are read straight from the slot's pinned, mapped staging
// buffer, and the ints the later kernels read (cu_seqlens, pooling skips, attention tiles; n_stage
// of them) are copied from there to the workspace here — one kernel instead of a copy node and a
// kernel in the graph. stage_src null: nothing to copy (the inputs came by cudaMemcpyAsync).
__device__ __forceinline__ void copy_stage(const int* __restrict__ src, int* __restrict__ dst, int n) {
  if (!src) return;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

// One warp per token: hidden[t] = LN(word[id] + pos[p] + type[tt]).
template <typename T>
__global__ void embed_layernorm_kernel(const int* __restrict__ ids, const int* __restrict__ types,
                                       const int* __restrict__ pos, const T* __restrict__ word,
                                       const T* __restrict__ pos_emb, const T* __restrict__ type_emb,
                                       const T* __restrict__ g, const T* __restrict__ b, int T_, int d, int pos_off,
                                       float eps, T* __restrict__ out, const int* __restrict__ stage_src,
                                       int* __restrict__ stage_dst, int n_stage) {
  wait_prior_grid();
  copy_stage(stage_src, stage_dst, n_stage);
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const T* w = word + size_t(ids[t]) * d;
  const T* p = pos_emb + size_t(pos[t] + pos_off) * d;
  const T* ty = type_emb ? type_emb + size_t(types[t]) * d : nullptr;
  float v[kMaxDPerLane];
  float sum = 0.f;
  const int per = d / 32;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      float x = to_f(w[i]) + to_f(p[i]) + (ty ? to_f(ty[i]) : 0.f);
      v[k] = x;
      sum += x;
    }
  }
  const float mean = warp_sum(sum) / float(d);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k)
    if (k < per) var += (v[k] - mean) * (v[k] - mean);
  const float inv = rsqrtf(warp_sum(var) / float(d) + eps);
  T* o = out + size_t(t) * d;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      o[i] = from_f<T>((v[k] - mean) * inv * to_f(g[i]) + to_f(b[i]));
    }
  }
}

// Same, kPairs element pairs (4, 8 or 16 bytes) per load from each table and per store, so a warp
// keeps a whole row's gathers in flight (the scalar kernel issued 2-byte loads: 1.9 ms of MiniLM's
// long workload, ~4x its traffic's time on the H100).
template <typename T, int kPairs>
__global__ void embed_layernorm_vec_kernel(const int* __restrict__ ids, const int* __restrict__ types,
                                           const int* __restrict__ pos, const T* __restrict__ word,
                                           const T* __restrict__ pos_emb, const T* __restrict__ type_emb,
                                           const T* __restrict__ g, const T* __restrict__ b, int T_, int d,
                                           int pos_off, float eps, T* __restrict__ out, float* __restrict__ raw_r,
                                           float* __restrict__ raw_n, const int* __restrict__ stage_src,
                                           int* __restrict__ stage_dst, int n_stage, bool raw_sums,
                                           float* __restrict__ zero, int n_zero) {
  wait_prior_grid();
  copy_stage(stage_src, stage_dst, n_stage);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_zero; i += gridDim.x * blockDim.x) zero[i] = 0.f;
  using P = Pair<T>;
  using C = PairChunk<typename P::type, kPairs>;
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const C* w = reinterpret_cast<const C*>(word + size_t(ids[t]) * d);
  const C* p = reinterpret_cast<const C*>(pos_emb + size_t(pos[t] + pos_off) * d);
  const C* ty = type_emb ? reinterpret_cast<const C*>(type_emb + size_t(types[t]) * d) : nullptr;
  constexpr int kMaxChunks = kMaxDPerLane / (2 * kPairs);
  float2 v[kMaxChunks][kPairs];
  float sum = 0.f;
  const int per = d / (64 * kPairs);  // chunks per lane
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      const C a = w[i], c = p[i];
      C e;
      if (ty) e = ty[i];
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const float2 fa = P::to_f2(a.v[j]), fc = P::to_f2(c.v[j]);
        const float2 fe = ty ? P::to_f2(e.v[j]) : make_float2(0.f, 0.f);
        v[k][j] = make_float2(fa.x + fc.x + fe.x, fa.y + fc.y + fe.y);
        sum += v[k][j].x + v[k][j].y;
      }
    }
  }
  float mean, inv;
  row_mean_inv(v, per, sum, d, eps, mean, inv);
  if (raw_r) {  // the sum and its LayerNorm statistics: the LayerNorm is folded into layer 0's GEMMs
#pragma unroll
    for (int k = 0; k < kMaxChunks; ++k) {
      if (k < per) {
        C r;
#pragma unroll
        for (int j = 0; j < kPairs; ++j) r.v[j] = P::from_f2(v[k][j].x, v[k][j].y);
        reinterpret_cast<C*>(out + size_t(t) * d)[lane + 32 * k] = r;
      }
    }
    if (lane == 0) {
      if (raw_sums) {  // Σ and Σ² of the row, as the residual GEMMs' epilogues give them for later layers
        raw_r[t] = mean * float(d);
        raw_n[t] = (1.f / (inv * inv) - eps + mean * mean) * float(d);
      } else {
        raw_r[t] = inv, raw_n[t] = -mean * inv;
      }
    }
    return;
  }
  store_normalized<T>(v, per, mean, inv, g, b, out + size_t(t) * d, lane);
}

// pairs as for launch_add_layernorm (-1: the widest d allows; 0: the scalar kernel, any d % 32 == 0).
// raw_r, raw_n (fp32 [T_]): write the sum without its LayerNorm and the LayerNorm's row statistics
// there (r = 1/sqrt(var + eps), n = −mean·r; pairs ≥ 1 only), for the folded path (ln_fold_gemm.cu);
// with raw_sums, the row's Σ and Σ² instead (the small folded path, small_gemm.cu). zero[0, n_zero)
// is set to 0 on the way (the small folded path's row-sum buffers, which its GEMMs add into).
template <typename T>
void launch_embed_layernorm(const int* ids, const int* types, const int* pos, const T* word, const T* pos_emb,
                            const T* type_emb, const T* g, const T* b, int T_, int d, int pos_off, float eps, T* out,
                            cudaStream_t stream, int pairs = -1, float* raw_r = nullptr, float* raw_n = nullptr,
                            const int* stage_src = nullptr, int* stage_dst = nullptr, int n_stage = 0,
                            bool raw_sums = false, float* zero = nullptr, int n_zero = 0) {
  const int warps = 8;
  const dim3 grid((T_ + warps - 1) / warps), block(32 * warps);
  if (pairs < 0) pairs = d % 256 == 0 ? 4 : d % 128 == 0 ? 2 : d % 64 == 0 ? 1 : 0;
  EK_CHECK((pairs == 0 || pairs == 1 || pairs == 2 || pairs == 4) && (pairs == 0 || d % (64 * pairs) == 0),
           "embeddings: " + std::to_string(pairs) + " element pairs per load do not divide d = " + std::to_string(d));
  EK_CHECK((!raw_r && !zero) || pairs > 0, "embeddings: the raw sum needs d % 64 == 0, found d = " + std::to_string(d));
#define EK_EMB_LN(KERNEL)                                                                                    \
  launch_kernel(KERNEL, grid, block, 0, stream, ids, types, pos, word, pos_emb, type_emb, g, b, T_, d, pos_off, eps, \
                out, raw_r, raw_n, stage_src, stage_dst, n_stage, raw_sums, zero, n_zero)
  if (pairs == 4) EK_EMB_LN((embed_layernorm_vec_kernel<T, 4>));
  else if (pairs == 2) EK_EMB_LN((embed_layernorm_vec_kernel<T, 2>));
  else if (pairs == 1) EK_EMB_LN((embed_layernorm_vec_kernel<T, 1>));
  else
    launch_kernel(embed_layernorm_kernel<T>, grid, block, 0, stream, ids, types, pos, word, pos_emb, type_emb, g, b, T_,
                  d, pos_off, eps, out, stage_src, stage_dst, n_stage);
#undef EK_EMB_LN
}

// ------------------------------------------------------------------ LayerNorm row statistics
// For a LayerNorm folded into the GEMMs around it (ln_fold_gemm.cu): per row of x [T, d],
// r = 1/sqrt(var + eps) and n = −mean·r (fp32), two-pass in registers as the LayerNorm kernels;
// one read of x instead of the LayerNorm pass's read and write. One warp per row: measured on the
// H100 (MiniLM long, 64k-token batches, the 12 passes of a batch summed over the workload) 5.7 ms,
// against 6.1 / 7.8 ms for warps walking 2 / 4 rows at a time over a grid of 8 blocks per SM and
// 8.4 ms for the LayerNorm passes it replaces.
template <typename T, int kPairs>
__global__ void layernorm_stats_kernel(const T* __restrict__ x, int T_, int d, float eps, float* __restrict__ r,
                                       float* __restrict__ n) {
  using P = Pair<T>;
  using C = PairChunk<typename P::type, kPairs>;
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const C* xr = reinterpret_cast<const C*>(x + size_t(t) * d);
  constexpr int kMaxChunks = kMaxDPerLane / (2 * kPairs);
  float2 v[kMaxChunks][kPairs];
  float sum = 0.f;
  const int per = d / (64 * kPairs);
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k) {
    if (k < per) {
      const C h = xr[lane + 32 * k];
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        v[k][j] = P::to_f2(h.v[j]);
        sum += v[k][j].x + v[k][j].y;
      }
    }
  }
  float mean, inv;
  row_mean_inv(v, per, sum, d, eps, mean, inv);
  if (lane == 0) r[t] = inv, n[t] = -mean * inv;
}

// d % 64 == 0, d ≤ 1024; the widest load d allows.
template <typename T>
void launch_layernorm_stats(const T* x, int T_, int d, float eps, float* r, float* n, cudaStream_t stream) {
  EK_CHECK(d % 64 == 0 && d <= 32 * kMaxDPerLane, "LayerNorm stats: d = " + std::to_string(d) + " is not a multiple of 64 up to 1024");
  if (T_ == 0) return;
  const int warps = 8;
  const dim3 grid((T_ + warps - 1) / warps), block(32 * warps);
  if (d % 256 == 0) layernorm_stats_kernel<T, 4><<<grid, block, 0, stream>>>(x, T_, d, eps, r, n);
  else if (d % 128 == 0) layernorm_stats_kernel<T, 2><<<grid, block, 0, stream>>>(x, T_, d, eps, r, n);
  else layernorm_stats_kernel<T, 1><<<grid, block, 0, stream>>>(x, T_, d, eps, r, n);
}

// The same statistics from row sums Σx and Σx² (fp32, as the folded residual GEMMs accumulate them
// in their epilogue: ln_fold_gemm.cu), var = Σx²/d − mean² (clamped at 0).
static __global__ void layernorm_stats_from_sums_kernel(const float* __restrict__ sum, const float* __restrict__ sum_sq,
                                                 int T_, int d, float eps, float* __restrict__ r, float* __restrict__ n) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= T_) return;
  const float mean = sum[t] / float(d), var = fmaxf(sum_sq[t] / float(d) - mean * mean, 0.f);
  const float inv = rsqrtf(var + eps);
  r[t] = inv, n[t] = -mean * inv;
}
inline void launch_layernorm_stats_from_sums(const float* sum, const float* sum_sq, int T_, int d, float eps, float* r,
                                             float* n, cudaStream_t stream) {
  if (T_ == 0) return;
  layernorm_stats_from_sums_kernel<<<(T_ + 255) / 256, 256, 0, stream>>>(sum, sum_sq, T_, d, eps, r, n);
}

// ------------------------------------------------------------------ residual add + LayerNorm
// hidden[t] = LN(x[t] + hidden[t]), one warp per token; with x = nullptr, hidden[t] = LN(hidden[t])
// (the residual was already added in the GEMM epilogue: one read and one write per element).
template <typename T>
__global__ void add_layernorm_kernel(const T* __restrict__ x, T* __restrict__ hidden, const T* __restrict__ g,
                                     const T* __restrict__ b, int T_, int d, float eps) {
  wait_prior_grid();
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const T* xr = x ? x + size_t(t) * d : nullptr;
  T* hr = hidden + size_t(t) * d;
  float v[kMaxDPerLane];
  float sum = 0.f;
  const int per = d / 32;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      v[k] = (x ? to_f(xr[i]) : 0.f) + to_f(hr[i]);
      sum += v[k];
    }
  }
  const float mean = warp_sum(sum) / float(d);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k)
    if (k < per) var += (v[k] - mean) * (v[k] - mean);
  const float inv = rsqrtf(warp_sum(var) / float(d) + eps);
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      hr[i] = from_f<T>((v[k] - mean) * inv * to_f(g[i]) + to_f(b[i]));
    }
  }
}

template <typename T, bool kAdd, int kPairs>
__global__ void add_layernorm_vec_kernel(const T* __restrict__ x, T* __restrict__ hidden, const T* __restrict__ g,
                                         const T* __restrict__ b, int T_, int d, float eps) {
  wait_prior_grid();
  using P = Pair<T>;
  using C = PairChunk<typename P::type, kPairs>;
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const C* xr = kAdd ? reinterpret_cast<const C*>(x + size_t(t) * d) : nullptr;
  C* hr = reinterpret_cast<C*>(hidden + size_t(t) * d);
  constexpr int kMaxChunks = kMaxDPerLane / (2 * kPairs);
  float2 v[kMaxChunks][kPairs];
  float sum = 0.f;
  const int per = d / (64 * kPairs);  // chunks per lane
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k) {
    if (k < per) {
      const C h = hr[lane + 32 * k];
      C a;
      if (kAdd) a = xr[lane + 32 * k];
#pragma unroll
      for (int j = 0; j < kPairs; ++j) {
        const float2 r = P::to_f2(h.v[j]), xa = kAdd ? P::to_f2(a.v[j]) : make_float2(0.f, 0.f);
        v[k][j] = make_float2(xa.x + r.x, xa.y + r.y);
        sum += v[k][j].x + v[k][j].y;
      }
    }
  }
  float mean, inv;
  row_mean_inv(v, per, sum, d, eps, mean, inv);
  store_normalized<T>(v, per, mean, inv, g, b, hidden + size_t(t) * d, lane);
}

// pairs: element pairs per load and store (4: 16 bytes, 2: 8 bytes, 1: 4 bytes; 0: one element
// per load, any d % 32 == 0); -1 takes the widest that d allows. A width must divide the row
// (d % (64·pairs) == 0). The encoder picks it per hidden size (layernorm_pairs_for in
// bert_cuda.cu): the widest is not always the fastest (d = 768: 16-byte loads measured slower).
template <typename T>
void launch_add_layernorm(const T* x, T* hidden, const T* g, const T* b, int T_, int d, float eps, cudaStream_t stream,
                          int pairs = -1) {
  const int warps = 8;
  const dim3 grid((T_ + warps - 1) / warps), block(32 * warps);
  if (pairs < 0) pairs = d % 256 == 0 ? 4 : d % 128 == 0 ? 2 : d % 64 == 0 ? 1 : 0;
  EK_CHECK((pairs == 0 || pairs == 1 || pairs == 2 || pairs == 4) && (pairs == 0 || d % (64 * pairs) == 0),
           "LayerNorm: " + std::to_string(pairs) + " element pairs per load do not divide d = " + std::to_string(d));
#define EK_ADD_LN(PAIRS)                                                                                 \
  launch_kernel(x ? add_layernorm_vec_kernel<T, true, PAIRS> : add_layernorm_vec_kernel<T, false, PAIRS>, grid, \
                block, 0, stream, x, hidden, g, b, T_, d, eps)
  if (pairs == 4) EK_ADD_LN(4);
  else if (pairs == 2) EK_ADD_LN(2);
  else if (pairs == 1) EK_ADD_LN(1);
  else launch_kernel(add_layernorm_kernel<T>, grid, block, 0, stream, x, hidden, g, b, T_, d, eps);
#undef EK_ADD_LN
}

// ------------------------------------------------------------------ GELU (exact, erf)
template <typename T>
__global__ void gelu_kernel(T* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = to_f(x[i]);
    x[i] = from_f<T>(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
  }
}

// ------------------------------------------------------------------ flash attention (mma.sync)
// FlashAttention-2 style, on Hopper/Ampere tensor cores through mma.sync.m16n8k16 (fp32
// accumulate). A CTA of WARPS warps covers WARPS·MT·16 query rows of one (sequence, head); each
// warp owns MT 16-row m-tiles and keeps its Q fragments, running max and O accumulators in
// registers. K/V stream through STAGES shared-memory buffers, KB keys at a time.
// Fragment layouts (PTX ISA, mma m16n8k16):
//   A 16×16: a0 (row g, cols 2c..2c+1), a1 (row g+8), a2 (row g, cols +8), a3 (row g+8, cols +8)
//   B 16×8 : b0 (k 2c..2c+1, col g), b1 (k +8);  C 16×8: c0,c1 (row g, cols 2c..), c2,c3 (row g+8)
// with g = lane/4, c = lane%4. The S accumulator of two adjacent 8-key tiles is exactly the A
// fragment of P for the P·V product, so P never leaves registers.
//
// Per score the general softmax costs one FMNMX (row max), one FFMA (scale and max folded into
// the exponent: exp2(s·scale·log2e − m·scale·log2e)), one exponential and half a pack to
// fp16/bf16; the shifted form (FlashShape::SHIFTED, the default shapes) one exponential, half a
// pack and half a packed max, the max subtraction riding on the Q·Kᵀ mma's C operand.
// The row sums ride on the tensor cores: P·1 (a B fragment of ones) is one extra mma per 16 keys
// instead of 8 FADDs per thread, and sums exactly the rounded P that multiplies V.
// The exponentials bind at head dim 32 (MUFU.EX2 retires 16 per clock per SM, the tensor cores
// ~4096 FLOP = 32 scores' worth at dh 32); a polynomial exp2 on the FMA pipe for a quarter or half
// of them (FlashAttention-4's trick) was slower here (docs/benchmarks.md).
// Packed pairs of fp16/bf16 in one 32-bit register (the A-fragment form of P), either type.
template <typename T>
struct PackedPairOps {
  using P2 = typename Pair<T>::type;
  static __device__ __forceinline__ P2 as_pair(uint32_t x) { return *reinterpret_cast<P2*>(&x); }
  static __device__ __forceinline__ uint32_t as_bits(P2 h) { return *reinterpret_cast<uint32_t*>(&h); }
  static __device__ __forceinline__ uint32_t pack(float x, float y) { return as_bits(Pair<T>::from_f2(x, y)); }
  static __device__ __forceinline__ uint32_t scale(uint32_t x, float f) {
    return as_bits(__hmul2(as_pair(x), Pair<T>::from_f2(f, f)));
  }
  // max(a, b) per half, and the larger half of x as a float
  static __device__ __forceinline__ uint32_t max2(uint32_t a, uint32_t b) {
    return as_bits(__hmax2(as_pair(a), as_pair(b)));
  }
  static __device__ __forceinline__ float max_half(uint32_t x) {
    const float2 f = Pair<T>::to_f2(as_pair(x));
    return fmaxf(f.x, f.y);
  }
};
// mma: c += a·b; mma_c: d = a·b + c (c left unchanged).
#define EK_MMA_OPS(T, PTX_TYPE, ONES)                                                                                \
  template <>                                                                                                        \
  struct MmaOps<T> : PackedPairOps<T> {                                                                              \
    static constexpr uint32_t kOnes = ONES;                                                                          \
    static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {    \
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                                  \
                   ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                                     \
                   : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                                  \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));                                  \
    }                                                                                                                \
    static __device__ __forceinline__ void mma_c(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,   \
                                                 const float (&c)[4]) {                                              \
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                                  \
                   ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"                                 \
                   : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                                  \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), \
                     "f"(c[3]));                                                                                     \
    }                                                                                                                \
  };
template <typename T> struct MmaOps;
EK_MMA_OPS(__half, "f16", 0x3C003C00u)          // ones: half2(1, 1)
EK_MMA_OPS(__nv_bfloat16, "bf16", 0x3F803F80u)  // bfloat162(1, 1)
#undef EK_MMA_OPS

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ float fast_exp2(float x) {  // MUFU.EX2; exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// 16-byte global→shared copy that bypasses registers; src_bytes = 0 writes zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Online-softmax step shared by the attention kernels. mx[i]: this thread's max of row i (its
// rows g and g+8) over the new key tile; becomes the row's max across the quad holding it.
// Returns (warp-uniform) whether any row of the warp must move its running max m_run.
// Lazy rescaling: the running max m (the shift of the exponentials) moves only when some row's
// max grew by more than 2^kRescaleLog2 in exp2 units. Until then P = exp2(s·c − m·c) stays ≤ 2^8
// (fine in fp16/bf16, and O and the row sums accumulate in fp32) and O / rowsum is the same
// softmax (shift-invariant), so the rescale of O and the row sums is skipped on most tiles.
__device__ __forceinline__ bool rows_max_grew(float (&mx)[2], const float (&m_run)[2], float scale_log2) {
  constexpr float kRescaleLog2 = 8.f;
  bool grow = false;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    grow |= (mx[i] - m_run[i]) * scale_log2 > kRescaleLog2;  // first tile: m = -inf → grows
  }
  return __any_sync(0xffffffffu, grow);
}

// A launch-shape index from the environment variable `name` (for measuring), else `fallback`.
inline int shape_from_env(const char* name, int fallback, int count) {
  const char* e = std::getenv(name);
  const int i = e ? std::atoi(e) : fallback;
  if (i < 0 || i >= count)
    throw Error(std::string(name) + "=" + std::string(e) + ": expected 0.." + std::to_string(count - 1));
  return i;
}

// One launch shape of the attention kernel.
//   WARPS × MT × 16 query rows per CTA, KB keys per K/V tile, STAGES K/V buffers in flight,
//   MIN_CTAS: CTAs per SM the register allocation must allow (__launch_bounds__).
//   SHIFTED: the tensor cores subtract the running max (see the kernel); 0: the FMA pipe does.
template <int DH_, int WARPS_, int MT_, int KB_, int STAGES_, int MIN_CTAS_ = 1, int SHIFTED_ = 0>
struct FlashShape {
  static constexpr int DH = DH_, WARPS = WARPS_, MT = MT_, KB = KB_, STAGES = STAGES_;
  static constexpr int MIN_CTAS = MIN_CTAS_;
  static constexpr bool SHIFTED = SHIFTED_ != 0;
  static constexpr int rows = WARPS * MT * 16;
  static constexpr int ld = DH + 8;  // 16-byte row pad: ldmatrix rows fall in distinct banks
  template <typename T>
  static constexpr size_t smem_bytes() {  // Q tile + STAGES × (K, V) tiles
    return sizeof(T) * size_t(rows + 2 * STAGES * KB) * ld;
  }
};

template <typename T, typename S>
__global__ void __launch_bounds__(S::WARPS * 32, S::MIN_CTAS) flash_attention_kernel(const T* __restrict__ qkv,
                                                                        const int* __restrict__ cu_seqlens,
                                                                        const int2* __restrict__ tiles, int H,
                                                                        int kv_heads, float scale_log2, int causal,
                                                                        T* __restrict__ out) {
  wait_prior_grid();
  constexpr int DH = S::DH, MT = S::MT, KB = S::KB, STAGES = S::STAGES, ld = S::ld;
  constexpr int WR = MT * 16, QR = S::rows, kThreads = S::WARPS * 32, kVec = 8, kVecPerRow = DH / kVec;
  static_assert(STAGES >= 2 && KB % 16 == 0 && DH % 16 == 0, "flash shape");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* KV = Qs + QR * ld;  // stage s: K at KV + 2s·KB·ld, V right after

  const int2 tile = tiles[blockIdx.x];
  const int h = blockIdx.y;
  const int seq_start = cu_seqlens[tile.x], L = cu_seqlens[tile.x + 1] - seq_start, q0 = tile.y;
  // Token row of qkv: q (H heads) | k (KV heads) | v (KV heads); query head h reads key/value
  // head h / (H / kv_heads) (grouped-query attention; kv_heads = H is multi-head attention, BERT's).
  const int d = H * DH, kv_d = kv_heads * DH, row_stride = d + 2 * kv_d, kv_h = h / (H / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c4 = lane % 4;
  const int w0 = q0 + warp * WR;  // first query row of this warp
  const bool warp_active = w0 < L;
  const int kv_end = causal ? min(L, q0 + QR) : L;
  const int n_kv = (kv_end + KB - 1) / KB;

  // K/V tile i goes to stage i % STAGES with cp.async; every call commits one group (empty past
  // the end) so that "all but the newest STAGES−2 groups done" always means "tile i landed".
  // Each thread copies kCopies 16-byte vectors of K and of V: rows r0 + j·kRowStep, column c0.
  static_assert(KB * kVecPerRow % kThreads == 0 && kThreads % kVecPerRow == 0, "copy split");
  constexpr int kCopies = KB * kVecPerRow / kThreads, kRowStep = kThreads / kVecPerRow;
  const int copy_r0 = threadIdx.x / kVecPerRow, copy_c0 = (threadIdx.x % kVecPerRow) * kVec;
  const T* k_head = qkv + size_t(seq_start) * row_stride + d + kv_h * DH + copy_c0;  // K row 0 of this head
  auto issue_kv = [&](int i) {
    if (i < n_kv) {
      const int k0 = i * KB;
      T* Ks = KV + 2 * (i % STAGES) * KB * ld + copy_r0 * ld + copy_c0;
      const T* src = k_head + size_t(k0 + copy_r0) * row_stride;
#pragma unroll
      for (int j = 0; j < kCopies; ++j) {
        const bool in = k0 + copy_r0 + j * kRowStep < L;  // past the end: zeros, source not read
        const T* kp = in ? src + size_t(j * kRowStep) * row_stride : k_head;
        cp_async_16(Ks + j * kRowStep * ld, kp, in ? 16 : 0);
        cp_async_16(Ks + (KB + j * kRowStep) * ld, kp + kv_d, in ? 16 : 0);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < STAGES - 1; ++i) issue_kv(i);

  for (int e = threadIdx.x; e < QR * kVecPerRow; e += kThreads) {
    const int r = e / kVecPerRow, c = (e % kVecPerRow) * kVec;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (q0 + r < L) v = *reinterpret_cast<const uint4*>(qkv + size_t(seq_start + q0 + r) * row_stride + h * DH + c);
    *reinterpret_cast<uint4*>(Qs + r * ld + c) = v;
  }
  __syncthreads();
  uint32_t qf[MT][DH / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int kk = 0; kk < DH / 16; ++kk)
      ldmatrix_x4(qf[mt][kk], Qs + (warp * WR + mt * 16 + (lane % 16)) * ld + kk * 16 + (lane / 16) * 8);
  // SHIFTED: Q carries the softmax scale (scores come out in exp2 units), and the first k-step of
  // Q·Kᵀ starts from C = −m (this row's running max) instead of 0, so the tensor cores hand over
  // x = s·scale − m and the exponential needs no FFMA. The row max is not computed per tile:
  // the P values themselves show whether some row grew past the lazy-rescale threshold (P > 2^8,
  // one packed max per pair), and only then does the tile go again through the general path
  // (recomputing S from C = 0, with the max first). That path also takes a warp's first tile and
  // tiles that need masks.
  // Unless the caller prescaled q (launch_attention's q_prescaled, scale_log2 = 1), the scale is
  // applied here, at the cost of one more rounding of q.
  if constexpr (S::SHIFTED) {
    if (scale_log2 != 1.f) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int kk = 0; kk < DH / 16; ++kk)
#pragma unroll
          for (int r = 0; r < 4; ++r) qf[mt][kk][r] = MmaOps<T>::scale(qf[mt][kk][r], scale_log2);
      scale_log2 = 1.f;
    }
  }
  float neg_m4[MT][4];  // SHIFTED: −m of rows g, g, g+8, g+8 (the C operand)
  bool started = false;  // SHIFTED: this warp has a running max

  float o[MT][DH / 8][4];
  float rowsum[MT][4];  // P·1: c0 = c1 = sum of row g, c2 = c3 = sum of row g+8
  float m_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < DH / 8; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
    rowsum[mt][0] = rowsum[mt][1] = rowsum[mt][2] = rowsum[mt][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
  }

  for (int it = 0; it < n_kv; ++it) {
    cp_async_wait<STAGES - 2>();
    // One barrier per tile: tile `it` is visible to every thread, and every warp is done with
    // tile it−1, whose stage the copy issued next refills.
    __syncthreads();
    issue_kv(it + STAGES - 1);
    const int k0 = it * KB;
    const T* Ks = KV + 2 * (it % STAGES) * KB * ld;
    const T* Vs = Ks + KB * ld;
    // Causal: a warp whose last query row precedes every key of this tile has nothing to add
    // (warps of the CTA's first rows skip the last tile of the diagonal).
    if (!warp_active || (causal && k0 > w0 + WR - 1)) continue;
    float s[MT][KB / 8][4];
    uint32_t pa[MT][KB / 16][4];  // P as A fragments (fp16/bf16)
    // Only tiles past the sequence end (or the diagonal) need masks.
    const bool needs_mask = k0 + KB > L || (causal && k0 + KB > w0);
    bool general = true;
    if constexpr (S::SHIFTED) {
      if (started && !needs_mask) {
        // x = Q·Kᵀ − m from the tensor cores (Q already scaled), P = exp2(x), packed
#pragma unroll
        for (int nn = 0; nn < KB / 16; ++nn) {
#pragma unroll
          for (int kk = 0; kk < DH / 16; ++kk) {
            uint32_t b[4];
            ldmatrix_x4(b, Ks + (nn * 16 + (lane % 8) + (lane / 16) * 8) * ld + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              if (kk == 0) {
                MmaOps<T>::mma_c(s[mt][2 * nn], qf[mt][kk], b[0], b[1], neg_m4[mt]);
                MmaOps<T>::mma_c(s[mt][2 * nn + 1], qf[mt][kk], b[2], b[3], neg_m4[mt]);
              } else {
                MmaOps<T>::mma(s[mt][2 * nn], qf[mt][kk], b[0], b[1]);
                MmaOps<T>::mma(s[mt][2 * nn + 1], qf[mt][kk], b[2], b[3]);
              }
            }
          }
        }
        uint32_t pmax = 0;  // +0.0 in both formats; P ≥ 0
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int kk = 0; kk < KB / 16; ++kk) {
            pa[mt][kk][0] = MmaOps<T>::pack(fast_exp2(s[mt][2 * kk][0]), fast_exp2(s[mt][2 * kk][1]));
            pa[mt][kk][1] = MmaOps<T>::pack(fast_exp2(s[mt][2 * kk][2]), fast_exp2(s[mt][2 * kk][3]));
            pa[mt][kk][2] = MmaOps<T>::pack(fast_exp2(s[mt][2 * kk + 1][0]), fast_exp2(s[mt][2 * kk + 1][1]));
            pa[mt][kk][3] = MmaOps<T>::pack(fast_exp2(s[mt][2 * kk + 1][2]), fast_exp2(s[mt][2 * kk + 1][3]));
            pmax = MmaOps<T>::max2(pmax, MmaOps<T>::max2(MmaOps<T>::max2(pa[mt][kk][0], pa[mt][kk][1]),
                                                         MmaOps<T>::max2(pa[mt][kk][2], pa[mt][kk][3])));
          }
        // Past 2^8 (or inf / NaN): some row's max grew beyond the lazy threshold; redo the tile.
        general = __any_sync(0xffffffffu, !(MmaOps<T>::max_half(pmax) <= 256.f));
      }
    }
    if (general) {
      // S[WR, KB] = Q · Kᵀ (each K fragment feeds MT m-tiles)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < KB / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DH / 16; ++kk) {
#pragma unroll
        for (int nn = 0; nn < KB / 16; ++nn) {
          uint32_t b[4];
          ldmatrix_x4(b, Ks + (nn * 16 + (lane % 8) + (lane / 16) * 8) * ld + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            MmaOps<T>::mma(s[mt][2 * nn], qf[mt][kk], b[0], b[1]);
            MmaOps<T>::mma(s[mt][2 * nn + 1], qf[mt][kk], b[2], b[3]);
          }
        }
      }
      // Online softmax on raw scores
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int qa = w0 + mt * 16 + g, qb = qa + 8;  // this thread's two query rows
        if (needs_mask) {
#pragma unroll
          for (int j = 0; j < KB / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = k0 + j * 8 + c4 * 2 + (e & 1);
              if (key >= L || (causal && key > (e < 2 ? qa : qb))) s[mt][j][e] = -INFINITY;
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < KB / 8; ++j) {
          mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
          mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
        }
        if (rows_max_grew(mx, m_run[mt], scale_log2)) {
          float alpha[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const float m_new = fmaxf(m_run[mt][i], mx[i]);
            alpha[i] = m_run[mt][i] == -INFINITY ? 0.f : fast_exp2((m_run[mt][i] - m_new) * scale_log2);
            m_run[mt][i] = m_new;
          }
#pragma unroll
          for (int j = 0; j < DH / 8; ++j) {
            o[mt][j][0] *= alpha[0];
            o[mt][j][1] *= alpha[0];
            o[mt][j][2] *= alpha[1];
            o[mt][j][3] *= alpha[1];
          }
          rowsum[mt][0] *= alpha[0];
          rowsum[mt][1] *= alpha[0];
          rowsum[mt][2] *= alpha[1];
          rowsum[mt][3] *= alpha[1];
        }
        float neg_m[2];
#pragma unroll
        for (int i = 0; i < 2; ++i)  // a row with no unmasked key yet: exp2(-inf) = 0
          neg_m[i] = m_run[mt][i] == -INFINITY ? 0.f : -m_run[mt][i] * scale_log2;
#pragma unroll
        for (int j = 0; j < KB / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float x = fmaf(s[mt][j][e], scale_log2, neg_m[e >> 1]);
            s[mt][j][e] = fast_exp2(x);
          }
        }
        // The S accumulators of key tiles 2kk, 2kk+1 are the A fragment of P for k-step kk.
#pragma unroll
        for (int kk = 0; kk < KB / 16; ++kk) {
          pa[mt][kk][0] = MmaOps<T>::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][kk][1] = MmaOps<T>::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][kk][2] = MmaOps<T>::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][kk][3] = MmaOps<T>::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
        if constexpr (S::SHIFTED) {
          neg_m4[mt][0] = neg_m4[mt][1] = neg_m[0];
          neg_m4[mt][2] = neg_m4[mt][3] = neg_m[1];
        }
      }
      if constexpr (S::SHIFTED) started = true;
    }  // general
    // O[WR, DH] += P[WR, KB] · V[KB, DH] (each V fragment feeds MT m-tiles); rowsum += P · 1
#pragma unroll
    for (int kk = 0; kk < KB / 16; ++kk) {
#pragma unroll
      for (int nn = 0; nn < DH / 16; ++nn) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, Vs + (kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * ld + nn * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          MmaOps<T>::mma(o[mt][2 * nn], pa[mt][kk], b[0], b[1]);
          MmaOps<T>::mma(o[mt][2 * nn + 1], pa[mt][kk], b[2], b[3]);
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) MmaOps<T>::mma(rowsum[mt], pa[mt][kk], MmaOps<T>::kOnes, MmaOps<T>::kOnes);
    }
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the CTA exits
  if (!warp_active) return;
  // Normalize and stage this warp's rows in its own slice of the Q tile (read only by this warp,
  // into registers, before the loop), then write whole rows with 16-byte stores.
  T* Os = Qs + warp * WR * ld;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const float inv_a = rowsum[mt][0] > 0.f ? 1.f / rowsum[mt][0] : 0.f;
    const float inv_b = rowsum[mt][2] > 0.f ? 1.f / rowsum[mt][2] : 0.f;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j) {
      const int col = j * 8 + c4 * 2;
      *reinterpret_cast<uint32_t*>(Os + (mt * 16 + g) * ld + col) = MmaOps<T>::pack(o[mt][j][0] * inv_a, o[mt][j][1] * inv_a);
      *reinterpret_cast<uint32_t*>(Os + (mt * 16 + g + 8) * ld + col) =
          MmaOps<T>::pack(o[mt][j][2] * inv_b, o[mt][j][3] * inv_b);
    }
  }
  __syncwarp();
  for (int e = lane; e < WR * kVecPerRow; e += 32) {
    const int r = e / kVecPerRow, c = (e % kVecPerRow) * kVec;
    if (w0 + r < L)
      *reinterpret_cast<uint4*>(out + size_t(seq_start + w0 + r) * d + h * DH + c) =
          *reinterpret_cast<const uint4*>(Os + r * ld + c);
  }
}

template <typename T, typename S>
void launch_flash(const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H, int KV, float scale_log2,
                  bool causal, T* out, cudaStream_t stream) {
  const size_t smem = S::template smem_bytes<T>();
  static bool configured = false;  // per instantiation; one device per process
  if (!configured) {
    EK_CUDA(cudaFuncSetAttribute(flash_attention_kernel<T, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  launch_kernel(flash_attention_kernel<T, S>, dim3(n_tiles, H), dim3(S::WARPS * 32), smem, stream, qkv, cu, tiles, H,
                KV, scale_log2, causal ? 1 : 0, out);
}

// Batches whose longest sequence is at most kShortSeqMax tokens use one warp (16 query rows)
// per CTA, so little of each CTA is padding; longer ones use the shape chosen for their head
// dim (attention_shape_rows), several warps sharing each K/V tile.
constexpr int kShortSeqMax = 64;

// Query rows per CTA for a batch (the tiles of cu_seqlens are cut at this size).
int attention_tile_rows(int max_len, int dh);
// ctx[T, H*dh] = attention over qkv[T, (H + 2*KV)*dh] (per token: q | k | v, head-major; KV = H
// for multi-head attention, KV < H with H % KV == 0 for grouped-query attention); `tiles` are
// (sequence, first query row) pairs cut at attention_tile_rows(). q_prescaled: q already carries
// the softmax scale in exp2 units, log2(e)/√dh (kQueryScale; folded into the q projection at
// load, so the scores need no scaling and the exponent no FMA). Defined in bert_cuda.cu for
// __half and __nv_bfloat16.
template <typename T>
void launch_attention(int dh, int tile_rows, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H,
                      int KV, bool causal, T* out, cudaStream_t stream, bool q_prescaled = false);
// The factor q_prescaled queries carry: log2(e)/√dh.
inline float query_scale_log2(int dh) { return 1.4426950408889634f / std::sqrt(float(dh)); }

// ------------------------------------------------------------------ row L2 normalization (fp32)
// One warp per row: x[r] /= max(‖x[r]‖, 1e-12), as torch.nn.functional.normalize.
static __global__ void l2_normalize_rows_kernel(float* x, int rows, int dim) {
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;
  float* v = x + size_t(r) * dim;
  float ss = 0.f;
  for (int i = lane; i < dim; i += 32) ss += v[i] * v[i];
  const float inv = 1.f / fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
  for (int i = lane; i < dim; i += 32) v[i] *= inv;
}

// ------------------------------------------------------------------ pooling (+ normalize)
// One block per sequence; modes concatenated in sentence-transformers' order. The block splits the
// row into chunks of VEC elements (16 bytes when d % 8 == 0) and the sequence's tokens into groups:
// thread (g, c) accumulates chunk c over tokens m0 + g, m0 + g + G, … (four loads in flight), and
// the groups' partials meet in shared memory. (The first form, one thread per element walking the
// tokens one by one with 128 threads a block, took 1.8 ms of MiniLM's long workload on the H100,
// ~7x the time of its 50 MB per 64k-token batch.)
struct PoolModes {
  int cls, max, mean, mean_sqrt, weighted, last;
};
constexpr int kPoolThreads = 512;
// A LayerNorm the pooling applies to each row it reads: y = (x·r_t + n_t)·γ + β, with r = 1/σ and
// n = −μ/σ per token (launch_layernorm_stats*). Lets the encoder skip its last LayerNorm pass.
template <typename T>
struct PoolNorm {
  const float *r = nullptr, *n = nullptr;
  const T *g = nullptr, *b = nullptr;
};

template <typename T, int VEC> struct PoolLoad;
template <typename T> struct PoolLoad<T, 1> {
  static __device__ __forceinline__ void run(const T* p, float* f) { f[0] = to_f(*p); }
};
template <typename T> struct PoolLoad<T, 8> {
  static __device__ __forceinline__ void run(const T* p, float* f) {
    using P = Pair<T>;
    const PairChunk<typename P::type, 4> c = *reinterpret_cast<const PairChunk<typename P::type, 4>*>(p);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 v = P::to_f2(c.v[j]);
      f[2 * j] = v.x;
      f[2 * j + 1] = v.y;
    }
  }
};

template <typename T, int VEC, bool LN>
__global__ void __launch_bounds__(kPoolThreads) pool_kernel(const T* __restrict__ hidden,
                                                            const int* __restrict__ cu_seqlens,
                                                            const int* __restrict__ skip, int d, PoolModes m,
                                                            int normalize, float* __restrict__ out, int out_dim,
                                                            PoolNorm<T> ln, float* __restrict__ mirror) {
  wait_prior_grid();
  __shared__ float part[kPoolThreads * VEC];  // [G][Cb·VEC] partials of one mode
  const int s = blockIdx.x;
  const int t0 = cu_seqlens[s], t1 = cu_seqlens[s + 1];
  const int m0 = min(t1, t0 + (skip ? skip[s] : 0));
  const int n = t1 - m0;
  float* o = out + size_t(s) * out_dim;
  // Output offsets of the modes (sentence-transformers' order: cls, max, mean, mean_sqrt, weighted, last).
  const int o_max = m.cls * d, o_mean = o_max + m.max * d, o_msqrt = o_mean + m.mean * d,
            o_w = o_msqrt + m.mean_sqrt * d, o_last = o_w + m.weighted * d;
  auto row_value = [&](int t, int i) {
    const float x = to_f(hidden[size_t(t) * d + i]);
    return LN ? fmaf(fmaf(x, ln.r[t], ln.n[t]), to_f(ln.g[i]), to_f(ln.b[i])) : x;
  };
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    if (m.cls) o[i] = row_value(t0, i);
    if (m.last) o[o_last + i] = row_value(t1 > t0 ? t1 - 1 : t0, i);
  }
  const bool sum_modes = m.mean || m.mean_sqrt;
  if (m.max || sum_modes || m.weighted) {
    const int C = d / VEC;  // chunks per row
    for (int c0 = 0; c0 < C; c0 += kPoolThreads) {
      const int Cb = min(kPoolThreads, C - c0), G = kPoolThreads / Cb;
      const int g = threadIdx.x / Cb, c = c0 + threadIdx.x % Cb;
      float sum[VEC], mx[VEC], ws[VEC], gam[VEC], bet[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) sum[j] = 0.f, mx[j] = n > 0 ? -INFINITY : -1e9f, ws[j] = 0.f;
      if constexpr (LN) {
        if (c < C) {
          PoolLoad<T, VEC>::run(ln.g + size_t(c) * VEC, gam);
          PoolLoad<T, VEC>::run(ln.b + size_t(c) * VEC, bet);
        }
      }
      auto add = [&](float* f, int t) {
        const float wt = float(t - t0 + 1);
        if constexpr (LN) {
          const float r = ln.r[t], nn = ln.n[t];
#pragma unroll
          for (int j = 0; j < VEC; ++j) f[j] = fmaf(fmaf(f[j], r, nn), gam[j], bet[j]);
        }
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          sum[j] += f[j];
          mx[j] = fmaxf(mx[j], f[j]);
          ws[j] += wt * f[j];
        }
      };
      if (g < G) {
        const T* col = hidden + size_t(c) * VEC;
        int t = m0 + g;
        for (; t + 3 * G < t1; t += 4 * G) {
          float f[4][VEC];
#pragma unroll
          for (int u = 0; u < 4; ++u) PoolLoad<T, VEC>::run(col + size_t(t + u * G) * d, f[u]);
#pragma unroll
          for (int u = 0; u < 4; ++u) add(f[u], t + u * G);
        }
        for (; t < t1; t += G) {
          float f[VEC];
          PoolLoad<T, VEC>::run(col + size_t(t) * d, f);
          add(f, t);
        }
      }
      // Reduces one accumulator over the groups and writes (value · scale) at `off` (and, for the
      // sum, again at `off2` with scale2).
      auto reduce = [&](const float* acc, bool is_max, int off, float scale, int off2, float scale2) {
        if (g < G)
#pragma unroll
          for (int j = 0; j < VEC; ++j) part[(g * Cb + threadIdx.x % Cb) * VEC + j] = acc[j];
        __syncthreads();
        for (int i = threadIdx.x; i < Cb * VEC; i += blockDim.x) {
          float r = part[i];
          for (int k = 1; k < G; ++k) r = is_max ? fmaxf(r, part[k * Cb * VEC + i]) : r + part[k * Cb * VEC + i];
          const int col = c0 * VEC + i;
          if (off >= 0) o[off + col] = r * scale;
          if (off2 >= 0) o[off2 + col] = r * scale2;
        }
        __syncthreads();
      };
      const float cnt = fmaxf(float(n), 1e-9f);
      if (m.max) reduce(mx, true, o_max, 1.f, -1, 0.f);
      if (sum_modes) reduce(sum, false, m.mean ? o_mean : -1, 1.f / cnt, m.mean_sqrt ? o_msqrt : -1, 1.f / sqrtf(cnt));
      if (m.weighted) {
        // Σ weights = Σ_{t = m0}^{t1 - 1} (t − t0 + 1), in closed form.
        const float a = float(m0 - t0 + 1), z = float(t1 - t0);
        reduce(ws, false, o_w, 1.f / fmaxf(0.5f * (a + z) * float(n), 1e-9f), -1, 0.f);
      }
    }
  }
  if (normalize) {
    __syncthreads();
    __shared__ float partial[32];
    float ss = 0.f;
    for (int i = threadIdx.x; i < out_dim; i += blockDim.x) ss += o[i] * o[i];
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
      float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
      v = warp_sum(v);
      if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    const float inv = 1.f / fmaxf(sqrtf(partial[0]), 1e-12f);
    for (int i = threadIdx.x; i < out_dim; i += blockDim.x) o[i] *= inv;
  }
  // Zero-copy: the finished row also goes straight to the caller's pinned, mapped host buffer
  // (read back from L1/L2, written across PCIe), so the pass needs no device-to-host copy node.
  if (mirror) {
    __syncthreads();
    float* h = mirror + size_t(s) * out_dim;
    for (int i = threadIdx.x; i < out_dim; i += blockDim.x) h[i] = o[i];
  }
}

// hidden [tokens, d] → out [S, out_dim] (out_dim = d × the modes on); the 16-byte form when d % 8 == 0.
// With ln.r set, each row is LayerNormed as it is read (PoolNorm).
template <typename T>
void launch_pool(const T* hidden, const int* cu_seqlens, const int* skip, int S, int d, PoolModes m, bool normalize,
                 float* out, int out_dim, cudaStream_t stream, PoolNorm<T> ln = {}, float* mirror = nullptr) {
  if (S == 0) return;
  const bool vec = d % 8 == 0;
  auto kernel = ln.r ? (vec ? pool_kernel<T, 8, true> : pool_kernel<T, 1, true>)
                     : (vec ? pool_kernel<T, 8, false> : pool_kernel<T, 1, false>);
  launch_kernel(kernel, dim3(S), dim3(kPoolThreads), 0, stream, hidden, cu_seqlens, skip, d, m, int(normalize), out,
                out_dim, ln, mirror);
}

}  // namespace embedkit::cuda
