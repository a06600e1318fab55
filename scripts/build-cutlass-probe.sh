#!/usr/bin/env bash
# Builds bench/cutlass_gemm_probe.cu for sm_90a with CUTLASS's headers from the nvidia-cutlass
# wheel (PyPI; unpacked into build-cutlass/, nothing installed) and stages it in .device/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-cutlass
if [ ! -d $dir/cutlass_library/source/include ]; then
  mkdir -p $dir
  pip download --quiet --no-deps --dest $dir "nvidia-cutlass==4.2.0.0"
  unzip -q -o $dir/nvidia_cutlass-*.whl 'cutlass_library/source/include/*' 'cutlass_library/source/tools/util/include/*' -d $dir
fi
src=$dir/cutlass_library/source
nvcc -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -gencode arch=compute_90a,code=sm_90a \
  -I$src/include -I$src/tools/util/include -Isrc -Iinclude bench/cutlass_gemm_probe.cu -o $dir/cutlass_gemm_probe -lcublasLt
mkdir -p .device/bin && cp $dir/cutlass_gemm_probe .device/bin/
echo "built .device/bin/cutlass_gemm_probe"
