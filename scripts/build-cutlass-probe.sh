#!/usr/bin/env bash
# Builds the CUTLASS probes (bench/cutlass_*_probe.cu) for sm_90a with CUTLASS's headers from the nvidia-cutlass
# wheel (PyPI; unpacked into build-cutlass/, nothing installed) and stages it in .device/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-cutlass
scripts/fetch-cutlass.sh
src=$dir/cutlass_library/source
# Which probes (default both): cutlass_gemm_probe (GEMM epilogues vs cuBLASLt), cutlass_ln_fold_probe
# (LayerNorms folded into the GEMMs around them).
for probe in ${*:-cutlass_gemm_probe cutlass_ln_fold_probe}; do
  nvcc -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -gencode arch=compute_90a,code=sm_90a \
    -I$src/include -I$src/tools/util/include -Isrc -Iinclude bench/$probe.cu -o $dir/$probe -lcublasLt
  mkdir -p .device/bin && cp $dir/$probe .device/bin/
  echo "built .device/bin/$probe"
done
