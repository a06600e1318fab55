// Op-level test entry points (see bert_cuda.h). Not on any hot path: simple, synchronous.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cuda/bert_cuda.h"
#include "cuda/kernels.cuh"

namespace embedkit::cuda::testing {
namespace {

template <typename T> T to_t(float v);
template <> __half to_t(float v) { return __float2half_rn(v); }
template <> __nv_bfloat16 to_t(float v) { return __float2bfloat16_rn(v); }
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
                            const std::vector<float>& b, int T_, int d, float eps) {
  Buf dx = up<T>(x.empty() ? std::vector<float>{0.f} : x), dh = up<T>(hidden), dg = up<T>(g), dbb = up<T>(b);
  launch_add_layernorm<T>(x.empty() ? nullptr : dx.as<T>(), dh.as<T>(), dg.as<T>(), dbb.as<T>(), T_, d, eps, 0);
  EK_CUDA(cudaGetLastError());
  return down<T>(dh, size_t(T_) * d);
}

template <typename T>
std::vector<float> embed_ln_t(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                              const std::vector<int32_t>& pos, const std::vector<float>& word,
                              const std::vector<float>& pos_emb, const std::vector<float>& type_emb,
                              const std::vector<float>& g, const std::vector<float>& b, int d, float eps) {
  const int T_ = int(ids.size());
  Buf di = up_int(ids), dt = up_int(types), dp = up_int(pos);
  Buf dw = up<T>(word), dpe = up<T>(pos_emb), dte = up<T>(type_emb), dg = up<T>(g), dbb = up<T>(b);
  Buf out = poisoned<T>(size_t(T_) * d);
  embed_layernorm_kernel<T><<<(T_ + 7) / 8, 256>>>(di.as<int>(), dt.as<int>(), dp.as<int>(), dw.as<T>(), dpe.as<T>(),
                                                   dte.as<T>(), dg.as<T>(), dbb.as<T>(), T_, d, 0, eps, out.as<T>());
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * d);
}

template <typename T>
std::vector<float> attention_t(const std::vector<float>& qkv, const std::vector<int32_t>& cu, int H, int dh,
                               bool causal) {
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
  launch_attention<T>(dh, rows, dq.as<T>(), dc.as<int>(), dt.as<int2>(), int(tiles.size()), H, causal, out.as<T>(), 0);
  EK_CUDA(cudaGetLastError());
  return down<T>(out, size_t(T_) * H * dh);
}

template <typename T>
std::vector<float> pool_t(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu,
                          const PoolingConfig& c, const std::vector<int32_t>& skip, bool normalize) {
  const int S = int(cu.size()) - 1;
  const int modes = int(c.cls) + int(c.max) + int(c.mean) + int(c.mean_sqrt_len) + int(c.weighted_mean) + int(c.last_token);
  Buf dh = up<T>(hidden), dc = up_int(cu), ds = up_int(skip.empty() ? std::vector<int32_t>{0} : skip);
  Buf out(size_t(S) * modes * d * sizeof(float));
  EK_CUDA(cudaMemset(out.p, 0xFF, size_t(S) * modes * d * sizeof(float)));
  PoolModes pm{c.cls, c.max, c.mean, c.mean_sqrt_len, c.weighted_mean, c.last_token};
  pool_kernel<T><<<S, 128>>>(dh.as<T>(), dc.as<int>(), skip.empty() ? nullptr : ds.as<int>(), d, pm, normalize ? 1 : 0,
                             out.as<float>(), modes * d);
  EK_CUDA(cudaGetLastError());
  EK_CUDA(cudaDeviceSynchronize());
  std::vector<float> h(size_t(S) * modes * d);
  EK_CUDA(cudaMemcpy(h.data(), out.p, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

#define EK_DISPATCH(p, fn, ...) ((p) == Precision::F16 ? fn<__half>(__VA_ARGS__) : fn<__nv_bfloat16>(__VA_ARGS__))

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
                                 Precision p) {
  return EK_DISPATCH(p, add_ln_t, x, hidden, g, b, T, d, eps);
}
std::vector<float> embed_layernorm(const std::vector<int32_t>& ids, const std::vector<int32_t>& types,
                                   const std::vector<int32_t>& pos, const std::vector<float>& word,
                                   const std::vector<float>& pos_emb, const std::vector<float>& type_emb,
                                   const std::vector<float>& g, const std::vector<float>& b, int d, float eps,
                                   Precision p) {
  return EK_DISPATCH(p, embed_ln_t, ids, types, pos, word, pos_emb, type_emb, g, b, d, eps);
}
std::vector<float> attention(const std::vector<float>& qkv, const std::vector<int32_t>& cu_seqlens, int H, int dh,
                             bool causal, Precision p) {
  return EK_DISPATCH(p, attention_t, qkv, cu_seqlens, H, dh, causal);
}
std::vector<float> pool(const std::vector<float>& hidden, int d, const std::vector<int32_t>& cu_seqlens,
                        const PoolingConfig& c, const std::vector<int32_t>& skip, bool normalize, Precision p) {
  return EK_DISPATCH(p, pool_t, hidden, d, cu_seqlens, c, skip, normalize);
}

}  // namespace embedkit::cuda::testing
