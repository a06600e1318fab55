// BERT-family encoder (BERT, RoBERTa, XLM-R weights), fp32 on CPU, on packed batches.
// Mirrors transformers' modeling_bert.py: BertEmbeddings → N × BertLayer (self-attention,
// BertSelfOutput add+LN, BertIntermediate GELU, BertOutput add+LN). The pooler is not used by
// sentence-transformers and is not loaded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "loader/safetensors.h"
#include "models/model.h"
#include "ops/cpu_ops.h"

namespace embedkit {

// Encoder weights in fp32 on the host, as loaded (any backend converts from these).
struct BertWeights {
  struct Layer {
    std::vector<float> w_qkv, b_qkv;  // [3d, d], [3d]: query | key | value stacked
    std::vector<float> w_attn_out, b_attn_out, ln1_g, ln1_b;  // [d, d], [d]
    std::vector<float> w_inter, b_inter;                      // [I, d], [I]
    std::vector<float> w_out, b_out, ln2_g, ln2_b;            // [d, I], [d]
  };
  std::vector<float> word_emb, pos_emb, type_emb, emb_ln_g, emb_ln_b;  // [V, d], [P, d], [types, d]
  std::vector<Layer> layers;
};

cpu::Activation activation_from_config(const std::string& hidden_act);

class BertModel final : public TextModel {
 public:
  BertModel(const TransformerConfig& cfg, const WeightStore& weights);
  // hidden[T, d] ← last hidden state for every token of the batch.
  void forward(const PackedBatch& batch, std::vector<float>& hidden) override;
  int64_t hidden_size() const override { return cfg_.hidden_size; }
  const BertWeights& weights() const { return w_; }
  const TransformerConfig& config() const { return cfg_; }

 private:
  TransformerConfig cfg_;
  cpu::Activation act_;
  BertWeights w_;
  // Workspace, grown to the largest batch seen and reused (no allocation per batch after warm-up).
  std::vector<float> qkv_, ctx_, tmp_, inter_;
};

}  // namespace embedkit
