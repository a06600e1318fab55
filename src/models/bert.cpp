#include "models/bert.h"

#include <algorithm>

#include "util/error.h"

namespace embedkit {

static std::string find_prefix(const WeightStore& w) {
  // Checkpoints name the encoder "embeddings.…", "bert.embeddings.…", "roberta.…", "model.…".
  const std::string key = "embeddings.word_embeddings.weight";
  for (auto& [name, t] : w.tensors()) {
    if (name.size() >= key.size() && name.compare(name.size() - key.size(), key.size(), key) == 0)
      return name.substr(0, name.size() - key.size());
  }
  throw Error(w.describe() + ": missing tensor \"embeddings.word_embeddings.weight\" (not a BERT-family checkpoint?)");
}

cpu::Activation activation_from_config(const std::string& a) {
  if (a == "gelu") return cpu::Activation::GeluErf;
  if (a == "gelu_new" || a == "gelu_pytorch_tanh" || a == "gelu_fast") return cpu::Activation::GeluTanh;
  if (a == "relu") return cpu::Activation::Relu;
  throw Error("config.json: unsupported hidden_act \"" + a + "\" (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)");
}

BertModel::BertModel(const TransformerConfig& cfg, const WeightStore& w) : cfg_(cfg), act_(activation_from_config(cfg.hidden_act)) {
  const std::string p = find_prefix(w);
  const int64_t d = cfg.hidden_size, I = cfg.intermediate_size;
  auto ln = [&](const std::string& base, std::vector<float>& g, std::vector<float>& b) {
    // Old TF-converted checkpoints call them gamma/beta.
    bool old = !w.has(base + ".weight") && w.has(base + ".gamma");
    g = w.load_f32(base + (old ? ".gamma" : ".weight"), {d});
    b = w.load_f32(base + (old ? ".beta" : ".bias"), {d});
  };
  w_.word_emb = w.load_f32(p + "embeddings.word_embeddings.weight", {cfg.vocab_size, d});
  w_.pos_emb = w.load_f32(p + "embeddings.position_embeddings.weight", {cfg.max_position_embeddings, d});
  if (cfg.type_vocab_size > 0)
    w_.type_emb = w.load_f32(p + "embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, d});
  ln(p + "embeddings.LayerNorm", w_.emb_ln_g, w_.emb_ln_b);
  w_.layers.resize(size_t(cfg.num_layers));
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    BertWeights::Layer& L = w_.layers[size_t(l)];
    const std::string b = p + "encoder.layer." + std::to_string(l) + ".";
    for (const char* part : {"query", "key", "value"}) {
      auto wt = w.load_f32(b + "attention.self." + part + ".weight", {d, d});
      auto bs = w.load_f32(b + "attention.self." + part + ".bias", {d});
      L.w_qkv.insert(L.w_qkv.end(), wt.begin(), wt.end());
      L.b_qkv.insert(L.b_qkv.end(), bs.begin(), bs.end());
    }
    L.w_attn_out = w.load_f32(b + "attention.output.dense.weight", {d, d});
    L.b_attn_out = w.load_f32(b + "attention.output.dense.bias", {d});
    ln(b + "attention.output.LayerNorm", L.ln1_g, L.ln1_b);
    L.w_inter = w.load_f32(b + "intermediate.dense.weight", {I, d});
    L.b_inter = w.load_f32(b + "intermediate.dense.bias", {I});
    L.w_out = w.load_f32(b + "output.dense.weight", {d, I});
    L.b_out = w.load_f32(b + "output.dense.bias", {d});
    ln(b + "output.LayerNorm", L.ln2_g, L.ln2_b);
  }
}

void BertModel::forward(const PackedBatch& batch, std::vector<float>& hidden) {
  const int64_t T = batch.tokens(), S = batch.sequences(), d = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t H = cfg_.num_heads, dh = d / H;
  hidden.resize(size_t(T * d));
  qkv_.resize(size_t(T * 3 * d));
  ctx_.resize(size_t(T * d));
  tmp_.resize(size_t(T * d));
  inter_.resize(size_t(T * I));

  // Embeddings: word + position + token type, then LayerNorm.   hidden[T, d]
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = batch.ids[size_t(t)], pos = batch.positions[size_t(t)] + int32_t(cfg_.position_offset);
    const int32_t type = batch.type_ids[size_t(t)];
    EK_CHECK(id >= 0 && id < cfg_.vocab_size, "token id out of range");
    EK_CHECK(pos >= 0 && pos < cfg_.max_position_embeddings, "position out of range");
    const float* we = w_.word_emb.data() + int64_t(id) * d;
    const float* pe = w_.pos_emb.data() + int64_t(pos) * d;
    float* h = hidden.data() + t * d;
    for (int64_t i = 0; i < d; ++i) h[i] = we[i] + pe[i];
    if (!w_.type_emb.empty()) {
      EK_CHECK(type >= 0 && type < cfg_.type_vocab_size, "token type out of range");
      const float* te = w_.type_emb.data() + int64_t(type) * d;
      for (int64_t i = 0; i < d; ++i) h[i] += te[i];
    }
  }
  const float eps = float(cfg_.layer_norm_eps);
  cpu::add_layernorm(hidden.data(), nullptr, T, d, w_.emb_ln_g.data(), w_.emb_ln_b.data(), eps, hidden.data());

  for (auto& L : w_.layers) {
    // Self-attention: qkv[T, 3d] = hidden · W_qkvᵀ + b;  ctx[T, d] = softmax(q kᵀ/√dh) v per sequence/head.
    cpu::linear(hidden.data(), T, d, L.w_qkv.data(), L.b_qkv.data(), 3 * d, qkv_.data());
    cpu::attention(qkv_.data(), batch.cu_seqlens.data(), S, H, dh, ctx_.data());
    // BertSelfOutput: hidden = LN(ctx · W_oᵀ + b + hidden)
    cpu::linear(ctx_.data(), T, d, L.w_attn_out.data(), L.b_attn_out.data(), d, tmp_.data());
    cpu::add_layernorm(tmp_.data(), hidden.data(), T, d, L.ln1_g.data(), L.ln1_b.data(), eps, hidden.data());
    // BertIntermediate + BertOutput: hidden = LN(act(hidden · W_iᵀ + b) · W_oᵀ + b + hidden)
    cpu::linear(hidden.data(), T, d, L.w_inter.data(), L.b_inter.data(), I, inter_.data(), act_);
    cpu::linear(inter_.data(), T, I, L.w_out.data(), L.b_out.data(), d, tmp_.data());
    cpu::add_layernorm(tmp_.data(), hidden.data(), T, d, L.ln2_g.data(), L.ln2_b.data(), eps, hidden.data());
  }
}

}  // namespace embedkit
