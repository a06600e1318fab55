#!/usr/bin/env bash
# Fetches CUTLASS 4.2's C++ headers (the nvidia-cutlass wheel from PyPI, unpacked: nothing is
# installed) into build-cutlass/cutlass_library/source/{include,tools/util/include}, where CMake
# looks for them (EMBEDKIT_CUTLASS_INCLUDE). Used by the folded-LayerNorm GEMMs of the CUDA backend
# (src/cuda/ln_fold_gemm.cu) and by the CUTLASS probes. Idempotent; ~6 MB download.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-cutlass
[ -f $dir/cutlass_library/source/include/cutlass/cutlass.h ] && exit 0
mkdir -p $dir
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest $dir "nvidia-cutlass==4.2.0.0"
unzip -q -o $dir/nvidia_cutlass-4.2.0.0-*.whl 'cutlass_library/source/include/*' \
  'cutlass_library/source/tools/util/include/*' -d $dir
echo "[fetch-cutlass] CUTLASS headers in $dir/cutlass_library/source"
