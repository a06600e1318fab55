// Hopper (sm_90a) wgmma attention for the encoders' long batches; see attention_wgmma.cu.
// Compiled only for sm_90a: callers check wgmma_attention_loadable() and the device's compute
// capability (9.0) before launching.
#pragma once
#include <cuda_runtime.h>

namespace embedkit::cuda {

// Query rows per CTA (two warpgroups × 64): equal to the mma.sync kernel's default long shape.
constexpr int kWgmmaAttentionRows = 128;

// True when this binary holds a kernel image the current device can run.
bool wgmma_attention_loadable();

// ctx[T, H*dh] = bidirectional attention over qkv[T, (H + 2*KV)*dh], dh 32 or 64; `tiles` are
// (sequence, first query row) pairs cut every kWgmmaAttentionRows rows.
template <typename T>
void launch_attention_wgmma(int dh, const T* qkv, const int* cu, const int2* tiles, int n_tiles, int H, int KV,
                            float scale_log2, T* out, cudaStream_t stream);

}  // namespace embedkit::cuda
