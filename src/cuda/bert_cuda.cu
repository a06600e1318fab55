// CUDA BERT encoder on packed batches (no padding anywhere).
//
// Per layer (T tokens, d hidden, I intermediate, H heads, dh = d/H):
//   qkv[T,3d]   = hidden · W_qkvᵀ + b          cuBLASLt, bias epilogue
//   ctx[T,d]    = varlen attention(qkv)         one kernel, tensor cores (WMMA), online softmax,
//                                               no [S,H,L,L] tensor in device memory
//   tmp[T,d]    = ctx · W_oᵀ + b                cuBLASLt, bias epilogue
//   hidden      = LN(tmp + hidden)              fused residual add + LayerNorm
//   inter[T,I]  = gelu(hidden · W_iᵀ + b)       cuBLASLt, bias epilogue + exact-erf GELU kernel
//   tmp[T,d]    = inter · W_o2ᵀ + b             cuBLASLt, bias epilogue
//   hidden      = LN(tmp + hidden)
// then segmented pooling (+ L2 normalize) → [S, pooled] fp32 → one copy to the host.
// Activations are stored in fp16/bf16; every reduction (GEMM, softmax, LayerNorm, pooling)
// accumulates in fp32, as PyTorch does for these dtypes.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "cuda/bert_cuda.h"
#include "util/error.h"

namespace embedkit::cuda {

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

bool available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why)
      *why = std::string("no usable CUDA device (is there an NVIDIA GPU and driver on this machine?): ") +
             cudaGetErrorString(e);
    cudaGetLastError();
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

namespace {

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

// ------------------------------------------------------------------ host helpers

template <typename T>
T* upload(const std::vector<float>& host, std::vector<void*>& owned);

template <>
__half* upload<__half>(const std::vector<float>& host, std::vector<void*>& owned) {
  std::vector<__half> tmp(host.size());
  for (size_t i = 0; i < host.size(); ++i) tmp[i] = __float2half_rn(host[i]);
  __half* d = nullptr;
  EK_CUDA(cudaMalloc(&d, tmp.size() * sizeof(__half)));
  owned.push_back(d);
  EK_CUDA(cudaMemcpy(d, tmp.data(), tmp.size() * sizeof(__half), cudaMemcpyHostToDevice));
  return d;
}

template <>
__nv_bfloat16* upload<__nv_bfloat16>(const std::vector<float>& host, std::vector<void*>& owned) {
  std::vector<__nv_bfloat16> tmp(host.size());
  for (size_t i = 0; i < host.size(); ++i) tmp[i] = __float2bfloat16_rn(host[i]);
  __nv_bfloat16* d = nullptr;
  EK_CUDA(cudaMalloc(&d, tmp.size() * sizeof(__nv_bfloat16)));
  owned.push_back(d);
  EK_CUDA(cudaMemcpy(d, tmp.data(), tmp.size() * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace

// ------------------------------------------------------------------ the encoder

struct BertEncoder::Impl {
  TransformerConfig cfg;
  Precision precision;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = 32u << 20;
  std::vector<void*> owned;  // device allocations of weights
  cudaEvent_t ev[5];
  PhaseTimes times;
  std::string name;

  struct LayerW {
    void *w_qkv, *b_qkv, *w_o, *b_o, *ln1_g, *ln1_b, *w_i, *b_i, *w_o2, *b_o2, *ln2_g, *ln2_b;
  };
  void *word = nullptr, *pos = nullptr, *type = nullptr, *emb_g = nullptr, *emb_b = nullptr;
  std::vector<LayerW> layers;

  // Workspace, sized for `capacity` tokens; grown (never shrunk) when a batch needs more.
  size_t capacity = 0, seq_capacity = 0;
  void *hidden = nullptr, *qkv = nullptr, *ctx = nullptr, *tmp = nullptr, *inter = nullptr;
  int* d_ints = nullptr;      // ids | types | positions | cu_seqlens | skip | tiles(int2)
  int* h_ints = nullptr;      // pinned staging of the same
  float* d_pooled = nullptr;
  float* h_pooled = nullptr;  // pinned
  size_t pooled_capacity = 0;

  std::map<std::tuple<int, int, int, int>, cublasLtMatmulAlgo_t> algo_cache;

  size_t elem() const { return 2; }

  template <typename T>
  void load(const BertWeights& w) {
    word = upload<T>(w.word_emb, owned);
    pos = upload<T>(w.pos_emb, owned);
    if (!w.type_emb.empty()) type = upload<T>(w.type_emb, owned);
    emb_g = upload<T>(w.emb_ln_g, owned);
    emb_b = upload<T>(w.emb_ln_b, owned);
    for (auto& L : w.layers) {
      LayerW d;
      d.w_qkv = upload<T>(L.w_qkv, owned);
      d.b_qkv = upload<T>(L.b_qkv, owned);
      d.w_o = upload<T>(L.w_attn_out, owned);
      d.b_o = upload<T>(L.b_attn_out, owned);
      d.ln1_g = upload<T>(L.ln1_g, owned);
      d.ln1_b = upload<T>(L.ln1_b, owned);
      d.w_i = upload<T>(L.w_inter, owned);
      d.b_i = upload<T>(L.b_inter, owned);
      d.w_o2 = upload<T>(L.w_out, owned);
      d.b_o2 = upload<T>(L.b_out, owned);
      d.ln2_g = upload<T>(L.ln2_g, owned);
      d.ln2_b = upload<T>(L.ln2_b, owned);
      layers.push_back(d);
    }
  }

  void ensure_capacity(size_t tokens, size_t seqs, size_t tiles, size_t pooled_floats) {
    if (tokens > capacity) {
      for (void* p : {hidden, qkv, ctx, tmp, inter})
        if (p) cudaFree(p);
      capacity = std::max(tokens, capacity * 2);
      const size_t d = size_t(cfg.hidden_size), I = size_t(cfg.intermediate_size);
      EK_CUDA(cudaMalloc(&hidden, capacity * d * elem()));
      EK_CUDA(cudaMalloc(&qkv, capacity * 3 * d * elem()));
      EK_CUDA(cudaMalloc(&ctx, capacity * d * elem()));
      EK_CUDA(cudaMalloc(&tmp, capacity * d * elem()));
      EK_CUDA(cudaMalloc(&inter, capacity * I * elem()));
    }
    const size_t ints = 3 * capacity + 2 * (seqs + 1) + 2 * tiles + 16;
    if (ints > seq_capacity) {
      if (d_ints) cudaFree(d_ints);
      if (h_ints) cudaFreeHost(h_ints);
      seq_capacity = std::max(ints, seq_capacity * 2);
      EK_CUDA(cudaMalloc(&d_ints, seq_capacity * sizeof(int)));
      EK_CUDA(cudaMallocHost(&h_ints, seq_capacity * sizeof(int)));
    }
    if (pooled_floats > pooled_capacity) {
      if (d_pooled) cudaFree(d_pooled);
      if (h_pooled) cudaFreeHost(h_pooled);
      pooled_capacity = std::max(pooled_floats, pooled_capacity * 2);
      EK_CUDA(cudaMalloc(&d_pooled, pooled_capacity * sizeof(float)));
      EK_CUDA(cudaMallocHost(&h_pooled, pooled_capacity * sizeof(float)));
    }
  }

  // y[T, n_out] = x[T, n_in] · W[n_out, n_in]ᵀ + bias, via cuBLASLt in column-major terms:
  // yᵀ[n_out, T] = op(Wᵀ as [n_in, n_out])ᵀ · xᵀ[n_in, T], bias along n_out (epilogue).
  void linear(const void* x, int T, int n_in, const void* W, const void* bias, int n_out, void* y) {
    const cudaDataType_t dt = precision == Precision::F16 ? CUDA_R_16F : CUDA_R_16BF;
    cublasLtMatmulDesc_t op;
    EK_CUBLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    EK_CUBLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasLtMatrixLayout_t la, lb, lc;
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&la, dt, n_in, n_out, n_in));
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&lb, dt, n_in, T, n_in));
    EK_CUBLAS(cublasLtMatrixLayoutCreate(&lc, dt, n_out, T, n_out));
    // Bucket T so the heuristic is asked once per shape class, not once per batch.
    int t_bucket = 1;
    while (t_bucket < T) t_bucket *= 2;
    auto key = std::make_tuple(n_in, n_out, t_bucket, int(dt));
    auto it = algo_cache.find(key);
    cublasLtMatmulAlgo_t algo;
    bool have_algo = false;
    if (it != algo_cache.end()) {
      algo = it->second;
      cublasLtMatmulHeuristicResult_t check;
      have_algo = cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &algo, &check) == CUBLAS_STATUS_SUCCESS;
    }
    if (!have_algo) {
      cublasLtMatmulPreference_t pref;
      EK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
      EK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &lt_workspace_bytes, sizeof lt_workspace_bytes));
      cublasLtMatmulHeuristicResult_t res;
      int found = 0;
      EK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &found));
      cublasLtMatmulPreferenceDestroy(pref);
      if (found == 0) throw Error("cuBLASLt found no algorithm for a " + std::to_string(T) + "x" +
                                  std::to_string(n_in) + "x" + std::to_string(n_out) + " GEMM");
      algo = res.algo;
      algo_cache[key] = algo;
    }
    const float one = 1.f, zero = 0.f;
    EK_CUBLAS(cublasLtMatmul(lt, op, &one, W, la, x, lb, &zero, y, lc, y, lc, &algo, lt_workspace,
                             lt_workspace_bytes, stream));
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
  }

  template <typename T>
  void run(const PackedBatch& b, const PoolingConfig& pc, const std::vector<int32_t>& skip, bool normalize,
           float* out) {
    const int Tn = int(b.tokens()), S = int(b.sequences());
    const int d = int(cfg.hidden_size), I = int(cfg.intermediate_size), H = int(cfg.num_heads), dh = d / H;
    // Query tiles of 64 rows per sequence.
    std::vector<int2> tiles;
    for (int s = 0; s < S; ++s)
      for (int q = 0; q < b.cu_seqlens[size_t(s) + 1] - b.cu_seqlens[size_t(s)]; q += kTile) tiles.push_back({s, q});
    const int modes = int(pc.cls) + int(pc.max) + int(pc.mean) + int(pc.mean_sqrt_len) + int(pc.weighted_mean) +
                      int(pc.last_token);
    const int out_dim = modes * d;
    ensure_capacity(size_t(Tn), size_t(S), tiles.size(), size_t(S) * size_t(out_dim));

    // Stage every integer input in one pinned buffer → one H2D copy.
    int* hp = h_ints;
    auto put = [&](const int32_t* src, size_t n) {
      int* at = hp;
      std::copy(src, src + n, hp);
      hp += n;
      return size_t(at - h_ints);
    };
    const size_t o_ids = put(b.ids.data(), b.ids.size());
    const size_t o_types = put(b.type_ids.data(), b.type_ids.size());
    const size_t o_pos = put(b.positions.data(), b.positions.size());
    const size_t o_cu = put(b.cu_seqlens.data(), b.cu_seqlens.size());
    const size_t o_skip = skip.empty() ? 0 : put(skip.data(), skip.size());
    if ((hp - h_ints) % 2) ++hp;  // int2 alignment
    const size_t o_tiles = size_t(hp - h_ints);
    std::copy(reinterpret_cast<const int*>(tiles.data()), reinterpret_cast<const int*>(tiles.data()) + 2 * tiles.size(), hp);
    hp += 2 * tiles.size();

    EK_CUDA(cudaEventRecord(ev[0], stream));
    EK_CUDA(cudaMemcpyAsync(d_ints, h_ints, size_t(hp - h_ints) * sizeof(int), cudaMemcpyHostToDevice, stream));
    EK_CUDA(cudaEventRecord(ev[1], stream));

    T* hid = static_cast<T*>(hidden);
    const int warps_per_block = 8;
    const dim3 row_grid((Tn + warps_per_block - 1) / warps_per_block), row_block(32 * warps_per_block);
    const float eps = float(cfg.layer_norm_eps);
    embed_layernorm_kernel<T><<<row_grid, row_block, 0, stream>>>(
        d_ints + o_ids, d_ints + o_types, d_ints + o_pos, static_cast<const T*>(word), static_cast<const T*>(pos),
        static_cast<const T*>(type), static_cast<const T*>(emb_g), static_cast<const T*>(emb_b), Tn, d,
        int(cfg.position_offset), eps, hid);
    const float scale_log2 = 1.4426950408889634f / std::sqrt(float(dh));
    for (auto& L : layers) {
      linear(hid, Tn, d, L.w_qkv, L.b_qkv, 3 * d, qkv);
      launch_attention<T>(dh, static_cast<const T*>(qkv), d_ints + o_cu,
                          reinterpret_cast<const int2*>(d_ints + o_tiles), int(tiles.size()), H, scale_log2,
                          static_cast<T*>(ctx));
      linear(ctx, Tn, d, L.w_o, L.b_o, d, tmp);
      add_layernorm_kernel<T><<<row_grid, row_block, 0, stream>>>(static_cast<const T*>(tmp), hid,
                                                                  static_cast<const T*>(L.ln1_g),
                                                                  static_cast<const T*>(L.ln1_b), Tn, d, eps);
      linear(hid, Tn, d, L.w_i, L.b_i, I, inter);
      const size_t n_inter = size_t(Tn) * size_t(I);
      gelu_kernel<T><<<int(std::min<size_t>((n_inter + 255) / 256, 132 * 16)), 256, 0, stream>>>(
          static_cast<T*>(inter), n_inter);
      linear(inter, Tn, I, L.w_o2, L.b_o2, d, tmp);
      add_layernorm_kernel<T><<<row_grid, row_block, 0, stream>>>(static_cast<const T*>(tmp), hid,
                                                                  static_cast<const T*>(L.ln2_g),
                                                                  static_cast<const T*>(L.ln2_b), Tn, d, eps);
    }
    EK_CUDA(cudaGetLastError());
    EK_CUDA(cudaEventRecord(ev[2], stream));
    PoolModes pm{pc.cls, pc.max, pc.mean, pc.mean_sqrt_len, pc.weighted_mean, pc.last_token};
    pool_kernel<T><<<S, 128, 0, stream>>>(hid, d_ints + o_cu, skip.empty() ? nullptr : d_ints + o_skip, d, pm,
                                          normalize ? 1 : 0, d_pooled, out_dim);
    EK_CUDA(cudaGetLastError());
    EK_CUDA(cudaEventRecord(ev[3], stream));
    EK_CUDA(cudaMemcpyAsync(h_pooled, d_pooled, size_t(S) * out_dim * sizeof(float), cudaMemcpyDeviceToHost, stream));
    EK_CUDA(cudaEventRecord(ev[4], stream));
    EK_CUDA(cudaStreamSynchronize(stream));
    std::copy(h_pooled, h_pooled + size_t(S) * out_dim, out);
    cudaEventElapsedTime(&times.h2d, ev[0], ev[1]);
    cudaEventElapsedTime(&times.forward, ev[1], ev[2]);
    cudaEventElapsedTime(&times.pool, ev[2], ev[3]);
    cudaEventElapsedTime(&times.d2h, ev[3], ev[4]);
  }

  template <typename T>
  void launch_attention(int dh, const T* q, const int* cu, const int2* tl, int n_tiles, int H, float scale_log2,
                        T* o) {
    const dim3 grid(n_tiles, H), block(kWarps * 32);
    switch (dh) {
      case 32: launch_attention_dh<T, 32>(grid, block, q, cu, tl, H, scale_log2, o); break;
      case 64: launch_attention_dh<T, 64>(grid, block, q, cu, tl, H, scale_log2, o); break;
      case 128: launch_attention_dh<T, 128>(grid, block, q, cu, tl, H, scale_log2, o); break;
      default: throw Error("CUDA attention: head dim " + std::to_string(dh) + " is not supported (32, 64, 128)");
    }
  }

  template <typename T, int DH>
  void launch_attention_dh(dim3 grid, dim3 block, const T* q, const int* cu, const int2* tl, int H,
                           float scale_log2, T* o) {
    const size_t smem = AttnSmem<T, DH>::bytes;
    static bool configured = false;
    if (!configured) {
      EK_CUDA(cudaFuncSetAttribute(attention_kernel<T, DH>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      configured = true;
    }
    attention_kernel<T, DH><<<grid, block, smem, stream>>>(q, cu, tl, H, scale_log2, 0, o);
  }
};

BertEncoder::BertEncoder(const TransformerConfig& cfg, const BertWeights& w, Precision p, size_t max_batch_tokens)
    : impl_(std::make_unique<Impl>()) {
  std::string why;
  if (!available(&why)) throw Error("--device cuda: " + why);
  if (cfg.hidden_size % 32 != 0 || cfg.hidden_size > 32 * kMaxDPerLane)
    throw Error("CUDA backend: hidden_size " + std::to_string(cfg.hidden_size) + " must be a multiple of 32 up to 1024");
  Impl& m = *impl_;
  m.cfg = cfg;
  m.precision = p;
  cudaDeviceProp prop{};
  EK_CUDA(cudaGetDeviceProperties(&prop, 0));
  m.name = prop.name;
  EK_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  EK_CUBLAS(cublasLtCreate(&m.lt));
  EK_CUDA(cudaMalloc(&m.lt_workspace, m.lt_workspace_bytes));
  for (auto& e : m.ev) EK_CUDA(cudaEventCreate(&e));
  if (p == Precision::F16) m.load<__half>(w);
  else m.load<__nv_bfloat16>(w);
  m.ensure_capacity(max_batch_tokens, 64, 64, 64 * 4 * size_t(cfg.hidden_size));
}

BertEncoder::~BertEncoder() {
  if (!impl_) return;
  Impl& m = *impl_;
  if (m.stream) cudaStreamSynchronize(m.stream);
  for (void* p : m.owned) cudaFree(p);
  for (void* p : {m.hidden, m.qkv, m.ctx, m.tmp, m.inter, static_cast<void*>(m.d_ints), static_cast<void*>(m.d_pooled),
                  m.lt_workspace})
    if (p) cudaFree(p);
  if (m.h_ints) cudaFreeHost(m.h_ints);
  if (m.h_pooled) cudaFreeHost(m.h_pooled);
  for (auto& e : m.ev) cudaEventDestroy(e);
  if (m.lt) cublasLtDestroy(m.lt);
  if (m.stream) cudaStreamDestroy(m.stream);
}

void BertEncoder::encode(const PackedBatch& batch, const PoolingConfig& pooling, const std::vector<int32_t>& skip,
                         bool normalize, float* out) {
  if (batch.tokens() == 0) return;
  if (impl_->precision == Precision::F16) impl_->run<__half>(batch, pooling, skip, normalize, out);
  else impl_->run<__nv_bfloat16>(batch, pooling, skip, normalize, out);
}

const PhaseTimes& BertEncoder::last_times() const { return impl_->times; }
std::string BertEncoder::device_name() const { return impl_->name; }

}  // namespace embedkit::cuda
