#include "pipeline/pooling.h"

#include <algorithm>
#include <cmath>

namespace embedkit {

int64_t pooled_dim(int64_t d, const PoolingConfig& c) {
  return d * (int(c.cls) + int(c.max) + int(c.mean) + int(c.mean_sqrt_len) + int(c.weighted_mean) + int(c.last_token));
}

void pool(const float* hidden, int64_t d, const std::vector<int32_t>& cu, const PoolingConfig& c,
          const std::vector<int32_t>& skip, float* out) {
  const int64_t S = int64_t(cu.size()) - 1, od = pooled_dim(d, c);
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < S; ++s) {
    const int64_t t0 = cu[size_t(s)], t1 = cu[size_t(s) + 1];
    // Tokens that count (attention mask = 1, prompt masked out when include_prompt is false).
    const int64_t m0 = std::min<int64_t>(t1, t0 + (skip.empty() ? 0 : skip[size_t(s)]));
    const int64_t n = t1 - m0;
    float* o = out + s * od;
    if (c.cls) {  // first token of the sequence (ST takes token 0 regardless of the mask)
      std::copy(hidden + t0 * d, hidden + t0 * d + d, o);
      o += d;
    }
    if (c.max) {  // masked positions are set to -1e9 in ST, so an all-masked sequence gives -1e9
      for (int64_t i = 0; i < d; ++i) o[i] = n > 0 ? -INFINITY : -1e9f;
      for (int64_t t = m0; t < t1; ++t)
        for (int64_t i = 0; i < d; ++i) o[i] = std::max(o[i], hidden[t * d + i]);
      o += d;
    }
    if (c.mean || c.mean_sqrt_len) {
      std::vector<float> sum(size_t(d), 0.f);
      for (int64_t t = m0; t < t1; ++t)
        for (int64_t i = 0; i < d; ++i) sum[size_t(i)] += hidden[t * d + i];
      const float cnt = std::max(float(n), 1e-9f);  // torch.clamp(sum_mask, min=1e-9)
      if (c.mean) {
        for (int64_t i = 0; i < d; ++i) o[i] = sum[size_t(i)] / cnt;
        o += d;
      }
      if (c.mean_sqrt_len) {
        const float r = std::sqrt(cnt);
        for (int64_t i = 0; i < d; ++i) o[i] = sum[size_t(i)] / r;
        o += d;
      }
    }
    if (c.weighted_mean) {  // weights 1..L by position in the (padded) sequence
      std::vector<float> sum(size_t(d), 0.f);
      float wsum = 0.f;
      for (int64_t t = m0; t < t1; ++t) {
        const float w = float(t - t0 + 1);
        wsum += w;
        for (int64_t i = 0; i < d; ++i) sum[size_t(i)] += w * hidden[t * d + i];
      }
      wsum = std::max(wsum, 1e-9f);
      for (int64_t i = 0; i < d; ++i) o[i] = sum[size_t(i)] / wsum;
      o += d;
    }
    if (c.last_token) {
      const int64_t t = t1 > t0 ? t1 - 1 : t0;
      std::copy(hidden + t * d, hidden + t * d + d, o);
      o += d;
    }
  }
}

}  // namespace embedkit
