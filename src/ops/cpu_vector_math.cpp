// Element-wise transcendental kernels (GELU, softmax exp), vectorised through glibc's libmvec
// (_ZGVeN16v_erff / expf: 16 lanes on AVX-512, <= 4 ulp). This file alone is compiled with
// -ffast-math so GCC may call libmvec; nothing here relies on inf/NaN semantics.
#include <cmath>
#include <cstdint>

namespace embedkit::cpu {

void gelu_erf_inplace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void gelu_tanh_inplace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }
}

void tanh_inplace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = tanhf(x[i]);
}

// row[0:n] ← softmax(row[0:n]) in place.
void softmax_inplace(float* row, int64_t n) {
  float mx = row[0];
#pragma omp simd reduction(max : mx)
  for (int64_t j = 1; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    row[j] = expf(row[j] - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
}

}  // namespace embedkit::cpu
