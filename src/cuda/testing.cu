// Op-level test entry points (see bert_cuda.h). Not on any hot path: simple, synchronous.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda/bert_cuda.h"
#include "cuda/decoder_kernels.cuh"
#include "cuda/kernels.cuh"
#include "cuda/ln_fold_gemm.h"
#include "cuda/qwen3_cuda.h"
#include "cuda/small_gemm.h"
#include "ops/decoder_ops.h"

namespace embedkit::cuda::testing {
namespace {

template <typename T> T to_t(float v);
template <> __half to_t(float v) { return __float2half_rn(v); }
template <> __nv_bfloat16 to_t(float v) { return __float2bfloat16_rn(v); }
template <> float to_t(float v) { return v; }
float to_float(__half v) { return __half2float(v); }
float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Device buffer that frees itself.
struct Buf {
  void* p = nullptr;
  explicit Buf(size_t bytes) { EK_CUDA(cudaMalloc(&p, bytes ? bytes : 1)); }
  ~Buf() { cudaFree(p); }
  template <typename T> T* as() { return static_cast<T*>(p); }
};

template <typename T>
Buf up(const std::vector<float>& v) {
  std::vector<T> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = to_t<T>(v[i]);
  Buf b(h.size() * sizeof(T));
  EK_CUDA(cudaMemcpy(b.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}
Buf up_int(const std::vector<int32_t>& v) {
  Buf b(v.size() * sizeof(int32_t));
  EK_CUDA(cudaMemcpy(b.p, v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  return b;
}
template <typename T>
Buf poisoned(size_t n) {
  Buf b(n * sizeof(T));
  EK_CUDA(cudaMemset(b.p, 0xFF, n * sizeof(T)));  // NaN in fp16, bf16 and fp32
  return b;
}
template <typename T>
std::vector<float> down(Buf& b, size_t n) {
  EK_CUDA(cudaDeviceSynchronize());
  std::vector<T> h(n);
  EK_CUDA(cudaMemcpy(h.data(), b.p, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = to_float(h[i]);
  return out;
}

// residual: none (empty), added from its own buffer, or added in place (y starts as residual).
template <typename T>
std::vector<float> linear_t(const std::vector<float>& x, int T_, int n_in, const std::vector<float>& W,
                            const std::vector<float>& b, int n_out, const std::vector<float>& residual,
                            bool in_place) {
  const cudaDataType_t dt = sizeof(T) == 2 && std::is_same_v<T, __half> ? CUDA_R_16F : CUDA_R_16BF;
  Buf dx = up<T>(x), dw = up<T>(W), db = up<T>(b), dy = poisoned<T>(size_t(T_) * n_out);
  Buf dr = up<T>(residual.empty() ? std::vector<float>{0.f} : residual);
  if (!residual.empty() && in_place)
    EK_CUDA(cudaMemcpy(dy.p, dr.p, residual.size() * sizeof(T), cudaMemcpyDeviceToDevice));
  const void* res = residual.empty() ? nullptr : in_place ? dy.p : dr.p;
  cublasLtHandle_t lt;
  EK_CUBLAS(cublasLtCreate(&lt));
  LtAlgoCache algos;  // the encoder's path: heuristic answer cached per shape
  Buf ws(4u << 20);
  lt_linear(lt, dt, dx.p, T_, n_in, dw.p, db.p, n_out, dy.p, CUBLASLT_EPILOGUE_BIAS, ws.p, 4u << 20, 0, &algos, res);
  auto out = down<T>(dy, size_t(T_) * n_out);
  cublasLtDestroy(lt);
  return out;
}

template <typename T>
std::vector<float> gelu_t(const std::vector<float>& x) {
  Buf d = up<T>(x);
  gelu_kernel<T><<<64, 256>>>(d.as<T>(), x.size());
  EK_CUDA(cudaGetLastError());
  return down<T>(d, x.size());
}

template <typename T>
std::vector<float> add_ln_t(const std::vector<float>& x, const std::vector<float>& hidden, const std::vector<float>& g,
                            const std::vector<float>& b, int T_, int d, float eps, int pairs) {
  Buf dx = up<T>(x.empty() ? std::vector<float>{0.f} : x), dh = up<T>(hidden), dg = up<T>(g), dbb = up<T>(b);
  launch_add_layernorm<T>(x.empty() ? nullptr : dx.as<T>(), dh.as<T>(), dg.as<T>(), dbb.as<T>(), T_, d, eps, 0,
                          pairs < 0 ? layernorm_pairs_for(d) : pairs);
  EK_CUDA(cudaGetLastError());
  return down<T>(dh, size_t(T_) * d);
}

template <typename T>
std::vector<float> embed_ln_t(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                              const std::vector<int32_t>& pos, const std::vector<float>& word,
                              const std::vector<float>& pos_emb, const std::vector<float>& type_emb,
                              const std::vector<float>& g, const std::vector<float>& b, int d, float eps, int pairs) {
  const int T_ = int(ids.size());
  Buf di = up_int(ids), dt = up_int(types), dp = up_int(pos);
  Buf dw = up<T>(word), dpe = up<T>(pos_emb), dte = up<T>(type_emb), dg = up<T>(g), dbb = up<T>(b);
  Buf out = poisoned<T>(size_t(T_) * d);
  launch_embed_layernorm<T>(di.as<int>(), dt.as<int>(), dp.as<int>(), dw.as<T>(), dpe.as<T>(), dte.as<T>(), dg.as<T>(),
                            dbb.as<T>(), T_, d, 0, eps, out.as<T>(), 0,
                            pairs < 0 ? layernorm_pairs_for(d) : pairs);
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * d);
}

template <typename T>
std::vector<float> attention_t(const std::vector<float>& qkv, const std::vector<int32_t>& cu, int H, int dh,
                               bool causal, bool q_prescaled) {
  int max_len = 0;
  for (size_t s = 0; s + 1 < cu.size(); ++s) max_len = std::max(max_len, cu[s + 1] - cu[s]);
  const int rows = attention_tile_rows(max_len, dh);
  std::vector<int2> tiles;
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int q = 0; q < cu[s + 1] - cu[s]; q += rows) tiles.push_back({int(s), q});
  const int T_ = cu.back();
  Buf dq = up<T>(qkv), dc = up_int(cu), out = poisoned<T>(size_t(T_) * H * dh);
  Buf dt(tiles.size() * sizeof(int2));
  EK_CUDA(cudaMemcpy(dt.p, tiles.data(), tiles.size() * sizeof(int2), cudaMemcpyHostToDevice));
  launch_attention<T>(dh, rows, dq.as<T>(), dc.as<int>(), dt.as<int2>(), int(tiles.size()), H, H, causal, out.as<T>(), 0,
                      q_prescaled);
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * H * dh);
}

template <typename T>
std::vector<float> pool_t(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu,
                          const PoolingConfig& c, const std::vector<int32_t>& skip, bool normalize,
                          const std::vector<float>& ln_g, const std::vector<float>& ln_b, float eps) {
  const int S = int(cu.size()) - 1;
  const int modes = int(c.cls) + int(c.max) + int(c.mean) + int(c.mean_sqrt_len) + int(c.weighted_mean) + int(c.last_token);
  Buf dh = up<T>(hidden), dc = up_int(cu), ds = up_int(skip.empty() ? std::vector<int32_t>{0} : skip);
  Buf out(size_t(S) * modes * d * sizeof(float));
  EK_CUDA(cudaMemset(out.p, 0xFF, size_t(S) * modes * d * sizeof(float)));
  PoolModes pm{c.cls, c.max, c.mean, c.mean_sqrt_len, c.weighted_mean, c.last_token};
  // Row statistics r = 1/σ, n = −μ/σ (two passes in double) for the LayerNorm the pooling applies.
  const size_t T_ = size_t(cu.back());
  std::vector<float> r(T_), n(T_);
  for (size_t t = 0; t < T_ && !ln_g.empty(); ++t) {
    double mean = 0, var = 0;
    for (int i = 0; i < d; ++i) mean += hidden[t * size_t(d) + size_t(i)];
    mean /= d;
    for (int i = 0; i < d; ++i) var += (hidden[t * size_t(d) + size_t(i)] - mean) * (hidden[t * size_t(d) + size_t(i)] - mean);
    const double inv = 1.0 / std::sqrt(var / d + eps);
    r[t] = float(inv), n[t] = float(-mean * inv);
  }
  Buf dr = up<float>(r), dn = up<float>(n), dg = up<T>(ln_g.empty() ? std::vector<float>{0.f} : ln_g),
      db = up<T>(ln_b.empty() ? std::vector<float>{0.f} : ln_b);
  PoolNorm<T> norm;
  if (!ln_g.empty()) norm = {dr.as<float>(), dn.as<float>(), dg.as<T>(), db.as<T>()};
  launch_pool<T>(dh.as<T>(), dc.as<int>(), skip.empty() ? nullptr : ds.as<int>(), S, d, pm, normalize, out.as<float>(),
                 modes * d, 0, norm);
  EK_CUDA(cudaGetLastError());
  EK_CUDA(cudaDeviceSynchronize());
  std::vector<float> h(size_t(S) * modes * d);
  EK_CUDA(cudaMemcpy(h.data(), out.p, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// ---- decoder ops (qwen3_cuda.h)
template <typename T>
std::vector<float> add_rms_norm_t(const std::vector<float>& x, const std::vector<float>& hidden,
                                  const std::vector<float>& w, int T_, int d, float eps, std::vector<float>* sum_out) {
  Buf dx = up<T>(x.empty() ? std::vector<float>{0.f} : x), dh = up<T>(hidden), dw = up<T>(w);
  Buf out = poisoned<T>(size_t(T_) * d);
  launch_add_rmsnorm<T>(x.empty() ? nullptr : dx.as<T>(), dh.as<T>(), dw.as<T>(), out.as<T>(), T_, d, eps, 0);
  EK_CUDA(cudaGetLastError());
  if (sum_out) *sum_out = down<T>(dh, size_t(T_) * d);
  return down<T>(out, size_t(T_) * d);
}

template <typename T>
std::vector<float> qk_norm_rope_t(const std::vector<float>& qkv, const std::vector<int32_t>& positions,
                                  const std::vector<float>& q_w, const std::vector<float>& k_w, int H, int KV, int dh,
                                  float eps, double theta) {
  const int T_ = int(positions.size());
  int max_pos = 0;
  for (int32_t p : positions) max_pos = std::max(max_pos, int(p));
  cpu::RopeTable rope;
  rope.build(max_pos + 1, dh, theta);
  // In place (the kernel reads q/k and overwrites them), so the output cannot start as NaN: the
  // comparison of every q/k element against the CPU op shows that each one was rewritten.
  const size_t ld = size_t(H + 2 * KV) * dh;
  Buf real = up<T>(qkv), dp = up_int(positions), dqw = up<T>(q_w), dkw = up<T>(k_w);
  Buf dc(rope.cos.size() * sizeof(float)), ds(rope.sin.size() * sizeof(float));
  EK_CUDA(cudaMemcpy(dc.p, rope.cos.data(), rope.cos.size() * sizeof(float), cudaMemcpyHostToDevice));
  EK_CUDA(cudaMemcpy(ds.p, rope.sin.data(), rope.sin.size() * sizeof(float), cudaMemcpyHostToDevice));
  launch_qk_norm_rope<T>(real.as<T>(), dp.as<int>(), dqw.as<T>(), dkw.as<T>(), dc.as<float>(), ds.as<float>(), T_, H, KV,
                         dh, eps, 0);
  EK_CUDA(cudaGetLastError());
  return down<T>(real, size_t(T_) * ld);
}

template <typename T>
std::vector<float> attention_gqa_t(const std::vector<float>& qkv, const std::vector<int32_t>& cu, int H, int KV, int dh,
                                   bool causal) {
  int max_len = 0;
  const int S = int(cu.size()) - 1;
  for (int s = 0; s < S; ++s) max_len = std::max(max_len, cu[s + 1] - cu[s]);
  const int rows = attention_tile_rows(max_len, dh);
  std::vector<int2> tiles;
  make_attention_tiles(cu.data(), S, rows, causal, tiles);
  const int T_ = cu.back();
  Buf dq = up<T>(qkv), dc = up_int(cu), out = poisoned<T>(size_t(T_) * H * dh);
  Buf dt(tiles.size() * sizeof(int2));
  EK_CUDA(cudaMemcpy(dt.p, tiles.data(), tiles.size() * sizeof(int2), cudaMemcpyHostToDevice));
  launch_attention<T>(dh, rows, dq.as<T>(), dc.as<int>(), dt.as<int2>(), int(tiles.size()), H, KV, causal, out.as<T>(),
                      0);
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * H * dh);
}

template <typename T>
std::vector<float> silu_mul_t(const std::vector<float>& gate_up, int T_, int I) {
  Buf dg = up<T>(gate_up), out = poisoned<T>(size_t(T_) * I);
  launch_silu_mul<T>(dg.as<T>(), out.as<T>(), T_, I, 0);
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * I);
}

template <typename T>
std::vector<float> last_token_norm_pool_t(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu,
                                          const std::vector<float>& w, float eps, bool normalize) {
  const int S = int(cu.size()) - 1;
  Buf dh = up<T>(hidden), dc = up_int(cu), dw = up<T>(w);
  Buf out(size_t(S) * d * sizeof(float));
  EK_CUDA(cudaMemset(out.p, 0xFF, size_t(S) * d * sizeof(float)));
  last_token_norm_pool_kernel<T><<<(S + 7) / 8, 256>>>(dh.as<T>(), dc.as<int>(), dw.as<T>(), S, d, eps,
                                                       normalize ? 1 : 0, out.as<float>(), d);
  EK_CUDA(cudaGetLastError());
  EK_CUDA(cudaDeviceSynchronize());
  std::vector<float> h(size_t(S) * d);
  EK_CUDA(cudaMemcpy(h.data(), out.p, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

#define EK_DISPATCH(p, fn, ...) ((p) == Precision::F16 ? fn<__half>(__VA_ARGS__) : fn<__nv_bfloat16>(__VA_ARGS__))

bool small_gemm_available() { return small_gemm_usable(); }
std::vector<float> small_gemm(const std::vector<float>& x, int T_, int n_in, const std::vector<float>& W,
                              const std::vector<float>& b, int n_out, int epilogue, const std::vector<float>& residual) {
  EK_CHECK(epilogue >= 0 && epilogue <= 2 && (epilogue != 2 || residual.size() == size_t(T_) * n_out));
  Buf dx = up<__half>(x), dw = up<__half>(W), db = up<__half>(b);
  Buf dy = epilogue == 2 ? up<__half>(residual) : poisoned<__half>(size_t(T_) * n_out);
  const auto e = epilogue == 0 ? SmallEpilogue::Bias : epilogue == 1 ? SmallEpilogue::BiasGelu : SmallEpilogue::BiasResidual;
  cuda::small_gemm(e, T_, n_out, n_in, dx.as<__half>(), dw.as<__half>(), db.as<__half>(), dy.as<__half>(),
                   dy.as<__half>(), 0, /*pdl=*/true);
  EK_CUDA(cudaGetLastError());
  return down<__half>(dy, size_t(T_) * n_out);
}
std::vector<float> linear(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W,
                          const std::vector<float>& b, int n_out, Precision p) {
  return EK_DISPATCH(p, linear_t, x, T, n_in, W, b, n_out, {}, false);
}
std::vector<float> linear_residual(const std::vector<float>& x, int T, int n_in, const std::vector<float>& W,
                                   const std::vector<float>& b, int n_out, const std::vector<float>& residual,
                                   bool in_place, Precision p) {
  EK_CHECK(residual.size() == size_t(T) * size_t(n_out));
  return EK_DISPATCH(p, linear_t, x, T, n_in, W, b, n_out, residual, in_place);
}
std::vector<float> gelu(const std::vector<float>& x, Precision p) { return EK_DISPATCH(p, gelu_t, x); }
std::vector<float> add_layernorm(const std::vector<float>& x, const std::vector<float>& hidden,
                                 const std::vector<float>& g, const std::vector<float>& b, int T, int d, float eps,
                                 Precision p, int pairs) {
  return EK_DISPATCH(p, add_ln_t, x, hidden, g, b, T, d, eps, pairs);
}
std::vector<float> embed_layernorm(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                                   const std::vector<int32_t>& pos, const std::vector<float>& word,
                                   const std::vector<float>& pos_emb, const std::vector<float>& type_emb,
                                   const std::vector<float>& g, const std::vector<float>& b, int d, float eps,
                                   Precision p, int pairs) {
  return EK_DISPATCH(p, embed_ln_t, ids, types, pos, word, pos_emb, type_emb, g, b, d, eps, pairs);
}
std::vector<float> attention(const std::vector<float>& qkv, const std::vector<int32_t>& cu_seqlens, int H, int dh,
                             bool causal, Precision p, bool q_prescaled) {
  return EK_DISPATCH(p, attention_t, qkv, cu_seqlens, H, dh, causal, q_prescaled);
}
std::vector<float> pool(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu_seqlens,
                        const PoolingConfig& c, const std::vector<int32_t>& skip, bool normalize, Precision p,
                        const std::vector<float>& ln_g, const std::vector<float>& ln_b, float eps) {
  return EK_DISPATCH(p, pool_t, hidden, d, cu_seqlens, c, skip, normalize, ln_g, ln_b, eps);
}

std::vector<float> add_rms_norm(const std::vector<float>& x, const std::vector<float>& hidden,
                                const std::vector<float>& w, int T, int d, float eps, Precision p,
                                std::vector<float>* sum_out) {
  EK_CHECK(d % 8 == 0 && hidden.size() == size_t(T) * d && (x.empty() || x.size() == hidden.size()));
  return EK_DISPATCH(p, add_rms_norm_t, x, hidden, w, T, d, eps, sum_out);
}
std::vector<float> qk_norm_rope(const std::vector<float>& qkv, const std::vector<int32_t>& positions,
                                const std::vector<float>& q_w, const std::vector<float>& k_w, int H, int KV, int dh,
                                float eps, double theta, Precision p) {
  EK_CHECK(qkv.size() == positions.size() * size_t(H + 2 * KV) * dh);
  return EK_DISPATCH(p, qk_norm_rope_t, qkv, positions, q_w, k_w, H, KV, dh, eps, theta);
}
std::vector<float> attention_gqa(const std::vector<float>& qkv, const std::vector<int32_t>& cu_seqlens, int H, int KV,
                                 int dh, bool causal, Precision p) {
  EK_CHECK(qkv.size() == size_t(cu_seqlens.back()) * size_t(H + 2 * KV) * dh);
  return EK_DISPATCH(p, attention_gqa_t, qkv, cu_seqlens, H, KV, dh, causal);
}
std::vector<float> silu_mul(const std::vector<float>& gate_up, int T, int I, Precision p) {
  EK_CHECK(I % 8 == 0 && gate_up.size() == size_t(T) * 2 * I);
  return EK_DISPATCH(p, silu_mul_t, gate_up, T, I);
}
std::vector<float> last_token_norm_pool(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu_seqlens,
                                        const std::vector<float>& w, float eps, bool normalize, Precision p) {
  EK_CHECK(d % 8 == 0 && hidden.size() == size_t(cu_seqlens.back()) * d);
  return EK_DISPATCH(p, last_token_norm_pool_t, hidden, d, cu_seqlens, w, eps, normalize);
}

namespace {
struct FloatBuf {  // fp32 device copy
  Buf b;
  explicit FloatBuf(const std::vector<float>& v) : b(v.size() * sizeof(float)) {
    EK_CUDA(cudaMemcpy(b.p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  float* p() { return b.as<float>(); }
};
}  // namespace

std::vector<float> folded_ln_linear(const std::vector<float>& x, int T_, int K, const std::vector<float>& W,
                                    const std::vector<float>& b, int N, const std::vector<float>& gamma,
                                    const std::vector<float>& beta, float eps, bool gelu) {
  std::vector<float> Wf, s, c;
  fold_layernorm_into_linear(W, b, gamma, beta, N, K, Wf, s, c);
  Buf dx = up<__half>(x), dW = up<__half>(Wf), out = poisoned<__half>(size_t(T_) * N);
  FloatBuf ds(s), dc(c), r(std::vector<float>(T_, NAN)), n(std::vector<float>(T_, NAN));
  launch_layernorm_stats<__half>(dx.as<__half>(), T_, K, eps, r.p(), n.p(), 0);
  ln_fold_gemm(gelu ? FoldKind::FoldGelu : FoldKind::Fold, T_, N, K, dx.as<__half>(), dW.as<__half>(), nullptr,
               out.as<__half>(), r.p(), n.p(), ds.p(), dc.p(), 0);
  EK_CUDA(cudaGetLastError());
  return down<__half>(out, size_t(T_) * N);
}

std::vector<float> folded_ln_residual(const std::vector<float>& a, int T_, int K, const std::vector<float>& W,
                                      const std::vector<float>& b, int N, const std::vector<float>& x,
                                      const std::vector<float>& gamma, const std::vector<float>& beta, float eps,
                                      bool stats) {
  std::vector<float> bb(static_cast<size_t>(N));
  for (int j = 0; j < N; ++j) bb[size_t(j)] = b[size_t(j)] + beta[size_t(j)];
  Buf da = up<__half>(a), dW = up<__half>(W), dx = up<__half>(x), out = poisoned<__half>(size_t(T_) * N);
  FloatBuf dg(gamma), dbb(bb), r(std::vector<float>(T_, NAN)), n(std::vector<float>(T_, NAN));
  launch_layernorm_stats<__half>(dx.as<__half>(), T_, N, eps, r.p(), n.p(), 0);
  FloatBuf sums(std::vector<float>(2 * size_t(T_), 0.f)), r2(std::vector<float>(T_, NAN)),
      n2(std::vector<float>(T_, NAN));
  ln_fold_gemm(stats ? FoldKind::LnResidualSums : FoldKind::LnResidual, T_, N, K, da.as<__half>(), dW.as<__half>(),
               dx.as<__half>(), out.as<__half>(), r.p(), n.p(), dg.p(), dbb.p(), 0, sums.p(), sums.p() + T_);
  EK_CUDA(cudaGetLastError());
  if (!stats) return down<__half>(out, size_t(T_) * N);
  launch_layernorm_stats_from_sums(sums.p(), sums.p() + T_, T_, N, eps, r2.p(), n2.p(), 0);
  EK_CUDA(cudaDeviceSynchronize());
  std::vector<float> rn(2 * size_t(T_));
  EK_CUDA(cudaMemcpy(rn.data(), r2.p(), size_t(T_) * sizeof(float), cudaMemcpyDeviceToHost));
  EK_CUDA(cudaMemcpy(rn.data() + T_, n2.p(), size_t(T_) * sizeof(float), cudaMemcpyDeviceToHost));
  return rn;
}

}  // namespace embedkit::cuda::testing
