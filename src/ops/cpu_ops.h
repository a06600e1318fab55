// fp32 CPU ops on packed (padding-free) token matrices. These are the oracle that every other
// implementation is tested against. Shapes use: T = tokens in the batch, d = hidden size,
// S = sequences, H = heads, dh = head dim; cu_seqlens[S+1] gives each sequence's token range.
#pragma once
#include <cstdint>
#include <vector>

namespace embedkit::cpu {

enum class Activation { None, GeluErf, GeluTanh, Relu, Tanh };

// y[T, n_out] = x[T, n_in] · W[n_out, n_in]ᵀ + b[n_out], then act. (torch.nn.Linear)
void linear(const float* x, int64_t T, int64_t n_in, const float* W, const float* b, int64_t n_out, float* y,
            Activation act = Activation::None);

// y = LayerNorm(x + residual) over the last dim d (residual may be null). y may alias x.
void add_layernorm(const float* x, const float* residual, int64_t T, int64_t d, const float* gamma,
                   const float* beta, float eps, float* y);

// Bidirectional (or causal) scaled-dot-product attention per sequence and head.
// qkv[T, 3*H*dh] (q | k | v), out[T, H*dh]. No [S, H, L, L] tensor: one L×L tile per thread.
void attention(const float* qkv, const int32_t* cu_seqlens, int64_t S, int64_t H, int64_t dh, float* out,
               bool causal = false);

void activate(float* x, int64_t n, Activation act);

// Vectorised element-wise kernels (cpu_vector_math.cpp).
void gelu_erf_inplace(float* x, int64_t n);
void gelu_tanh_inplace(float* x, int64_t n);
void tanh_inplace(float* x, int64_t n);
void softmax_inplace(float* row, int64_t n);

}  // namespace embedkit::cpu
