#!/usr/bin/env bash
# Builds EmbedKit and runs the whole test suite: C++ unit tests (ctest), a short fuzz smoke run,
# and the integration tests against independent references (pytest: HF tokenizers parity,
# sentence-transformers golden embeddings, bad input). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEMBEDKIT_TESTS=ON >/dev/null
ninja -C build
scripts/fetch-default-model.sh
(cd build && ctest --output-on-failure)
if [ -x scripts/fuzz.sh ]; then scripts/fuzz.sh "${EMBEDKIT_FUZZ_SECONDS:-20}"; fi
python3 -m pytest -q tests/integration
