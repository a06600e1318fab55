// Device kernels of decoder (Llama/Qwen-style) blocks for the CUDA backend, shared by the Qwen3
// encoder (qwen3_cuda.cu) and the op tests (testing.cu). T is __half or __nv_bfloat16; every
// reduction accumulates in fp32 and each output is rounded once. The fp32 CPU oracles are in
// src/ops/decoder_ops.{h,cpp}. Shapes: Tn tokens, d hidden, H query / KV key-value heads, dh head
// dim, I MLP width.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/kernels.cuh"

namespace embedkit::cuda {

// 8 elements (16 bytes) of T ↔ 8 floats.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&f)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const typename Pair<T>::type*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 v = Pair<T>::to_f2(h[j]);
    f[2 * j] = v.x;
    f[2 * j + 1] = v.y;
  }
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&f)[8]) {
  uint4 u;
  auto* h = reinterpret_cast<typename Pair<T>::type*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) h[j] = Pair<T>::from_f2(f[2 * j], f[2 * j + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}

// ------------------------------------------------------------------ embedding gather
// hidden[t] = E[ids[t]]: one warp per token, 16-byte copies (d % 8 == 0).
template <typename T>
__global__ void embed_gather_kernel(const int* __restrict__ ids, const T* __restrict__ E, int Tn, int d,
                                    T* __restrict__ hidden) {
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= Tn) return;
  const uint4* src = reinterpret_cast<const uint4*>(E + size_t(ids[t]) * d);
  uint4* dst = reinterpret_cast<uint4*>(hidden + size_t(t) * d);
  for (int i = lane; i < d / 8; i += 32) dst[i] = src[i];
}

// ------------------------------------------------------------------ (residual add +) RMSNorm
// transformers' Qwen3RMSNorm: out = w · h / sqrt(mean(h²) + eps), one warp per token, d % 8 == 0.
// With x: h = hidden + x is first written back to hidden (the residual stream, rounded to T as
// PyTorch's bf16 residual is) and normalized from that rounded value; without x, h = hidden.
// out may be hidden itself (each element is read and written by the same lane).
template <typename T>
__global__ void add_rmsnorm_kernel(const T* __restrict__ x, T* hidden, const T* __restrict__ w, T* out, int Tn,
                                   int d, float eps) {
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= Tn) return;
  T* hr = hidden + size_t(t) * d;
  const T* xr = x ? x + size_t(t) * d : nullptr;
  float ss = 0.f;
  for (int c = lane * 8; c < d; c += 256) {
    float h[8];
    load8(hr + c, h);
    if (xr) {
      float a[8];
      load8(xr + c, a);
#pragma unroll
      for (int j = 0; j < 8; ++j) h[j] += a[j];
      store8(hr + c, h);
      load8(hr + c, h);  // the rounded sum, as the residual stream holds it
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += h[j] * h[j];
  }
  const float inv = rsqrtf(warp_sum(ss) / float(d) + eps);
  T* orow = out + size_t(t) * d;
  for (int c = lane * 8; c < d; c += 256) {
    float h[8], g[8];
    load8(hr + c, h);
    load8(w + c, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) h[j] = g[j] * (h[j] * inv);
    store8(orow + c, h);
  }
}

template <typename T>
void launch_add_rmsnorm(const T* x, T* hidden, const T* w, T* out, int Tn, int d, float eps, cudaStream_t stream) {
  constexpr int kWarps = 8;
  add_rmsnorm_kernel<T><<<(Tn + kWarps - 1) / kWarps, 32 * kWarps, 0, stream>>>(x, hidden, w, out, Tn, d, eps);
}

// ------------------------------------------------------------------ q/k RMSNorm + RoPE, in place
// qkv[Tn, (H + 2KV)·dh] (q | k | v per token, head-major). For each token and each of its H query
// and KV key heads (one warp each): RMSNorm over the head's dh values with q_w / k_w [dh], then
// RoPE as transformers' apply_rotary_pos_emb with rotate_half: the pair (i, i + dh/2) rotates by
// pos·inv_freq[i]; cos/sin [positions, dh/2] fp32 (cpu::RopeTable). V is untouched. The result
// stays in qkv, the layout the attention kernel reads. dh even, dh ≤ 256.
template <typename T>
__global__ void qk_norm_rope_kernel(T* __restrict__ qkv, const int* __restrict__ positions, const T* __restrict__ q_w,
                                    const T* __restrict__ k_w, const float* __restrict__ cos_t,
                                    const float* __restrict__ sin_t, int Tn, int H, int KV, int dh, float eps) {
  constexpr int kMaxPairs = 4;  // half = dh/2 ≤ 128 → ≤ 4 pairs per lane
  const int heads = H + KV;
  const long long job = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (job >= (long long)Tn * heads) return;
  const int t = int(job / heads), hd = int(job % heads);
  const int half = dh / 2;
  T* v = qkv + size_t(t) * size_t(H + 2 * KV) * dh + size_t(hd) * dh;  // k heads follow the q heads
  const T* w = hd < H ? q_w : k_w;
  float x1[kMaxPairs], x2[kMaxPairs];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) {
    const int i = lane + 32 * k;
    x1[k] = x2[k] = 0.f;
    if (i < half) {
      x1[k] = to_f(v[i]);
      x2[k] = to_f(v[i + half]);
      ss += x1[k] * x1[k] + x2[k] * x2[k];
    }
  }
  const float inv = rsqrtf(warp_sum(ss) / float(dh) + eps);
  const float* c = cos_t + size_t(positions[t]) * half;
  const float* s = sin_t + size_t(positions[t]) * half;
#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) {
    const int i = lane + 32 * k;
    if (i < half) {
      const float a = to_f(w[i]) * (x1[k] * inv), b = to_f(w[i + half]) * (x2[k] * inv);
      v[i] = from_f<T>(a * c[i] - b * s[i]);         // x·cos + rotate_half(x)·sin, first half
      v[i + half] = from_f<T>(b * c[i] + a * s[i]);  // second half
    }
  }
}

// The same with 16-byte accesses: kLanes = dh/16 lanes per head (8 at dh 128), each holding 8 values
// of each half (x1 = v[i..i+7], x2 = v[half+i..]), 32/kLanes heads per warp. The scalar kernel
// above issues 2-byte loads, one warp per 256-byte head; this one took the RMSNorms + q/k pass of
// Qwen3-0.6B's long-512 workload from 29.2 to 22.1 ms (H100, 98k tokens). Used for dh 32…256.
// (Applying q's norm + RoPE inside the attention kernel's Q load instead was tried: the separate
// pass lost 8 ms, the attention gained 7–13 ms of dependent loads; dropped.)
template <typename T, int kLanes>
__global__ void qk_norm_rope_vec_kernel(T* __restrict__ qkv, const int* __restrict__ positions,
                                        const T* __restrict__ q_w, const T* __restrict__ k_w,
                                        const float* __restrict__ cos_t, const float* __restrict__ sin_t, int Tn, int H,
                                        int KV, float eps) {
  constexpr int dh = 16 * kLanes, half = dh / 2, kHeadsPerWarp = 32 / kLanes;
  const int heads = H + KV;
  const int lane = threadIdx.x % 32, sub = lane % kLanes;
  const long long job =
      ((long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * kHeadsPerWarp + lane / kLanes;
  const bool active = job < (long long)Tn * heads;  // inactive lanes still join the shuffles
  const int t = active ? int(job / heads) : 0, hd = active ? int(job % heads) : 0;
  T* v = qkv + size_t(t) * size_t(H + 2 * KV) * dh + size_t(hd) * dh + sub * 8;
  float x1[8] = {}, x2[8] = {};
  if (active) {
    load8(v, x1);
    load8(v + half, x2);
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) ss += x1[j] * x1[j] + x2[j] * x2[j];
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (!active) return;
  const float inv = rsqrtf(ss / float(dh) + eps);
  const T* w = (hd < H ? q_w : k_w) + sub * 8;
  float w1[8], w2[8];
  load8(w, w1);
  load8(w + half, w2);
  const size_t rope_off = size_t(positions[t]) * half + sub * 8;
  const float4* c4 = reinterpret_cast<const float4*>(cos_t + rope_off);
  const float4* s4 = reinterpret_cast<const float4*>(sin_t + rope_off);
  const float4 ca = c4[0], cb = c4[1], sa = s4[0], sb = s4[1];
  const float c[8] = {ca.x, ca.y, ca.z, ca.w, cb.x, cb.y, cb.z, cb.w};
  const float sn[8] = {sa.x, sa.y, sa.z, sa.w, sb.x, sb.y, sb.z, sb.w};
  float y1[8], y2[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float a = w1[j] * (x1[j] * inv), b = w2[j] * (x2[j] * inv);
    y1[j] = a * c[j] - b * sn[j];  // x·cos + rotate_half(x)·sin, first half
    y2[j] = b * c[j] + a * sn[j];  // second half
  }
  store8(v, y1);
  store8(v + half, y2);
}

template <typename T>
void launch_qk_norm_rope(T* qkv, const int* positions, const T* q_w, const T* k_w, const float* cos_t,
                         const float* sin_t, int Tn, int H, int KV, int dh, float eps, cudaStream_t stream) {
  constexpr int kWarps = 8;
  const long long jobs = (long long)Tn * (H + KV);
  auto vec = [&](auto lanes) {
    constexpr int kLanes = decltype(lanes)::value;
    const long long per_block = kWarps * (32 / kLanes);
    qk_norm_rope_vec_kernel<T, kLanes><<<unsigned((jobs + per_block - 1) / per_block), 32 * kWarps, 0, stream>>>(
        qkv, positions, q_w, k_w, cos_t, sin_t, Tn, H, KV, eps);
  };
  // EMBEDKIT_QK_SCALAR=1: the scalar kernel everywhere (for measuring).
  static const bool scalar = std::getenv("EMBEDKIT_QK_SCALAR") && std::string(std::getenv("EMBEDKIT_QK_SCALAR")) == "1";
  if (!scalar) {
    switch (dh) {
      case 32: return vec(std::integral_constant<int, 2>{});
      case 64: return vec(std::integral_constant<int, 4>{});
      case 128: return vec(std::integral_constant<int, 8>{});
      case 256: return vec(std::integral_constant<int, 16>{});
      default: break;
    }
  }
  qk_norm_rope_kernel<T><<<unsigned((jobs + kWarps - 1) / kWarps), 32 * kWarps, 0, stream>>>(
      qkv, positions, q_w, k_w, cos_t, sin_t, Tn, H, KV, dh, eps);
}

// ------------------------------------------------------------------ SwiGLU
// out[Tn, I] = silu(gate_up[:, :I]) · gate_up[:, I:]  (gate_up[Tn, 2I]), 8 elements a thread
// (I % 8 == 0). silu(g) = g / (1 + e^−g).
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int Tn, int I) {
  const int chunks = I / 8;
  const size_t n = size_t(Tn) * chunks;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const size_t t = e / chunks;
    const int c = int(e % chunks) * 8;
    float g[8], u[8];
    load8(gate_up + t * 2 * I + c, g);
    load8(gate_up + t * 2 * I + I + c, u);
#pragma unroll
    for (int j = 0; j < 8; ++j) g[j] = g[j] / (1.f + __expf(-g[j])) * u[j];
    store8(out + t * I + c, g);
  }
}

template <typename T>
void launch_silu_mul(const T* gate_up, T* out, int Tn, int I, cudaStream_t stream) {
  const size_t n = size_t(Tn) * (I / 8);
  const int blocks = int(std::min<size_t>((n + 255) / 256, 132 * 16));
  silu_mul_kernel<T><<<std::max(blocks, 1), 256, 0, stream>>>(gate_up, out, Tn, I);
}

// ------------------------------------------------------------------ final norm + last-token pooling
// out[s, :d] = RMSNorm(hidden[last token of s]) with w (the model's final norm), in fp32, then
// L2-normalized when `normalize`: the final norm runs on S rows instead of every token. One warp
// per sequence, d % 8 == 0.
template <typename T>
__global__ void last_token_norm_pool_kernel(const T* __restrict__ hidden, const int* __restrict__ cu_seqlens,
                                            const T* __restrict__ w, int S, int d, float eps, int normalize,
                                            float* __restrict__ out, int out_dim) {
  const int s = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (s >= S) return;
  const T* row = hidden + size_t(cu_seqlens[s + 1] - 1) * d;
  float ss = 0.f;
  for (int c = lane * 8; c < d; c += 256) {
    float h[8];
    load8(row + c, h);
#pragma unroll
    for (int j = 0; j < 8; ++j) ss += h[j] * h[j];
  }
  const float inv = rsqrtf(warp_sum(ss) / float(d) + eps);
  float* o = out + size_t(s) * out_dim;
  float ss2 = 0.f;
  for (int c = lane * 8; c < d; c += 256) {
    float h[8], g[8];
    load8(row + c, h);
    load8(w + c, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float y = g[j] * (h[j] * inv);
      o[c + j] = y;
      ss2 += y * y;
    }
  }
  if (!normalize) return;
  const float inv2 = 1.f / fmaxf(sqrtf(warp_sum(ss2)), 1e-12f);  // torch.nn.functional.normalize
  for (int c = lane * 8; c < d; c += 256)
#pragma unroll
    for (int j = 0; j < 8; ++j) o[c + j] *= inv2;
}

// ------------------------------------------------------------------ attention tiles (host)
// (sequence, first query row) pairs cut at `rows` query rows. Causal: tiles with the most keys
// (the last query rows of the longest sequences) first, so the long CTAs start early and the
// short ones fill the tail of the grid.
inline void make_attention_tiles(const int32_t* cu, int S, int rows, bool causal, std::vector<int2>& tiles) {
  tiles.clear();
  for (int s = 0; s < S; ++s)
    for (int q = 0; q < cu[s + 1] - cu[s]; q += rows) tiles.push_back({s, q});
  if (causal)
    std::stable_sort(tiles.begin(), tiles.end(), [](const int2& a, const int2& b) { return a.y > b.y; });
}

}  // namespace embedkit::cuda
