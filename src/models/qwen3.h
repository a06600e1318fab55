// Qwen3 decoder (Qwen3Model / Qwen3ForCausalLM weights, e.g. Qwen3-Embedding), fp32 on CPU, on
// packed batches. Mirrors transformers' modeling_qwen3.py:
//   embed_tokens → N × Qwen3DecoderLayer → norm
//   Qwen3DecoderLayer: h += o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))  on input_layernorm(h)
//                      h += down_proj(silu(gate_proj(x)) · up_proj(x))         on x = post_attention_layernorm(h)
// Attention is causal and grouped-query (H query heads share KV key/value heads); each sequence of
// the packed batch attends only to itself, positions restart at 0 per sequence (no padding, so no
// left/right padding question). lm_head (tied or not) is not used for embeddings and not loaded.
#pragma once
#include <string>
#include <vector>

#include "models/model.h"
#include "ops/decoder_ops.h"

namespace embedkit {

struct Qwen3Weights {
  struct Layer {
    std::vector<float> input_norm;        // [d]
    std::vector<float> w_qkv, b_qkv;      // [(H + 2·KV)·dh, d]: q_proj | k_proj | v_proj; bias only if attention_bias
    std::vector<float> q_norm, k_norm;    // [dh] each (RMSNorm per head)
    std::vector<float> w_o;               // [d, H·dh]
    std::vector<float> post_attn_norm;    // [d]
    std::vector<float> w_gate_up;         // [2I, d]: gate_proj | up_proj
    std::vector<float> w_down;            // [d, I]
  };
  std::vector<float> embed_tokens;  // [V, d]
  std::vector<Layer> layers;
  std::vector<float> norm;          // [d]
};

class Qwen3Model final : public TextModel {
 public:
  Qwen3Model(const TransformerConfig& cfg, const WeightStore& weights);
  void forward(const PackedBatch& batch, std::vector<float>& hidden) override;
  int64_t hidden_size() const override { return cfg_.hidden_size; }
  const Qwen3Weights& weights() const { return w_; }

 private:
  TransformerConfig cfg_;
  Qwen3Weights w_;
  cpu::RopeTable rope_;
  // Workspace, grown to the largest batch seen and reused.
  std::vector<float> normed_, qkv_, ctx_, gate_up_, act_;
};

}  // namespace embedkit
