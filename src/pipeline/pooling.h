// Pooling as sentence-transformers' models.Pooling defines it, on packed hidden states.
#pragma once
#include <cstdint>
#include <vector>

#include "loader/model_files.h"

namespace embedkit {

// hidden[T, d] with sequences at cu_seqlens[S+1] → out[S, d × n_modes], modes concatenated in
// sentence-transformers' order: cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken.
// skip[s] = leading tokens of sequence s excluded from pooling (prompt when include_prompt=false).
void pool(const float* hidden, int64_t d, const std::vector<int32_t>& cu_seqlens, const PoolingConfig& cfg,
          const std::vector<int32_t>& skip, float* out);
int64_t pooled_dim(int64_t d, const PoolingConfig& cfg);

}  // namespace embedkit
