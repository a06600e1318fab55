#include "ops/cpu_ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

namespace embedkit::cpu {

void activate(float* x, int64_t n, Activation act) {
  switch (act) {
    case Activation::None: return;
    case Activation::GeluErf:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
      return;
    case Activation::GeluTanh:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(0.7978845608028654f * (v + 0.044715f * v * v * v)));
      }
      return;
    case Activation::Relu:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
      return;
    case Activation::Tanh:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
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
          float mx = row[0];
          for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
          float sum = 0.f;
          for (int64_t j = 0; j < n; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j < n; ++j) row[j] *= inv;
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
