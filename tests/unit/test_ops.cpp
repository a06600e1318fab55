// CPU ops against naive double-precision references on random inputs (ragged batches).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "embedkit/embedkit.h"
#include "ops/cpu_ops.h"
#include "pipeline/pooling.h"

using namespace embedkit;

static std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

static double max_rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, std::abs(double(got[i]) - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return num / std::max(den, 1e-30);
}

TEST(CpuOps, LinearWithBiasAndGelu) {
  const int64_t T = 37, in = 64, out = 48;
  auto x = randn(size_t(T * in), 1), W = randn(size_t(out * in), 2, 0.1f), b = randn(size_t(out), 3);
  std::vector<float> y(size_t(T * out), NAN);
  cpu::linear(x.data(), T, in, W.data(), b.data(), out, y.data(), cpu::Activation::GeluErf);
  std::vector<double> ref(y.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[size_t(o)];
      for (int64_t i = 0; i < in; ++i) s += double(x[size_t(t * in + i)]) * W[size_t(o * in + i)];
      ref[size_t(t * out + o)] = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
    }
  EXPECT_LT(max_rel_err(y, ref), 1e-5);
}

TEST(CpuOps, AddLayerNorm) {
  const int64_t T = 5, d = 384;
  auto x = randn(size_t(T * d), 4, 3.f), r = randn(size_t(T * d), 5), g = randn(size_t(d), 6), b = randn(size_t(d), 7);
  std::vector<float> y(x.size(), NAN);
  cpu::add_layernorm(x.data(), r.data(), T, d, g.data(), b.data(), 1e-12f, y.data());
  std::vector<double> ref(y.size());
  for (int64_t t = 0; t < T; ++t) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < d; ++i) m += double(x[size_t(t * d + i)]) + r[size_t(t * d + i)];
    m /= double(d);
    for (int64_t i = 0; i < d; ++i) {
      double c = double(x[size_t(t * d + i)]) + r[size_t(t * d + i)] - m;
      v += c * c;
    }
    v /= double(d);
    for (int64_t i = 0; i < d; ++i)
      ref[size_t(t * d + i)] = (double(x[size_t(t * d + i)]) + r[size_t(t * d + i)] - m) / std::sqrt(v + 1e-12) * g[size_t(i)] + b[size_t(i)];
  }
  EXPECT_LT(max_rel_err(y, ref), 1e-5);
}

// Naive attention over a ragged batch, each sequence alone.
static std::vector<double> naive_attention(const std::vector<float>& qkv, const std::vector<int32_t>& cu, int64_t H,
                                           int64_t dh, bool causal) {
  const int64_t d = H * dh, T = cu.back();
  std::vector<double> out(size_t(T * d));
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = cu[s]; i < cu[s + 1]; ++i) {
        std::vector<double> p;
        double mx = -1e300;
        const int64_t jend = causal ? i + 1 : cu[s + 1];
        for (int64_t j = cu[s]; j < jend; ++j) {
          double dot = 0;
          for (int64_t k = 0; k < dh; ++k) dot += double(qkv[size_t(i * 3 * d + h * dh + k)]) * qkv[size_t(j * 3 * d + d + h * dh + k)];
          p.push_back(dot / std::sqrt(double(dh)));
          mx = std::max(mx, p.back());
        }
        double sum = 0;
        for (auto& v : p) sum += (v = std::exp(v - mx));
        for (int64_t k = 0; k < dh; ++k) {
          double acc = 0;
          for (size_t j = 0; j < p.size(); ++j) acc += p[j] / sum * qkv[size_t((cu[s] + int64_t(j)) * 3 * d + 2 * d + h * dh + k)];
          out[size_t(i * d + h * dh + k)] = acc;
        }
      }
  return out;
}

TEST(CpuOps, AttentionRaggedBatches) {
  for (bool causal : {false, true}) {
    for (int64_t dh : {32, 64, 128}) {
      const int64_t H = 4;
      std::vector<int32_t> cu = {0, 1, 18, 19, 275};  // lengths 1, 17, 1, 256
      auto qkv = randn(size_t(cu.back() * 3 * H * dh), uint32_t(10 + dh));
      std::vector<float> out(size_t(cu.back() * H * dh), NAN);
      cpu::attention(qkv.data(), cu.data(), int64_t(cu.size()) - 1, H, dh, out.data(), causal);
      EXPECT_LT(max_rel_err(out, naive_attention(qkv, cu, H, dh, causal)), 1e-5) << "dh " << dh << " causal " << causal;
    }
  }
}

TEST(Pooling, AllModesMatchSentenceTransformersDefinitions) {
  const int64_t d = 8;
  std::vector<int32_t> cu = {0, 3, 4, 9};
  auto h = randn(size_t(9 * d), 20);
  PoolingConfig c;
  c.cls = c.max = c.mean = c.mean_sqrt_len = c.weighted_mean = c.last_token = true;
  std::vector<float> out(size_t(3 * 6 * d), NAN);
  pool(h.data(), d, cu, c, {}, out.data());
  for (int s = 0; s < 3; ++s) {
    const float* o = out.data() + s * 6 * d;
    const int64_t t0 = cu[size_t(s)], t1 = cu[size_t(s) + 1], L = t1 - t0;
    for (int64_t i = 0; i < d; ++i) {
      double mx = -1e30, sum = 0, wsum = 0, w = 0;
      for (int64_t t = t0; t < t1; ++t) {
        double v = h[size_t(t * d + i)];
        mx = std::max(mx, v);
        sum += v;
        wsum += double(t - t0 + 1) * v;
        w += double(t - t0 + 1);
      }
      EXPECT_FLOAT_EQ(o[i], h[size_t(t0 * d + i)]);
      EXPECT_FLOAT_EQ(o[d + i], float(mx));
      EXPECT_NEAR(o[2 * d + i], sum / double(L), 1e-6);
      EXPECT_NEAR(o[3 * d + i], sum / std::sqrt(double(L)), 1e-6);
      EXPECT_NEAR(o[4 * d + i], wsum / w, 1e-6);
      EXPECT_FLOAT_EQ(o[5 * d + i], h[size_t((t1 - 1) * d + i)]);
    }
  }
}

TEST(Pooling, PromptTokensExcludedWhenAsked) {
  const int64_t d = 4;
  std::vector<int32_t> cu = {0, 5};
  auto h = randn(size_t(5 * d), 21);
  PoolingConfig c;  // mean
  std::vector<float> out(static_cast<size_t>(d), NAN);
  pool(h.data(), d, cu, c, {2}, out.data());
  for (int64_t i = 0; i < d; ++i)
    EXPECT_NEAR(out[size_t(i)], (h[size_t(2 * d + i)] + h[size_t(3 * d + i)] + h[size_t(4 * d + i)]) / 3.0, 1e-6);
}

TEST(PostProcess, L2NormalizeRows) {
  std::vector<float> x = {3, 4, 0, 0};
  l2_normalize_rows(x.data(), 2, 2);
  EXPECT_FLOAT_EQ(x[0], 0.6f);
  EXPECT_FLOAT_EQ(x[1], 0.8f);
  EXPECT_EQ(x[2], 0.f);  // zero vector stays zero (eps), no NaN
}

// ---------------------------------------------------------------- decoder (Qwen3) ops

#include "ops/decoder_ops.h"

TEST(DecoderOps, GroupedQueryCausalAttentionMatchesNaive) {
  // 3 sequences (one longer than a 128-row query block), H = 4 query heads over KV = 2.
  const int64_t H = 4, KV = 2, dh = 16, ld = (H + 2 * KV) * dh;
  const std::vector<int32_t> cu = {0, 5, 5 + 300, 5 + 300 + 1};
  const int64_t T = cu.back(), S = int64_t(cu.size()) - 1;
  auto qkv = randn(size_t(T * ld), 7);
  std::vector<float> out(size_t(T * H * dh));
  cpu::attention_gqa(qkv.data(), cu.data(), S, H, KV, dh, true, out.data());
  std::vector<double> want(out.size());
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = cu[s]; i < cu[s + 1]; ++i) {
        const int64_t g = h / (H / KV);
        std::vector<double> p;
        double mx = -1e300, sum = 0;
        for (int64_t j = cu[s]; j <= i; ++j) {  // causal: keys up to the query
          double dot = 0;
          for (int64_t c = 0; c < dh; ++c) dot += double(qkv[i * ld + h * dh + c]) * qkv[j * ld + H * dh + g * dh + c];
          p.push_back(dot / std::sqrt(double(dh)));
          mx = std::max(mx, p.back());
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int64_t c = 0; c < dh; ++c) {
          double acc = 0;
          for (int64_t j = cu[s]; j <= i; ++j) acc += p[j - cu[s]] / sum * qkv[j * ld + (H + KV) * dh + g * dh + c];
          want[i * H * dh + h * dh + c] = acc;
        }
      }
  EXPECT_LT(max_rel_err(out, want), 1e-5);
}

TEST(DecoderOps, RmsNormRopeAndSwiGlu) {
  const int64_t T = 3, d = 8;
  auto x = randn(size_t(T * d), 11);
  auto w = randn(size_t(d), 12, 0.5f);
  std::vector<float> y(x.size());
  cpu::rms_norm(x.data(), T, d, d, w.data(), 1e-6f, y.data(), d);
  std::vector<double> want(y.size());
  for (int64_t t = 0; t < T; ++t) {
    double ms = 0;
    for (int64_t i = 0; i < d; ++i) ms += double(x[t * d + i]) * x[t * d + i] / d;
    for (int64_t i = 0; i < d; ++i) want[t * d + i] = w[i] * x[t * d + i] / std::sqrt(ms + 1e-6);
  }
  EXPECT_LT(max_rel_err(y, want), 1e-6);

  // RoPE (rotate_half pairs i, i + dh/2) at positions 0, 1 and 1000, θ = 1e6, one head of dh = 8.
  cpu::RopeTable rope;
  rope.build(1001, d, 1e6);
  const std::vector<int32_t> pos = {0, 1, 1000};
  std::vector<float> r = x;
  cpu::apply_rope(r.data(), T, d, 0, 1, d, pos.data(), rope);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      const double a = pos[t] * std::pow(1e6, -2.0 * i / d), x1 = x[t * d + i], x2 = x[t * d + i + d / 2];
      want[t * d + i] = x1 * std::cos(a) - x2 * std::sin(a);
      want[t * d + i + d / 2] = x2 * std::cos(a) + x1 * std::sin(a);
    }
  EXPECT_LT(max_rel_err(r, want), 1e-4);  // fp32 angles at position 1000, as transformers computes them

  // SwiGLU: silu(gate) · up with gate_up = [gate | up].
  std::vector<float> act(size_t(T * d / 2));
  cpu::silu_mul(x.data(), T, d / 2, act.data());
  std::vector<double> want_act(act.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      const double g = x[t * d + i], u = x[t * d + d / 2 + i];
      want_act[t * d / 2 + i] = g / (1 + std::exp(-g)) * u;
    }
  EXPECT_LT(max_rel_err(act, want_act), 1e-6);
}
