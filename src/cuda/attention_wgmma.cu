// FlashAttention on Hopper's asynchronous warpgroup MMA (wgmma, sm_90a only) for the encoders'
// long batches: head dims 32 and 64, bidirectional, packed variable-length sequences.
// Opt-in (EMBEDKIT_ATTN_WGMMA=1): on the H100 it is still slower than flash_attention_kernel
// (kernels.cuh, mma.sync) — long workload, attention ms MiniLM-L6 / BERT-base 30.5 / 125 vs
// 24.8 / 93 (docs/benchmarks.md, "wgmma attention"). Kept, tested against the CPU op, as the
// base for the FlashAttention-3 schedule it lacks (a producer warp and mbarriers instead of a
// CTA barrier per tile, two consumer warpgroups taking turns on the tensor cores).
//
// CTA: two warpgroups (256 threads), 128 query rows of one sequence — the mma.sync kernel's
// default tiles, so attention_tile_rows() is unchanged — for heads_per_cta heads in turn, their
// K/V tiles one stream so the next head's first copies overlap this head's last tiles. Warpgroup
// w owns rows 64w..64w+63, warp i of it 16 of those (the wgmma accumulator layout is, per warp,
// the mma.sync m16n8 C layout repeated over N/8 column blocks).
// Per key tile g: S(g+1) = Q·K(g+1)ᵀ and O += P(g)·V(g) are issued, then the softmax of S(g+1)
// runs while PV(g) is still on the tensor cores (FlashAttention-3's intra-warpgroup order, Shah
// et al. 2024, §3.2).
// Shared memory, all in 8×8 core-matrix order (no swizzle: element (r, c) of an R×DH tile at
// byte ((r/8)·(DH/8) + c/8)·128 + (r%8)·16 + (c%8)·2, each core matrix 128 contiguous bytes):
//   3 × Q [128 × DH] | STAGES × (K [KB × DH], V [KB × DH])
// S = Q·Kᵀ reads both K-major (the dh axis is contiguous); O += P·V takes P from registers
// (the S accumulator re-packed as the A fragment, as in the mma.sync kernel) and V transposed
// (its dh axis, wgmma's N, is contiguous: "MN-major").
// ptxas keeps wgmma asynchronous only under conditions it reports as C7514/C7511 otherwise
// (ptxas -v): no wait inside "if (more tiles)" around an issue (two straight-line bodies
// instead), no writes to an accumulator array between its wgmmas, registers to spare.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <utility>

#include "cuda/attention_wgmma.h"
#include "cuda/kernels.cuh"

namespace embedkit::cuda {
namespace {

template <typename T> struct Tag {};

// wgmma wrappers: D[64×N] (+)= A·B, fp32 accumulators d (N/2 per thread). ss: A and B from
// shared-memory descriptors, both K-major. rs_vt: A (4 registers: a 64×16 fp16/bf16 fragment)
// from registers, B transposed (MN-major), always accumulating. (Operand lists written out:
// inline PTX takes one operand per accumulator register.)
__device__ __forceinline__ void wgmma_ss_m64n64k16(Tag<__half>, float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_rs_m64n32k16_vt(Tag<__half>, float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
__device__ __forceinline__ void wgmma_rs_m64n64k16_vt(Tag<__half>, float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
__device__ __forceinline__ void wgmma_ss_m64n64k16(Tag<__nv_bfloat16>, float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_rs_m64n32k16_vt(Tag<__nv_bfloat16>, float (&d)[16], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
__device__ __forceinline__ void wgmma_rs_m64n64k16_vt(Tag<__nv_bfloat16>, float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

template <typename T, int N>
__device__ __forceinline__ void wgmma_qk(float (&d)[N / 2], uint64_t a, uint64_t b, int accumulate) {
  static_assert(N == 64, "64-key tiles");
  wgmma_ss_m64n64k16(Tag<T>{}, d, a, b, accumulate);
}
template <typename T, int N>
__device__ __forceinline__ void wgmma_pv(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b) {
  if constexpr (N == 32) wgmma_rs_m64n32k16_vt(Tag<T>{}, d, a, b);
  else wgmma_rs_m64n64k16_vt(Tag<T>{}, d, a, b);
}

// Shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): start address,
// leading- and stride-dimension byte offsets, all >> 4; layout type 0 (no swizzle) in bits 62–63.
// K-major: LBO = bytes between core matrices adjacent along K, SBO = along M/N.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFFu) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy writes (cp.async, st.shared) made visible to the async proxy that wgmma reads through.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins registers in program order around wgmma issue/wait: the compiler cannot see that an
// in-flight wgmma writes its accumulators, so reads must not move above the wait.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// Keeps A-fragment registers live until the wgmma reading them has retired: otherwise their last
// use is the issue, ptxas hands them to temporaries of the code that follows, and then has to
// wait for the whole wgmma pipeline before the first such temporary (no overlap left).
template <int N>
__device__ __forceinline__ void pin(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

template <typename T, int DH, int KB, int STAGES, int MIN_CTAS>
__global__ void __launch_bounds__(256, MIN_CTAS)
    wgmma_attention_kernel(const T* __restrict__ qkv, const int* __restrict__ cu_seqlens,
                           const int2* __restrict__ tiles, int H, int kv_heads, int heads_per_cta, float scale_log2,
                           T* __restrict__ out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  wait_prior_grid();  // may be launched with PDL (kernels.cuh)
  static_assert(DH == 32 || DH == 64, "head dim");
  static_assert(KB == 64, "key tile");
  static_assert(STAGES >= 3, "tile g+1 lands while tile g is read");
  constexpr int kRows = 128, kThreads = 256, kVecPerRow = DH / 8, kQBuffers = 3;
  constexpr uint32_t kGroupBytes = DH * 16;  // 8 rows of a tile: one row of core matrices
  constexpr uint32_t kQBytes = kRows * DH * 2, kTileBytes = KB * DH * 2, kStageBytes = 2 * kTileBytes;
  constexpr uint32_t kKVBase = kQBuffers * kQBytes;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  auto cm = [](int r, int c) -> uint32_t {  // byte offset of element (r, c) in a core-matrix tile
    return uint32_t(((r >> 3) * (DH / 8) + (c >> 3)) * 128 + (r & 7) * 16 + (c & 7) * 2);
  };

  // This CTA: query rows q0..q0+127 of one sequence, for heads h0 .. h0 + heads_per_cta − 1 one
  // after the other ("items"). Their K/V tiles form one stream, g = item · n_kv + tile, so the
  // copies of the next head's Q and first K/V tiles overlap this head's last tiles instead of
  // each CTA starting cold (a third of the stall samples of a one-head CTA were its start).
  const int2 tile = tiles[blockIdx.x];
  const int h0 = blockIdx.y * heads_per_cta;
  const int seq_start = cu_seqlens[tile.x], L = cu_seqlens[tile.x + 1] - seq_start, q0 = tile.y;
  const int d = H * DH, kv_d = kv_heads * DH, row_stride = d + 2 * kv_d, group = H / kv_heads;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4,
            c4 = lane % 4;
  const int wg_row0 = q0 + wg * 64;
  const bool wg_active = wg_row0 < L;  // warpgroup-uniform: wgmma needs all 128 threads
  const int n_kv = (L + KB - 1) / KB, n_stream = heads_per_cta * n_kv;

  // Chunk e (16 bytes) of a tile is row (e % 8) + 8·(e / (8·DH/8)), columns 8·((e / 8) % (DH/8)):
  // eight consecutive lanes fill one core matrix, 128 contiguous bytes (no bank conflicts), and a
  // warp still reads whole 64/128-byte rows.
  auto chunk_row = [](int e) { return (e & 7) + 8 * (e / (8 * kVecPerRow)); };
  auto chunk_col = [](int e) { return ((e >> 3) % kVecPerRow) * 8; };
  constexpr int kCopies = KB * kVecPerRow / kThreads, kRowStep = kThreads / kVecPerRow;
  constexpr int kQCopies = kRows * kVecPerRow / kThreads;
  static_assert(kCopies >= 1 && KB * kVecPerRow % kThreads == 0, "copy split");
  const int copy_r0 = chunk_row(threadIdx.x), copy_c0 = chunk_col(threadIdx.x);
  const T* seq_rows = qkv + size_t(seq_start) * row_stride + copy_c0;
  // Stream tile g → stage g % STAGES by cp.async, one commit group per call (empty past the end,
  // so the group arithmetic below holds to the last tile); rows past L are zero-filled. The first
  // tile of each item also brings that item's Q into Q buffer item % 3 (buffer item − 3's last
  // reader, S of its last tile, retired before this copy can be issued).
  // Called for g = 0, 1, 2, … in order: the loader keeps its own (item, tile) counters (no
  // integer division per tile: it costs MUFU.RCP, the exponentials' pipe).
  int ld_tile = 0, ld_stage = 0, ld_qbuf = 0, ld_head = h0;
  const T* ld_k_head = seq_rows + d + (h0 / group) * DH;
  auto issue_tile = [&](int gi) {
    if (gi < n_stream) {
      const int k0 = ld_tile * KB;
      unsigned char* stage = smem + kKVBase + ld_stage * kStageBytes;
#pragma unroll
      for (int j = 0; j < kCopies; ++j) {
        const int r = copy_r0 + j * kRowStep;
        const bool in = k0 + r < L;
        const T* kp = in ? ld_k_head + size_t(k0 + r) * row_stride : ld_k_head;
        cp_async_16(stage + cm(r, copy_c0), kp, in ? 16 : 0);
        cp_async_16(stage + kTileBytes + cm(r, copy_c0), kp + kv_d, in ? 16 : 0);
      }
      if (k0 == 0) {
        unsigned char* qb = smem + ld_qbuf * kQBytes;
        const T* q_head = seq_rows + ld_head * DH;
#pragma unroll
        for (int j = 0; j < kQCopies; ++j) {
          const int r = copy_r0 + j * kRowStep;
          const bool in = q0 + r < L;
          cp_async_16(qb + cm(r, copy_c0), in ? q_head + size_t(q0 + r) * row_stride : q_head, in ? 16 : 0);
        }
      }
      ld_stage = ld_stage + 1 == STAGES ? 0 : ld_stage + 1;
      if (++ld_tile == n_kv) {
        ld_tile = 0;
        ld_qbuf = ld_qbuf + 1 == kQBuffers ? 0 : ld_qbuf + 1;
        ++ld_head;
        ld_k_head = seq_rows + d + (ld_head / group) * DH;
      }
    }
    cp_async_commit();
  };
  // Tiles 0..STAGES−2 in flight before the loop; iteration g issues tile g + STAGES − 1 into the
  // stage of tile g − 1 (every warpgroup retired PV(g−1) before the barrier of iteration g).
#pragma unroll
  for (int i = 0; i < STAGES - 1; ++i) issue_tile(i);
  cp_async_wait<STAGES - 2>();  // tile 0 (and Q of item 0) landed
  fence_proxy_async();
  __syncthreads();

  // Descriptors; a k-step of 16 advances Q/K by two core matrices along dh (256 B) and V by two
  // 8-key groups (2 · kGroupBytes). V is the transposed (MN-major) operand: LBO between 8-key
  // groups, SBO between 8-column core matrices.
  auto desc_q = [&](int qbuf, int kk) {
    return smem_desc(sbase + qbuf * kQBytes + wg * 64 * DH * 2 + kk * 256, 128, kGroupBytes);
  };
  auto desc_k = [&](int st, int kk) {
    return smem_desc(sbase + kKVBase + st * kStageBytes + kk * 256, 128, kGroupBytes);
  };
  auto desc_v = [&](int st, int kk) {
    return smem_desc(sbase + kKVBase + st * kStageBytes + kTileBytes + kk * 2 * kGroupBytes, kGroupBytes, 128);
  };

  float o[DH / 2], s[KB / 2];
  uint32_t p[KB / 16][4];
  float m_run[2] = {-INFINITY, -INFINITY}, l_part[2] = {0.f, 0.f}, alpha[2] = {1.f, 1.f};
  bool rescale = false;
#pragma unroll
  for (int i = 0; i < DH / 2; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < KB / 2; ++i) s[i] = 0.f;

  // Online softmax of the S tile starting at key k0, in place (registers s: n8 block j holds
  // (row g, keys 8j+2c4, +1) in s[4j], s[4j+1] and row g+8 in s[4j+2], s[4j+3]). Sets alpha /
  // rescale for O, and leaves P = exp2(s·scale − m·scale) in s.
  auto softmax = [&](int k0) {
    if (k0 + KB > L) {  // only the tile past the end needs a mask
#pragma unroll
      for (int i = 0; i < KB / 2; ++i)
        if (k0 + (i / 4) * 8 + c4 * 2 + (i & 1) >= L) s[i] = -INFINITY;
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < KB / 8; ++j) {
      mx[0] = fmaxf(mx[0], fmaxf(s[4 * j], s[4 * j + 1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[4 * j + 2], s[4 * j + 3]));
    }
    rescale = rows_max_grew(mx, m_run, scale_log2);  // lazy rescaling (kernels.cuh)
    if (rescale) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float m_new = fmaxf(m_run[i], mx[i]);
        alpha[i] = m_run[i] == -INFINITY ? 0.f : fast_exp2((m_run[i] - m_new) * scale_log2);
        m_run[i] = m_new;
        l_part[i] *= alpha[i];
      }
    }
    float neg_m[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) neg_m[i] = m_run[i] == -INFINITY ? 0.f : -m_run[i] * scale_log2;
#pragma unroll
    for (int i = 0; i < KB / 2; ++i) {
      s[i] = fast_exp2(fmaf(s[i], scale_log2, neg_m[(i >> 1) & 1]));
      l_part[(i >> 1) & 1] += s[i];
    }
  };
  // P as the A fragments of O += P·V: k-step kk covers n8 blocks 2kk, 2kk+1.
  auto pack_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < KB / 16; ++kk) {
      p[kk][0] = MmaOps<T>::pack(s[8 * kk + 0], s[8 * kk + 1]);
      p[kk][1] = MmaOps<T>::pack(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = MmaOps<T>::pack(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = MmaOps<T>::pack(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };
  auto rescale_o = [&]() {
    if (rescale) {
#pragma unroll
      for (int i = 0; i < DH / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
    }
  };
  auto issue_s = [&](int qbuf, int st) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DH / 16; ++kk) wgmma_qk<T, KB>(s, desc_q(qbuf, kk), desc_k(st, kk), kk);
    wgmma_commit();
  };
  auto issue_pv = [&](int st) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < KB / 16; ++kk) wgmma_pv<T, DH>(o, p[kk], desc_v(st, kk));
    wgmma_commit();
  };
  // O / l of item `item` straight from registers: rows g and g+8 of this warp's 16, columns
  // 8j + 2c4 (4-byte stores; a quad writes 16 contiguous bytes of a row).
  auto store_o = [&](int item, const float (&l)[2]) {
    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float t = l[i];
      t += __shfl_xor_sync(0xffffffffu, t, 1);
      t += __shfl_xor_sync(0xffffffffu, t, 2);
      inv[i] = t > 0.f ? 1.f / t : 0.f;
    }
    const int qa = wg_row0 + warp * 16 + g, qb = qa + 8, hq = h0 + item;
    T* row_a = out + size_t(seq_start + qa) * d + hq * DH + c4 * 2;
    T* row_b = row_a + size_t(8) * d;
#pragma unroll
    for (int j = 0; j < DH / 8; ++j) {
      if (qa < L) *reinterpret_cast<uint32_t*>(row_a + j * 8) = MmaOps<T>::pack(o[4 * j] * inv[0], o[4 * j + 1] * inv[0]);
      if (qb < L)
        *reinterpret_cast<uint32_t*>(row_b + j * 8) = MmaOps<T>::pack(o[4 * j + 2] * inv[1], o[4 * j + 3] * inv[1]);
    }
  };

  if (wg_active) {  // S(0) and its softmax
    issue_s(0, 0);
    wgmma_wait<0>();
    pin(s);
    softmax(0);
    pack_p();
  }

  // Iteration g: S(g+1) = Q·K(g+1)ᵀ and O += P(g)·V(g) on the tensor cores while the softmax of
  // S(g+1) waits only for the first (FlashAttention-3's order: O is rescaled while S(g+1) runs).
  // Two straight-line bodies (last tile of the stream / others): ptxas keeps wgmma asynchronous
  // only when each wait's retired group is evident.
  // (item, tile, stage, Q buffer) of stream tile g, advanced without divisions.
  int item = 0, tile_i = 0, stage = 0, qbuf = 0;
  for (int gi = 0; gi < n_stream; ++gi) {
    cp_async_wait<STAGES - 3>();  // tile g+1 landed
    fence_proxy_async();
    __syncthreads();  // … for every thread; and every warpgroup retired PV(g−1)
    issue_tile(gi + STAGES - 1);
    const bool item_ends = tile_i == n_kv - 1;
    const int next_stage = stage + 1 == STAGES ? 0 : stage + 1;
    const int next_qbuf = item_ends ? (qbuf + 1 == kQBuffers ? 0 : qbuf + 1) : qbuf;
    if (wg_active) {
      if (gi + 1 < n_stream) {
        issue_s(next_qbuf, next_stage);
        rescale_o();
        issue_pv(stage);
        wgmma_wait<1>();  // S(g+1) retired; PV(g) may run on
        pin(s);
        float l_done[2] = {l_part[0], l_part[1]};
        if (item_ends) {  // S(g+1) is the next head's first tile: a fresh softmax
          m_run[0] = m_run[1] = -INFINITY;
          l_part[0] = l_part[1] = 0.f;
        }
        softmax(item_ends ? 0 : (tile_i + 1) * KB);
        pin(s);
        pin(l_part);
        // ptxas hoists a wgmma wait to the top of its basic block, which would put this one
        // before the exponentials and leave nothing to overlap PV(g) with. A branch that
        // depends on every exponential (never taken: a sum of exponentials is not negative)
        // ends the block after them.
        if (__any_sync(0xffffffffu, l_part[0] + l_part[1] < 0.f)) __trap();
        wgmma_wait<0>();
        pin(o);
        pin(p);
        // The next head's first softmax found m = −inf: alpha = 0 clears O before its first PV.
        if (item_ends) store_o(item, l_done);
        pack_p();
      } else {
        rescale_o();
        issue_pv(stage);
        wgmma_wait<0>();
        pin(o);
        pin(p);
        store_o(item, l_part);
      }
    }
    stage = next_stage;
    qbuf = next_qbuf;
    if (item_ends) tile_i = 0, ++item;
    else ++tile_i;
  }
  cp_async_wait<0>();  // no copy may still target shared memory when the CTA exits
#else
  __trap();  // built for sm_90a only; the host never launches it elsewhere
#endif
}

// Launch shapes (keys per tile, K/V stages, CTAs per SM for the register cap); index 0 is the
// default, EMBEDKIT_WGMMA_SHAPE=i picks another (for measuring).
template <int KB_, int STAGES_, int MIN_CTAS_>
struct WgmmaShape {
  static constexpr int KB = KB_, STAGES = STAGES_, MIN_CTAS = MIN_CTAS_;
};
using WgmmaShapes = std::tuple<WgmmaShape<64, 3, 2>, WgmmaShape<64, 4, 2>, WgmmaShape<64, 3, 1>>;
constexpr int kWgmmaShapes = int(std::tuple_size_v<WgmmaShapes>);

// Heads one CTA runs back to back (a divisor of H): EMBEDKIT_WGMMA_HEADS, else the largest of 4, 3, 2, 1.
int heads_per_cta(int H) {
  static const int wanted = [] {
    const char* e = std::getenv("EMBEDKIT_WGMMA_HEADS");
    return e ? std::max(1, std::atoi(e)) : 4;
  }();
  for (int k = wanted; k > 1; --k)
    if (H % k == 0) return k;
  return 1;
}
template <typename T, int DH, typename S>
void launch_shape(const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H, int KV, float scale_log2, T* out,
                  cudaStream_t stream) {
  constexpr size_t smem = size_t(3 * 128 * DH * 2) + size_t(S::STAGES) * 2 * S::KB * DH * 2;
  auto kernel = wgmma_attention_kernel<T, DH, S::KB, S::STAGES, S::MIN_CTAS>;
  static bool configured = false;  // per instantiation; one device per process
  if (!configured) {
    EK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  const int hpc = heads_per_cta(H);
  launch_kernel(kernel, dim3(n_tiles, H / hpc), dim3(256), smem, stream, qkv, cu, tiles, H, KV, hpc, scale_log2, out);
}
template <typename T, int DH, size_t... I>
void launch_dh(int shape, std::index_sequence<I...>, const T* qkv, const int* cu, const int2* tiles, int n_tiles,
               int H, int KV, float scale_log2, T* out, cudaStream_t stream) {
  ((int(I) == shape ? (launch_shape<T, DH, std::tuple_element_t<I, WgmmaShapes>>(qkv, cu, tiles, n_tiles, H, KV,
                                                                                 scale_log2, out, stream),
                       0)
                    : 0),
   ...);
}
int selected_shape() {
  static const int chosen = shape_from_env("EMBEDKIT_WGMMA_SHAPE", 0, kWgmmaShapes);
  return chosen;
}

}  // namespace

bool wgmma_attention_loadable() {
  cudaFuncAttributes a{};
  return cudaFuncGetAttributes(&a, wgmma_attention_kernel<__half, 64, 64, 3, 2>) == cudaSuccess;
}

template <typename T>
void launch_attention_wgmma(int dh, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H, int KV,
                            float scale_log2, T* out, cudaStream_t stream) {
  const auto all = std::make_index_sequence<kWgmmaShapes>();
  if (dh == 32) launch_dh<T, 32>(selected_shape(), all, qkv, cu, tiles, n_tiles, H, KV, scale_log2, out, stream);
  else if (dh == 64) launch_dh<T, 64>(selected_shape(), all, qkv, cu, tiles, n_tiles, H, KV, scale_log2, out, stream);
  else throw Error("wgmma attention: head dim " + std::to_string(dh) + " (32 or 64)");
}
template void launch_attention_wgmma<__half>(int, const __half*, const int*, const int2*, int, int, int, float, __half*,
                                             cudaStream_t);
template void launch_attention_wgmma<__nv_bfloat16>(int, const __nv_bfloat16*, const int*, const int2*, int, int, int,
                                                    float, __nv_bfloat16*, cudaStream_t);

}  // namespace embedkit::cuda
