// Device kernels of the CUDA backend (shared by the encoder and the op tests).
// Element type T is __half or __nv_bfloat16; all reductions accumulate in fp32.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <string>

#include "util/error.h"

#define EK_CUDA(call)                                                                                     \
  do {                                                                                                    \
    cudaError_t err_ = (call);                                                                            \
    if (err_ != cudaSuccess)                                                                              \
      throw ::embedkit::Error(std::string("CUDA error: ") + cudaGetErrorString(err_) + " in " #call " at " \
                              __FILE__ ":" + std::to_string(__LINE__));                                   \
  } while (0)
#define EK_CUBLAS(call)                                                                                       \
  do {                                                                                                        \
    cublasStatus_t st_ = (call);                                                                              \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                         \
      throw ::embedkit::Error(std::string("cuBLASLt error ") + std::to_string(int(st_)) + " in " #call " at " \
                              __FILE__ ":" + std::to_string(__LINE__));                                       \
  } while (0)

namespace embedkit::cuda {

// ------------------------------------------------------------------ element types

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }


__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

constexpr int kMaxDPerLane = 32;  // d ≤ 1024 for the warp-per-row kernels

// ------------------------------------------------------------------ embeddings + LayerNorm
// One warp per token: hidden[t] = LN(word[id] + pos[p] + type[tt]).
template <typename T>
__global__ void embed_layernorm_kernel(const int* __restrict__ ids, const int* __restrict__ types,
                                       const int* __restrict__ pos, const T* __restrict__ word,
                                       const T* __restrict__ pos_emb, const T* __restrict__ type_emb,
                                       const T* __restrict__ g, const T* __restrict__ b, int T_, int d, int pos_off,
                                       float eps, T* __restrict__ out) {
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const T* w = word + size_t(ids[t]) * d;
  const T* p = pos_emb + size_t(pos[t] + pos_off) * d;
  const T* ty = type_emb ? type_emb + size_t(types[t]) * d : nullptr;
  float v[kMaxDPerLane];
  float sum = 0.f;
  const int per = d / 32;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      float x = to_f(w[i]) + to_f(p[i]) + (ty ? to_f(ty[i]) : 0.f);
      v[k] = x;
      sum += x;
    }
  }
  const float mean = warp_sum(sum) / float(d);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k)
    if (k < per) var += (v[k] - mean) * (v[k] - mean);
  const float inv = rsqrtf(warp_sum(var) / float(d) + eps);
  T* o = out + size_t(t) * d;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      o[i] = from_f<T>((v[k] - mean) * inv * to_f(g[i]) + to_f(b[i]));
    }
  }
}

// ------------------------------------------------------------------ residual add + LayerNorm
// hidden[t] = LN(x[t] + hidden[t]), one warp per token.
template <typename T>
__global__ void add_layernorm_kernel(const T* __restrict__ x, T* __restrict__ hidden, const T* __restrict__ g,
                                     const T* __restrict__ b, int T_, int d, float eps) {
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (t >= T_) return;
  const T* xr = x + size_t(t) * d;
  T* hr = hidden + size_t(t) * d;
  float v[kMaxDPerLane];
  float sum = 0.f;
  const int per = d / 32;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      v[k] = to_f(xr[i]) + to_f(hr[i]);
      sum += v[k];
    }
  }
  const float mean = warp_sum(sum) / float(d);
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k)
    if (k < per) var += (v[k] - mean) * (v[k] - mean);
  const float inv = rsqrtf(warp_sum(var) / float(d) + eps);
#pragma unroll
  for (int k = 0; k < kMaxDPerLane; ++k) {
    if (k < per) {
      const int i = lane + 32 * k;
      hr[i] = from_f<T>((v[k] - mean) * inv * to_f(g[i]) + to_f(b[i]));
    }
  }
}

// ------------------------------------------------------------------ GELU (exact, erf)
template <typename T>
__global__ void gelu_kernel(T* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = to_f(x[i]);
    x[i] = from_f<T>(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
  }
}

// ------------------------------------------------------------------ variable-length attention
// One CTA = 4 warps = a tile of 64 query rows of one (sequence, head); each warp owns 16 rows.
// K/V stream through shared memory 64 keys at a time; S = QKᵀ and O += PV on tensor cores
// (WMMA 16×16×16, fp32 accumulate); online softmax keeps running max/sum per row, so memory
// is O(tile) whatever the sequence length. tiles[i] = (sequence, first query row).
namespace wmma = nvcuda::wmma;
constexpr int kTile = 64, kWarps = 4;

template <typename T, int DH>
struct AttnSmem {
  static constexpr int ldt = DH + 8;        // T rows (16-byte pad against bank conflicts)
  static constexpr int lds = kTile + 4;     // float score rows
  static constexpr int ldp = kTile + 8;     // T prob rows
  static constexpr int ldo = DH + 4;        // float output rows
  static constexpr size_t bytes = sizeof(T) * (3 * kTile * ldt + kTile * ldp) + sizeof(float) * (kTile * lds + kTile * ldo + 3 * kTile);
};

template <typename T, int DH>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(const T* __restrict__ qkv,
                                                                const int* __restrict__ cu_seqlens,
                                                                const int2* __restrict__ tiles, int H,
                                                                float scale_log2, int causal, T* __restrict__ out) {
  using S = AttnSmem<T, DH>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Ks = Qs + kTile * S::ldt;
  T* Vs = Ks + kTile * S::ldt;
  T* Ps = Vs + kTile * S::ldt;
  float* Ss = reinterpret_cast<float*>(Ps + kTile * S::ldp);
  float* Os = Ss + kTile * S::lds;
  float* m_run = Os + kTile * S::ldo;
  float* l_run = m_run + kTile;
  float* alpha = l_run + kTile;

  const int2 tile = tiles[blockIdx.x];
  const int h = blockIdx.y;
  const int seq_start = cu_seqlens[tile.x], L = cu_seqlens[tile.x + 1] - seq_start, q0 = tile.y;
  const int d = H * DH, ld = 3 * d;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kVec = 8;  // T elements per 16-byte load
  constexpr int kVecPerRow = DH / kVec;

  // Q tile → smem (zeros past the end of the sequence); O, m, l initialised.
  for (int i = threadIdx.x; i < kTile * kVecPerRow; i += blockDim.x) {
    const int r = i / kVecPerRow, c = (i % kVecPerRow) * kVec;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (q0 + r < L) v = *reinterpret_cast<const uint4*>(qkv + size_t(seq_start + q0 + r) * ld + h * DH + c);
    *reinterpret_cast<uint4*>(Qs + r * S::ldt + c) = v;
  }
  for (int i = threadIdx.x; i < kTile * DH; i += blockDim.x) Os[(i / DH) * S::ldo + i % DH] = 0.f;
  for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
    m_run[i] = -INFINITY;
    l_run[i] = 0.f;
  }

  const int kv_end = causal ? min(L, q0 + kTile) : L;
  for (int k0 = 0; k0 < kv_end; k0 += kTile) {
    __syncthreads();  // previous tile's K/V no longer in use; Q/O init visible
    for (int i = threadIdx.x; i < kTile * kVecPerRow; i += blockDim.x) {
      const int r = i / kVecPerRow, c = (i % kVecPerRow) * kVec;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (k0 + r < L) {
        const T* base = qkv + size_t(seq_start + k0 + r) * ld + h * DH + c;
        kv = *reinterpret_cast<const uint4*>(base + d);
        vv = *reinterpret_cast<const uint4*>(base + 2 * d);
      }
      *reinterpret_cast<uint4*>(Ks + r * S::ldt + c) = kv;
      *reinterpret_cast<uint4*>(Vs + r * S::ldt + c) = vv;
    }
    __syncthreads();

    // S[16 rows of this warp, 64 keys] = Q_w · Kᵀ
    const int r0 = warp * 16;
    for (int n = 0; n < kTile / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int k = 0; k < DH / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bk;
        wmma::load_matrix_sync(a, Qs + r0 * S::ldt + k * 16, S::ldt);
        wmma::load_matrix_sync(bk, Ks + n * 16 * S::ldt + k * 16, S::ldt);
        wmma::mma_sync(acc, a, bk, acc);
      }
      wmma::store_matrix_sync(Ss + r0 * S::lds + n * 16, acc, S::lds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax over this key tile, one row at a time; each lane holds keys lane, lane+32.
    for (int r = r0; r < r0 + 16; ++r) {
      const int q = q0 + r;
      float s[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int key = k0 + lane + 32 * j;
        const bool valid = key < L && (!causal || key <= q);
        s[j] = valid ? Ss[r * S::lds + lane + 32 * j] * scale_log2 : -INFINITY;
      }
      const float m_old = m_run[r];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s[0], s[1])));
      float p[2], psum = 0.f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        p[j] = m_new == -INFINITY ? 0.f : exp2f(s[j] - m_new);
        psum += p[j];
        Ps[r * S::ldp + lane + 32 * j] = from_f<T>(p[j]);
      }
      psum = warp_sum(psum);
      if (lane == 0) {
        const float a = m_old == -INFINITY ? 0.f : exp2f(m_old - m_new);
        alpha[r] = a;
        l_run[r] = l_run[r] * a + psum;
        m_run[r] = m_new;
      }
    }
    __syncwarp();
    // Rescale this warp's O rows, then O += P · V on tensor cores.
    for (int i = lane; i < 16 * DH; i += 32) {
      const int r = r0 + i / DH;
      Os[r * S::ldo + i % DH] *= alpha[r];
    }
    __syncwarp();
#pragma unroll
    for (int j = 0; j < DH / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Os + r0 * S::ldo + j * 16, S::ldo, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kTile / 16; ++k) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bv;
        wmma::load_matrix_sync(a, Ps + r0 * S::ldp + k * 16, S::ldp);
        wmma::load_matrix_sync(bv, Vs + k * 16 * S::ldt + j * 16, S::ldt);
        wmma::mma_sync(acc, a, bv, acc);
      }
      wmma::store_matrix_sync(Os + r0 * S::ldo + j * 16, acc, S::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();
  // ctx[q, h*DH + c] = O / l
  for (int i = threadIdx.x; i < kTile * DH; i += blockDim.x) {
    const int r = i / DH, c = i % DH;
    if (q0 + r < L) {
      const float l = l_run[r];
      out[size_t(seq_start + q0 + r) * d + h * DH + c] = from_f<T>(l > 0.f ? Os[r * S::ldo + c] / l : 0.f);
    }
  }
}

// ------------------------------------------------------------------ pooling (+ normalize)
// One block per sequence; modes concatenated in sentence-transformers' order.
struct PoolModes {
  int cls, max, mean, mean_sqrt, weighted, last;
};

template <typename T>
__global__ void pool_kernel(const T* __restrict__ hidden, const int* __restrict__ cu_seqlens,
                            const int* __restrict__ skip, int d, PoolModes m, int normalize, float* __restrict__ out,
                            int out_dim) {
  const int s = blockIdx.x;
  const int t0 = cu_seqlens[s], t1 = cu_seqlens[s + 1];
  const int m0 = min(t1, t0 + (skip ? skip[s] : 0));
  const int n = t1 - m0;
  float* o = out + size_t(s) * out_dim;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    int off = 0;
    if (m.cls) { o[off + i] = to_f(hidden[size_t(t0) * d + i]); off += d; }
    if (m.max) {
      float mx = n > 0 ? -INFINITY : -1e9f;
      for (int t = m0; t < t1; ++t) mx = fmaxf(mx, to_f(hidden[size_t(t) * d + i]));
      o[off + i] = mx;
      off += d;
    }
    if (m.mean || m.mean_sqrt) {
      float sum = 0.f;
      for (int t = m0; t < t1; ++t) sum += to_f(hidden[size_t(t) * d + i]);
      const float cnt = fmaxf(float(n), 1e-9f);
      if (m.mean) { o[off + i] = sum / cnt; off += d; }
      if (m.mean_sqrt) { o[off + i] = sum / sqrtf(cnt); off += d; }
    }
    if (m.weighted) {
      float sum = 0.f, w = 0.f;
      for (int t = m0; t < t1; ++t) {
        const float wt = float(t - t0 + 1);
        sum += wt * to_f(hidden[size_t(t) * d + i]);
        w += wt;
      }
      o[off + i] = sum / fmaxf(w, 1e-9f);
      off += d;
    }
    if (m.last) { o[off + i] = to_f(hidden[size_t(t1 > t0 ? t1 - 1 : t0) * d + i]); off += d; }
  }
  if (!normalize) return;
  __syncthreads();
  __shared__ float partial[32];
  float ss = 0.f;
  for (int i = threadIdx.x; i < out_dim; i += blockDim.x) ss += o[i] * o[i];
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv = 1.f / fmaxf(sqrtf(partial[0]), 1e-12f);
  for (int i = threadIdx.x; i < out_dim; i += blockDim.x) o[i] *= inv;
}

}  // namespace embedkit::cuda
