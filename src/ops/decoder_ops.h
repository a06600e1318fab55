// fp32 CPU ops of decoder-style (Llama/Qwen) blocks on packed token matrices. Shapes: T tokens,
// d hidden size, H query heads, KV key/value heads (H % KV == 0), dh head dim, I MLP width.
#pragma once
#include <cstdint>
#include <vector>

namespace embedkit::cpu {

// y[T, n_out] += x[T, n_in] · W[n_out, n_in]ᵀ  (a Linear without bias whose output is added to y,
// e.g. the residual stream).
void linear_accumulate(const float* x, int64_t T, int64_t n_in, const float* W, int64_t n_out, float* y);

// transformers' Qwen3RMSNorm / LlamaRMSNorm over the last dim n, for `rows` rows that start every
// `stride` floats: y = w · x / sqrt(mean(x²) + eps). y may alias x.
void rms_norm(const float* x, int64_t rows, int64_t n, int64_t stride, const float* w, float eps, float* y,
              int64_t y_stride);

// Qwen3's q_norm / k_norm: rms_norm in place over each of n_heads heads (dh values, weight w[dh])
// of every token row of x[T, ld], heads starting at column `col`.
void rms_norm_heads(float* x, int64_t T, int64_t ld, int64_t col, int64_t n_heads, int64_t dh, const float* w, float eps);

// RoPE as transformers' apply_rotary_pos_emb with rotate_half: within each head of dh values the
// pairs (i, i + dh/2) rotate by angle pos · inv_freq[i], inv_freq[i] = θ^(-2i/dh).
// x[T, ld]: heads n_heads × dh start at column `col`.
struct RopeTable {
  std::vector<float> cos, sin;  // [positions, dh/2]
  int64_t half = 0;
  void build(int64_t positions, int64_t dh, double theta);
};
void apply_rope(float* x, int64_t T, int64_t ld, int64_t col, int64_t n_heads, int64_t dh, const int32_t* positions,
                const RopeTable& rope);

// SwiGLU: out[T, I] = silu(gate_up[:, :I]) · gate_up[:, I:]   (gate_up[T, 2I])
void silu_mul(const float* gate_up, int64_t T, int64_t I, float* out);

// Grouped-query scaled-dot-product attention per sequence, causal or not, in query blocks (memory
// O(block × L) per thread, never L × L). qkv[T, (H + 2·KV)·dh] = q | k | v; out[T, H·dh].
// Query head h reads key/value head h / (H / KV).
void attention_gqa(const float* qkv, const int32_t* cu_seqlens, int64_t S, int64_t H, int64_t KV, int64_t dh,
                   bool causal, float* out);

}  // namespace embedkit::cpu
