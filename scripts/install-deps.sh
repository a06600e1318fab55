#!/usr/bin/env bash
# Installs everything EmbedKit needs on Debian 12: build tools and libraries (apt), and the
# Python packages the tests use as independent references (pip). Idempotent.
#   scripts/install-deps.sh           build + test dependencies
#   scripts/install-deps.sh --bench   also onnxruntime/torch-free bench peers
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

pkgs=(build-essential cmake ninja-build clang libclang-rt-14-dev pkg-config
      libopenblas-openmp-dev libutf8proc-dev libpcre2-dev libsimdjson-dev libcli11-dev libboost1.81-dev
      libgtest-dev libbenchmark-dev gettext python3 python3-pip unzip)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

here=$(cd "$(dirname "$0")/.." && pwd)
PIP="python3 -m pip"
$PIP --version >/dev/null 2>&1 || { echo "pip for python3 is missing" >&2; exit 1; }
# --break-system-packages only matters for Debian's own python3; harmless elsewhere.
pipflags=(-q --disable-pip-version-check)
if $PIP install --help 2>/dev/null | grep -q break-system-packages; then pipflags+=(--break-system-packages); fi
$PIP install "${pipflags[@]}" -r "$here/tools/requirements-test.txt"
# CUTLASS headers for the CUDA backend's folded-LayerNorm GEMMs (only where nvcc exists).
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then "$here/scripts/fetch-cutlass.sh"; fi
if [ "${1:-}" = "--bench" ]; then
  $PIP install "${pipflags[@]}" onnxruntime
fi
echo "[install-deps] done"
