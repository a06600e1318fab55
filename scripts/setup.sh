#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to an embedding: installs dependencies, builds
# EmbedKit, fetches the default model (all-MiniLM-L6-v2) and embeds a sample text.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build embedkit
scripts/fetch-default-model.sh
./build/embedkit info
./build/embedkit embed "EmbedKit turns text into embeddings." | cut -c1-160
echo "[setup] done: ./build/embedkit embed --help"
