#!/usr/bin/env bash
# Device probe: is the load generator or the server the limit for single-text requests? Starts
# `embedkit serve` (MiniLM-shaped random weights, CUDA) and offers the same total concurrency
# (1,024 then 256 connections) from 1, 2 and 4 client processes at once; prints the summed
# requests/s per split and the batcher executor's time breakdown (EMBEDKIT_BATCHER_PROFILE=1).
# Usage (device tool, carry .device, after scripts/build-device.sh): bash scripts/multi-client-probe.sh
source scripts/device-env.sh; M=/tmp/ek-models
[ -f $M/minilm/model.safetensors ] || python3 bench/make_random_model.py --preset minilm --tokenizer-from $D/tokenizer --out $M/minilm >/dev/null 2>&1
ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn)
EMBEDKIT_BATCHER_PROFILE=1 $D/bin/embedkit serve -m $M/minilm --device cuda --port 18081 --log-level warn --http-threads 8 > $OUT/srv.log 2>&1 &
spid=$!
for _ in $(seq 300); do curl -sf localhost:18081/health >/dev/null && break; sleep 0.1; done
for conc in 1024 256; do
for procs in 1 2 4; do
  c=$((conc/procs)); t0=$(date +%s.%N)
  for p in $(seq $procs); do
    timeout 60 $D/bin/embedkit bench latency --url http://127.0.0.1:18081 -m $M/minilm --corpus short --batch-size 1 --concurrency $c --iterations $((80000/procs)) --warmup 20 --no-local-tokens --no-progress -q --timeout 20 -o $OUT/m${conc}_${procs}_$p > /dev/null 2>&1 &
  done; wait $(jobs -p | grep -v $spid) 2>/dev/null
  python3 - $OUT $conc $procs <<'PY'
import json, sys, glob
out, conc, procs = sys.argv[1:]
rs = []; p50 = []
for f in glob.glob(f"{out}/m{conc}_{procs}_*/embedbench.json"):
    r = json.load(open(f))
    for s in r["scenarios"]:
        for l in s.get("remote_levels", []): rs.append(l["requests_per_s"]); p50.append(l["latency_ms"]["p50"])
print(f"c{conc} as {procs} client processes: total {sum(rs):.0f} req/s (per process {[round(x) for x in rs]}), p50 {[round(x,2) for x in p50]}")
PY
done; done
kill -TERM $spid; wait $spid; grep "batcher executor" $OUT/srv.log
