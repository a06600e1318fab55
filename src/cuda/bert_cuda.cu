// CUDA BERT encoder on packed batches (no padding anywhere).
//
// Per layer (T tokens, d hidden, I intermediate, H heads, dh = d/H):
//   qkv[T,3d]   = hidden · W_qkvᵀ + b          cuBLASLt, bias epilogue
//   ctx[T,d]    = varlen attention(qkv)         one kernel, tensor cores (mma.sync), online softmax,
//                                               no [S,H,L,L] tensor in device memory
//   hidden      = ctx · W_oᵀ + b + hidden       cuBLASLt, bias + residual (beta = 1) epilogue, in place
//   hidden      = LN(hidden)                    one read, one write
//   inter[T,I]  = gelu(hidden · W_iᵀ + b)       cuBLASLt, bias + GELU epilogue (or an exact-erf pass)
//   hidden      = inter · W_o2ᵀ + b + hidden    cuBLASLt, bias + residual epilogue, in place
//   hidden      = LN(hidden)
// then segmented pooling (+ L2 normalize) → [S, pooled] fp32 → one copy to the host.
// Activations are stored in fp16/bf16; every reduction (GEMM, softmax, LayerNorm, pooling)
// accumulates in fp32, as PyTorch does for these dtypes.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <array>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/attention_wgmma.h"
#include "cuda/ln_fold_gemm.h"
#include "cuda/bert_cuda.h"
#include "cuda/device_caps.h"
#include "cuda/graph_buckets.h"
#include "cuda/small_gemm.h"
#include "cuda/kernels.cuh"
#include "util/error.h"

namespace embedkit::cuda {

size_t free_memory_bytes() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return free_b;
}

bool available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why)
      *why = std::string("no usable CUDA device (is there an NVIDIA GPU and driver on this machine?): ") +
             cudaGetErrorString(e);
    cudaGetLastError();
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

namespace {

// ------------------------------------------------------------------ host helpers

// Converts fp32 host weights to T (round to nearest) and copies them to a new device buffer.
template <typename T>
T* upload(const std::vector<float>& host, std::vector<void*>& owned) {
  std::vector<T> tmp(host.size());
  for (size_t i = 0; i < host.size(); ++i) {
    if constexpr (std::is_same_v<T, __half>) tmp[i] = __float2half_rn(host[i]);
    else tmp[i] = __float2bfloat16_rn(host[i]);
  }
  T* d = nullptr;
  EK_CUDA(cudaMalloc(&d, tmp.size() * sizeof(T)));
  owned.push_back(d);
  EK_CUDA(cudaMemcpy(d, tmp.data(), tmp.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace

// ------------------------------------------------------------------ attention launch shapes
// Batches with a sequence longer than kShortSeqMax run one of these shapes (FlashShape<dh,
// warps, m-tiles per warp, keys per K/V tile, K/V stages, CTAs per SM, shifted>).
// Index 0 is the default; EMBEDKIT_ATTN_SHAPE=i (or testing::set_attention_shape) picks another,
// for measuring. Measured on H100, fp16, 512-token sequences, 64k-token batches, attention ms over
// the long workload, MiniLM-L6 (dh 32) / BERT-base (dh 64), one call (docs/benchmarks.md,
// 2026-11-26 fourth session): 0: 24.1 / 83.3; 1 (the default before): 26.7 / 95.7; 2: 25.0 / 92.9;
// 3: 24.7 / 84.5; 4: 24.4 / 88.1; 64 rows per CTA (4 warps × 1 m-tile, 32-key tiles, shifted):
// 29.1 / 106.0. A later call, against 0 at 22.4–23.7 / 84.8–85.1: 16-key tiles at dh 64 (3 CTAs
// per SM) – / 99.9; 8 warps × 1 m-tile, 64-key (dh 32) / 32-key (dh 64) tiles, 2 stages, 2 CTAs
// per SM 29.7 / 105.3, with 4 / 3 CTAs (spills) 28.3 / 100.4. Earlier sweeps (the unshifted
// kernel): 8 warps × 1 m-tile 26.3 / 97.2, the same without a register cap 29.7 / 124.8, 128-key
// tiles 40.4 / 115.9, a quarter or half of the exponentials polynomial 31.0 / 125.4 and 33.9 / 130.5.
// Head dim 128: see Shapes128 below.
constexpr int kLongShapesCount = 5;
static int testing_shape_override = -1;
static int testing_wgmma_override = -1;
static int testing_ln_fold_override = -1;  // EMBEDKIT_LN_FOLD for encoders made after set_ln_fold()

// On Hopper (compute capability 9.0) EMBEDKIT_ATTN_WGMMA=1 runs the default long shape as the
// wgmma kernel (attention_wgmma.cu) for bidirectional attention at head dims 32 and 64. Off by
// default: slower than the mma.sync kernel so far (H100, long workload, attention ms MiniLM-L6 /
// BERT-base: 30.5 / 125 vs 24.8 / 93; docs/benchmarks.md, "wgmma attention").
static bool wgmma_attention_usable() {
  static const bool usable = current_device_is_sm90() && wgmma_attention_loadable();
  return usable;
}
static bool wgmma_attention_selected() {
  static const bool by_env = [] {
    const char* e = std::getenv("EMBEDKIT_ATTN_WGMMA");
    return e && std::string(e) == "1";
  }();
  const bool want = testing_wgmma_override >= 0 ? testing_wgmma_override == 1 : by_env;
  return want && wgmma_attention_usable();
}
namespace testing {
int attention_shape_count() { return kLongShapesCount; }
void set_attention_shape(int i) {
  EK_CHECK(i >= -1 && i < kLongShapesCount);
  testing_shape_override = i;
}
bool attention_wgmma_available() { return wgmma_attention_usable(); }
void set_attention_wgmma(int on) {
  EK_CHECK(on >= -1 && on <= 1);
  testing_wgmma_override = on;
}
bool ln_fold_available() { return ln_fold_usable(); }
void set_ln_fold(int mode) {
  EK_CHECK(mode >= -1 && mode <= 2);
  testing_ln_fold_override = mode;
}
}  // namespace testing
namespace {
template <int DH>
using ShortShape = FlashShape<DH, 1, 1, 32, 2>;  // 16 query rows: batches of short sequences
// 128 query rows as 4 warps × 2 m-tiles: each K/V fragment read from shared memory feeds two
// mma. 32-key tiles keep S and P small, so the register cap allows 4 CTAs per SM at dh 32 (≤ 128
// registers) and 3 at dh 64 (≤ 168): 16 / 12 warps per SM against 12 / 8 with 64-key tiles.
template <int DH>
using LongShapes = std::tuple<FlashShape<DH, 4, 2, 32, 2, DH == 32 ? 4 : 3, 1>,  // 0: default
                              FlashShape<DH, 4, 2, 64, 3, DH == 32 ? 3 : 2>,     // 1: 64-key tiles, unshifted
                              FlashShape<DH, 4, 2, 64, 3, DH == 32 ? 3 : 2, 1>,  // 2: as 1, shifted
                              FlashShape<DH, 4, 2, 32, 3, DH == 32 ? 4 : 3, 1>,  // 3: as 0, 3 stages
                              FlashShape<DH, 4, 2, 32, 4, DH == 32 ? 4 : 3, 1>>; // 4: as 0, 4 stages
// Head dim 128 (Qwen3): EMBEDKIT_ATTN_SHAPE128=i picks one, for measuring. Measured on H100,
// bf16, Qwen3-0.6B, causal, attention ms over 98,304 tokens (docs/benchmarks.md), 512-token /
// 4,096-token sequences: 0: 36.6 / 190.7; 1: 39.6 / 187.3; 2: 32.0 / 189.0; 3: 43.6 / 208.3.
// Shape 2 is the default (three 64-row CTAs per SM, 32-key tiles in three stages); no shape spills.
using Shapes128 = std::tuple<FlashShape<128, 4, 1, 64, 2>,      // 0: 64 rows, 64-key tiles, 2 stages
                             FlashShape<128, 8, 1, 64, 2>,      // 1: 128 rows as 8 warps (K/V reuse ×2)
                             FlashShape<128, 4, 1, 32, 3, 3>,   // 2: 64 rows, 32-key tiles, 3 stages
                             FlashShape<128, 8, 1, 32, 3>>;     // 3: 128 rows, 32-key tiles, 3 stages
constexpr int kDefaultShape128 = 2;
constexpr int kShapes128 = int(std::tuple_size_v<Shapes128>);
int selected_shape128() {
  static const int chosen = shape_from_env("EMBEDKIT_ATTN_SHAPE128", kDefaultShape128, kShapes128);
  return chosen;
}
template <size_t... I>
int rows128(int i, std::index_sequence<I...>) {
  int rows = 0;
  ((int(I) == i ? (rows = std::tuple_element_t<I, Shapes128>::rows, 0) : 0), ...);
  return rows;
}
template <typename T, size_t... I>
void launch128(int i, std::index_sequence<I...>, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H,
               int KV, float scale_log2, bool causal, T* out, cudaStream_t stream) {
  ((int(I) == i ? (launch_flash<T, std::tuple_element_t<I, Shapes128>>(qkv, cu, tiles, n_tiles, H, KV, scale_log2,
                                                                       causal, out, stream),
                   0)
                : 0),
   ...);
}
constexpr int kLongShapes = kLongShapesCount;
constexpr int kDefaultLongShape = 0;
static_assert(std::tuple_size_v<LongShapes<32>> == kLongShapes);

int selected_long_shape() {
  static const int chosen = shape_from_env("EMBEDKIT_ATTN_SHAPE", kDefaultLongShape, kLongShapes);
  return testing_shape_override >= 0 ? testing_shape_override : chosen;
}

template <int DH, size_t... I>
int long_rows(int i, std::index_sequence<I...>) {
  int rows = 0;
  ((int(I) == i ? (rows = std::tuple_element_t<I, LongShapes<DH>>::rows, 0) : 0), ...);
  return rows;
}
template <typename T, int DH, size_t... I>
void launch_long(int i, std::index_sequence<I...>, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H,
                 int KV, float scale_log2, bool causal, T* out, cudaStream_t stream) {
  ((int(I) == i ? (launch_flash<T, std::tuple_element_t<I, LongShapes<DH>>>(qkv, cu, tiles, n_tiles, H, KV,
                                                                           scale_log2, causal, out, stream),
                   0)
                : 0),
   ...);
}
}  // namespace

int attention_tile_rows(int max_len, int dh) {
  if (max_len <= kShortSeqMax) return 16;
  const auto all = std::make_index_sequence<kLongShapes>();
  switch (dh) {
    case 32: return long_rows<32>(selected_long_shape(), all);
    case 64: return long_rows<64>(selected_long_shape(), all);
    case 128: return rows128(selected_shape128(), std::make_index_sequence<kShapes128>());
    default: throw Error("CUDA attention: head dim " + std::to_string(dh) + " is not supported (32, 64, 128)");
  }
}

template <typename T>
void launch_attention(int dh, int tile_rows, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H,
                      int KV, bool causal, T* out, cudaStream_t stream, bool q_prescaled) {
  EK_CHECK(KV >= 1 && H % KV == 0, "attention: query heads must be a multiple of key/value heads");
  const float scale_log2 = q_prescaled ? 1.f : query_scale_log2(dh);
  const auto all = std::make_index_sequence<kLongShapes>();
  const bool short_tiles = tile_rows == 16;
  EK_CHECK(short_tiles || tile_rows == attention_tile_rows(kShortSeqMax + 1, dh));
  if ((dh == 32 || dh == 64) && !short_tiles && !causal && selected_long_shape() == 0 && wgmma_attention_selected()) {
    static_assert(kWgmmaAttentionRows == std::tuple_element_t<0, LongShapes<32>>::rows, "same tiles as long shape 0");
    launch_attention_wgmma<T>(dh, qkv, cu, tiles, n_tiles, H, KV, scale_log2, out, stream);
    return;
  }
  switch (dh) {
    case 32:
      if (short_tiles) launch_flash<T, ShortShape<32>>(qkv, cu, tiles, n_tiles, H, KV, scale_log2, causal, out, stream);
      else launch_long<T, 32>(selected_long_shape(), all, qkv, cu, tiles, n_tiles, H, KV, scale_log2, causal, out, stream);
      break;
    case 64:
      if (short_tiles) launch_flash<T, ShortShape<64>>(qkv, cu, tiles, n_tiles, H, KV, scale_log2, causal, out, stream);
      else launch_long<T, 64>(selected_long_shape(), all, qkv, cu, tiles, n_tiles, H, KV, scale_log2, causal, out, stream);
      break;
    case 128:
      if (short_tiles) launch_flash<T, ShortShape<128>>(qkv, cu, tiles, n_tiles, H, KV, scale_log2, causal, out, stream);
      else launch128<T>(selected_shape128(), std::make_index_sequence<kShapes128>(), qkv, cu, tiles, n_tiles, H, KV,
                        scale_log2, causal, out, stream);
      break;
    default: throw Error("CUDA attention: head dim " + std::to_string(dh) + " is not supported (32, 64, 128)");
  }
}
template void launch_attention<__half>(int, int, const __half*, const int*, const int2*, int, int, int, bool, __half*,
                                       cudaStream_t, bool);
template void launch_attention<__nv_bfloat16>(int, int, const __nv_bfloat16*, const int*, const int2*, int, int, int,
                                              bool, __nv_bfloat16*, cudaStream_t, bool);

// ------------------------------------------------------------------ LayerNorm load width
// Element pairs per LayerNorm load by hidden size. Measured on H100, fp16, long workload (512
// tokens), LayerNorm ms over the workload (docs/benchmarks.md): d = 384 (MiniLM) 8-byte loads
// (2 pairs) 8.3 vs 4-byte (1 pair) 10.4; d = 768 (BERT-base) 4-byte loads 32.3 vs 16-byte (4 pairs)
// 35.4. d = 1024 is unmeasured and takes d = 768's choice. EMBEDKIT_LN_PAIRS=0|1|2|4 overrides (a
// width that does not divide d is narrowed until it does), for measuring the widths side by side.
int layernorm_pairs_for(int d) {
  static const int forced = [] {
    const char* e = std::getenv("EMBEDKIT_LN_PAIRS");
    if (!e || !*e) return -1;
    const int p = std::atoi(e);
    if (p != 0 && p != 1 && p != 2 && p != 4) throw Error("EMBEDKIT_LN_PAIRS=" + std::string(e) + ": expected 0, 1, 2 or 4");
    return p;
  }();
  const auto fits = [d](int p) { return p == 0 || d % (64 * p) == 0; };
  int p = forced >= 0 ? forced : d % 256 == 0 ? 1 : d % 128 == 0 ? 2 : d % 64 == 0 ? 1 : 0;
  while (!fits(p)) p /= 2;  // 4 → 2 → 1 → 0
  return p;
}

int BertEncoder::pipeline_depth() {
  static const int depth = [] {
    const char* e = std::getenv("EMBEDKIT_PIPELINE");
    const int n = e && *e ? std::atoi(e) : kDefaultDepth;
    return std::clamp(n, 1, kMaxInFlight);
  }();
  return depth;
}

// ------------------------------------------------------------------ the encoder

struct BertEncoder::Impl {
  TransformerConfig cfg;
  Precision precision;
  cublasLtHandle_t lt = nullptr;
  size_t lt_workspace_bytes = 32u << 20;  // cuBLASLt's scratch, one per slot (its stream's own)
  std::vector<void*> owned;  // device allocations of weights
  PhaseTimes times;          // of the batch collected last
  // Optional per-op profile: events between consecutive ops, attributed to the op kind.
  bool profile_ops = false;
  bool exact_gelu = false;  // erf-GELU as its own pass after the GEMM
  bool fuse_residual = true;  // residual add in the GEMM epilogue (EMBEDKIT_FUSE_RESIDUAL=0: separate)
  // fp16 batches of up to kSmallCutlassTokens tokens on Hopper: CUTLASS GEMMs launched with PDL
  // instead of cuBLASLt's, so that every edge of the pass is programmatic (small_gemm.cu;
  // EMBEDKIT_SMALL_CUTLASS=0: off). Measured (H100, docs/benchmarks.md, ninth session): one batch
  // at a time about the same (256 / 512 tokens 162 / 177 µs against 158 / 179), two side by side
  // 90 / 110 µs a batch against 100 / 129 — and 2,048 tokens 10% slower, hence the limit.
  bool small_cutlass = false;
  static constexpr int kSmallCutlassTokens = 1024;
  // Those batches also with the LayerNorms folded into the GEMMs around them (small_fold_gemm:
  // each LayerNorm's statistics computed in the consumer GEMMs' epilogues from the row sums the
  // residual GEMM before them accumulated), so a pass has no LayerNorm kernels: 5 kernels a layer
  // instead of 7 (EMBEDKIT_SMALL_FOLD=0: off). Needs the folded weights (ln_fold ≥ 1).
  bool small_fold = false;
  int ln_pairs = 1;           // LayerNorm load width at this hidden size (layernorm_pairs_for)
  cublasLtEpilogue_t inter_epilogue = CUBLASLT_EPILOGUE_GELU_BIAS;
  std::string name;
  // LayerNorms folded into the GEMMs around them (ln_fold_gemm.cu; fp16 on compute capability
  // 9.0 with CUTLASS built in): 0 off, 1 batches too big for a CUDA graph, 2 every batch
  // (EMBEDKIT_LN_FOLD, default 1). The hidden stream then carries LayerNorm inputs, not outputs.
  int ln_fold = 0;
  bool fold_batch(int tokens) const { return ln_fold == 2 || (ln_fold == 1 && tokens > kGraphMaxTokens); }
  struct FoldW {  // per layer: the LayerNorm before it (embeddings' or the previous LN2) and LN1
    void *w_qkv = nullptr, *w_i = nullptr;  // W·diag(γ)
    float *s_qkv = nullptr, *c_qkv = nullptr, *s_i = nullptr, *c_i = nullptr;  // W′·1, W·β + b
    float *g_in = nullptr, *bb_o = nullptr, *g1 = nullptr, *bb_o2 = nullptr;  // γ, b + β of the residuals
  };
  std::vector<FoldW> fold;
  bool fold_sums = true;  // statistics from the residual GEMMs' row sums (EMBEDKIT_LN_FOLD_SUMS=0: stats passes)
  // Small batches (up to kGraphMaxTokens tokens: launch-bound, ~46 kernels of a few µs) run with
  //  - pdl: our kernels launched with programmatic dependent launch (kernels.cuh), so each is
  //    scheduled while the GEMM before it drains (compute capability 9.0+; EMBEDKIT_PDL=0: off);
  //  - zero_copy: no copy nodes — the embeddings kernel reads the inputs from the slot's mapped
  //    staging and moves the rest to the device, the pooling kernel writes the rows straight into
  //    the slot's mapped output (EMBEDKIT_ZERO_COPY=0: cudaMemcpyAsync both ways).
  // Bigger batches keep plain launches and copies: their kernels are long, the gaps small.
  bool pdl = false, zero_copy = true;

  struct LayerW {
    void *w_qkv, *b_qkv, *w_o, *b_o, *ln1_g, *ln1_b, *w_i, *b_i, *w_o2, *b_o2, *ln2_g, *ln2_b;
  };
  void *word = nullptr, *pos = nullptr, *type = nullptr, *emb_g = nullptr, *emb_b = nullptr;
  std::vector<LayerW> layers;

  // Device buffers of one pass, sized for `capacity` tokens; grown (never shrunk) when a batch
  // needs more.
  struct Workspace {
    size_t capacity = 0;
    void *hidden = nullptr, *qkv = nullptr, *ctx = nullptr, *tmp = nullptr, *inter = nullptr;
    // Folded path: [8][capacity] fp32: r, n of the layer input and of the attention block's output
    // x1; Σ, Σ² of each (filled by the residual GEMMs' epilogues). The small folded path: r, n of
    // the last layer's output at [0], [1], then from 4·capacity Σ, Σ² of the embeddings and of each
    // layer's x1 and x2, Tn floats each (row_stats_floats()).
    float* row_stats = nullptr;
    int* d_ints = nullptr;       // ids | types | positions | cu_seqlens | skip | tiles(int2), one H2D copy
    size_t d_ints_capacity = 0;
    float* d_pooled = nullptr;  // [S, out_dim] pooled rows before the D2H copy
    size_t d_pooled_capacity = 0;
    void release() {
      for (void* p : {hidden, qkv, ctx, tmp, inter, static_cast<void*>(row_stats), static_cast<void*>(d_ints),
                      static_cast<void*>(d_pooled)})
        if (p) cudaFree(p);
      *this = Workspace{};
    }
  };
  // Small batches are latency-bound: a 512-token MiniLM pass keeps most SMs idle (its GEMMs fill a
  // few dozen CTAs), so several of them run at once, each on its slot's own stream in the slot's
  // own workspace (`lane_tokens` tokens: the first graph-bucket tier). Bigger batches fill the GPU
  // and share one workspace sized from the token budget; they run one after another, each
  // waiting on `shared_done`, recorded after the previous one's last copy.
  // EMBEDKIT_CONCURRENT_TOKENS=0 sends every batch through the shared workspace (one at a time).
  size_t lane_tokens = size_t(kGraphBuckets[0].max_tokens);
  Workspace shared;
  cudaEvent_t shared_done = nullptr;
  bool shared_pending = false;  // shared_done was recorded (a batch used the shared workspace)

  // What must exist once per batch in flight: its stream, its inputs' pinned staging (the host
  // writes batch i+1's inputs while batch i's H2D copy may not have run yet), its pinned rows
  // (readable until collect(i)), its cuBLASLt scratch and, for small batches, its workspace.
  struct Slot {
    // Set by submit() once the slot is filled, cleared by collect() once it is read out: the
    // hand-over between a submitting and a collecting thread.
    std::atomic<bool> busy{false};
    cudaStream_t stream = nullptr;
    Workspace own;              // batches of up to lane_tokens tokens
    Workspace* ws = nullptr;    // the batch in flight's: &own or &shared
    void* lt_ws = nullptr;      // cuBLASLt scratch, used on `stream` only
    Ticket ticket = 0;
    int* h_ints = nullptr;  // pinned, mapped staging of d_ints' layout
    size_t ints_capacity = 0;
    float* h_pooled = nullptr;  // pinned, mapped [S, out_dim], the D2H copy's target
    size_t pooled_capacity = 0;
    int* h_ints_dev = nullptr;       // the same two buffers as device pointers (zero-copy staging)
    float* h_pooled_dev = nullptr;
    // Phase events: 0 before H2D, 1 after H2D, 2 after the forward, 3 after pooling, 4 after D2H
    // (a graph replay records only 0 and 4). collect() waits on ev[4].
    cudaEvent_t ev[5] = {};
    std::vector<cudaEvent_t> op_events;  // EMBEDKIT_PROFILE_OPS=1: one per op
    std::vector<float PhaseTimes::*> op_kinds;
    size_t op_next = 0;
    int S = 0, out_dim = 0;  // the batch in flight
    bool graph = false, empty = false;
  };
  std::array<Slot, kMaxInFlight> slots;
  Slot* cur = nullptr;  // the slot whose batch is being enqueued (mark() records into it)
  Ticket next_ticket = 0;

  void mark(float PhaseTimes::*kind) {
    if (!profile_ops) return;
    Slot& s = *cur;
    if (s.op_next == s.op_events.size()) {
      cudaEvent_t e;
      EK_CUDA(cudaEventCreate(&e));
      s.op_events.push_back(e);
      s.op_kinds.push_back(nullptr);
    }
    s.op_kinds[s.op_next] = kind;
    EK_CUDA(cudaEventRecord(s.op_events[s.op_next++], s.stream));
  }

  LtAlgoCache algo_cache;

  // CUDA graphs of whole passes for small batches, keyed by batch shape and staging slot (a graph
  // holds the slot's pinned addresses).
  static constexpr int kGraphMaxTokens = kGraphBucketMaxTokens;
  static constexpr size_t kMaxGraphs = 512;  // shapes × slots
  using GraphKey = std::array<int, 7>;  // tokens, sequences, tiles, tile rows, skip|normalize, out dim, slot
  std::map<GraphKey, cudaGraphExec_t> graphs;
  std::set<GraphKey> seen_shapes;  // slot field 0: a shape counts as seen on any slot
  bool graphs_enabled = true;

  size_t elem() const { return 2; }

  // W_qkv and b_qkv with the q rows (the first d) times log2(e)/√dh, in fp32 before any rounding:
  // the attention kernels then take q as it comes (launch_attention's q_prescaled), and q is
  // rounded once, as before.
  std::pair<std::vector<float>, std::vector<float>> prescaled_qkv(const BertWeights::Layer& L) const {
    const size_t d = size_t(cfg.hidden_size);
    const float c = query_scale_log2(int(d / size_t(cfg.num_heads)));
    std::pair<std::vector<float>, std::vector<float>> wb{L.w_qkv, L.b_qkv};
    for (size_t i = 0; i < d * d; ++i) wb.first[i] *= c;
    for (size_t i = 0; i < d; ++i) wb.second[i] *= c;
    return wb;
  }

  template <typename T>
  void load(const BertWeights& w) {
    word = upload<T>(w.word_emb, owned);
    pos = upload<T>(w.pos_emb, owned);
    if (!w.type_emb.empty()) type = upload<T>(w.type_emb, owned);
    emb_g = upload<T>(w.emb_ln_g, owned);
    emb_b = upload<T>(w.emb_ln_b, owned);
    for (auto& L : w.layers) {
      LayerW d;
      const auto [wq, bq] = prescaled_qkv(L);
      d.w_qkv = upload<T>(wq, owned);
      d.b_qkv = upload<T>(bq, owned);
      d.w_o = upload<T>(L.w_attn_out, owned);
      d.b_o = upload<T>(L.b_attn_out, owned);
      d.ln1_g = upload<T>(L.ln1_g, owned);
      d.ln1_b = upload<T>(L.ln1_b, owned);
      d.w_i = upload<T>(L.w_inter, owned);
      d.b_i = upload<T>(L.b_inter, owned);
      d.w_o2 = upload<T>(L.w_out, owned);
      d.b_o2 = upload<T>(L.b_out, owned);
      d.ln2_g = upload<T>(L.ln2_g, owned);
      d.ln2_b = upload<T>(L.ln2_b, owned);
      layers.push_back(d);
    }
    if constexpr (std::is_same_v<T, __half>) {
      if (ln_fold) load_fold(w);
    }
  }

  // The folded weights (fold_layernorm_into_linear), from γ and β as the device stores them.
  void load_fold(const BertWeights& w) {
    const int d = int(cfg.hidden_size), I = int(cfg.intermediate_size);
    auto rounded = [](std::vector<float> v) {
      for (auto& x : v) x = round_to_fp16(x);
      return v;
    };
    auto floats = [&](const std::vector<float>& v) {
      float* p = nullptr;
      EK_CUDA(cudaMalloc(&p, v.size() * sizeof(float)));
      owned.push_back(p);
      EK_CUDA(cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
      return p;
    };
    auto plus = [](std::vector<float> a, const std::vector<float>& b) {
      for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
      return a;
    };
    std::vector<float> Wf, s, c;
    for (size_t l = 0; l < w.layers.size(); ++l) {
      const auto& L = w.layers[l];
      const std::vector<float> g_in = rounded(l == 0 ? w.emb_ln_g : w.layers[l - 1].ln2_g),
                               b_in = rounded(l == 0 ? w.emb_ln_b : w.layers[l - 1].ln2_b),
                               g1 = rounded(L.ln1_g), b1 = rounded(L.ln1_b);
      FoldW f;
      const auto [wq, bq] = prescaled_qkv(L);
      fold_layernorm_into_linear(rounded(wq), rounded(bq), g_in, b_in, 3 * d, d, Wf, s, c);
      f.w_qkv = upload<__half>(Wf, owned);
      f.s_qkv = floats(s);
      f.c_qkv = floats(c);
      fold_layernorm_into_linear(rounded(L.w_inter), rounded(L.b_inter), g1, b1, I, d, Wf, s, c);
      f.w_i = upload<__half>(Wf, owned);
      f.s_i = floats(s);
      f.c_i = floats(c);
      f.g_in = floats(g_in);
      f.bb_o = floats(plus(rounded(L.b_attn_out), b_in));
      f.g1 = floats(g1);
      f.bb_o2 = floats(plus(rounded(L.b_out), b1));
      fold.push_back(f);
    }
  }

  void drop_graphs() {  // captured graphs hold buffer addresses: drop them when buffers move
    for (auto& [k, g] : graphs) cudaGraphExecDestroy(g);
    graphs.clear();
    seen_shapes.clear();
  }

  Slot* free_slot() {
    for (Slot& s : slots)
      if (!s.busy) return &s;
    return nullptr;
  }
  int slot_index(const Slot& s) const { return int(&s - slots.data()); }

  // Waits for every batch queued on any slot's stream (before buffers move or graphs go).
  void sync_all() {
    for (Slot& s : slots)
      if (s.stream) EK_CUDA(cudaStreamSynchronize(s.stream));
  }

  // Makes room in workspace w for a batch of `tokens` tokens, `seqs` sequences, `tiles` attention
  // tiles and `pooled_floats` output floats, and in slot s's staging for its inputs and rows.
  void ensure_capacity(Workspace& w, Slot& s, size_t tokens, size_t seqs, size_t tiles, size_t pooled_floats) {
    const size_t new_capacity = tokens > w.capacity ? std::max(tokens, w.capacity * 2) : w.capacity;
    const size_t ints = 3 * new_capacity + 2 * (seqs + 1) + 2 * tiles + 16;
    const bool grow_tokens = new_capacity > w.capacity, grow_ints = ints > w.d_ints_capacity,
               grow_pooled = pooled_floats > w.d_pooled_capacity;
    const bool grow_staging = ints > s.ints_capacity || pooled_floats > s.pooled_capacity;
    if (!grow_tokens && !grow_ints && !grow_pooled && !grow_staging) return;
    // Buffers are about to move: let batches in flight finish with them first (rare: workspaces
    // are sized up front), and drop graphs that captured them.
    sync_all();
    drop_graphs();
    if (grow_tokens) {
      for (void* p : {w.hidden, w.qkv, w.ctx, w.tmp, w.inter, static_cast<void*>(w.row_stats)})
        if (p) cudaFree(p);
      w.capacity = new_capacity;
      const size_t d = size_t(cfg.hidden_size), I = size_t(cfg.intermediate_size), c = w.capacity;
      EK_CUDA(cudaMalloc(&w.hidden, c * d * elem()));
      EK_CUDA(cudaMalloc(&w.qkv, c * 3 * d * elem()));
      EK_CUDA(cudaMalloc(&w.ctx, c * d * elem()));
      EK_CUDA(cudaMalloc(&w.tmp, c * d * elem()));
      EK_CUDA(cudaMalloc(&w.inter, c * I * elem()));
      EK_CUDA(cudaMalloc(&w.row_stats, row_stats_floats(c) * sizeof(float)));
    }
    if (grow_ints) {
      if (w.d_ints) cudaFree(w.d_ints);
      w.d_ints_capacity = std::max(ints, w.d_ints_capacity * 2);
      EK_CUDA(cudaMalloc(&w.d_ints, w.d_ints_capacity * sizeof(int)));
    }
    if (grow_pooled) {
      if (w.d_pooled) cudaFree(w.d_pooled);
      w.d_pooled_capacity = std::max(pooled_floats, w.d_pooled_capacity * 2);
      EK_CUDA(cudaMalloc(&w.d_pooled, w.d_pooled_capacity * sizeof(float)));
    }
    if (ints > s.ints_capacity) {
      if (s.h_ints) cudaFreeHost(s.h_ints);
      s.ints_capacity = std::max(ints, s.ints_capacity * 2);
      EK_CUDA(cudaHostAlloc(&s.h_ints, s.ints_capacity * sizeof(int), cudaHostAllocMapped));
      EK_CUDA(cudaHostGetDevicePointer(reinterpret_cast<void**>(&s.h_ints_dev), s.h_ints, 0));
    }
    if (pooled_floats > s.pooled_capacity) {
      if (s.h_pooled) cudaFreeHost(s.h_pooled);
      s.pooled_capacity = std::max(pooled_floats, s.pooled_capacity * 2);
      EK_CUDA(cudaHostAlloc(&s.h_pooled, s.pooled_capacity * sizeof(float), cudaHostAllocMapped));
      EK_CUDA(cudaHostGetDevicePointer(reinterpret_cast<void**>(&s.h_pooled_dev), s.h_pooled, 0));
    }
  }

  size_t row_stats_floats(size_t capacity) const { return std::max<size_t>(8, 6 + 4 * layers.size()) * capacity; }

  // On the stream and in the cuBLASLt scratch of the slot being enqueued (cur).
  void linear(const void* x, int T, int n_in, const void* W, const void* bias, int n_out, void* y,
              cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS, const void* residual = nullptr) {
    lt_linear(lt, precision == Precision::F16 ? CUDA_R_16F : CUDA_R_16BF, x, T, n_in, W, bias, n_out, y, epi,
              cur->lt_ws, lt_workspace_bytes, cur->stream, &algo_cache, residual);
  }

  struct Offsets {
    size_t ids, types, pos, cu, skip, tiles, n_ints;
  };
  // Everything from the H2D copy to the D2H copy, on slot s's stream in its workspace s.ws (also
  // what a graph captures), from slot s's staging into slot s's pinned rows.
  template <typename T>
  void enqueue(Slot& s, const PackedBatch& b, const PoolingConfig& pc, const std::vector<int32_t>& skip,
               bool normalize, const Offsets& off, size_t n_tiles_sz, int tile_rows, int out_dim, bool timed) {
    const int Tn = int(b.tokens()), S = int(b.sequences());
    const int d = int(cfg.hidden_size), I = int(cfg.intermediate_size), H = int(cfg.num_heads), dh = d / H;
    const int n_tiles = int(n_tiles_sz);
    ++algo_cache.batch;  // GEMM shapes seen again in a later batch get their algorithm timed (lt_linear)
    const cudaStream_t stream = s.stream;
    Workspace& w = *s.ws;
    int* const d_ints = w.d_ints;
    void *const qkv = w.qkv, *const ctx = w.ctx, *const tmp = w.tmp, *const inter = w.inter;
    const bool small = Tn <= kGraphMaxTokens, zc = zero_copy && small;
    const PdlScope pdl_scope(pdl && small);
    if (timed) EK_CUDA(cudaEventRecord(s.ev[0], stream));
    if (!zc) EK_CUDA(cudaMemcpyAsync(d_ints, s.h_ints, off.n_ints * sizeof(int), cudaMemcpyHostToDevice, stream));
    if (timed) EK_CUDA(cudaEventRecord(s.ev[1], stream));
    const int* const in_ints = zc ? s.h_ints_dev : d_ints;  // where the embeddings kernel reads ids, types, positions

    T* hid = static_cast<T*>(w.hidden);
    cur = &s;
    s.op_next = 0;
    mark(nullptr);
    const float eps = float(cfg.layer_norm_eps);
    const bool folded = std::is_same_v<T, __half> && fold_batch(Tn);
    // y = x·Wᵀ + b (+ epilogue): CUTLASS with PDL for small fp16 batches when on, else cuBLASLt.
    const bool cutlass_gemms = small_cutlass && Tn <= kSmallCutlassTokens && std::is_same_v<T, __half>;
    const bool small_folded = !folded && cutlass_gemms && small_fold;
    // Small folded path: the embeddings' Σ, Σ² at [4·capacity], each layer's after them (zeroed
    // by the embeddings kernel: the residual GEMMs add into them).
    float* const sums = w.row_stats + 4 * w.capacity;
    float* raw_r = folded ? w.row_stats : small_folded ? sums : nullptr;
    float* raw_n = folded ? w.row_stats + w.capacity : small_folded ? sums + Tn : nullptr;
    launch_embed_layernorm<T>(in_ints + off.ids, in_ints + off.types, in_ints + off.pos, static_cast<const T*>(word),
                              static_cast<const T*>(pos), static_cast<const T*>(type), static_cast<const T*>(emb_g),
                              static_cast<const T*>(emb_b), Tn, d, int(cfg.position_offset), eps, hid, stream,
                              ln_pairs, raw_r, raw_n, zc ? s.h_ints_dev + off.cu : nullptr, d_ints + off.cu,
                              int(off.n_ints - off.cu), small_folded, small_folded ? sums + 2 * Tn : nullptr,
                              small_folded ? int(4 * layers.size()) * Tn : 0);
    mark(&PhaseTimes::embed);
    PoolNorm<T> final_norm;  // the last LayerNorm, when pooling applies it (folded paths)
    if constexpr (std::is_same_v<T, __half>) {
      if (folded) final_norm = enqueue_folded_layers(s, Tn, I, eps, off, n_tiles, tile_rows);
      if (small_folded) final_norm = enqueue_small_folded_layers(s, Tn, I, eps, off, n_tiles, tile_rows, sums);
    }
    const size_t classic_layers = folded || small_folded ? 0 : layers.size();
    auto gemm = [&](const void* x, int n_in, const void* W, const void* bias, int n_out, void* y,
                    cublasLtEpilogue_t epi, const void* residual) {
      if (cutlass_gemms) {
        const SmallEpilogue e = residual ? SmallEpilogue::BiasResidual
                                : epi == CUBLASLT_EPILOGUE_GELU_BIAS ? SmallEpilogue::BiasGelu
                                                                     : SmallEpilogue::Bias;
        small_gemm(e, Tn, n_out, n_in, static_cast<const __half*>(x), static_cast<const __half*>(W),
                   static_cast<const __half*>(bias), static_cast<const __half*>(residual), static_cast<__half*>(y),
                   stream, tl_pdl_launch);
      } else {
        linear(x, Tn, n_in, W, bias, n_out, y, epi, residual);
      }
    };
    for (size_t li = 0; li < classic_layers; ++li) {
      const LayerW& L = layers[li];
      gemm(hid, d, L.w_qkv, L.b_qkv, 3 * d, qkv, CUBLASLT_EPILOGUE_BIAS, nullptr);
      mark(&PhaseTimes::gemm);
      launch_attention<T>(dh, tile_rows, static_cast<const T*>(qkv), d_ints + off.cu,
                          reinterpret_cast<const int2*>(d_ints + off.tiles), n_tiles, H, H, false,
                          static_cast<T*>(ctx), stream, /*q_prescaled=*/true);
      mark(&PhaseTimes::attention);
      // hidden = LN(ctx·W_oᵀ + b + hidden): with fuse_residual the add happens in the GEMM
      // epilogue, in place in hidden, and the LayerNorm pass reads one tensor instead of two.
      T* sum = fuse_residual ? hid : static_cast<T*>(tmp);
      gemm(ctx, d, L.w_o, L.b_o, d, sum, CUBLASLT_EPILOGUE_BIAS, fuse_residual ? hid : nullptr);
      mark(&PhaseTimes::gemm);
      launch_add_layernorm<T>(fuse_residual ? nullptr : sum, hid, static_cast<const T*>(L.ln1_g),
                              static_cast<const T*>(L.ln1_b), Tn, d, eps, stream, ln_pairs);
      mark(&PhaseTimes::layernorm);
      // GELU: in the GEMM epilogue (cuBLASLt's tanh form, within fp16 rounding of erf-GELU) unless
      // EMBEDKIT_EXACT_GELU=1 asks for the separate exact-erf pass.
      gemm(hid, d, L.w_i, L.b_i, I, inter, inter_epilogue, nullptr);
      mark(&PhaseTimes::gemm);
      if (exact_gelu) {
        const size_t n_inter = size_t(Tn) * size_t(I);
        gelu_kernel<T><<<int(std::min<size_t>((n_inter + 255) / 256, 132 * 16)), 256, 0, stream>>>(
            static_cast<T*>(inter), n_inter);
        mark(&PhaseTimes::activation);
      }
      gemm(inter, I, L.w_o2, L.b_o2, d, sum, CUBLASLT_EPILOGUE_BIAS, fuse_residual ? hid : nullptr);
      mark(&PhaseTimes::gemm);
      launch_add_layernorm<T>(fuse_residual ? nullptr : sum, hid, static_cast<const T*>(L.ln2_g),
                              static_cast<const T*>(L.ln2_b), Tn, d, eps, stream, ln_pairs);
      mark(&PhaseTimes::layernorm);
    }
    EK_CUDA(cudaGetLastError());
    if (timed) EK_CUDA(cudaEventRecord(s.ev[2], stream));
    PoolModes pm{pc.cls, pc.max, pc.mean, pc.mean_sqrt_len, pc.weighted_mean, pc.last_token};
    launch_pool<T>(hid, d_ints + off.cu, skip.empty() ? nullptr : d_ints + off.skip, S, d, pm, normalize, w.d_pooled,
                   out_dim, stream, final_norm, zc ? s.h_pooled_dev : nullptr);
    EK_CUDA(cudaGetLastError());
    if (timed) EK_CUDA(cudaEventRecord(s.ev[3], stream));
    if (!zc)
      EK_CUDA(cudaMemcpyAsync(s.h_pooled, w.d_pooled, size_t(S) * size_t(out_dim) * sizeof(float),
                              cudaMemcpyDeviceToHost, stream));
    if (timed) EK_CUDA(cudaEventRecord(s.ev[4], stream));
  }

  // The layers of a small batch with folded LayerNorms (small_fold_gemm, small_gemm.cu): as
  // enqueue_folded_layers, but each consumer GEMM computes its LayerNorm's r, n from the row sums
  // (Σ, Σ²) in its epilogue, so no statistics kernel separates them: per layer q|k|v, attention,
  // attention out, FFN up, FFN down. `sums` holds the embeddings' Σ, Σ² (Tn floats each), then
  // room for each layer's x1 and x2 sums, zeroed. `hidden` holds the embeddings' sum on entry and
  // each layer's LN2 input after it; x1 lives in `tmp`. The last LN2 is left to the pooling kernel
  // (its r, n from one small statistics kernel, returned with its γ, β).
  PoolNorm<__half> enqueue_small_folded_layers(Slot& s, int Tn, int I, float eps, const Offsets& off, int n_tiles,
                                               int tile_rows, float* sums) {
    const int d = int(cfg.hidden_size), H = int(cfg.num_heads), dh = d / H;
    const cudaStream_t stream = s.stream;
    Workspace& w = *s.ws;
    int* const d_ints = w.d_ints;
    __half* hid = static_cast<__half*>(w.hidden);
    __half* x1 = static_cast<__half*>(w.tmp);
    auto* qkv = static_cast<__half*>(w.qkv);
    auto* ctx = static_cast<__half*>(w.ctx);
    auto* inter = static_cast<__half*>(w.inter);
    const float inv_d = 1.f / float(d);
    const float *sum_x = sums, *sq_x = sums + Tn;  // the layer input's row sums
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerW& L = layers[l];
      const FoldW& F = fold[l];
      float* const sum_x1 = sums + (2 + 4 * l) * size_t(Tn);
      float *const sq_x1 = sum_x1 + Tn, *const sum_x2 = sq_x1 + Tn, *const sq_x2 = sum_x2 + Tn;
      small_fold_gemm(SmallFold::Fold, Tn, 3 * d, d, hid, static_cast<const __half*>(F.w_qkv), nullptr, qkv,
                      {sum_x, sq_x, F.s_qkv, F.c_qkv, inv_d, eps}, stream, tl_pdl_launch);
      mark(&PhaseTimes::gemm);
      launch_attention<__half>(dh, tile_rows, qkv, d_ints + off.cu, reinterpret_cast<const int2*>(d_ints + off.tiles),
                               n_tiles, H, H, false, ctx, stream, /*q_prescaled=*/true);
      mark(&PhaseTimes::attention);
      // x1 = ctx·W_oᵀ + b_o + LN_in(x), and x1's row sums
      small_fold_gemm(SmallFold::LnResidualSums, Tn, d, d, ctx, static_cast<const __half*>(L.w_o), hid, x1,
                      {sum_x, sq_x, F.g_in, F.bb_o, inv_d, eps, sum_x1, sq_x1}, stream, tl_pdl_launch);
      mark(&PhaseTimes::gemm);
      small_fold_gemm(SmallFold::FoldGelu, Tn, I, d, x1, static_cast<const __half*>(F.w_i), nullptr, inter,
                      {sum_x1, sq_x1, F.s_i, F.c_i, inv_d, eps}, stream, tl_pdl_launch);
      mark(&PhaseTimes::gemm);
      // x2 = inter·W_o2ᵀ + b_o2 + LN1(x1), LN2's input, into hidden, and its row sums
      small_fold_gemm(SmallFold::LnResidualSums, Tn, d, I, inter, static_cast<const __half*>(L.w_o2), x1, hid,
                      {sum_x1, sq_x1, F.g1, F.bb_o2, inv_d, eps, sum_x2, sq_x2}, stream, tl_pdl_launch);
      mark(&PhaseTimes::gemm);
      sum_x = sum_x2, sq_x = sq_x2;
    }
    float *const r = w.row_stats, *const n = w.row_stats + w.capacity;
    launch_layernorm_stats_from_sums(sum_x, sq_x, Tn, d, eps, r, n, stream);
    mark(&PhaseTimes::layernorm);
    return PoolNorm<__half>{r, n, static_cast<const __half*>(layers.back().ln2_g),
                            static_cast<const __half*>(layers.back().ln2_b)};
  }

  // The layers with folded LayerNorms (ln_fold_gemm.cu). `hidden` holds the embeddings' sum on
  // entry (its statistics written by the embeddings kernel) and each layer's LN2 input after it;
  // x1 (LN1's input) lives in `tmp`. The statistics of x1 and x2 come from the residual GEMMs' row
  // sums (or, with fold_sums off, from stats passes). The last LN2 is left to the pooling kernel
  // (returned: its row statistics and γ, β; hidden holds its input), or with fold_sums off runs as
  // a pass (nothing returned).
  PoolNorm<__half> enqueue_folded_layers(Slot& s, int Tn, int I, float eps, const Offsets& off, int n_tiles,
                                         int tile_rows) {
    const int d = int(cfg.hidden_size), H = int(cfg.num_heads), dh = d / H;
    const cudaStream_t stream = s.stream;
    Workspace& w = *s.ws;
    int* const d_ints = w.d_ints;
    void *const qkv = w.qkv, *const ctx = w.ctx, *const inter = w.inter;
    __half* hid = static_cast<__half*>(w.hidden);
    __half* x1 = static_cast<__half*>(w.tmp);
    float* st[8];
    for (int i = 0; i < 8; ++i) st[i] = w.row_stats + size_t(i) * w.capacity;
    float *r0 = st[0], *n0 = st[1], *r1 = st[2], *n1 = st[3], *sum0 = st[4], *sq0 = st[5], *sum1 = st[6], *sq1 = st[7];
    for (size_t l = 0; l < layers.size(); ++l) {
      const LayerW& L = layers[l];
      const FoldW& F = fold[l];
      if (!fold_sums && l > 0) {
        launch_layernorm_stats<__half>(hid, Tn, d, eps, r0, n0, stream);
        mark(&PhaseTimes::layernorm);
      }
      ln_fold_gemm(FoldKind::Fold, Tn, 3 * d, d, hid, static_cast<const __half*>(F.w_qkv), nullptr,
                   static_cast<__half*>(qkv), r0, n0, F.s_qkv, F.c_qkv, stream);
      mark(&PhaseTimes::gemm);
      launch_attention<__half>(dh, tile_rows, static_cast<const __half*>(qkv), d_ints + off.cu,
                               reinterpret_cast<const int2*>(d_ints + off.tiles), n_tiles, H, H, false,
                               static_cast<__half*>(ctx), stream, /*q_prescaled=*/true);
      mark(&PhaseTimes::attention);
      // x1 = ctx·W_oᵀ + b_o + LN_in(x) (and x1's row sums)
      ln_fold_gemm(fold_sums ? FoldKind::LnResidualSums : FoldKind::LnResidual, Tn, d, d,
                   static_cast<const __half*>(ctx), static_cast<const __half*>(L.w_o), hid, x1, r0, n0, F.g_in,
                   F.bb_o, stream, sum1, sq1);
      mark(&PhaseTimes::gemm);
      if (fold_sums) launch_layernorm_stats_from_sums(sum1, sq1, Tn, d, eps, r1, n1, stream);
      else launch_layernorm_stats<__half>(x1, Tn, d, eps, r1, n1, stream);
      mark(&PhaseTimes::layernorm);
      ln_fold_gemm(FoldKind::FoldGelu, Tn, I, d, x1, static_cast<const __half*>(F.w_i), nullptr,
                   static_cast<__half*>(inter), r1, n1, F.s_i, F.c_i, stream);
      mark(&PhaseTimes::gemm);
      // x2 = inter·W_o2ᵀ + b_o2 + LN1(x1), LN2's input, into hidden (and its row sums)
      const bool sums = fold_sums;
      ln_fold_gemm(sums ? FoldKind::LnResidualSums : FoldKind::LnResidual, Tn, d, I,
                   static_cast<const __half*>(inter), static_cast<const __half*>(L.w_o2), x1, hid, r1, n1, F.g1,
                   F.bb_o2, stream, sum0, sq0);
      mark(&PhaseTimes::gemm);
      if (sums) {
        launch_layernorm_stats_from_sums(sum0, sq0, Tn, d, eps, r0, n0, stream);
        mark(&PhaseTimes::layernorm);
      }
    }
    const auto* g2 = static_cast<const __half*>(layers.back().ln2_g);
    const auto* b2 = static_cast<const __half*>(layers.back().ln2_b);
    if (fold_sums) return PoolNorm<__half>{r0, n0, g2, b2};
    launch_add_layernorm<__half>(nullptr, hid, g2, b2, Tn, d, eps, stream, ln_pairs);
    mark(&PhaseTimes::layernorm);
    return {};
  }

  // Small batches run as CUDA graphs keyed by their shape, padded to shape buckets first so
  // that a server's batches reuse them (cuda/graph_buckets.h). EMBEDKIT_GRAPH_BUCKETS=0 turns the
  // padding off (exact shapes only).
  bool graph_buckets = true;
  PackedBatch padded;                // the bucketed copy of a small batch (storage reused)
  std::vector<int32_t> padded_skip;  // its pooling skips, 0 for dummy sequences
  int bucket_tiles = 0;              // the tile multiple of padded's bucket

  // The bucketed form of b, or nullptr when b is not padded (too big for a graph, or off).
  // Also without graphs (EMBEDKIT_CUDA_GRAPHS=0, profiling): the same batch gives the same GEMM
  // shapes, so the same numbers, whether it is replayed or enqueued op by op.
  const PackedBatch* bucketed(const PackedBatch& b, const std::vector<int32_t>& skip) {
    if (!graph_buckets) return nullptr;
    bucket_tiles = pad_to_bucket(b, skip, kShortSeqMax, padded, padded_skip);
    return bucket_tiles ? &padded : nullptr;
  }

  // Stages the batch in a free slot and queues its whole pass; returns without waiting.
  template <typename T>
  Ticket submit(const PackedBatch& real, const PoolingConfig& pc, const std::vector<int32_t>& real_skip,
                bool normalize) {
    Slot* sp = free_slot();
    if (!sp)
      throw Error("CUDA encoder: " + std::to_string(kMaxInFlight) + " batches already in flight; collect one first");
    Slot& s = *sp;
    s.empty = real.tokens() == 0;
    if (s.empty) {  // nothing to run; collect() returns no rows
      s.S = 0;
      s.busy = true;
      return s.ticket = ++next_ticket;
    }
    const int S_real = int(real.sequences());
    const PackedBatch* bp = bucketed(real, real_skip);
    const PackedBatch& b = bp ? *bp : real;
    const std::vector<int32_t>& skip = bp && !real_skip.empty() ? padded_skip : real_skip;
    const int Tn = int(b.tokens()), S = int(b.sequences());
    const int d = int(cfg.hidden_size), H = int(cfg.num_heads), dh = d / H;
    // Query tiles per sequence (16 rows for short batches, 64 otherwise).
    int max_len = 0;
    for (int q = 0; q < S; ++q) max_len = std::max(max_len, b.cu_seqlens[size_t(q) + 1] - b.cu_seqlens[size_t(q)]);
    const int tile_rows = attention_tile_rows(max_len, dh);
    std::vector<int2> tiles;
    for (int q = 0; q < S; ++q)
      for (int r = 0; r < b.cu_seqlens[size_t(q) + 1] - b.cu_seqlens[size_t(q)]; r += tile_rows) tiles.push_back({q, r});
    if (bp)  // bucketed: pad with tiles that start past the end of the last (1-token or longer) dummy
      pad_tiles(tiles, S, bucket_tiles);
    const int modes = int(pc.cls) + int(pc.max) + int(pc.mean) + int(pc.mean_sqrt_len) + int(pc.weighted_mean) +
                      int(pc.last_token);
    const int out_dim = modes * d;
    // Small batches run in the slot's own workspace, at once with the other slots' batches; the
    // rest in the shared one, after the previous batch that used it.
    const bool own = size_t(Tn) <= lane_tokens;
    Workspace& w = own ? s.own : shared;
    ensure_capacity(w, s, size_t(Tn), size_t(S), tiles.size(), size_t(S) * size_t(out_dim));
    s.ws = &w;
    if (!own && shared_pending) EK_CUDA(cudaStreamWaitEvent(s.stream, shared_done, 0));

    // Stage every integer input in the slot's pinned buffer → one H2D copy. The slot is free, so
    // its previous batch's copy has completed (collect waited for that batch's last event).
    int* const h = s.h_ints;
    int* hp = h;
    auto put = [&](const int32_t* src, size_t n) {
      int* at = hp;
      std::copy(src, src + n, hp);
      hp += n;
      return size_t(at - h);
    };
    const size_t o_ids = put(b.ids.data(), b.ids.size());
    const size_t o_types = put(b.type_ids.data(), b.type_ids.size());
    const size_t o_pos = put(b.positions.data(), b.positions.size());
    const size_t o_cu = put(b.cu_seqlens.data(), b.cu_seqlens.size());
    const size_t o_skip = skip.empty() ? 0 : put(skip.data(), skip.size());
    if ((hp - h) % 2) ++hp;  // int2 alignment
    const size_t o_tiles = size_t(hp - h);
    std::copy(reinterpret_cast<const int*>(tiles.data()), reinterpret_cast<const int*>(tiles.data()) + 2 * tiles.size(), hp);
    hp += 2 * tiles.size();

    const size_t n_ints = size_t(hp - h);
    const Offsets off{o_ids, o_types, o_pos, o_cu, o_skip, o_tiles, n_ints};
    // Small batches are launch-bound: replay a captured CUDA graph of the whole pass (one graph
    // per batch shape and slot; the inputs sit at fixed addresses in the slot's staging). A shape
    // is captured the second time it is seen, so one-off shapes of a bulk run are never captured.
    const bool graphable = graphs_enabled && !profile_ops && Tn <= kGraphMaxTokens;
    GraphKey gk{Tn, S, int(tiles.size()), tile_rows, int(skip.empty() ? 0 : 1) + 2 * int(normalize), out_dim, 0};
    const GraphKey seen_key = gk;
    gk[6] = slot_index(s);
    cudaGraphExec_t* exec = nullptr;
    if (graphable) {
      auto git = graphs.find(gk);
      if (git != graphs.end()) {
        exec = &git->second;
      } else if (seen_shapes.count(seen_key) && graphs.size() < kMaxGraphs) {
        // Captures are rare (once per shape and slot): start each on an idle stream rather than
        // behind a batch in flight, so nothing queued before can interleave with the capture.
        const cudaStream_t stream = s.stream;
        EK_CUDA(cudaStreamSynchronize(stream));
        cudaGraph_t graph;
        EK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        try {
          enqueue<T>(s, b, pc, skip, normalize, off, tiles.size(), tile_rows, out_dim, false);
        } catch (...) {  // leave the stream usable: end (and discard) the capture
          if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
          throw;
        }
        EK_CUDA(cudaStreamEndCapture(stream, &graph));
        cudaGraphExec_t e;
        EK_CUDA(cudaGraphInstantiate(&e, graph, 0));
        cudaGraphDestroy(graph);
        exec = &(graphs[gk] = e);
      } else {
        seen_shapes.insert(seen_key);
      }
    }
    if (exec) {
      EK_CUDA(cudaEventRecord(s.ev[0], s.stream));
      EK_CUDA(cudaGraphLaunch(*exec, s.stream));
      EK_CUDA(cudaEventRecord(s.ev[4], s.stream));
    } else {
      enqueue<T>(s, b, pc, skip, normalize, off, tiles.size(), tile_rows, out_dim, true);
    }
    if (!own) {  // the next batch in the shared workspace starts after this one's last copy
      EK_CUDA(cudaEventRecord(shared_done, s.stream));
      shared_pending = true;
    }
    s.S = S_real;  // the dummy sequences' rows come back too but are not handed out
    s.out_dim = out_dim;
    s.graph = exec != nullptr;
    s.busy = true;
    return s.ticket = ++next_ticket;
  }

  // Waits for one batch, copies its rows out and reads its events into `times`.
  void collect(Ticket ticket, float* out) {
    Slot* sp = nullptr;
    for (Slot& s : slots)
      if (s.busy && s.ticket == ticket) sp = &s;
    if (!sp) throw Error("CUDA encoder: collect of a batch that is not in flight (ticket " + std::to_string(ticket) + ")");
    Slot& s = *sp;
    struct Release {  // the slot is free again whatever happens below
      Slot& s;
      ~Release() { s.busy = false; }
    } release{s};
    times = PhaseTimes{};
    if (s.empty) return;
    // Only this batch: one submitted after it keeps running on the device meanwhile.
    EK_CUDA(cudaEventSynchronize(s.ev[4]));
    std::copy(s.h_pooled, s.h_pooled + size_t(s.S) * size_t(s.out_dim), out);
    if (s.graph) {  // a graph replay is timed as a whole
      times.graph_replay = true;
      EK_CUDA(cudaEventElapsedTime(&times.forward, s.ev[0], s.ev[4]));
      return;
    }
    EK_CUDA(cudaEventElapsedTime(&times.h2d, s.ev[0], s.ev[1]));
    EK_CUDA(cudaEventElapsedTime(&times.forward, s.ev[1], s.ev[2]));
    EK_CUDA(cudaEventElapsedTime(&times.pool, s.ev[2], s.ev[3]));
    EK_CUDA(cudaEventElapsedTime(&times.d2h, s.ev[3], s.ev[4]));
    if (profile_ops) {
      for (size_t i = 1; i < s.op_next; ++i) {
        float ms = 0;
        EK_CUDA(cudaEventElapsedTime(&ms, s.op_events[i - 1], s.op_events[i]));
        times.*s.op_kinds[i] += ms;
      }
    }
  }
};

BertEncoder::BertEncoder(const TransformerConfig& cfg, const BertWeights& w, Precision p, size_t max_batch_tokens)
    : impl_(std::make_unique<Impl>()) {
  std::string why;
  if (!available(&why)) throw Error("--device cuda: " + why);
  if (cfg.hidden_size % 32 != 0 || cfg.hidden_size > 32 * kMaxDPerLane)
    throw Error("CUDA backend: hidden_size " + std::to_string(cfg.hidden_size) + " must be a multiple of 32 up to 1024");
  Impl& m = *impl_;
  m.cfg = cfg;
  m.precision = p;
  cudaDeviceProp prop{};
  EK_CUDA(cudaGetDeviceProperties(&prop, 0));
  m.name = prop.name;
  EK_CUBLAS(cublasLtCreate(&m.lt));
  EK_CUDA(cudaEventCreateWithFlags(&m.shared_done, cudaEventDisableTiming));
  for (auto& s : m.slots) {
    EK_CUDA(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    EK_CUDA(cudaMalloc(&s.lt_ws, m.lt_workspace_bytes));
    for (auto& e : s.ev) EK_CUDA(cudaEventCreate(&e));
  }
  if (const char* ct = std::getenv("EMBEDKIT_CONCURRENT_TOKENS"); ct && *ct) m.lane_tokens = size_t(std::atoll(ct));
  // Measuring switches: NAME=1 turns an off-by-default one on, NAME=0 an on-by-default one off.
  auto env_is = [](const char* name, const char* value) {
    const char* e = std::getenv(name);
    return e && std::string(e) == value;
  };
  m.profile_ops = env_is("EMBEDKIT_PROFILE_OPS", "1");
  m.graphs_enabled = !env_is("EMBEDKIT_CUDA_GRAPHS", "0");
  m.graph_buckets = !env_is("EMBEDKIT_GRAPH_BUCKETS", "0");
  m.fuse_residual = !env_is("EMBEDKIT_FUSE_RESIDUAL", "0");
  m.ln_pairs = layernorm_pairs_for(int(cfg.hidden_size));
  if (cfg.hidden_act == "relu") {
    m.inter_epilogue = CUBLASLT_EPILOGUE_RELU_BIAS;
  } else if (cfg.hidden_act == "gelu" && env_is("EMBEDKIT_EXACT_GELU", "1")) {
    m.exact_gelu = true;
    m.inter_epilogue = CUBLASLT_EPILOGUE_BIAS;
  } else if (cfg.hidden_act != "gelu" && cfg.hidden_act != "gelu_new" && cfg.hidden_act != "gelu_pytorch_tanh" &&
             cfg.hidden_act != "gelu_fast") {
    throw Error("CUDA backend: unsupported hidden_act \"" + cfg.hidden_act + "\"");
  }
  // Folded LayerNorms: fp16, Hopper with CUTLASS built in, the tanh-GELU epilogue (the folded
  // FFN-up GEMM computes the same), the fused residual path, d a multiple of 64. The unfolded
  // weights stay too: small batches without the small-batch CUTLASS path (small_fold below) and
  // bf16 run unfolded layers.
  const char* fold_env = std::getenv("EMBEDKIT_LN_FOLD");
  const int fold_mode = testing_ln_fold_override >= 0 ? testing_ln_fold_override
                        : fold_env && *fold_env            ? std::atoi(fold_env)
                                                           : 1;
  if (fold_mode > 0 && p == Precision::F16 && m.inter_epilogue == CUBLASLT_EPILOGUE_GELU_BIAS && m.fuse_residual &&
      cfg.hidden_size % 64 == 0 && cfg.intermediate_size % 8 == 0 && !w.layers.empty() && ln_fold_usable())
    m.ln_fold = std::min(fold_mode, 2);
  m.fold_sums = !env_is("EMBEDKIT_LN_FOLD_SUMS", "0");
  // CUTLASS's GEMMs compute GELU's tanh form, as cuBLASLt's epilogue does; other activations, the
  // separate residual pass and bf16 keep cuBLASLt.
  m.small_cutlass = !env_is("EMBEDKIT_SMALL_CUTLASS", "0") && p == Precision::F16 && small_gemm_usable() &&
                    m.fuse_residual && m.inter_epilogue == CUBLASLT_EPILOGUE_GELU_BIAS && cfg.hidden_size % 64 == 0 &&
                    cfg.intermediate_size % 64 == 0;
  m.small_fold = m.small_cutlass && m.ln_fold >= 1 && !env_is("EMBEDKIT_SMALL_FOLD", "0");
  m.pdl = prop.major >= 9 && !env_is("EMBEDKIT_PDL", "0");
  m.zero_copy = !env_is("EMBEDKIT_ZERO_COPY", "0");
  if (p == Precision::F16) m.load<__half>(w);
  else m.load<__nv_bfloat16>(w);
  // Workspaces up front (growing one later waits for every batch in flight): the shared one for
  // the token budget, each slot's for its small batches.
  for (auto& s : m.slots) {
    m.ensure_capacity(m.shared, s, max_batch_tokens, 64, 64, 64 * 4 * size_t(cfg.hidden_size));
    if (m.lane_tokens)
      m.ensure_capacity(s.own, s, std::min(m.lane_tokens, max_batch_tokens), 64, 64, 64 * 4 * size_t(cfg.hidden_size));
  }
}

// 320 tokens: single texts at 64 connections 178k against 151k requests/s with 2,048 (H100, one
// call, docs/benchmarks.md), c256 / c1,024 within 5%.
size_t BertEncoder::overlap_min_tokens() const {
  return impl_->small_cutlass ? kOverlapMinTokensSmallCutlass : kOverlapMinTokens;
}

BertEncoder::~BertEncoder() {
  if (!impl_) return;
  Impl& m = *impl_;
  for (auto& s : m.slots)
    if (s.stream) cudaStreamSynchronize(s.stream);  // batches never collected finish first
  m.drop_graphs();
  for (void* p : m.owned) cudaFree(p);
  m.shared.release();
  if (m.shared_done) cudaEventDestroy(m.shared_done);
  for (auto& s : m.slots) {
    s.own.release();
    if (s.lt_ws) cudaFree(s.lt_ws);
    if (s.h_ints) cudaFreeHost(s.h_ints);
    if (s.h_pooled) cudaFreeHost(s.h_pooled);
    for (auto& e : s.ev)
      if (e) cudaEventDestroy(e);
    for (auto& e : s.op_events) cudaEventDestroy(e);
  }
  if (m.lt) cublasLtDestroy(m.lt);
  for (auto& s : m.slots)
    if (s.stream) cudaStreamDestroy(s.stream);
}

void BertEncoder::encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
                         bool normalize, float* out) {
  if (batch.tokens() == 0) return;
  collect(submit(batch, pooling, skip, normalize), out);
}

BertEncoder::Ticket BertEncoder::submit(const PackedBatch& batch, const PoolingConfig& pooling,
                                        const std::vector<int32_t>& skip, bool normalize) {
  if (impl_->precision == Precision::F16) return impl_->submit<__half>(batch, pooling, skip, normalize);
  return impl_->submit<__nv_bfloat16>(batch, pooling, skip, normalize);
}

void BertEncoder::collect(Ticket ticket, float* out) { impl_->collect(ticket, out); }

int BertEncoder::in_flight() const {
  int n = 0;
  for (auto& s : impl_->slots) n += s.busy ? 1 : 0;
  return n;
}

const PhaseTimes& BertEncoder::last_times() const { return impl_->times; }
std::string BertEncoder::device_name() const { return impl_->name; }
int BertEncoder::layernorm_pairs() const { return impl_->ln_pairs; }

}  // namespace embedkit::cuda
