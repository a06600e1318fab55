#include "models/qwen3.h"

#include <algorithm>

#include "ops/cpu_ops.h"
#include "util/error.h"

namespace embedkit {

// Qwen3-Embedding saves Qwen3Model ("embed_tokens.weight", "layers.0.…"); Qwen3ForCausalLM
// checkpoints prefix them with "model.".
static std::string find_qwen3_prefix(const WeightStore& w) {
  for (const char* p : {"", "model."})
    if (w.has(std::string(p) + "embed_tokens.weight")) return p;
  throw Error(w.describe() + ": missing tensor \"embed_tokens.weight\" (or \"model.embed_tokens.weight\"); not a Qwen3 checkpoint?");
}

Qwen3Model::Qwen3Model(const TransformerConfig& cfg, const WeightStore& w) : cfg_(cfg) {
  const std::string p = find_qwen3_prefix(w);
  const int64_t d = cfg.hidden_size, I = cfg.intermediate_size, H = cfg.num_heads, KV = cfg.num_kv_heads,
                dh = cfg.head_dim;
  w_.embed_tokens = w.load_f32(p + "embed_tokens.weight", {cfg.vocab_size, d});
  w_.norm = w.load_f32(p + "norm.weight", {d});
  w_.layers.resize(size_t(cfg.num_layers));
  auto append = [](std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); };
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    Qwen3Weights::Layer& L = w_.layers[size_t(l)];
    const std::string b = p + "layers." + std::to_string(l) + ".";
    L.input_norm = w.load_f32(b + "input_layernorm.weight", {d});
    L.post_attn_norm = w.load_f32(b + "post_attention_layernorm.weight", {d});
    L.w_qkv = w.load_f32(b + "self_attn.q_proj.weight", {H * dh, d});
    append(L.w_qkv, w.load_f32(b + "self_attn.k_proj.weight", {KV * dh, d}));
    append(L.w_qkv, w.load_f32(b + "self_attn.v_proj.weight", {KV * dh, d}));
    if (cfg.attention_bias) {
      L.b_qkv = w.load_f32(b + "self_attn.q_proj.bias", {H * dh});
      append(L.b_qkv, w.load_f32(b + "self_attn.k_proj.bias", {KV * dh}));
      append(L.b_qkv, w.load_f32(b + "self_attn.v_proj.bias", {KV * dh}));
    }
    L.q_norm = w.load_f32(b + "self_attn.q_norm.weight", {dh});
    L.k_norm = w.load_f32(b + "self_attn.k_norm.weight", {dh});
    L.w_o = w.load_f32(b + "self_attn.o_proj.weight", {d, H * dh});
    L.w_gate_up = w.load_f32(b + "mlp.gate_proj.weight", {I, d});
    append(L.w_gate_up, w.load_f32(b + "mlp.up_proj.weight", {I, d}));
    L.w_down = w.load_f32(b + "mlp.down_proj.weight", {d, I});
  }
}

void Qwen3Model::forward(const PackedBatch& batch, std::vector<float>& hidden) {
  const int64_t T = batch.tokens(), S = batch.sequences(), d = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t H = cfg_.num_heads, KV = cfg_.num_kv_heads, dh = cfg_.head_dim, n_qkv = (H + 2 * KV) * dh;
  const float eps = float(cfg_.rms_norm_eps);
  hidden.resize(size_t(T * d));
  normed_.resize(size_t(T * d));
  qkv_.resize(size_t(T * n_qkv));
  ctx_.resize(size_t(T * H * dh));
  gate_up_.resize(size_t(T * 2 * I));
  act_.resize(size_t(T * I));
  int32_t max_pos = 0;
  for (int32_t p : batch.positions) {
    EK_CHECK(p >= 0 && p < cfg_.max_position_embeddings, "position out of range");
    max_pos = std::max(max_pos, p);
  }
  if (rope_.half == 0 || int64_t(rope_.cos.size()) < int64_t(max_pos + 1) * (dh / 2))
    rope_.build(std::max<int64_t>(max_pos + 1, 512), dh, cfg_.rope_theta);

  // embed_tokens: hidden[T, d] = E[ids]
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = batch.ids[size_t(t)];
    EK_CHECK(id >= 0 && id < cfg_.vocab_size, "token id out of range");
    std::copy_n(w_.embed_tokens.data() + int64_t(id) * d, d, hidden.data() + t * d);
  }

  for (auto& L : w_.layers) {
    // Self-attention block.  normed[T, d] = input_layernorm(hidden)
    cpu::rms_norm(hidden.data(), T, d, d, L.input_norm.data(), eps, normed_.data(), d);
    // qkv[T, (H + 2KV)·dh] = normed · [Wq | Wk | Wv]ᵀ (+ b)
    cpu::linear(normed_.data(), T, d, L.w_qkv.data(), L.b_qkv.empty() ? nullptr : L.b_qkv.data(), n_qkv, qkv_.data());
    // q_norm / k_norm: RMSNorm over each head's dh values, then RoPE on q and k.
    cpu::rms_norm_heads(qkv_.data(), T, n_qkv, 0, H, dh, L.q_norm.data(), eps);
    cpu::rms_norm_heads(qkv_.data(), T, n_qkv, H * dh, KV, dh, L.k_norm.data(), eps);
    cpu::apply_rope(qkv_.data(), T, n_qkv, 0, H, dh, batch.positions.data(), rope_);
    cpu::apply_rope(qkv_.data(), T, n_qkv, H * dh, KV, dh, batch.positions.data(), rope_);
    // ctx[T, H·dh] = causal GQA attention per sequence
    cpu::attention_gqa(qkv_.data(), batch.cu_seqlens.data(), S, H, KV, dh, /*causal=*/true, ctx_.data());
    // hidden += ctx · Woᵀ
    cpu::linear_accumulate(ctx_.data(), T, H * dh, L.w_o.data(), d, hidden.data());

    // MLP block.  normed = post_attention_layernorm(hidden); hidden += down(silu(gate(normed)) · up(normed))
    cpu::rms_norm(hidden.data(), T, d, d, L.post_attn_norm.data(), eps, normed_.data(), d);
    cpu::linear(normed_.data(), T, d, L.w_gate_up.data(), nullptr, 2 * I, gate_up_.data());
    cpu::silu_mul(gate_up_.data(), T, I, act_.data());
    cpu::linear_accumulate(act_.data(), T, I, L.w_down.data(), d, hidden.data());
  }
  cpu::rms_norm(hidden.data(), T, d, d, w_.norm.data(), eps, hidden.data(), d);
}

}  // namespace embedkit
