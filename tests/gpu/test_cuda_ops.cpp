// Every CUDA op against the fp32 CPU op, on fresh random inputs (never zeros), outputs poisoned
// with NaN before each run, ragged batches from 1 token to the maximum length. Inputs are first
// rounded to the GPU precision so both sides see the same numbers; the bound is on
// ‖gpu − cpu‖ / ‖cpu‖ (fp16 ~1e-3, bf16 ~1e-2). Runs only where a GPU is present (device tool).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <tuple>

#include "cuda/bert_cuda.h"
#include "cuda/qwen3_cuda.h"
#include "embedkit/embedkit.h"
#include "models/bert.h"
#include "ops/cpu_ops.h"
#include "ops/decoder_ops.h"
#include "pipeline/pooling.h"
#include "util/error.h"

using namespace embedkit;
using cuda::Precision;

namespace {

float round_to(float v, Precision p) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (p == Precision::BF16) {
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
    std::memcpy(&v, &u, 4);
    return v;
  }
  // fp16: round through the half grid (normal range is enough for these tests).
  int e;
  std::frexp(v, &e);
  const float q = std::ldexp(1.0f, std::max(e - 11, -24));
  return std::nearbyint(v / q) * q;
}

std::vector<float> rnd(size_t n, uint32_t seed, float scale, Precision p, float shift = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(shift, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = round_to(d(rng), p);
  return v;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;  // an element never written stays NaN
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

double bound(Precision p) { return p == Precision::F16 ? 2e-3 : 1.6e-2; }
const char* name(Precision p) { return p == Precision::F16 ? "fp16" : "bf16"; }

class CudaOps : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::available(&why)) GTEST_SKIP() << why;
  }
};

TEST_P(CudaOps, LinearBiasEpilogue) {
  const Precision p = GetParam();
  for (int T : {1, 7, 300, 4096}) {
    for (auto [n_in, n_out] : {std::pair{384, 1152}, std::pair{1536, 384}, std::pair{768, 3072}}) {
      auto x = rnd(size_t(T) * n_in, uint32_t(T + n_in), 1.f, p), W = rnd(size_t(n_out) * n_in, 2, 0.05f, p),
           b = rnd(size_t(n_out), 3, 0.5f, p);
      std::vector<float> ref(size_t(T) * n_out);
      cpu::linear(x.data(), T, n_in, W.data(), b.data(), n_out, ref.data());
      auto got = cuda::testing::linear(x, T, n_in, W, b, n_out, p);
      EXPECT_LT(rel_err(got, ref), bound(p)) << name(p) << " T=" << T << " " << n_in << "->" << n_out;
    }
  }
}

// y = x·Wᵀ + b + residual with the residual in the GEMM epilogue (beta = 1), from its own buffer
// and in place (C = D = y), as the encoder's attention-output and FFN-output projections use it.
TEST_P(CudaOps, LinearResidualEpilogue) {
  const Precision p = GetParam();
  for (int T : {1, 37, 4096}) {
    for (auto [n_in, n_out] : {std::pair{384, 384}, std::pair{1536, 384}, std::pair{768, 768}}) {
      auto x = rnd(size_t(T) * n_in, uint32_t(T + n_in + 1), 1.f, p), W = rnd(size_t(n_out) * n_in, 4, 0.05f, p),
           b = rnd(size_t(n_out), 5, 0.5f, p), r = rnd(size_t(T) * n_out, uint32_t(T + 9), 2.f, p, 0.2f);
      std::vector<float> ref(size_t(T) * n_out);
      cpu::linear(x.data(), T, n_in, W.data(), b.data(), n_out, ref.data());
      for (size_t i = 0; i < ref.size(); ++i) ref[i] += r[i];
      for (bool in_place : {false, true}) {
        auto got = cuda::testing::linear_residual(x, T, n_in, W, b, n_out, r, in_place, p);
        EXPECT_LT(rel_err(got, ref), bound(p)) << name(p) << " T=" << T << " " << n_in << "->" << n_out
                                               << (in_place ? " in place" : " separate");
      }
    }
  }
}

// The small-batch CUTLASS GEMMs (fp16, launched with PDL) against the CPU: bias, tanh-GELU, residual
// in place; from one row to past the graph range's first tier, MiniLM's and BERT-base's shapes.
TEST(CudaSmallGemm, MatchesCpu) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  if (!cuda::testing::small_gemm_available()) GTEST_SKIP() << "no Hopper GPU or no CUTLASS in this build";
  const Precision p = Precision::F16;
  for (int T : {1, 37, 512, 700, 2100}) {
    for (auto [n_in, n_out] : {std::pair{384, 1152}, std::pair{384, 1536}, std::pair{1536, 384}, std::pair{384, 384},
                               std::pair{768, 3072}}) {
      auto x = rnd(size_t(T) * n_in, uint32_t(T + n_in + 3), 1.f, p), W = rnd(size_t(n_out) * n_in, 6, 0.05f, p),
           b = rnd(size_t(n_out), 7, 0.5f, p), r = rnd(size_t(T) * n_out, uint32_t(T + 11), 2.f, p, 0.2f);
      std::vector<float> lin(size_t(T) * n_out);
      cpu::linear(x.data(), T, n_in, W.data(), b.data(), n_out, lin.data());
      for (int epi : {0, 1, 2}) {
        std::vector<float> ref = lin;
        if (epi == 1) cpu::gelu_tanh_inplace(ref.data(), int64_t(ref.size()));
        if (epi == 2)
          for (size_t i = 0; i < ref.size(); ++i) ref[i] += r[i];
        auto got = cuda::testing::small_gemm(x, T, n_in, W, b, n_out, epi, epi == 2 ? r : std::vector<float>{});
        EXPECT_LT(rel_err(got, ref), bound(p)) << "T=" << T << " " << n_in << "->" << n_out << " epilogue " << epi;
      }
    }
  }
}

TEST_P(CudaOps, GeluErf) {
  const Precision p = GetParam();
  auto x = rnd(100003, 5, 2.f, p);
  auto ref = x;
  cpu::activate(ref.data(), int64_t(ref.size()), cpu::Activation::GeluErf);
  EXPECT_LT(rel_err(cuda::testing::gelu(x, p), ref), bound(p));
}

TEST_P(CudaOps, AddLayerNorm) {
  const Precision p = GetParam();
  // Every load width at every d it divides (pairs per load: 0 = one element, 1 = 4 bytes, 2 = 8,
  // 4 = 16; -1 = the encoder's choice for d, layernorm_pairs_for): 352 (d % 64 != 0), 448
  // (d % 64 == 0), 384 (d % 128 == 0), 768 and 1024 (d % 256 == 0).
  for (int d : {352, 448, 384, 768, 1024}) {
    for (int pairs : {-1, 0, 1, 2, 4}) {
      if (pairs > 0 && d % (64 * pairs) != 0) continue;
      for (int T : {1, 33, 5000}) {
        auto x = rnd(size_t(T) * d, 6, 2.f, p, 0.3f), h = rnd(size_t(T) * d, 7, 1.f, p),
             g = rnd(size_t(d), 8, 0.2f, p, 1.f), b = rnd(size_t(d), 9, 0.1f, p);
        std::vector<float> ref(x.size());
        cpu::add_layernorm(x.data(), h.data(), T, d, g.data(), b.data(), 1e-12f, ref.data());
        EXPECT_LT(rel_err(cuda::testing::add_layernorm(x, h, g, b, T, d, 1e-12f, p, pairs), ref), bound(p))
            << name(p) << " d=" << d << " pairs=" << pairs << " T=" << T;
        // LayerNorm alone (the residual already added by the GEMM epilogue): in place on hidden.
        cpu::add_layernorm(h.data(), nullptr, T, d, g.data(), b.data(), 1e-12f, ref.data());
        EXPECT_LT(rel_err(cuda::testing::add_layernorm({}, h, g, b, T, d, 1e-12f, p, pairs), ref), bound(p))
            << name(p) << " LN only, d=" << d << " pairs=" << pairs << " T=" << T;
      }
    }
  }
}

// Every load width the kernel has (one element, 1, 2 and 4 pairs) where it divides d, and the
// encoder's choice (-1), at MiniLM's and BERT-base's widths and one only the scalar form takes.
TEST_P(CudaOps, EmbeddingsLayerNorm) {
  const Precision p = GetParam();
  for (int d : {384, 768, 96}) {
    const int V = 1000, P = 512;
    std::mt19937 rng(11 + d);
    std::vector<int32_t> ids(700), types(700), pos(700);
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = int32_t(rng() % V);
      types[i] = int32_t(rng() % 2);
      pos[i] = int32_t(rng() % P);
    }
    auto word = rnd(size_t(V) * d, 12 + d, 0.5f, p), pe = rnd(size_t(P) * d, 13 + d, 0.5f, p),
         te = rnd(size_t(2) * d, 14 + d, 0.5f, p), g = rnd(size_t(d), 15 + d, 0.2f, p, 1.f),
         b = rnd(size_t(d), 16 + d, 0.1f, p);
    std::vector<float> sum(ids.size() * d), ref(sum.size());
    for (size_t t = 0; t < ids.size(); ++t)
      for (int i = 0; i < d; ++i)
        sum[t * d + size_t(i)] = word[size_t(ids[t]) * d + size_t(i)] + pe[size_t(pos[t]) * d + size_t(i)] +
                                 te[size_t(types[t]) * d + size_t(i)];
    cpu::add_layernorm(sum.data(), nullptr, int64_t(ids.size()), d, g.data(), b.data(), 1e-12f, ref.data());
    for (int pairs : {-1, 0, 1, 2, 4}) {
      if (pairs > 0 && d % (64 * pairs) != 0) continue;
      EXPECT_LT(rel_err(cuda::testing::embed_layernorm(ids, types, pos, word, pe, te, g, b, d, 1e-12f, p, pairs), ref),
                bound(p))
          << name(p) << " d=" << d << " pairs=" << pairs;
    }
  }
}

// qkv[T, 3·H·dh] whose q carries log2(e)/√dh (launch_attention's q_prescaled) → the same
// attention with plain q, for the CPU reference (fp32, so the reference sees the GPU's inputs).
std::vector<float> unscaled_queries(std::vector<float> qkv, int H, int dh) {
  const float c = 1.4426950408889634f / std::sqrt(float(dh));
  const size_t row = size_t(3 * H * dh);
  for (size_t t = 0; t < qkv.size() / row; ++t)
    for (size_t i = 0; i < size_t(H * dh); ++i) qkv[t * row + i] /= c;
  return qkv;
}

// Every launch shape of the flash kernel (short-sequence shape, each long-sequence shape for
// dh 32/64), ragged batches from 1 token to the maximum length (512) and past one query tile,
// q plain and prescaled.
TEST_P(CudaOps, VarlenAttention) {
  const Precision p = GetParam();
  const std::vector<std::vector<int32_t>> batches = {{0, 1},           {0, 1, 2, 3},   {0, 17, 18, 82, 147, 659},
                                                     {0, 512},         {0, 64, 128},   {0, 65, 66},
                                                     {0, 5, 40, 104},  {0, 1, 513, 1025, 1154}};
  // Shape "-1" is shape 0 run by the Hopper wgmma kernel (bidirectional only; on other GPUs the
  // mma.sync kernel again).
  const bool wgmma = cuda::testing::attention_wgmma_available();
  if (!wgmma) std::printf("note: no Hopper GPU: the wgmma attention kernel is not exercised\n");
  for (int dh : {32, 64, 128}) {
    const int shapes = dh == 128 ? 1 : cuda::testing::attention_shape_count();
    for (int shape = dh == 128 ? 0 : -1; shape < shapes; ++shape) {
      cuda::testing::set_attention_shape(std::max(shape, 0));
      cuda::testing::set_attention_wgmma(shape < 0 ? 1 : 0);
      for (bool causal : {false, true}) {
        for (const auto& cu : batches) {
          for (bool prescaled : {false, true}) {
            const int H = 4;
            auto qkv = rnd(size_t(cu.back()) * 3 * H * dh, uint32_t(17 + dh + cu.back() + 7 * shape), 1.f, p);
            std::vector<float> ref(size_t(cu.back()) * H * dh);
            const auto ref_in = prescaled ? unscaled_queries(qkv, H, dh) : qkv;
            cpu::attention(ref_in.data(), cu.data(), int64_t(cu.size()) - 1, H, dh, ref.data(), causal);
            auto got = cuda::testing::attention(qkv, cu, H, dh, causal, p, prescaled);
            EXPECT_LT(rel_err(got, ref), bound(p)) << name(p) << " dh=" << dh << " shape=" << shape
                                                   << " causal=" << causal << " tokens=" << cu.back()
                                                   << " prescaled=" << prescaled;
          }
        }
      }
    }
    cuda::testing::set_attention_shape(-1);
    cuda::testing::set_attention_wgmma(-1);
  }
}

// Scores that grow along the sequence (key j scaled by 2^⌊j/64⌋, exact in fp16/bf16; up to ~2^9
// in exp2 units): a row's max keeps growing past the lazy-rescale threshold, tile after tile, and
// exp2 overflows fp16 (and fp32) on the way — the paths that recompute a tile must take over.
TEST_P(CudaOps, VarlenAttentionGrowingScores) {
  const Precision p = GetParam();
  const std::vector<std::vector<int32_t>> batches = {{0, 512}, {0, 200, 712}, {0, 1, 513, 600}};
  for (int dh : {32, 64}) {
    for (int shape = -1; shape < cuda::testing::attention_shape_count(); ++shape) {
      cuda::testing::set_attention_shape(std::max(shape, 0));
      cuda::testing::set_attention_wgmma(shape < 0 ? 1 : 0);
      for (bool causal : {false, true}) {
        for (const auto& cu : batches) {
          const int H = 2;
          const size_t row = size_t(3 * H * dh);
          auto qkv = rnd(size_t(cu.back()) * row, uint32_t(91 + dh + cu.back()), 1.f, p);
          for (size_t s = 0; s + 1 < cu.size(); ++s)
            for (int j = 0; j < cu[s + 1] - cu[s]; ++j)
              for (size_t i = 0; i < size_t(H * dh); ++i)
                qkv[size_t(cu[s] + j) * row + size_t(H * dh) + i] *= std::ldexp(1.f, j / 64);
          std::vector<float> ref(size_t(cu.back()) * H * dh);
          const auto ref_in = unscaled_queries(qkv, H, dh);
          cpu::attention(ref_in.data(), cu.data(), int64_t(cu.size()) - 1, H, dh, ref.data(), causal);
          auto got = cuda::testing::attention(qkv, cu, H, dh, causal, p, true);
          EXPECT_LT(rel_err(got, ref), bound(p)) << name(p) << " dh=" << dh << " shape=" << shape
                                                 << " causal=" << causal << " tokens=" << cu.back();
        }
      }
    }
    cuda::testing::set_attention_shape(-1);
    cuda::testing::set_attention_wgmma(-1);
  }
}

// Widths: MiniLM's and BERT-base's (16-byte loads), one that is not a multiple of 8 (one element
// per load) and one wider than a block's 512 chunks of 8 (the chunk loop's second pass); sequences
// of 1 to 512 tokens; every mode alone and all at once.
TEST_P(CudaOps, PoolingAllModesAndNormalize) {
  const Precision p = GetParam();
  for (int d : {384, 768, 100, 4160}) {
  std::vector<int32_t> cu = {0, 1, 40, 41, 553, 560};
  auto h = rnd(size_t(cu.back()) * d, 21 + d, 1.f, p);
  std::vector<PoolingConfig> configs(7);
  for (auto& c : configs) c.mean = false;  // the default is mean pooling: each config names its modes
  configs[0].cls = configs[0].max = configs[0].mean = configs[0].mean_sqrt_len = configs[0].weighted_mean =
      configs[0].last_token = true;
  configs[1].cls = true;
  configs[2].max = true;
  configs[3].mean = true;
  configs[4].mean_sqrt_len = true;
  configs[5].weighted_mean = true;
  configs[6].last_token = true;
  for (const PoolingConfig& c : configs)
  for (bool with_skip : {false, true}) {
    std::vector<int32_t> skip = with_skip ? std::vector<int32_t>{0, 3, 1, 10, 7} : std::vector<int32_t>{};
    const int S = int(cu.size()) - 1, od = int(pooled_dim(d, c));
    std::vector<float> ref(size_t(S) * od);
    pool(h.data(), d, cu, c, skip, ref.data());
    EXPECT_LT(rel_err(cuda::testing::pool(h, d, cu, c, skip, false, p), ref), 1e-5) << name(p) << " d=" << d;
    auto normed = ref;
    for (int s = 0; s < S; ++s) {
      double ss = 0;
      for (int i = 0; i < od; ++i) ss += double(normed[size_t(s) * od + i]) * normed[size_t(s) * od + i];
      // As torch.nn.functional.normalize: a zero row (no tokens left after the skip) stays zero.
      for (int i = 0; i < od; ++i)
        normed[size_t(s) * od + i] = float(normed[size_t(s) * od + i] / std::max(std::sqrt(ss), 1e-12));
    }
    EXPECT_LT(rel_err(cuda::testing::pool(h, d, cu, c, skip, true, p), normed), 1e-5) << name(p) << " d=" << d;
    // The LayerNorm applied by the pooling kernel (the encoder's last one on the folded path),
    // against LayerNorm then pooling on the CPU; not rounded to fp16/bf16 in between on the GPU.
    auto g = rnd(size_t(d), 23 + d, 0.2f, p, 1.f), b = rnd(size_t(d), 24 + d, 0.1f, p);
    std::vector<float> ln(h.size()), ref_ln(ref.size());
    cpu::add_layernorm(h.data(), nullptr, cu.back(), d, g.data(), b.data(), 1e-12f, ln.data());
    pool(ln.data(), d, cu, c, skip, ref_ln.data());
    EXPECT_LT(rel_err(cuda::testing::pool(h, d, cu, c, skip, false, p, g, b, 1e-12f), ref_ln), 1e-5)
        << name(p) << " d=" << d << " with LayerNorm";
  }
  }
}

// BERT's LayerNorms folded into the GEMMs around them (Hopper with CUTLASS built in; fp16):
// y = LN(x)·Wᵀ + b (q|k|v), GELU(LN(x)·Wᵀ + b) (FFN up), a·Wᵀ + b + LN(x) (attention out, FFN
// down), each through the stats pass and one folded GEMM, against LayerNorm then linear in fp32 on
// the CPU. x carries per-row offsets and a few large dims, as BERT's residual stream does.
TEST(CudaLnFold, FoldedGemmsMatchLayerNormThenLinear) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  if (!cuda::testing::ln_fold_available()) GTEST_SKIP() << "no Hopper GPU or no CUTLASS in this build";
  const Precision p = Precision::F16;
  const float eps = 1e-12f;
  for (int T : {1, 37, 4096}) {
    // d 1024 / I 4096: widths that are not multiples of the 192-wide tiles (the other launch shapes)
    for (auto [d, I] : {std::pair{384, 1536}, std::pair{768, 3072}, std::pair{1024, 4096}}) {
      auto x = rnd(size_t(T) * d, uint32_t(T + d), 1.f, p);
      std::mt19937 rng(uint32_t(T * 7 + d));
      std::normal_distribution<float> off(0.f, 0.3f);
      for (int t = 0; t < T; ++t) {
        const float o = off(rng);
        for (int i = 0; i < d; ++i) {
          float& v = x[size_t(t) * d + size_t(i)];
          v = round_to(v + o + (i % 97 == 5 ? 6.f : 0.f), p);
        }
      }
      auto g = rnd(size_t(d), 31, 0.1f, p, 1.f), beta = rnd(size_t(d), 32, 0.1f, p);
      std::vector<float> h(x.size());
      cpu::add_layernorm(x.data(), nullptr, T, d, g.data(), beta.data(), eps, h.data());
      const std::string where = " T=" + std::to_string(T) + " d=" + std::to_string(d);
      for (bool gelu : {false, true}) {  // q|k|v, FFN up
        const int N = gelu ? I : 3 * d;
        auto W = rnd(size_t(N) * d, 33, 0.05f, p), b = rnd(size_t(N), 34, 0.5f, p);
        std::vector<float> ref(size_t(T) * N);
        cpu::linear(h.data(), T, d, W.data(), b.data(), N, ref.data());
        if (gelu) cpu::gelu_tanh_inplace(ref.data(), int64_t(ref.size()));
        auto got = cuda::testing::folded_ln_linear(x, T, d, W, b, N, g, beta, eps, gelu);
        EXPECT_LT(rel_err(got, ref), bound(p)) << (gelu ? "FFN up" : "q|k|v") << where;
      }
      for (int K : {d, I}) {  // attention out, FFN down: the residual LN(x) rebuilt in the epilogue
        auto a = rnd(size_t(T) * K, uint32_t(T + K + 5), 1.f, p), W = rnd(size_t(d) * K, 35, 0.05f, p),
             b = rnd(size_t(d), 36, 0.5f, p);
        std::vector<float> ref(size_t(T) * d);
        cpu::linear(a.data(), T, K, W.data(), b.data(), d, ref.data());
        for (size_t i = 0; i < ref.size(); ++i) ref[i] += h[i];
        auto got = cuda::testing::folded_ln_residual(a, T, K, W, b, d, x, g, beta, eps);
        EXPECT_LT(rel_err(got, ref), bound(p)) << "residual K=" << K << where;
        // The next LayerNorm's statistics from the epilogue's row sums, against the CPU's of ref.
        std::vector<float> want(2 * size_t(T));
        for (int t = 0; t < T; ++t) {
          double mean = 0, var = 0;
          for (int i = 0; i < d; ++i) mean += ref[size_t(t) * d + size_t(i)];
          mean /= d;
          for (int i = 0; i < d; ++i) var += (ref[size_t(t) * d + size_t(i)] - mean) * (ref[size_t(t) * d + size_t(i)] - mean);
          const double r = 1.0 / std::sqrt(var / d + eps);
          want[size_t(t)] = float(r), want[size_t(T + t)] = float(-mean * r);
        }
        auto stats = cuda::testing::folded_ln_residual(a, T, K, W, b, d, x, g, beta, eps, true);
        EXPECT_LT(rel_err(stats, want), bound(p)) << "row sums K=" << K << where;
      }
    }
  }
}

// ---------------------------------------------------------------- decoder (Qwen3) ops vs src/ops/decoder_ops

// RMSNorm with and without the residual add, at Qwen3-Embedding widths (0.6B: 1024, 4B: 2560) and
// the tiny CI model's 64; the residual stream written back is checked too.
TEST_P(CudaOps, Qwen3AddRmsNorm) {
  const Precision p = GetParam();
  for (int d : {64, 1024, 2560}) {
    for (int T : {1, 33, 3000}) {
      auto x = rnd(size_t(T) * d, uint32_t(31 + d + T), 1.5f, p, 0.2f), h = rnd(size_t(T) * d, uint32_t(32 + T), 1.f, p),
           w = rnd(size_t(d), 33, 0.1f, p, 1.f);
      const float eps = 1e-6f;
      std::vector<float> ref(h.size());
      cpu::rms_norm(h.data(), T, d, d, w.data(), eps, ref.data(), d);
      double e = rel_err(cuda::testing::add_rms_norm({}, h, w, T, d, eps, p), ref);
      EXPECT_LT(e, bound(p)) << name(p) << " RMSNorm d=" << d << " T=" << T << " rel_err=" << e;
      std::vector<float> sum(h.size());
      for (size_t i = 0; i < sum.size(); ++i) sum[i] = x[i] + h[i];
      cpu::rms_norm(sum.data(), T, d, d, w.data(), eps, ref.data(), d);
      std::vector<float> got_sum;
      e = rel_err(cuda::testing::add_rms_norm(x, h, w, T, d, eps, p, &got_sum), ref);
      EXPECT_LT(e, bound(p)) << name(p) << " add+RMSNorm d=" << d << " T=" << T << " rel_err=" << e;
      e = rel_err(got_sum, sum);
      EXPECT_LT(e, bound(p)) << name(p) << " residual sum written back, d=" << d << " T=" << T << " rel_err=" << e;
    }
  }
}

// Per-head q/k RMSNorm + RoPE (rotate_half convention, θ from config) in place on qkv; V must be
// left as it was. Positions up to 32,767 (the model's whole range), ragged, restarting per sequence.
// Head dims 32…256 take the 16-byte kernel; 48 takes the scalar one.
TEST_P(CudaOps, Qwen3QkNormRope) {
  const Precision p = GetParam();
  struct Case { int H, KV, dh; double theta; };
  for (const Case& c : {Case{16, 8, 128, 1e6}, Case{4, 2, 32, 1e6}, Case{8, 2, 64, 1e4}, Case{4, 1, 256, 1e6},
                        Case{4, 2, 48, 1e6}}) {
    std::mt19937 rng(uint32_t(40 + c.dh));
    std::vector<int32_t> pos;
    for (int len : {1, 7, 300}) for (int i = 0; i < len; ++i) pos.push_back(i);
    for (int i = 0; i < 64; ++i) pos.push_back(int32_t(rng() % 32768));
    pos.push_back(32767);
    const int T = int(pos.size()), ld = (c.H + 2 * c.KV) * c.dh;
    auto qkv = rnd(size_t(T) * ld, uint32_t(41 + c.dh), 1.f, p, 0.1f), qw = rnd(size_t(c.dh), 42, 0.1f, p, 1.f),
         kw = rnd(size_t(c.dh), 43, 0.1f, p, 1.f);
    const float eps = 1e-6f;
    auto ref = qkv;
    int max_pos = 0;
    for (int32_t q : pos) max_pos = std::max(max_pos, int(q));
    cpu::RopeTable rope;
    rope.build(max_pos + 1, c.dh, c.theta);
    cpu::rms_norm_heads(ref.data(), T, ld, 0, c.H, c.dh, qw.data(), eps);
    cpu::rms_norm_heads(ref.data(), T, ld, int64_t(c.H) * c.dh, c.KV, c.dh, kw.data(), eps);
    cpu::apply_rope(ref.data(), T, ld, 0, c.H, c.dh, pos.data(), rope);
    cpu::apply_rope(ref.data(), T, ld, int64_t(c.H) * c.dh, c.KV, c.dh, pos.data(), rope);
    auto got = cuda::testing::qk_norm_rope(qkv, pos, qw, kw, c.H, c.KV, c.dh, eps, c.theta, p);
    const double e = rel_err(got, ref);
    EXPECT_LT(e, bound(p)) << name(p) << " H=" << c.H << " KV=" << c.KV << " dh=" << c.dh << " rel_err=" << e;
    bool v_same = true;
    for (int t = 0; t < T; ++t)
      for (int i = (c.H + c.KV) * c.dh; i < ld; ++i) v_same &= got[size_t(t) * ld + i] == qkv[size_t(t) * ld + i];
    EXPECT_TRUE(v_same) << name(p) << " V columns were modified";
  }
}

// Causal grouped-query attention (query head h reads KV head h / (H/KV)) against the CPU op:
// head dims 128 (Qwen3-Embedding) and 32/64, KV < H and KV = H, ragged batches with 1-token
// sequences, a 4,096-token and a 32,768-token sequence (no O(L²) memory on the device).
TEST_P(CudaOps, Qwen3CausalGqaAttention) {
  const Precision p = GetParam();
  struct Case { int H, KV, dh; std::vector<int32_t> cu; bool causal; };
  const std::vector<std::vector<int32_t>> ragged = {{0, 1}, {0, 1, 2, 3}, {0, 17, 18, 82, 147, 659}, {0, 64, 128},
                                                    {0, 65, 66}, {0, 5, 40, 104}, {0, 1, 513, 1025, 1154}};
  std::vector<Case> cases;
  for (auto& cu : ragged) {
    cases.push_back({16, 8, 128, cu, true});
    cases.push_back({4, 1, 128, cu, true});
    cases.push_back({4, 2, 32, cu, true});
  }
  cases.push_back({16, 8, 128, {0, 4096}, true});
  cases.push_back({16, 8, 128, {0, 1, 4097, 4100, 4101}, true});
  cases.push_back({8, 8, 128, {0, 3, 700}, true});
  cases.push_back({16, 8, 128, {0, 17, 18, 600}, false});  // the GQA head mapping without the mask
  cases.push_back({8, 2, 64, {0, 1, 300, 301}, true});
  cases.push_back({2, 1, 128, {0, 32768}, true});
  for (const Case& c : cases) {
    const int T = c.cu.back();
    const int S = int(c.cu.size()) - 1;
    auto qkv = rnd(size_t(T) * (c.H + 2 * c.KV) * c.dh, uint32_t(50 + c.H * 7 + c.KV + c.dh + T), 1.f, p);
    std::vector<float> ref(size_t(T) * c.H * c.dh);
    cpu::attention_gqa(qkv.data(), c.cu.data(), S, c.H, c.KV, c.dh, c.causal, ref.data());
    auto got = cuda::testing::attention_gqa(qkv, c.cu, c.H, c.KV, c.dh, c.causal, p);
    const double e = rel_err(got, ref);
    EXPECT_LT(e, bound(p)) << name(p) << " H=" << c.H << " KV=" << c.KV << " dh=" << c.dh << " causal=" << c.causal
                           << " tokens=" << T << " sequences=" << S << " rel_err=" << e;
  }
}

TEST_P(CudaOps, Qwen3SiluMul) {
  const Precision p = GetParam();
  for (int I : {192, 3072}) {
    for (int T : {1, 37, 2000}) {
      auto gu = rnd(size_t(T) * 2 * I, uint32_t(60 + I + T), 2.f, p, 0.1f);
      std::vector<float> ref(size_t(T) * I);
      cpu::silu_mul(gu.data(), T, I, ref.data());
      const double e = rel_err(cuda::testing::silu_mul(gu, T, I, p), ref);
      EXPECT_LT(e, bound(p)) << name(p) << " I=" << I << " T=" << T << " rel_err=" << e;
    }
  }
}

// Final norm fused with last-token pooling (+ L2 normalize): the row of each sequence's last token.
TEST_P(CudaOps, Qwen3LastTokenNormPool) {
  const Precision p = GetParam();
  for (int d : {64, 1024}) {
    const std::vector<int32_t> cu = {0, 1, 40, 41, 553, 554};
    const int S = int(cu.size()) - 1;
    auto h = rnd(size_t(cu.back()) * d, uint32_t(70 + d), 1.f, p, 0.1f), w = rnd(size_t(d), 71, 0.1f, p, 1.f);
    const float eps = 1e-6f;
    std::vector<float> ref(size_t(S) * d);
    for (int s = 0; s < S; ++s)
      cpu::rms_norm(h.data() + size_t(cu[s + 1] - 1) * d, 1, d, d, w.data(), eps, ref.data() + size_t(s) * d, d);
    double e = rel_err(cuda::testing::last_token_norm_pool(h, d, cu, w, eps, false, p), ref);
    EXPECT_LT(e, 1e-4) << name(p) << " d=" << d << " rel_err=" << e;
    for (int s = 0; s < S; ++s) {
      double ss = 0;
      for (int i = 0; i < d; ++i) ss += double(ref[size_t(s) * d + i]) * ref[size_t(s) * d + i];
      for (int i = 0; i < d; ++i) ref[size_t(s) * d + i] = float(ref[size_t(s) * d + i] / std::sqrt(ss));
    }
    e = rel_err(cuda::testing::last_token_norm_pool(h, d, cu, w, eps, true, p), ref);
    EXPECT_LT(e, 1e-4) << name(p) << " d=" << d << " normalized, rel_err=" << e;
  }
}

// The pipelined encoder (submit / collect, two batches in flight, CUDA-graph replays from both
// staging slots, PDL launches, zero-copy staging) gives each batch the rows the synchronous,
// graph-free encoder with plain launches and copies gives it alone: inputs staged per slot are
// never overwritten before they are read, rows never mixed up.
// A 2-layer BERT (d 64, 2 heads, I 128) with random weights at precision p, and packed batches
// of random ids with the given sequence lengths.
constexpr size_t kTinyD = 64, kTinyI = 128;
BertWeights tiny_bert(Precision p, TransformerConfig& cfg) {
  cfg.model_type = "bert";
  cfg.vocab_size = 300, cfg.hidden_size = kTinyD, cfg.num_layers = 2, cfg.num_heads = 2, cfg.intermediate_size = kTinyI;
  cfg.max_position_embeddings = 512, cfg.type_vocab_size = 2;
  const size_t d = kTinyD, I = kTinyI;
  uint32_t seed = 100;
  auto r = [&](size_t n, float scale, float shift = 0.f) { return rnd(n, seed++, scale, p, shift); };
  BertWeights w;
  w.word_emb = r(300 * d, 1.f), w.pos_emb = r(512 * d, 0.5f), w.type_emb = r(2 * d, 0.5f);
  w.emb_ln_g = r(d, 0.1f, 1.f), w.emb_ln_b = r(d, 0.1f);
  for (int l = 0; l < 2; ++l) {
    BertWeights::Layer L;
    L.w_qkv = r(3 * d * d, 0.125f), L.b_qkv = r(3 * d, 0.1f), L.w_attn_out = r(d * d, 0.125f), L.b_attn_out = r(d, 0.1f);
    L.ln1_g = r(d, 0.1f, 1.f), L.ln1_b = r(d, 0.1f), L.w_inter = r(I * d, 0.125f), L.b_inter = r(I, 0.1f);
    L.w_out = r(d * I, 0.09f), L.b_out = r(d, 0.1f), L.ln2_g = r(d, 0.1f, 1.f), L.ln2_b = r(d, 0.1f);
    w.layers.push_back(std::move(L));
  }
  return w;
}
PackedBatch tiny_batch(const std::vector<int>& lens, uint32_t s) {
  std::mt19937 rng(s);
  PackedBatch b;
  b.cu_seqlens.push_back(0);
  for (int len : lens) {
    for (int t = 0; t < len; ++t) {
      b.ids.push_back(int32_t(rng() % 300));
      b.type_ids.push_back(int32_t(rng() % 2));
      b.positions.push_back(t);
    }
    b.cu_seqlens.push_back(int32_t(b.ids.size()));
  }
  return b;
}

TEST_P(CudaOps, EncoderPipelinedMatchesSynchronous) {
  const Precision p = GetParam();
  TransformerConfig cfg;
  const BertWeights w = tiny_bert(p, cfg);
  // Batch shapes: short sequences (graph-replayed from the second time a shape is seen), one past
  // the short-sequence attention limit, a single token, and the maximum length.
  const std::vector<std::vector<int>> shapes = {{5, 17, 3}, {300, 100}, {1}, {40, 40, 9}, {512}, {7, 7}};
  const auto& make = tiny_batch;
  PoolingConfig pc;
  pc.mean = pc.cls = true;  // two pooled modes: [S, 2d] rows
  const size_t od = 2 * kTinyD;
  // The reference: every batch enqueued op by op, with plain launches (no programmatic dependent
  // launch) and its inputs and rows moved by cudaMemcpyAsync (no zero-copy staging); the encoders
  // under test use both on these small batches, in graphs and out of them.
  setenv("EMBEDKIT_CUDA_GRAPHS", "0", 1);
  setenv("EMBEDKIT_PDL", "0", 1);
  setenv("EMBEDKIT_ZERO_COPY", "0", 1);
  cuda::BertEncoder ref_enc(cfg, w, p, 1024);
  unsetenv("EMBEDKIT_CUDA_GRAPHS");
  unsetenv("EMBEDKIT_PDL");
  unsetenv("EMBEDKIT_ZERO_COPY");
  // Every batch in its slot's own workspace, side by side (the default: all are small here), and a
  // mix: batches padded to over 64 tokens share one workspace and run one after another, among
  // the small ones that run beside them.
  cuda::BertEncoder enc_own(cfg, w, p, 1024);
  setenv("EMBEDKIT_CONCURRENT_TOKENS", "64", 1);
  cuda::BertEncoder enc_mixed(cfg, w, p, 1024);
  unsetenv("EMBEDKIT_CONCURRENT_TOKENS");
  const int K = cuda::BertEncoder::kMaxInFlight;
  for (cuda::BertEncoder* e : {&enc_own, &enc_mixed}) {
    cuda::BertEncoder& enc = *e;
    const char* which = e == &enc_own ? "own workspaces" : "mixed";
    for (int round = 0; round < 4; ++round) {  // new inputs each round, same shapes: graphs replay
      std::vector<PackedBatch> batches;
      std::vector<std::vector<float>> want, got;
      for (size_t k = 0; k < shapes.size(); ++k) {
        batches.push_back(make(shapes[k], uint32_t(1000 * round + k)));
        const size_t S = size_t(batches.back().sequences());
        want.emplace_back(S * od, NAN);
        got.emplace_back(S * od, NAN);
        ref_enc.encode(batches.back(), pc, {}, true, want.back().data());
      }
      std::vector<cuda::BertEncoder::Ticket> t(batches.size());
      auto collect = [&](size_t k) {
        enc.collect(t[k], got[k].data());
        EXPECT_GT(enc.last_times().forward, 0.f);  // this batch's own events
      };
      if (round % 2 == 0) {  // sliding window: K in flight, the oldest collected first
        size_t collected = 0;
        for (size_t k = 0; k < batches.size(); ++k) {
          t[k] = enc.submit(batches[k], pc, {}, true);
          EXPECT_EQ(enc.in_flight(), int(std::min<size_t>(k + 1 - collected, size_t(K))));
          if (k + 1 - collected == size_t(K)) {
            EXPECT_THROW(enc.submit(batches[0], pc, {}, true), Error);  // one more is refused
            collect(collected++);
          }
        }
        while (collected < batches.size()) collect(collected++);
      } else {  // up to K at once, the newest collected first (any order is allowed)
        for (size_t k = 0; k < batches.size(); k += size_t(K)) {
          const size_t end = std::min(batches.size(), k + size_t(K));
          for (size_t j = k; j < end; ++j) t[j] = enc.submit(batches[j], pc, {}, true);
          for (size_t j = end; j-- > k;) collect(j);
        }
      }
      EXPECT_EQ(enc.in_flight(), 0);
      EXPECT_THROW(enc.collect(t[0], got[0].data()), Error);  // not in flight any more
      for (size_t k = 0; k < batches.size(); ++k) {
        float max_diff = 0;
        for (size_t i = 0; i < want[k].size(); ++i) {
          const float diff = std::fabs(got[k][i] - want[k][i]);
          max_diff = std::isnan(diff) ? INFINITY : std::max(max_diff, diff);  // a row never written stays NaN
        }
        EXPECT_LT(max_diff, 1e-5f) << name(p) << " " << which << " round " << round << " batch " << k;
      }
    }
  }
}

// Both encoders on the same tiny-model batches of these shapes, three rounds (shapes repeat, so
// CUDA graphs are captured, then replayed): mean and CLS rows within 2e-3 (‖Δ‖/‖ref‖).
void expect_encoders_agree(cuda::BertEncoder& ref, cuda::BertEncoder& test, const std::vector<std::vector<int>>& shapes) {
  PoolingConfig pc;
  pc.mean = pc.cls = true;
  for (int round = 0; round < 3; ++round) {
    for (size_t k = 0; k < shapes.size(); ++k) {
      const PackedBatch b = tiny_batch(shapes[k], uint32_t(round * 10 + k));
      const size_t n = size_t(b.sequences()) * 2 * kTinyD;
      std::vector<float> want(n, NAN), got(n, NAN);
      ref.encode(b, pc, {}, true, want.data());
      test.encode(b, pc, {}, true, got.data());
      EXPECT_LT(rel_err(got, want), 2e-3) << "round " << round << " tokens " << b.tokens();
    }
  }
}

// The encoder with its LayerNorms folded into the GEMMs (EMBEDKIT_LN_FOLD=2: every batch) against
// the same encoder without (0), fp16.
TEST(CudaLnFold, EncoderFoldedMatchesUnfolded) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  if (!cuda::testing::ln_fold_available()) GTEST_SKIP() << "no Hopper GPU or no CUTLASS in this build";
  TransformerConfig cfg;
  const BertWeights w = tiny_bert(Precision::F16, cfg);
  cuda::testing::set_ln_fold(0);
  cuda::BertEncoder plain(cfg, w, Precision::F16, 1024);
  cuda::testing::set_ln_fold(2);
  cuda::BertEncoder folded(cfg, w, Precision::F16, 1024);
  cuda::testing::set_ln_fold(-1);
  expect_encoders_agree(plain, folded, {{5, 17, 3}, {300, 100}, {1}, {512}});
}

// Small batches with their LayerNorms folded into CUTLASS GEMMs whose epilogues take the row
// statistics from the residual GEMMs' row sums (the default for fp16 batches of up to 1,024
// tokens on Hopper) against the same encoder without (EMBEDKIT_SMALL_FOLD=0: CUTLASS GEMMs and
// LayerNorm kernels); and the big-batch path (2,048 tokens) unchanged by the switch.
TEST(CudaLnFold, SmallBatchesFoldedMatchUnfolded) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  if (!cuda::testing::ln_fold_available()) GTEST_SKIP() << "no Hopper GPU or no CUTLASS in this build";
  TransformerConfig cfg;
  const BertWeights w = tiny_bert(Precision::F16, cfg);
  setenv("EMBEDKIT_SMALL_FOLD", "0", 1);
  cuda::BertEncoder plain(cfg, w, Precision::F16, 4096);
  unsetenv("EMBEDKIT_SMALL_FOLD");
  cuda::BertEncoder folded(cfg, w, Precision::F16, 4096);
  expect_encoders_agree(plain, folded, {{5, 17, 3}, {300, 100}, {1}, {40, 40, 9}, {512}, {512, 512, 512, 512}});
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaOps, ::testing::Values(Precision::F16, Precision::BF16),
                         [](const auto& info) { return std::string(name(info.param)); });

TEST(CudaSimilarity, MatchesCpuGemm) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  for (auto [n, m, dim] : {std::tuple{1, 1, 384}, std::tuple{37, 1000, 384}, std::tuple{300, 257, 1024}}) {
    std::mt19937 rng(uint32_t(n + m));
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> a(size_t(n) * dim), b(size_t(m) * dim);
    for (auto& x : a) x = nd(rng);
    for (auto& x : b) x = nd(rng);
    std::vector<float> ref(size_t(n) * m), got(size_t(n) * m, NAN);
    cosine_similarity(a.data(), size_t(n), b.data(), size_t(m), size_t(dim), ref.data(), "cpu");
    cuda::cosine_similarity(a.data(), size_t(n), b.data(), size_t(m), size_t(dim), got.data());
    EXPECT_LT(rel_err(got, ref), 1e-3) << n << "x" << m << "x" << dim;  // cuBLASLt may use TF32 for fp32
  }
}

}  // namespace
