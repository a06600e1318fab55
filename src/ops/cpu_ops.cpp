#include "ops/cpu_ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

namespace embedkit::cpu {

void activate(float* x, int64_t n, Activation act) {
  if (act == Activation::None) return;
  // Chunks of 4096 values keep each thread's slice in L1/L2 and the loop vectorised.
  const int64_t chunk = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; c += chunk) {
    float* p = x + c;
    const int64_t m = std::min(chunk, n - c);
    switch (act) {
      case Activation::GeluErf: gelu_erf_inplace(p, m); break;
      case Activation::GeluTanh: gelu_tanh_inplace(p, m); break;
      case Activation::Tanh: tanh_inplace(p, m); break;
      case Activation::Relu:
        for (int64_t i = 0; i < m; ++i) p[i] = std::max(p[i], 0.0f);
        break;
      case Activation::None: break;
    }
  }
}

void linear(const float* x, int64_t T, int64_t n_in, const float* W, const float* b, int64_t n_out, float* y,
            Activation act) {
  if (T == 0) return;
  // Start from the bias so the GEMM accumulates onto it (beta = 1): one pass over y fewer.
  if (b) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) std::copy(b, b + n_out, y + t * n_out);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(n_out), int(n_in), 1.0f, x, int(n_in), W,
              int(n_in), b ? 1.0f : 0.0f, y, int(n_out));
  activate(y, T * n_out, act);
}

void add_layernorm(const float* x, const float* residual, int64_t T, int64_t d, const float* gamma,
                   const float* beta, float eps, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * d;
    const float* rr = residual ? residual + t * d : nullptr;
    float* yr = y + t * d;
    // Two-pass mean/variance in double-free fp32 with a compensated order: sum, then centred sum.
    float sum = 0.f;
    for (int64_t i = 0; i < d; ++i) {
      float v = xr[i] + (rr ? rr[i] : 0.f);
      yr[i] = v;
      sum += v;
    }
    float mean = sum / float(d);
    float var = 0.f;
    for (int64_t i = 0; i < d; ++i) {
      float c = yr[i] - mean;
      var += c * c;
    }
    float inv = 1.0f / std::sqrt(var / float(d) + eps);
    for (int64_t i = 0; i < d; ++i) yr[i] = (yr[i] - mean) * inv * gamma[i] + beta[i];
  }
}

void attention(const float* qkv, const int32_t* cu_seqlens, int64_t S, int64_t H, int64_t dh, float* out,
               bool causal) {
  const int64_t d = H * dh, ld = 3 * d;
  const float scale = 1.0f / std::sqrt(float(dh));
  int64_t max_len = 0;
  for (int64_t s = 0; s < S; ++s) max_len = std::max<int64_t>(max_len, cu_seqlens[s + 1] - cu_seqlens[s]);
#pragma omp parallel
  {
    std::vector<float> scores(size_t(max_len * max_len));
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t t0 = cu_seqlens[s], L = cu_seqlens[s + 1] - t0;
        if (L == 0) continue;
        const float* q = qkv + t0 * ld + h * dh;
        const float* k = q + d;
        const float* v = q + 2 * d;
        float* o = out + t0 * d + h * dh;
        // scores[L, L] = scale · q[L, dh] · k[L, dh]ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(L), int(L), int(dh), scale, q, int(ld), k,
                    int(ld), 0.0f, scores.data(), int(L));
        for (int64_t i = 0; i < L; ++i) {
          float* row = scores.data() + i * L;
          const int64_t n = causal ? i + 1 : L;
          softmax_inplace(row, n);
          for (int64_t j = n; j < L; ++j) row[j] = 0.f;
        }
        // o[L, dh] = scores[L, L] · v[L, dh]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(L), int(dh), int(L), 1.0f, scores.data(),
                    int(L), v, int(ld), 0.0f, o, int(d));
      }
    }
  }
}

}  // namespace embedkit::cpu
