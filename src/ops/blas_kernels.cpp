#include "ops/blas_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string_view>

namespace embedkit {

std::string openblas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string openblas_core_override() {
  if (std::getenv("OPENBLAS_CORETYPE")) return "";
  // OpenBLAS's x86-64 kernel sets (driver/others/dynamic.c's names) that use AVX2 or AVX-512.
  static constexpr std::array<std::string_view, 6> kAvx2OrBetter = {"Haswell",   "Excavator",  "Zen",
                                                                   "SkylakeX", "Cooperlake", "SapphireRapids"};
  const std::string core = openblas_core();
  if (core.empty() || std::find(kAvx2OrBetter.begin(), kAvx2OrBetter.end(), core) != kAvx2OrBetter.end()) return "";
#if defined(__x86_64__)
  __builtin_cpu_init();  // reads CPUID and the OS's saved-state mask (XCR0), so AVX-512 means usable
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

}  // namespace embedkit
