#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, embedkit_core instrumented too) and runs each
# for SECONDS (default 600) on a copy of its seed corpus, one target after the other.
#
#   scripts/fuzz.sh [SECONDS]     e.g. scripts/fuzz.sh 30 (the short run CI and scripts/test.sh use)
#
# Targets (tests/fuzz/): fuzz_safetensors   (bytes → parse_safetensors, every tensor's bytes read)
#                        fuzz_tokenizer_json (tokenizer.json text → Tokenizer::from_json → encode…)
#                        fuzz_http_request  (bytes → HTTP parser + route JSON parsers of the server)
# Seeds come from tests/fuzz/corpus/<name>/ and are copied into $EMBEDKIT_FUZZ_BUILD/fuzz/<name>/
# (default build-fuzz/); new corpus entries and crash artifacts go there, never into the repo.
# Environment: EMBEDKIT_FUZZ_BUILD (build dir), EMBEDKIT_FUZZ_FRESH=1 (drop the grown corpus first),
# EMBEDKIT_FUZZ_ARGS (extra libFuzzer flags).
# Prints one summary line per target; exits non-zero if any target crashed (or leaked, timed out,
# ran out of memory), naming the reproducer: "$build/fuzz_<name> <artifact>" replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS]  (seconds per target, default 600)" >&2
  exit 2
fi
build="${EMBEDKIT_FUZZ_BUILD:-build-fuzz}"
for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "[fuzz] $tool not found (scripts/install-deps.sh)" >&2; exit 2; }
done

echo "[fuzz] building fuzz targets in $build"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEMBEDKIT_FUZZ=ON \
  -DEMBEDKIT_TESTS=OFF -DEMBEDKIT_NATIVE=OFF -DEMBEDKIT_CUDA=off >/dev/null
ninja -C "$build" fuzz_safetensors fuzz_tokenizer_json fuzz_http_request >/dev/null

# name:max_len (bytes). Real headers are a few KiB; tokenizer.json seeds are a few KiB too, and
# 64 KiB leaves room for growth while keeping each run fast.
targets=("safetensors:16384" "tokenizer_json:65536" "http_request:65536")
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

status=0
summaries=()
for entry in "${targets[@]}"; do
  name="${entry%%:*}"
  max_len="${entry##*:}"
  bin="$build/fuzz_$name"
  work="$build/fuzz/$name"
  [ "${EMBEDKIT_FUZZ_FRESH:-0}" = 1 ] && rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  rm -f "$work/artifacts"/*
  cp -f tests/fuzz/corpus/"$name"/* "$work/corpus/"
  log="$work/fuzz.log"
  echo "[fuzz] fuzz_$name: ${secs}s, max_len $max_len, corpus $work/corpus (log $log)"
  rc=0
  # shellcheck disable=SC2086  # EMBEDKIT_FUZZ_ARGS is a list of flags
  "$bin" -max_total_time="$secs" -rss_limit_mb=4096 -max_len="$max_len" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" ${EMBEDKIT_FUZZ_ARGS:-} "$work/corpus" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")  # stopped early: last status line
  artifacts=$(find "$work/artifacts" -type f | sort)
  crashes=$(grep -c . <<<"$artifacts" || true)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    result="FAILED (exit $rc)"
    status=1
    echo "[fuzz] fuzz_$name failed; end of its log:" >&2
    grep -E 'ERROR|SUMMARY|runtime error|invariant|Test unit written|^ +#[0-9]+ ' "$log" | head -40 >&2 || true
    for a in $artifacts; do echo "[fuzz]   reproduce: $bin $a" >&2; done
  else
    result="ok"
  fi
  summaries+=("fuzz_$name: ${secs}s, ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, crashes ${crashes} — $result")
done

for s in "${summaries[@]}"; do echo "[fuzz] $s"; done
exit "$status"
