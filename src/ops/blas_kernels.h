// Which OpenBLAS kernels the CPU path runs, and the fix when OpenBLAS picked a generic set.
//
// Debian 12's OpenBLAS (0.3.21, DYNAMIC_ARCH) chooses its kernels from the CPU's family/model at
// load time. CPUs newer than the library (Emerald Rapids, model 207, for one) are unknown to it and
// get the "Prescott" kernels (SSE3): all-MiniLM-L6-v2 on 2 cores of such a VM ran at 1,896 tokens/s
// instead of ~7,000 (docs/benchmarks.md, "OpenBLAS kernels"). OpenBLAS reads OPENBLAS_CORETYPE once,
// when it loads, so the fix is an environment variable set before the process starts: the CLI sets
// it and re-executes itself (src/cli/main.cpp); a program linking the library gets a warning.
#pragma once
#include <string>

namespace embedkit {

// The kernel set OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", …).
std::string openblas_core();

// The OPENBLAS_CORETYPE to ask for when OpenBLAS fell back to kernels older than AVX2 on a CPU that
// runs AVX2+FMA ("Haswell") or AVX-512 F/BW/DQ/VL ("SkylakeX"); "" when its choice stands or the
// user already set OPENBLAS_CORETYPE. Cores it recognised are never second-guessed.
std::string openblas_core_override();

}  // namespace embedkit
