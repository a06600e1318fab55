// CUDA backend for Qwen3 decoder embedding models (Qwen3-Embedding): bf16 (default, the model's
// native dtype) or fp16 weights and activations, fp32 accumulation, padding-free packed batches
// end to end. Plain C++ header: no CUDA types leak out (as bert_cuda.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/bert_cuda.h"  // available(), Precision, PhaseTimes
#include "loader/model_files.h"
#include "models/qwen3.h"

namespace embedkit::cuda {

class Qwen3Encoder {
 public:
  // Sizes come from cfg (config.json); the workspace is sized for max_batch_tokens tokens (a
  // longer single sequence grows it once).
  Qwen3Encoder(const TransformerConfig& cfg, const Qwen3Weights& w, Precision p, size_t max_batch_tokens);
  ~Qwen3Encoder();
  Qwen3Encoder(const Qwen3Encoder&) = delete;
  Qwen3Encoder& operator=(const Qwen3Encoder&) = delete;

  // Runs the decoder on `batch` (causal attention within each sequence), applies the final norm,
  // pools each sequence on the device (last-token pooling fuses the final norm on S rows; other
  // modes norm every token first), L2-normalizes rows when `normalize`, and copies the pooled
  // [S, pooled_dim] fp32 rows to `out` (host) with one device-to-host copy.
  void encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
              bool normalize, float* out);
  const PhaseTimes& last_times() const;
  std::string device_name() const;

  // Device workspace per token of a batch (bytes, 2-byte activations): for the engine's budget.
  static size_t workspace_bytes_per_token(const TransformerConfig& cfg);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace embedkit::cuda

// Op-level entry points for the decoder ops (tests/gpu/test_cuda_ops.cpp), as those in
// bert_cuda.h: fp32 host in, one kernel on a NaN-poisoned output, fp32 host out.
namespace embedkit::cuda::testing {
// RMSNorm(hidden + x) with weight w [d]; an empty x gives RMSNorm(hidden). *sum_out (optional)
// receives hidden + x as the kernel wrote it back to the residual stream.
std::vector<float> add_rms_norm(const std::vector<float>& x, const std::vector<float>& hidden,
                                const std::vector<float>& w, int T, int d, float eps, Precision p,
                                std::vector<float>* sum_out = nullptr);
// qkv[T, (H + 2KV)·dh] after per-head q/k RMSNorm (q_w, k_w [dh]) and RoPE (θ = theta) in place.
std::vector<float> qk_norm_rope(const std::vector<float>& qkv, const std::vector<int32_t>& positions,
                                const std::vector<float>& q_w, const std::vector<float>& k_w, int H, int KV, int dh,
                                float eps, double theta, Precision p);
// ctx[T, H·dh] = grouped-query attention over qkv[T, (H + 2KV)·dh] (the tile order the encoder uses).
std::vector<float> attention_gqa(const std::vector<float>& qkv, const std::vector<int32_t>& cu_seqlens, int H, int KV,
                                 int dh, bool causal, Precision p);
// out[T, I] = silu(gate_up[:, :I]) · gate_up[:, I:]
std::vector<float> silu_mul(const std::vector<float>& gate_up, int T, int I, Precision p);
// [S, d] fp32: RMSNorm(hidden[last token of s]) · w, L2-normalized when `normalize`.
std::vector<float> last_token_norm_pool(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu_seqlens,
                                        const std::vector<float>& w, float eps, bool normalize, Precision p);
}  // namespace embedkit::cuda::testing
