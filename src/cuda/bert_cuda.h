// CUDA backend for BERT-family encoders: fp16/bf16 weights and activations, fp32 accumulation,
// padding-free packed batches end to end. Plain C++ header: no CUDA types leak out, so the rest
// of the engine compiles without nvcc.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "models/bert.h"

namespace embedkit::cuda {

// True when this build has CUDA and a usable GPU; otherwise *why says what is missing.
bool available(std::string* why);
// Free memory on the current GPU in bytes (0 when unknown).
size_t free_memory_bytes();

enum class Precision { F16, BF16 };

// Device time of the phases of one batch, from CUDA events recorded on the encoder's stream
// around that batch's own work (milliseconds), so the numbers stay per batch when batches are
// pipelined (a batch's events fire after the previous batch's work, not while it runs).
struct PhaseTimes {
  float h2d = 0, forward = 0, pool = 0, d2h = 0;
  // Forward split by op kind; filled only when EMBEDKIT_PROFILE_OPS=1 (an event per op).
  float gemm = 0, attention = 0, layernorm = 0, activation = 0, embed = 0;
  // The batch ran as one CUDA-graph replay, timed whole: everything is in `forward`.
  bool graph_replay = false;
};

class BertEncoder {
 public:
  // Batches that may be submitted and not yet collected at once (pipeline_depth() of them are, by
  // default 2). Two hide the host side of a batch (staging batch i+1's inputs, copying batch i's
  // rows out) behind the device; small batches (up to 2,048 tokens) also run at once on the
  // device, each on its own stream: a small pass leaves most SMs idle.
  static constexpr int kMaxInFlight = 4;
  static constexpr int kDefaultDepth = 2;
  using Ticket = uint64_t;

  BertEncoder(const TransformerConfig& cfg, const BertWeights& w, Precision p, size_t max_batch_tokens);
  ~BertEncoder();
  BertEncoder(const BertEncoder&) = delete;
  BertEncoder& operator=(const BertEncoder&) = delete;

  // Runs the encoder on `batch`, pools each sequence on the device (skip[s] leading tokens
  // excluded when non-empty), L2-normalizes rows when `normalize`, and copies the pooled
  // [S, pooled_dim] fp32 rows to `out` (host) with one device-to-host copy. = collect(submit()).
  void encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
              bool normalize, float* out);

  // Pipelined form of encode(). submit() stages the batch's inputs in pinned host memory (one of
  // kMaxInFlight staging slots; `batch` and `skip` are not needed afterwards) and queues the whole
  // pass (H2D copy, forward, pooling, D2H copy into the slot's pinned rows) on the slot's stream
  // without waiting for it. Batches of up to 2,048 tokens (EMBEDKIT_CONCURRENT_TOKENS) work in
  // their slot's own buffers and run alongside whatever else is in flight; bigger ones share one
  // workspace and each starts on the device right after the previous big one: no host gap.
  // collect() waits for that batch only and copies its [S, pooled_dim] rows to `out`; its
  // last_times() are then this batch's. Throws when kMaxInFlight batches are already in flight
  // (collect one first) or for a ticket that is not in flight. One thread may submit while
  // another collects (the batcher's submitter and collector); no two threads may submit, or
  // collect, at once.
  Ticket submit(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
                bool normalize);
  void collect(Ticket ticket, float* out);
  int in_flight() const;
  // How many batches callers should keep in flight: kDefaultDepth, or EMBEDKIT_PIPELINE=n (1 to
  // kMaxInFlight; for measuring the synchronous, pipelined and deeper forms side by side).
  static int pipeline_depth();
  // The smallest batch (tokens) worth running beside one already on the device: small passes run
  // on CUTLASS's PDL-launched GEMMs (small_gemm.h) share the device well from a few hundred
  // tokens, cuBLASLt's only from thousands (BatcherOptions::overlap_min_tokens; docs/benchmarks.md).
  size_t overlap_min_tokens() const;
  static constexpr size_t kOverlapMinTokens = 2048, kOverlapMinTokensSmallCutlass = 320;

  // Times of the batch collected last.
  const PhaseTimes& last_times() const;
  std::string device_name() const;
  // Element pairs per LayerNorm load the encoder uses at its hidden size (1: 4 bytes, 2: 8 bytes,
  // 4: 16 bytes; 0: one element per load), for reports.
  int layernorm_pairs() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// LayerNorm load width for hidden size d (element pairs per load, as above): the measured default
// per d, or EMBEDKIT_LN_PAIRS=1|2|4 narrowed to what d allows (d % (64·pairs) == 0).
int layernorm_pairs_for(int d);

}  // namespace embedkit::cuda

namespace embedkit::cuda {
// out[n, m] = cosine(a_i, b_j) on the GPU (host arrays in and out).
void cosine_similarity(const float* a, size_t n, const float* b, size_t m, size_t dim, float* out);
}  // namespace embedkit::cuda

// Op-level entry points for the CUDA op tests (tests/gpu): each converts fp32 host inputs to
// the precision, runs one kernel on a NaN-poisoned output buffer, and returns fp32 host output.
namespace embedkit::cuda::testing {
std::vector<float> linear(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W,
                          const std::vector<float>& b, int n_out, Precision p);
// y = x·Wᵀ + b + residual, the residual from its own buffer or (in_place) already in y.
std::vector<float> linear_residual(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W,
                                   const std::vector<float>& b, int n_out, const std::vector<float>& residual,
                                   bool in_place, Precision p);
std::vector<float> gelu(const std::vector<float>& x, Precision p);
// The small-batch CUTLASS GEMMs (small_gemm.h; fp16, Hopper with CUTLASS built in — check
// small_gemm_available()): y = x·Wᵀ + b, then per `epilogue` 0 nothing, 1 tanh-GELU, 2 + residual
// (in place: y starts as the residual), launched with PDL.
bool small_gemm_available();
std::vector<float> small_gemm(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W,
                              const std::vector<float>& b, int n_out, int epilogue, const std::vector<float>& residual);
// LN(x + hidden); an empty x gives LN(hidden) (the in-place form after a residual epilogue).
// pairs: element pairs per load (1, 2, 4; 0 = one element per load; -1 = the encoder's choice
// for d, layernorm_pairs_for(d)).
std::vector<float> add_layernorm(const std::vector<float>& x, const std::vector<float>& hidden,
                                 const std::vector<float>& g, const std::vector<float>& b, int T, int d, float eps,
                                 Precision p, int pairs = -1);
std::vector<float> embed_layernorm(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                                   const std::vector<int32_t>& pos, const std::vector<float>& word,
                                   const std::vector<float>& pos_emb, const std::vector<float>& type_emb,
                                   const std::vector<float>& g, const std::vector<float>& b, int d, float eps,
                                   Precision p, int pairs = -1);
// q_prescaled: q carries log2(e)/√dh already (as the encoder's q projection does).
std::vector<float> attention(const std::vector<float>& qkv, const std::vector<int32_t>& cu_seqlens, int H, int dh,
                             bool causal, Precision p, bool q_prescaled = false);
// With ln_g/ln_b given, each row is LayerNormed (eps) as the pooling reads it (the encoder's last
// LayerNorm on the folded path); the row statistics are computed here on the host.
std::vector<float> pool(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu_seqlens,
                        const PoolingConfig& c, const std::vector<int32_t>& skip, bool normalize, Precision p,
                        const std::vector<float>& ln_g = {}, const std::vector<float>& ln_b = {}, float eps = 1e-12f);
// Attention launch shapes for sequences longer than 64 tokens (see bert_cuda.cu): how many, and
// which one the next calls use (-1: the default, or EMBEDKIT_ATTN_SHAPE).
int attention_shape_count();
void set_attention_shape(int i);
// Whether the default shape can run as the Hopper wgmma kernel on this GPU, and a switch for it
// (-1: EMBEDKIT_ATTN_WGMMA, default off; 0: mma.sync kernel; 1: wgmma where available).
bool attention_wgmma_available();
void set_attention_wgmma(int on);
// The folded-LayerNorm GEMMs (ln_fold_gemm.cu): whether they run here, and EMBEDKIT_LN_FOLD for
// encoders made after the call (-1: the environment's, default 1; 0 off; 1 big batches; 2 all).
bool ln_fold_available();
void set_ln_fold(int mode);
// y = LN(x)·Wᵀ + b (+ GELU, tanh form) through the stats pass and a folded GEMM, fp16; x [T, K].
std::vector<float> folded_ln_linear(const std::vector<float>& x, int T, int K, const std::vector<float>& W,
                                    const std::vector<float>& b, int N, const std::vector<float>& gamma,
                                    const std::vector<float>& beta, float eps, bool gelu);
// y = a·Wᵀ + b + LN(x) through the stats pass and the folded residual GEMM, fp16; a [T, K], x [T, N].
// With `stats` the GEMM also sums each output row (Σy, Σy² in its epilogue) and the result is the
// next LayerNorm's statistics from those sums instead: [r (T), n (T)], r = 1/sqrt(var + eps), n = −mean·r.
std::vector<float> folded_ln_residual(const std::vector<float>& a, int T, int K, const std::vector<float>& W,
                                      const std::vector<float>& b, int N, const std::vector<float>& x,
                                      const std::vector<float>& gamma, const std::vector<float>& beta, float eps,
                                      bool stats = false);
}  // namespace embedkit::cuda::testing
