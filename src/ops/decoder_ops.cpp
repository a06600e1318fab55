#include "ops/decoder_ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu_ops.h"

namespace embedkit::cpu {

void linear_accumulate(const float* x, int64_t T, int64_t n_in, const float* W, int64_t n_out, float* y) {
  if (T == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(n_out), int(n_in), 1.0f, x, int(n_in), W,
              int(n_in), 1.0f, y, int(n_out));
}

void rms_norm(const float* x, int64_t rows, int64_t n, int64_t stride, const float* w, float eps, float* y,
              int64_t y_stride) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride;
    float* yr = y + r * y_stride;
    // transformers computes the mean of squares in fp32; a double sum is as close or closer to exact.
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(float(ss / double(n)) + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

void rms_norm_heads(float* x, int64_t T, int64_t ld, int64_t col, int64_t n_heads, int64_t dh, const float* w, float eps) {
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) rms_norm(x + t * ld + col, n_heads, dh, dh, w, eps, x + t * ld + col, dh);
}

void RopeTable::build(int64_t positions, int64_t dh, double theta) {
  half = dh / 2;
  cos.resize(size_t(positions * half));
  sin.resize(size_t(positions * half));
  // As transformers' default rope init: inv_freq = 1 / θ^(arange(0, dh, 2) / dh) in fp32, angle = pos · inv_freq in fp32.
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = 1.0f / std::pow(float(theta), float(2 * i) / float(dh));
#pragma omp parallel for schedule(static) if (positions > 256)
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float a = float(p) * inv_freq[size_t(i)];
      cos[size_t(p * half + i)] = std::cos(a);
      sin[size_t(p * half + i)] = std::sin(a);
    }
}

void apply_rope(float* x, int64_t T, int64_t ld, int64_t col, int64_t n_heads, int64_t dh, const int32_t* positions,
                const RopeTable& rope) {
  const int64_t half = dh / 2;
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const float* c = rope.cos.data() + int64_t(positions[t]) * half;
    const float* s = rope.sin.data() + int64_t(positions[t]) * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * ld + col + h * dh;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[i] - x2 * s[i];         // q·cos + rotate_half(q)·sin, first half
        v[i + half] = x2 * c[i] + x1 * s[i];  // second half
      }
    }
  }
}

void silu_mul(const float* gate_up, int64_t T, int64_t I, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gate_up + t * 2 * I;
    const float* u = g + I;
    float* o = out + t * I;
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

void attention_gqa(const float* qkv, const int32_t* cu_seqlens, int64_t S, int64_t H, int64_t KV, int64_t dh,
                   bool causal, float* out) {
  constexpr int64_t kBlock = 128;  // query rows per task
  const int64_t ld = (H + 2 * KV) * dh, d_out = H * dh, group = H / KV;
  const float scale = 1.0f / std::sqrt(float(dh));
  struct Task {
    int64_t s, h, i0;
  };
  std::vector<Task> tasks;
  int64_t max_len = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t L = cu_seqlens[s + 1] - cu_seqlens[s];
    max_len = std::max(max_len, L);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i0 = 0; i0 < L; i0 += kBlock) tasks.push_back({s, h, i0});
  }
  // Longest key ranges first (causal blocks near the end of long sequences) for load balance.
  std::stable_sort(tasks.begin(), tasks.end(), [&](const Task& a, const Task& b) {
    auto keys = [&](const Task& t) {
      const int64_t L = cu_seqlens[t.s + 1] - cu_seqlens[t.s];
      return causal ? std::min(L, t.i0 + kBlock) : L;
    };
    return keys(a) > keys(b);
  });
#pragma omp parallel
  {
    std::vector<float> scores(size_t(kBlock * max_len));
#pragma omp for schedule(dynamic, 1)
    for (size_t k = 0; k < tasks.size(); ++k) {
      const auto [s, h, i0] = tasks[k];
      const int64_t t0 = cu_seqlens[s], L = cu_seqlens[s + 1] - t0;
      const int64_t nq = std::min(kBlock, L - i0), nk = causal ? i0 + nq : L;
      const int64_t g = h / group;
      const float* q = qkv + (t0 + i0) * ld + h * dh;
      const float* kk = qkv + t0 * ld + H * dh + g * dh;
      const float* v = qkv + t0 * ld + (H + KV) * dh + g * dh;
      // scores[nq, nk] = scale · q[nq, dh] · k[nk, dh]ᵀ
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(nq), int(nk), int(dh), scale, q, int(ld), kk, int(ld),
                  0.0f, scores.data(), int(nk));
      for (int64_t r = 0; r < nq; ++r) {
        float* row = scores.data() + r * nk;
        const int64_t valid = causal ? i0 + r + 1 : nk;  // causal: query i sees keys 0..i
        softmax_inplace(row, valid);
        std::fill(row + valid, row + nk, 0.0f);
      }
      // out[nq, dh] = scores[nq, nk] · v[nk, dh]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(nq), int(dh), int(nk), 1.0f, scores.data(), int(nk),
                  v, int(ld), 0.0f, out + (t0 + i0) * d_out + h * dh, int(d_out));
    }
  }
}

}  // namespace embedkit::cpu
