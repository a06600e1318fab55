// CUDA Qwen3 decoder (Qwen3-Embedding) on packed batches: no padding, positions restart at 0 per
// sequence, causal attention within each sequence. Mirrors transformers' modeling_qwen3.py
// (Qwen3Model.forward, Qwen3DecoderLayer, Qwen3Attention, Qwen3MLP) and our fp32 CPU model
// (src/models/qwen3.cpp), which the op tests and end-to-end checks compare against.
//
// Per layer (Tn tokens, d hidden, H query / KV key-value heads of dh, I MLP width):
//   normed[Tn,d]        = RMSNorm(hidden) · input_layernorm              one warp per token
//   qkv[Tn,(H+2KV)dh]   = normed · [Wq|Wk|Wv]ᵀ (+ b if attention_bias)    one cuBLASLt GEMM
//   qkv (q, k heads)    = RoPE(RMSNorm_head(·) · q_norm / k_norm)          one kernel, in place
//   ctx[Tn,H·dh]        = causal GQA attention(qkv)                        flash kernel (kernels.cuh),
//                                                                          kv head = h / (H/KV)
//   hidden              = ctx · W_oᵀ + hidden                              cuBLASLt, residual epilogue (beta 1)
//   normed              = RMSNorm(hidden) · post_attention_layernorm
//   gate_up[Tn,2I]      = normed · [W_gate|W_up]ᵀ                          one cuBLASLt GEMM
//   act[Tn,I]           = silu(gate) · up
//   hidden              = act · W_downᵀ + hidden                           cuBLASLt, residual epilogue
// then the final norm and pooling: for last-token pooling (Qwen3-Embedding) one kernel norms only
// the S last rows (+ L2 normalize) → [S, d] fp32 → one copy to the host.
// Workspace (2-byte elements per token): hidden d, normed d, qkv max((H+2KV)dh, I) (act reuses
// it: qkv is dead after attention), big max(H·dh, 2I) (ctx, then gate_up: ctx is dead after o_proj).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <type_traits>

#include "cuda/decoder_kernels.cuh"
#include "cuda/graph_buckets.h"
#include "cuda/kernels.cuh"
#include "cuda/qwen3_cuda.h"
#include "ops/decoder_ops.h"
#include "util/error.h"

namespace embedkit::cuda {

namespace {

template <typename T>
T* upload_as(const std::vector<float>& host, std::vector<void*>& owned) {
  std::vector<T> tmp(host.size());
  for (size_t i = 0; i < host.size(); ++i) {
    if constexpr (std::is_same_v<T, __half>) tmp[i] = __float2half_rn(host[i]);
    else tmp[i] = __float2bfloat16_rn(host[i]);
  }
  T* d = nullptr;
  EK_CUDA(cudaMalloc(&d, std::max<size_t>(tmp.size(), 1) * sizeof(T)));
  owned.push_back(d);
  if (!tmp.empty()) EK_CUDA(cudaMemcpy(d, tmp.data(), tmp.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

float* upload_f32(const std::vector<float>& host, std::vector<void*>& owned) {
  float* d = nullptr;
  EK_CUDA(cudaMalloc(&d, host.size() * sizeof(float)));
  owned.push_back(d);
  EK_CUDA(cudaMemcpy(d, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

struct Dims {
  int d, I, H, KV, dh, n_qkv, n_ctx;
  explicit Dims(const TransformerConfig& c)
      : d(int(c.hidden_size)), I(int(c.intermediate_size)), H(int(c.num_heads)), KV(int(c.num_kv_heads)),
        dh(int(c.head_dim)), n_qkv(int((c.num_heads + 2 * c.num_kv_heads) * c.head_dim)),
        n_ctx(int(c.num_heads * c.head_dim)) {}
  size_t qkv_cols() const { return size_t(std::max(n_qkv, I)); }
  size_t big_cols() const { return size_t(std::max(n_ctx, 2 * I)); }
};

}  // namespace

size_t Qwen3Encoder::workspace_bytes_per_token(const TransformerConfig& cfg) {
  const Dims D(cfg);
  return 2 * (2 * size_t(D.d) + D.qkv_cols() + D.big_cols()) + 16 /* ids, positions, tiles */;
}

struct Qwen3Encoder::Impl {
  TransformerConfig cfg;
  Precision precision;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 32u << 20;
  std::vector<void*> owned;  // weights and the RoPE table
  cudaEvent_t ev[5];
  PhaseTimes times;
  std::string name;
  // Optional per-op profile (EMBEDKIT_PROFILE_OPS=1): an event between consecutive ops. q/k
  // RMSNorm + RoPE counts as layernorm, SiLU·up as activation, the gather as embed.
  bool profile_ops = false;
  std::vector<cudaEvent_t> op_events;
  std::vector<float PhaseTimes::*> op_kinds;
  size_t op_next = 0;
  void mark(float PhaseTimes::*kind) {
    if (!profile_ops) return;
    if (op_next == op_events.size()) {
      cudaEvent_t e;
      EK_CUDA(cudaEventCreate(&e));
      op_events.push_back(e);
      op_kinds.push_back(nullptr);
    }
    op_kinds[op_next] = kind;
    EK_CUDA(cudaEventRecord(op_events[op_next++], stream));
  }

  struct LayerW {
    void *input_norm, *w_qkv, *b_qkv, *q_norm, *k_norm, *w_o, *post_norm, *w_gate_up, *w_down;
  };
  void *embed = nullptr, *final_norm = nullptr;
  float *rope_cos = nullptr, *rope_sin = nullptr;
  int rope_positions = 0;
  std::vector<LayerW> layers;

  size_t capacity = 0, int_capacity = 0, pooled_capacity = 0;
  void *hidden = nullptr, *normed = nullptr, *qkv = nullptr, *big = nullptr;
  int* d_ints = nullptr;  // ids | positions | cu_seqlens | skip | tiles (int2)
  int* h_ints = nullptr;  // pinned staging of the same: one H2D copy
  float* d_pooled = nullptr;
  float* h_pooled = nullptr;  // pinned
  LtAlgoCache algo_cache;
  std::vector<int2> tiles;

  // CUDA graphs of whole passes for small batches (launch-bound: 28 layers × 9 launches), keyed
  // by batch shape; a shape is captured the second time it is seen (as BertEncoder does).
  // Batches are padded to shape buckets first (cuda/graph_buckets.h) so that a server's small
  // batches reuse the graphs; EMBEDKIT_GRAPH_BUCKETS=0: exact shapes only.
  static constexpr int kGraphMaxTokens = kGraphBucketMaxTokens;
  static constexpr size_t kMaxGraphs = 256;
  using GraphKey = std::array<int, 6>;  // tokens, sequences, tiles, tile rows, pooling|skip|normalize, out dim
  std::map<GraphKey, cudaGraphExec_t> graphs;
  std::set<GraphKey> seen_shapes;
  bool graphs_enabled = true, graph_buckets = true;
  PackedBatch padded;                // the bucketed copy of a small batch (storage reused)
  std::vector<int32_t> padded_skip;  // its pooling skips, 0 for dummy sequences

  template <typename T>
  void load(const Qwen3Weights& w) {
    embed = upload_as<T>(w.embed_tokens, owned);
    final_norm = upload_as<T>(w.norm, owned);
    for (auto& L : w.layers) {
      LayerW d;
      d.input_norm = upload_as<T>(L.input_norm, owned);
      d.w_qkv = upload_as<T>(L.w_qkv, owned);
      d.b_qkv = L.b_qkv.empty() ? nullptr : upload_as<T>(L.b_qkv, owned);
      d.q_norm = upload_as<T>(L.q_norm, owned);
      d.k_norm = upload_as<T>(L.k_norm, owned);
      d.w_o = upload_as<T>(L.w_o, owned);
      d.post_norm = upload_as<T>(L.post_attn_norm, owned);
      d.w_gate_up = upload_as<T>(L.w_gate_up, owned);
      d.w_down = upload_as<T>(L.w_down, owned);
      layers.push_back(d);
    }
  }

  void drop_graphs() {  // captured graphs hold buffer addresses: drop them when buffers move
    for (auto& [k, g] : graphs) cudaGraphExecDestroy(g);
    graphs.clear();
    seen_shapes.clear();
  }

  void ensure_capacity(size_t tokens, size_t ints, size_t pooled_floats) {
    const Dims D(cfg);
    if (tokens > capacity) {
      drop_graphs();
      for (void* p : {hidden, normed, qkv, big})
        if (p) cudaFree(p);
      capacity = std::max(tokens, capacity * 2);
      EK_CUDA(cudaMalloc(&hidden, capacity * D.d * 2));
      EK_CUDA(cudaMalloc(&normed, capacity * D.d * 2));
      EK_CUDA(cudaMalloc(&qkv, capacity * D.qkv_cols() * 2));
      EK_CUDA(cudaMalloc(&big, capacity * D.big_cols() * 2));
    }
    if (ints > int_capacity) {
      drop_graphs();
      if (d_ints) cudaFree(d_ints);
      if (h_ints) cudaFreeHost(h_ints);
      int_capacity = std::max(ints, int_capacity * 2);
      EK_CUDA(cudaMalloc(&d_ints, int_capacity * sizeof(int)));
      EK_CUDA(cudaMallocHost(&h_ints, int_capacity * sizeof(int)));
    }
    if (pooled_floats > pooled_capacity) {
      drop_graphs();
      if (d_pooled) cudaFree(d_pooled);
      if (h_pooled) cudaFreeHost(h_pooled);
      pooled_capacity = std::max(pooled_floats, pooled_capacity * 2);
      EK_CUDA(cudaMalloc(&d_pooled, pooled_capacity * sizeof(float)));
      EK_CUDA(cudaMallocHost(&h_pooled, pooled_capacity * sizeof(float)));
    }
  }

  // y[Tn, n_out] = x[Tn, n_in] · Wᵀ (+ bias) (+ residual, in place when residual == y).
  void linear(const void* x, int Tn, int n_in, const void* W, const void* bias, int n_out, void* y,
              const void* residual = nullptr) {
    lt_linear(lt, precision == Precision::F16 ? CUDA_R_16F : CUDA_R_16BF, x, Tn, n_in, W, bias, n_out, y,
              bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, lt_workspace, lt_workspace_bytes, stream,
              &algo_cache, residual);
  }

  struct Offsets {
    size_t ids, pos, cu, skip, tiles, n_ints;
  };

  // Everything from the H2D copy to the D2H copy, on `stream` (also what a graph captures).
  template <typename T>
  void enqueue(int Tn, int S, const PoolingConfig& pc, bool has_skip, bool normalize, const Offsets& off, int n_tiles,
               int tile_rows, int out_dim, bool timed) {
    const Dims D(cfg);
    const float eps = float(cfg.rms_norm_eps);
    ++algo_cache.batch;  // GEMM shapes seen again in a later batch get their algorithm timed (lt_linear)
    if (timed) EK_CUDA(cudaEventRecord(ev[0], stream));
    EK_CUDA(cudaMemcpyAsync(d_ints, h_ints, off.n_ints * sizeof(int), cudaMemcpyHostToDevice, stream));
    if (timed) EK_CUDA(cudaEventRecord(ev[1], stream));
    T* hid = static_cast<T*>(hidden);
    T* nrm = static_cast<T*>(normed);
    T* qkv_t = static_cast<T*>(qkv);
    T* act = qkv_t;                       // [Tn, I], after attention
    T* ctx = static_cast<T*>(big);        // [Tn, H·dh]
    T* gate_up = static_cast<T*>(big);    // [Tn, 2I], after o_proj
    const int* ids = d_ints + off.ids;
    const int* pos = d_ints + off.pos;
    const int* cu = d_ints + off.cu;
    op_next = 0;
    mark(nullptr);
    constexpr int kWarps = 8;
    embed_gather_kernel<T><<<(Tn + kWarps - 1) / kWarps, 32 * kWarps, 0, stream>>>(ids, static_cast<const T*>(embed),
                                                                                    Tn, D.d, hid);
    mark(&PhaseTimes::embed);
    for (auto& L : layers) {
      // Self-attention block (Qwen3Attention): hidden += o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))
      launch_add_rmsnorm<T>(nullptr, hid, static_cast<const T*>(L.input_norm), nrm, Tn, D.d, eps, stream);
      mark(&PhaseTimes::layernorm);
      linear(nrm, Tn, D.d, L.w_qkv, L.b_qkv, D.n_qkv, qkv_t);
      mark(&PhaseTimes::gemm);
      launch_qk_norm_rope<T>(qkv_t, pos, static_cast<const T*>(L.q_norm), static_cast<const T*>(L.k_norm), rope_cos,
                             rope_sin, Tn, D.H, D.KV, D.dh, eps, stream);
      mark(&PhaseTimes::layernorm);
      launch_attention<T>(D.dh, tile_rows, qkv_t, cu, reinterpret_cast<const int2*>(d_ints + off.tiles), n_tiles, D.H,
                          D.KV, /*causal=*/true, ctx, stream);
      mark(&PhaseTimes::attention);
      linear(ctx, Tn, D.n_ctx, L.w_o, nullptr, D.d, hid, hid);
      mark(&PhaseTimes::gemm);
      // MLP block (Qwen3MLP): hidden += down(silu(gate(x)) · up(x)), x = post_attention_layernorm(hidden)
      launch_add_rmsnorm<T>(nullptr, hid, static_cast<const T*>(L.post_norm), nrm, Tn, D.d, eps, stream);
      mark(&PhaseTimes::layernorm);
      linear(nrm, Tn, D.d, L.w_gate_up, nullptr, 2 * D.I, gate_up);
      mark(&PhaseTimes::gemm);
      launch_silu_mul<T>(gate_up, act, Tn, D.I, stream);
      mark(&PhaseTimes::activation);
      linear(act, Tn, D.I, L.w_down, nullptr, D.d, hid, hid);
      mark(&PhaseTimes::gemm);
    }
    EK_CUDA(cudaGetLastError());
    if (timed) EK_CUDA(cudaEventRecord(ev[2], stream));
    const bool last_only = pc.last_token && !pc.cls && !pc.max && !pc.mean && !pc.mean_sqrt_len && !pc.weighted_mean;
    if (last_only) {
      last_token_norm_pool_kernel<T><<<(S + kWarps - 1) / kWarps, 32 * kWarps, 0, stream>>>(
          hid, cu, static_cast<const T*>(final_norm), S, D.d, eps, normalize ? 1 : 0, d_pooled, out_dim);
    } else {  // other pooling modes need every token's final hidden state
      launch_add_rmsnorm<T>(nullptr, hid, static_cast<const T*>(final_norm), hid, Tn, D.d, eps, stream);
      PoolModes pm{pc.cls, pc.max, pc.mean, pc.mean_sqrt_len, pc.weighted_mean, pc.last_token};
      launch_pool<T>(hid, cu, has_skip ? d_ints + off.skip : nullptr, S, D.d, pm, normalize, d_pooled, out_dim,
                     stream);
    }
    EK_CUDA(cudaGetLastError());
    if (timed) EK_CUDA(cudaEventRecord(ev[3], stream));
    EK_CUDA(cudaMemcpyAsync(h_pooled, d_pooled, size_t(S) * size_t(out_dim) * sizeof(float), cudaMemcpyDeviceToHost,
                            stream));
    if (timed) EK_CUDA(cudaEventRecord(ev[4], stream));
  }

  template <typename T>
  void run(const PackedBatch& real, const PoolingConfig& pc, const std::vector<int32_t>& real_skip, bool normalize,
           float* out) {
    const Dims D(cfg);
    const int S_real = int(real.sequences());
    // Also without graphs (EMBEDKIT_CUDA_GRAPHS=0, profiling): the same padded batch, the same numbers.
    const int bucket_tiles = graph_buckets ? pad_to_bucket(real, real_skip, kShortSeqMax, padded, padded_skip) : 0;
    const PackedBatch& b = bucket_tiles ? padded : real;
    const std::vector<int32_t>& skip = bucket_tiles && !real_skip.empty() ? padded_skip : real_skip;
    const int Tn = int(b.tokens()), S = int(b.sequences());
    int max_len = 0;
    for (int s = 0; s < S; ++s) max_len = std::max(max_len, b.cu_seqlens[size_t(s) + 1] - b.cu_seqlens[size_t(s)]);
    if (max_len > rope_positions)
      throw Error("Qwen3 CUDA: a sequence of " + std::to_string(max_len) + " tokens exceeds the model's " +
                  std::to_string(rope_positions) + " positions (max_position_embeddings)");
    for (int32_t p : b.positions) EK_CHECK(p >= 0 && p < rope_positions, "position out of range");
    const int tile_rows = attention_tile_rows(max_len, D.dh);
    make_attention_tiles(b.cu_seqlens.data(), S, tile_rows, /*causal=*/true, tiles);
    if (bucket_tiles)  // pad with tiles that start past the end of the last dummy: no work, no writes
      pad_tiles(tiles, S, bucket_tiles);
    const int modes = int(pc.cls) + int(pc.max) + int(pc.mean) + int(pc.mean_sqrt_len) + int(pc.weighted_mean) +
                      int(pc.last_token);
    EK_CHECK(modes > 0, "no pooling mode");
    const int out_dim = modes * D.d;
    const size_t n_ints = 2 * size_t(Tn) + 2 * (size_t(S) + 1) + 2 * tiles.size() + 8;
    ensure_capacity(size_t(Tn), n_ints, size_t(S) * size_t(out_dim));

    // Stage every integer input in one pinned buffer → one H2D copy.
    int* hp = h_ints;
    auto put = [&](const int32_t* src, size_t n) {
      const size_t at = size_t(hp - h_ints);
      std::copy(src, src + n, hp);
      hp += n;
      return at;
    };
    Offsets off{};
    off.ids = put(b.ids.data(), b.ids.size());
    off.pos = put(b.positions.data(), b.positions.size());
    off.cu = put(b.cu_seqlens.data(), b.cu_seqlens.size());
    off.skip = skip.empty() ? 0 : put(skip.data(), skip.size());
    if ((hp - h_ints) % 2) ++hp;  // int2 alignment
    off.tiles = size_t(hp - h_ints);
    std::copy(reinterpret_cast<const int*>(tiles.data()), reinterpret_cast<const int*>(tiles.data()) + 2 * tiles.size(),
              hp);
    hp += 2 * tiles.size();
    off.n_ints = size_t(hp - h_ints);
    EK_CHECK(off.n_ints <= int_capacity);

    const int pool_key = int(pc.cls) | int(pc.max) << 1 | int(pc.mean) << 2 | int(pc.mean_sqrt_len) << 3 |
                         int(pc.weighted_mean) << 4 | int(pc.last_token) << 5 | int(!skip.empty()) << 6 |
                         int(normalize) << 7;
    const bool graphable = graphs_enabled && !profile_ops && Tn <= kGraphMaxTokens;
    const GraphKey gk{Tn, S, int(tiles.size()), tile_rows, pool_key, out_dim};
    cudaGraphExec_t* exec = nullptr;
    if (graphable) {
      auto git = graphs.find(gk);
      if (git != graphs.end()) {
        exec = &git->second;
      } else if (seen_shapes.count(gk) && graphs.size() < kMaxGraphs) {
        cudaGraph_t graph;
        EK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        enqueue<T>(Tn, S, pc, !skip.empty(), normalize, off, int(tiles.size()), tile_rows, out_dim, false);
        EK_CUDA(cudaStreamEndCapture(stream, &graph));
        cudaGraphExec_t e;
        EK_CUDA(cudaGraphInstantiate(&e, graph, 0));
        cudaGraphDestroy(graph);
        exec = &(graphs[gk] = e);
      } else {
        seen_shapes.insert(gk);
      }
    }
    if (exec) {
      EK_CUDA(cudaEventRecord(ev[0], stream));
      EK_CUDA(cudaGraphLaunch(*exec, stream));
      EK_CUDA(cudaEventRecord(ev[4], stream));
    } else {
      enqueue<T>(Tn, S, pc, !skip.empty(), normalize, off, int(tiles.size()), tile_rows, out_dim, true);
    }
    EK_CUDA(cudaStreamSynchronize(stream));
    std::copy(h_pooled, h_pooled + size_t(S_real) * out_dim, out);  // the dummies' rows are dropped
    times = PhaseTimes{};
    if (exec) {  // a graph replay is timed as a whole
      cudaEventElapsedTime(&times.forward, ev[0], ev[4]);
      return;
    }
    cudaEventElapsedTime(&times.h2d, ev[0], ev[1]);
    cudaEventElapsedTime(&times.forward, ev[1], ev[2]);
    cudaEventElapsedTime(&times.pool, ev[2], ev[3]);
    cudaEventElapsedTime(&times.d2h, ev[3], ev[4]);
    if (profile_ops)
      for (size_t i = 1; i < op_next; ++i) {
        float ms = 0;
        cudaEventElapsedTime(&ms, op_events[i - 1], op_events[i]);
        times.*op_kinds[i] += ms;
      }
  }
};

Qwen3Encoder::Qwen3Encoder(const TransformerConfig& cfg, const Qwen3Weights& w, Precision p, size_t max_batch_tokens)
    : impl_(std::make_unique<Impl>()) {
  std::string why;
  if (!available(&why)) throw Error("--device cuda: " + why);
  const Dims D(cfg);
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("Qwen3 CUDA backend: config.json " + what);
  };
  need(D.d > 0 && D.d % 8 == 0, "hidden_size " + std::to_string(D.d) + " must be a positive multiple of 8");
  need(D.I > 0 && D.I % 8 == 0, "intermediate_size " + std::to_string(D.I) + " must be a positive multiple of 8");
  need(D.dh == 32 || D.dh == 64 || D.dh == 128, "head_dim " + std::to_string(D.dh) + " is not supported (32, 64, 128)");
  need(D.KV >= 1 && D.H % D.KV == 0, "num_attention_heads " + std::to_string(D.H) +
                                         " must be a multiple of num_key_value_heads " + std::to_string(D.KV));
  need(cfg.hidden_act.empty() || cfg.hidden_act == "silu" || cfg.hidden_act == "swish",
       "hidden_act \"" + cfg.hidden_act + "\" is not supported (silu)");
  need(cfg.max_position_embeddings > 0, "max_position_embeddings must be > 0");
  EK_CHECK(w.layers.size() == size_t(cfg.num_layers));
  Impl& m = *impl_;
  m.cfg = cfg;
  m.precision = p;
  cudaDeviceProp prop{};
  EK_CUDA(cudaGetDeviceProperties(&prop, 0));
  m.name = prop.name;
  EK_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  EK_CUBLAS(cublasLtCreate(&m.lt));
  EK_CUDA(cudaMalloc(&m.lt_workspace, m.lt_workspace_bytes));
  for (auto& e : m.ev) EK_CUDA(cudaEventCreate(&e));
  const char* prof = std::getenv("EMBEDKIT_PROFILE_OPS");
  m.profile_ops = prof && std::string(prof) == "1";
  const char* graphs = std::getenv("EMBEDKIT_CUDA_GRAPHS");
  m.graphs_enabled = !(graphs && std::string(graphs) == "0");
  const char* buckets = std::getenv("EMBEDKIT_GRAPH_BUCKETS");
  m.graph_buckets = !(buckets && std::string(buckets) == "0");
  if (p == Precision::F16) m.load<__half>(w);
  else m.load<__nv_bfloat16>(w);
  // RoPE table for every position the model accepts (32,768 × 64 × 2 floats = 16 MB for 0.6B),
  // computed as transformers' default rope init does (fp32 inv_freq and angles).
  cpu::RopeTable rope;
  rope.build(cfg.max_position_embeddings, D.dh, cfg.rope_theta);
  m.rope_cos = upload_f32(rope.cos, m.owned);
  m.rope_sin = upload_f32(rope.sin, m.owned);
  m.rope_positions = int(cfg.max_position_embeddings);
  m.ensure_capacity(std::max<size_t>(max_batch_tokens, 1), 2 * max_batch_tokens + 4096, 64 * 4 * size_t(D.d));
}

Qwen3Encoder::~Qwen3Encoder() {
  if (!impl_) return;
  Impl& m = *impl_;
  if (m.stream) cudaStreamSynchronize(m.stream);
  m.drop_graphs();
  for (void* p : m.owned) cudaFree(p);
  for (void* p : {m.hidden, m.normed, m.qkv, m.big, static_cast<void*>(m.d_ints), static_cast<void*>(m.d_pooled),
                  m.lt_workspace})
    if (p) cudaFree(p);
  if (m.h_ints) cudaFreeHost(m.h_ints);
  if (m.h_pooled) cudaFreeHost(m.h_pooled);
  for (auto& e : m.ev) cudaEventDestroy(e);
  for (auto& e : m.op_events) cudaEventDestroy(e);
  if (m.lt) cublasLtDestroy(m.lt);
  if (m.stream) cudaStreamDestroy(m.stream);
}

void Qwen3Encoder::encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
                          bool normalize, float* out) {
  if (batch.tokens() == 0) return;
  if (impl_->precision == Precision::F16) impl_->run<__half>(batch, pooling, skip, normalize, out);
  else impl_->run<__nv_bfloat16>(batch, pooling, skip, normalize, out);
}

const PhaseTimes& Qwen3Encoder::last_times() const { return impl_->times; }
std::string Qwen3Encoder::device_name() const { return impl_->name; }

}  // namespace embedkit::cuda
