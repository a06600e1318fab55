#!/usr/bin/env bash
# GPU checks and benchmarks in one device call. Build here first with scripts/build-device.sh,
# which fills .device/ (binaries for sm_90, their shared libraries, tokenizer files); then:
#   device run (carry .device):  bash scripts/gpu-check.sh [checks] [bench-minilm] [bench-bge] [torch]
#   Qwen3 (issue 5):              bash scripts/gpu-check.sh qwen3-checks     (op tests + e2e parity, ~5 min)
#                                 bash scripts/gpu-check.sh qwen3-torch      (speed vs PyTorch, ~4-5 min)
#                                 bash scripts/gpu-check.sh qwen3-profile    (per-op ms per workload, ~1 min)
#   pipelined vs synchronous batches and the LayerNorm load widths, long workload (~3 min):
#                                bash scripts/gpu-check.sh checks pipeline
#   server under load, wrk (~2 min a round): bash scripts/gpu-check.sh serve-wrk   (SERVE_ROUNDS, SERVE_BIN, SERVE_VARIANTS…)
#   nothing lost under load (~3.5 min): bash scripts/gpu-check.sh serve-soak   (256 clients × 60 s, 1,024, SIGTERM)
#   small batches side by side on the device (~1 min): bash scripts/gpu-check.sh small-batches
#   one small batch's device pass, PDL and zero-copy on/off (~1 min): bash scripts/gpu-check.sh small-pass
#   each kernel of a small batch's pass timed by ncu (~1 min): bash scripts/gpu-check.sh kernel-times
# Prints a short summary last; full logs go to $OUT.
set -uo pipefail
source "$(dirname "$0")/device-env.sh"
export PYTHONUNBUFFERED=1
stages=${*:-checks bench-minilm}
summary=()
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
M=/tmp/ek-models
mkdir -p $M
case " $stages " in
  *" checks "*|*" small-pass "*|*" small-batches "*|*" kernel-times "*|*" bench-"*|*" profile-"*|*" sweep-"*|*" e2e-cli "*|*" embedbench "*|*" serve "*|*" serve-soak "*|*" serve-wrk "*|*" torch-"*|*" ab "*)
    [ -f $M/minilm/model.safetensors ] || python3 bench/make_random_model.py --preset minilm --tokenizer-from $D/tokenizer --out $M/minilm ;;
esac
# Random-initialised Qwen3 models (tools/make_random_qwen3.py, numpy, seed 0) with Qwen3's real
# tokenizer: $M/qwen3-tiny (2 layers, CI's config) and $M/qwen3-0.6b (Qwen3-Embedding-0.6B's
# config.json, 2.4 GB of fp32 weights, ~30 s to write). Kept across calls while the machine is warm.
qwen3_model() {
  [ -f $D/qwen3-tokenizer/tokenizer.json ] || tar -C $D -xJf $D/qwen3-tokenizer.tar.xz
  if [ ! -f $M/qwen3-$1/model.safetensors ]; then
    local t0=$SECONDS
    python3 tools/make_random_qwen3.py --out $M/qwen3-$1 --preset $1 --seed 0 --tokenizer-dir $D/qwen3-tokenizer
    echo "qwen3-$1 model written in $((SECONDS - t0)) s"
  fi
}
# The ids of a bench workload (bench/gpu_vs_pytorch.py WORKLOADS: short, medium, long; seeds 1, 2, 3)
# written for embedkit_gpu_bench --ids: workload_ids WL [PATH] (default /tmp/ids_p_WL.bin).
workload_ids() {
  python3 -c "import sys; sys.path.insert(0, 'bench'); import gpu_vs_pytorch as g; n, lo, hi = g.WORKLOADS['$1']; g.write_ids('${2:-/tmp/ids_p_$1.bin}', g.make_ids(n, lo, hi, {'short': 1, 'medium': 2, 'long': 3}['$1']))"
}
for s in $stages; do
  case $s in
    checks)
      $D/bin/embedkit_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" | grep -E "^\[  (PASSED|FAILED)|FAILED|Failure|rel_err|Expected" | head -40
      summary+=("op tests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/cuda_tests.log" | tr '\n' ' ')")
      $D/bin/embedkit_unit_tests 2>&1 | tail -1
      python3 tests/gpu/check_e2e.py --bin $D/bin/embedkit --model $M/minilm --texts tests/golden/texts.json 2>&1 | tee "$OUT/e2e.log"
      summary+=("$(cat "$OUT/e2e.log")")
      ;;
    bench-minilm|bench-bge)
      name=${s#bench-}
      if [ "$name" = bge ]; then
        [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge
      fi
      python3 bench/gpu_vs_pytorch.py --model $M/$name --name $name --embedkit-bench $D/bin/embedkit_gpu_bench \
        --forms none --workloads ${WORKLOADS:-short,medium,long} 2>&1 | tee "$OUT/ek_$name.log" | grep -v "^    "
      summary+=("$(grep '^|' "$OUT/ek_$name.log")")
      lat=$($D/bin/embedkit_gpu_bench --model $M/$name --latency "What is the capital city of France and how many people live there" --iters 1000)
      summary+=("$name latency: $lat")
      ;;
    profile-minilm|profile-bge)
      name=${s#profile-}
      [ "$name" = bge ] && { [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge; }
      for wl in short medium long; do
        workload_ids $wl
        r=$(EMBEDKIT_PROFILE_OPS=1 $D/bin/embedkit_gpu_bench --model $M/$name --ids /tmp/ids_p_$wl.bin --budgets ${BUDGETS:-65536} --reps 2)
        echo "$name $wl $r"
        summary+=("profile $name $wl: $r")
      done
      ;;
    sweep-minilm|sweep-bge)
      # Attention launch shapes (EMBEDKIT_ATTN_SHAPE, see src/cuda/bert_cuda.cu) and the residual
      # epilogue (EMBEDKIT_FUSE_RESIDUAL) side by side: per-op profile of 64k-token batches.
      name=${s#sweep-}
      [ "$name" = bge ] && { [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge; }
      for wl in ${SWEEP_WL:-long medium}; do
        workload_ids $wl
        # cfg = attention shape, residual epilogue (1/0), cuBLASLt heuristic answer index
        for cfg in ${SWEEP:-0,1,0 1,1,0 2,1,0 3,1,0 4,1,0 5,1,0 6,1,0 7,1,0 5,0,0 5,1,1 5,1,2}; do
          IFS=, read -r shape fuse algo <<< "$cfg"
          for prof in ${SWEEP_PROF:-1 0}; do
            r=$(EMBEDKIT_ATTN_SHAPE=$shape EMBEDKIT_FUSE_RESIDUAL=$fuse EMBEDKIT_LT_ALGO=$algo EMBEDKIT_PROFILE_OPS=$prof $D/bin/embedkit_gpu_bench \
                --model $M/$name --ids /tmp/ids_p_$wl.bin --budgets 65536 --reps ${SWEEP_REPS:-3})
            echo "$r" >> "$OUT/sweep_$name.jsonl"
            line=$(echo "$r" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); m=r['ms']; print(f\"{r['tokens_per_s']/1e6:6.2f}M tok/s  fwd {m['forward']:7.1f}  gemm {m['gemm']:6.1f}  attn {m['attention']:6.1f}  ln {m['layernorm']:5.1f}\")")
            summary+=("sweep $name $wl shape $shape fuse $fuse algo $algo profile $prof: $line")
            echo "sweep $name $wl shape $shape fuse $fuse algo $algo profile $prof: $line"
          done
        done
      done
      ;;
    pipeline)
      # Batches pipelined (batch i+1 submitted before batch i is collected) vs synchronous
      # (EMBEDKIT_PIPELINE=1 / --pipeline 1), then the LayerNorm load widths (EMBEDKIT_LN_PAIRS:
      # element pairs per load, 1 = 4 bytes, 2 = 8, 4 = 16; a width d does not allow is narrowed),
      # long workload (2,000 × 512 tokens), models ${PIPE_MODELS:-minilm bge}. "gap" = wall minus
      # the device time of the batches' own events (h2d + forward + pool + d2h): the host gaps.
      workload_ids long
      fmt='import json,sys
for l in sys.stdin:
    if not l.startswith("{"): continue
    r=json.loads(l); m=r["ms"]; dev=m["h2d"]+m["forward"]+m["pool"]+m["d2h"]; w=r["seconds"]*1e3
    print("budget %6d pipe %d ln_pairs %d: %6.2fM tok/s  wall %6.1f ms  device %6.1f  gap %5.1f  ln %5.1f  gemm %6.1f  attn %6.1f" % (r["budget"], r["pipeline"], r["ln_pairs"], r["tokens_per_s"]/1e6, w, dev, w-dev, m["layernorm"], m["gemm"], m["attention"]))'
      for name in ${PIPE_MODELS:-minilm bge}; do
        [ "$name" = bge ] && { [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge; }
        # Interleaved, twice: synchronous, pipelined (median of ${PIPE_REPS:-3} passes each).
        for round in 1 2; do
          for pipe in 1 2; do
            $D/bin/embedkit_gpu_bench --model $M/$name --ids /tmp/ids_p_long.bin --budgets ${PIPE_BUDGETS:-65536,131072} \
              --reps ${PIPE_REPS:-3} --pipeline $pipe | tee -a "$OUT/pipeline_$name.jsonl" | python3 -c "$fmt" | while read -r line; do
              echo "pipeline $name long round $round: $line"; done
          done
        done | tee "$OUT/pipeline_$name.txt"
        while read -r line; do summary+=("$line"); done < "$OUT/pipeline_$name.txt"
        # LayerNorm widths, pipelined, 128k budget: per-op profile (LayerNorm ms) and plain tok/s.
        widths=${LN_WIDTHS:-$([ "$name" = bge ] && echo "1 2 4" || echo "1 2")}
        for pairs in $widths; do
          for prof in 1 0; do
            r=$(EMBEDKIT_LN_PAIRS=$pairs EMBEDKIT_PROFILE_OPS=$prof $D/bin/embedkit_gpu_bench --model $M/$name \
                --ids /tmp/ids_p_long.bin --budgets ${LN_BUDGET:-131072} --reps ${PIPE_REPS:-3})
            echo "$r" >> "$OUT/ln_$name.jsonl"
            line="ln-width $name long profile $prof: $(echo "$r" | python3 -c "$fmt")"
            echo "$line"
            summary+=("$line")
          done
        done
      done
      # Whole process (tokenization included) on the corpus, pipelined vs synchronous batches.
      for pipe in 1 2; do
        EMBEDKIT_PIPELINE=$pipe $D/bin/embedkit embed -m $M/minilm --device cuda -i $D/lines.txt -f npy -o /tmp/e2e_p$pipe.npy \
          --timings > "$OUT/pipeline_e2e_$pipe.log" 2>&1
        summary+=("pipeline e2e-cli minilm pipe $pipe: $(grep -E 'embed total' "$OUT/pipeline_e2e_$pipe.log" | tr -s ' ')")
      done
      # Same rows either way (batch composition may differ at chunk seams: cosine, not equality).
      python3 -c "import numpy as n; a=n.load('/tmp/e2e_p1.npy'); b=n.load('/tmp/e2e_p2.npy'); c=(a*b).sum(1)/n.linalg.norm(a,axis=1)/n.linalg.norm(b,axis=1); print('pipeline e2e-cli: rows', a.shape, b.shape, 'min cosine pipelined vs synchronous %.7f, max |diff| %.2e' % (c.min(), abs(a-b).max()))" | tee -a "$OUT/pipeline_e2e.txt"
      summary+=("$(tail -1 "$OUT/pipeline_e2e.txt")")
      ;;
    e2e-cli)
      # Whole process on a real corpus (>= 100k lines), tokenization included, with the time breakdown.
      for fmt in npy jsonl; do
        /usr/bin/time -f "wall %e s, max RSS %M KB" $D/bin/embedkit embed -m $M/minilm --device cuda -i $D/lines.txt \
          -f $fmt -o /tmp/e2e.$fmt --timings 2>&1 | tee "$OUT/e2e_cli_$fmt.log"
        summary+=("e2e-cli $fmt: $(grep -E 'embed total|wall' "$OUT/e2e_cli_$fmt.log" | tr -s ' ' | tr '\n' ';')")
      done
      ;;
    embedbench)
      # EmbedBench on the GPU: throughput, and the sweeps over batch sizes and token budgets (their
      # points take turns over interleaved rounds, each keeping its best); the report's tables.
      $D/bin/embedkit bench throughput sweep -m $M/minilm --device cuda --no-progress \
        --sweep-batch-sizes ${EB_SIZES:-8,64,512} -o "$OUT/embedbench_sizes" > "$OUT/embedbench_sizes.log" 2>&1
      $D/bin/embedkit bench sweep -m $M/minilm --device cuda --no-progress --batch-size 512 \
        --sweep-token-budgets ${EB_BUDGETS:-2048,16384} -o "$OUT/embedbench_budgets" > "$OUT/embedbench_budgets.log" 2>&1
      for f in sizes budgets; do
        grep -E "^chosen|^\| [0-9]" "$OUT/embedbench_$f.log" | tail -8
        summary+=("embedbench $f: $(grep -E '^chosen' "$OUT/embedbench_$f.log" | cut -c1-90)")
      done
      ;;
    small-batches)
      # Small batches side by side on the device (issue 4: a server's batches at c64 are ~20 short
      # texts): the short workload (bench/gpu_vs_pytorch.py) in batches of ${SMALL_BUDGETS:-256,512,1024,2048,65536}
      # tokens, 1, 2 and 4 batches in flight (--pipeline), with each small batch on its own stream
      # and workspace (default) and with every batch through the shared workspace, one at a time
      # (EMBEDKIT_CONCURRENT_TOKENS=0, the old behaviour). Interleaved, twice.
      workload_ids short
      fmt='import json,sys
for l in sys.stdin:
    if not l.startswith("{"): continue
    r=json.loads(l); m=r["ms"]; dev=m["h2d"]+m["forward"]+m["pool"]+m["d2h"]; w=r["seconds"]*1e3
    print("budget %6d pipe %d: %6.2fM tok/s  wall %6.1f ms  (batches %d, device time summed %6.1f ms)" % (r["budget"], r["pipeline"], r["tokens_per_s"]/1e6, w, r["batches"], dev))'
      for round in 1 2; do
        for ct in 0 default; do
          for pipe in 1 2 4; do
            [ $ct = 0 ] && [ $pipe = 4 ] && continue
            env $([ $ct = 0 ] && echo EMBEDKIT_CONCURRENT_TOKENS=0) $D/bin/embedkit_gpu_bench --model $M/minilm \
              --ids /tmp/ids_p_short.bin --budgets ${SMALL_BUDGETS:-256,512,1024,2048,65536} --reps ${SMALL_REPS:-3} --pipeline $pipe \
              | tee -a "$OUT/small_batches.jsonl" | python3 -c "$fmt" | while read -r line; do
              echo "small-batches round $round concurrent-tokens $ct: $line"; done
          done
        done
      done | tee "$OUT/small_batches.txt"
      while read -r line; do summary+=("$line"); done < "$OUT/small_batches.txt"
      ;;
    small-pass)
      # Device time of one small batch's pass (the short workload in batches of at most
      # ${PASS_BUDGETS:-256,512,2048} tokens, CUDA graphs, one batch in flight, then two), for each
      # of PASS_VARIANTS (';'-separated environment settings, e.g. "EMBEDKIT_PDL=0;"; an empty one
      # is the default), interleaved, PASS_ROUNDS times (2). Prints µs per batch.
      workload_ids short
      IFS=';' read -ra pvariants <<< "${PASS_VARIANTS:- ;EMBEDKIT_PDL=0;EMBEDKIT_ZERO_COPY=0;EMBEDKIT_PDL=0 EMBEDKIT_ZERO_COPY=0}"
      for round in $(seq ${PASS_ROUNDS:-2}); do
        for v in "${pvariants[@]}"; do
          for pipe in 1 2; do
            env $v $D/bin/embedkit_gpu_bench --model $M/minilm --ids /tmp/ids_p_short.bin --budgets ${PASS_BUDGETS:-256,512,2048} \
              --reps ${PASS_REPS:-3} --pipeline $pipe 2>&1 | grep '^{' | python3 -c '
import json,sys
v=sys.argv[1]; rs=[json.loads(l) for l in sys.stdin]
print("small-pass [%s] pipe %d: " % (v.strip() or "default", rs[0]["pipeline"]) + "  ".join("%d tok %.1f us/batch" % (r["budget"], r["seconds"]*1e6/r["batches"]) for r in rs))' "$v" | tee -a "$OUT/small_pass.log"
          done
        done
      done
      summary+=("$(cat "$OUT/small_pass.log")")
      ;;
    kernel-times)
      # Each kernel of a small batch's pass, timed alone by Nsight Compute (gpu__time_duration; ncu
      # runs kernels one at a time with cold caches, so these are upper bounds: the graph replay of
      # the same pass takes less than their sum). Short workload, batches of ${KT_BUDGET:-512} tokens,
      # no CUDA graphs (ncu profiles kernels, not graph nodes); 92 launches after 2,000 warm-up ones.
      workload_ids short
      EMBEDKIT_CUDA_GRAPHS=0 timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 2000 \
        --launch-count 92 $D/bin/embedkit_gpu_bench --model $M/minilm --ids /tmp/ids_p_short.bin --budgets ${KT_BUDGET:-512} \
        --reps 1 --pipeline 1 > "$OUT/kernel_times.csv" 2> "$OUT/kernel_times.err"
      python3 - "$OUT/kernel_times.csv" <<'PY' | tee "$OUT/kernel_times.log"
import collections, csv, sys
hdr, agg = None, collections.OrderedDict()
for r in csv.reader(open(sys.argv[1])):
    if "Kernel Name" in r: hdr = r; continue
    if not hdr or len(r) != len(hdr): continue
    d = dict(zip(hdr, r)); v = float(d["Metric Value"].replace(",", ""))
    us = v / 1e3 if d["Metric Unit"] in ("ns", "nsecond") else v * 1e3 if d["Metric Unit"] in ("ms", "msecond") else v
    a = agg.setdefault(d["Kernel Name"][:80], [0, 0.0]); a[0] += 1; a[1] += us
print("kernel-times: %d launches, %.1f us in all" % (sum(a[0] for a in agg.values()), sum(a[1] for a in agg.values())))
for n, a in agg.items(): print("  %3d x %6.2f us  %s" % (a[0], a[1] / a[0], n))
PY
      summary+=("$(cat "$OUT/kernel_times.log")")
      ;;
    serve)
      # Server vs offline on the same texts (issue 4): offline `embedkit embed --device cuda`, then
      # `embedkit serve --device cuda` under loopback load (bench/server_load.py, every result
      # checked against the offline embeddings), concurrency ${SERVE_CONC:-64,256,1024}.
      grep -v '^[[:space:]]*$' $D/lines.txt | head -n ${SERVE_TEXTS:-100000} > /tmp/serve_texts.txt
      $D/bin/embedkit embed -m $M/minilm --device cuda -i /tmp/serve_texts.txt -f npy -o /tmp/serve_offline.npy \
        --timings 2>&1 | tee "$OUT/serve_offline.log" | grep -E "embed total"
      summary+=("serve offline: $(grep -E 'embed total' "$OUT/serve_offline.log" | tr -s ' ')")
      $D/bin/embedkit serve -m $M/minilm --device cuda --port 18080 --log-level warn --auto-truncate \
        --http-threads ${SERVE_HTTP_THREADS:-4} > "$OUT/serve.log" 2>&1 &
      spid=$!
      for _ in $(seq 200); do curl -sf localhost:18080/health >/dev/null && break; sleep 0.1; done
      for route in ${SERVE_ROUTES:-openai tei}; do
        python3 bench/server_load.py --url http://127.0.0.1:18080 --texts /tmp/serve_texts.txt --check /tmp/serve_offline.npy \
          --concurrency ${SERVE_CONC:-64,256,1024} --batch 1,32 --duration ${SERVE_SECS:-10} --route $route \
          --processes ${SERVE_PROCS:-8} --json "$OUT/serve_$route.json" 2>&1 | tee "$OUT/serve_load_$route.log"
        summary+=("$(grep '^|' "$OUT/serve_load_$route.log")")
      done
      curl -s localhost:18080/metrics | grep -E "^te_(request_count|embed_count|batch_next_size_(sum|count)|batch_next_tokens_sum)" | tee "$OUT/serve_metrics.txt"
      kill -TERM $spid; wait $spid; echo "server exit code $?"
      summary+=("serve metrics: $(tr '\n' ' ' < "$OUT/serve_metrics.txt")")
      ;;
    serve-soak)
      # Issue 4's "nothing lost" bar on the GPU: ${SOAK_CONC:-256} clients sending mixed-length
      # corpus lines (single and 32-text requests, both routes' worth on the OpenAI route) for
      # ${SOAK_SECS:-60} s each, then 1,024 connections, every embedding checked against the offline
      # output (bench/server_load.py --check); then SIGTERM 8 s into a 256 × 32-text load: every
      # accepted request must be answered (and correct) and the server must exit 0.
      grep -v '^[[:space:]]*$' $D/lines.txt | head -n ${SERVE_TEXTS:-100000} > /tmp/serve_texts.txt
      $D/bin/embedkit embed -m $M/minilm --device cuda -i /tmp/serve_texts.txt -f npy -o /tmp/serve_offline.npy \
        > "$OUT/soak_offline.log" 2>&1
      $D/bin/embedkit serve -m $M/minilm --device cuda --port 18083 --log-level warn --auto-truncate > "$OUT/soak_server.log" 2>&1 &
      spid=$!
      for _ in $(seq 300); do curl -sf localhost:18083/health >/dev/null && break; sleep 0.1; done
      python3 bench/server_load.py --url http://127.0.0.1:18083 --texts /tmp/serve_texts.txt --check /tmp/serve_offline.npy \
        --concurrency ${SOAK_CONC:-256} --batch 1,32 --duration ${SOAK_SECS:-60} --route openai --processes 8 \
        --json "$OUT/soak_256.json" 2>&1 | tee "$OUT/soak_256.log" | grep '^|'
      python3 bench/server_load.py --url http://127.0.0.1:18083 --texts /tmp/serve_texts.txt --check /tmp/serve_offline.npy \
        --concurrency 1024 --batch 1 --duration 30 --route openai --processes 8 \
        --json "$OUT/soak_1024.json" 2>&1 | tee "$OUT/soak_1024.log" | grep '^|'
      curl -s localhost:18083/metrics | grep -E "^te_request_(count|success|failure)" | tee "$OUT/soak_metrics.txt"
      python3 bench/server_load.py --url http://127.0.0.1:18083 --texts /tmp/serve_texts.txt --check /tmp/serve_offline.npy \
        --concurrency 256 --batch 32 --duration 20 --sigterm-after 8 --server-pid $spid --route openai \
        --json "$OUT/soak_sigterm.json" 2>&1 | tee "$OUT/soak_sigterm.log" | grep '^|'
      wait $spid; rc=$?
      echo "server exit code $rc; $(grep -hE 'SIGTERM|all requests answered' "$OUT/soak_server.log" | tr '\n' ' ')"
      summary+=("serve-soak:" "$(grep -h '^|' "$OUT"/soak_256.log "$OUT"/soak_1024.log "$OUT"/soak_sigterm.log)"
                "$(tr '\n' ' ' < "$OUT/soak_metrics.txt")" "server exit code $rc; $(grep -hE 'SIGTERM|all requests answered' "$OUT/soak_server.log" | tr '\n' ' ')")
      ;;
    serve-cpp)
      # Single- and 32-text requests with EmbedBench's C++ client (a thread per connection; far
      # cheaper per request than the Python load generator), against offline `embedkit embed` on
      # the same texts (bench/corpora/short.txt × 50). Server and client CPU seconds are read from
      # /proc so the table says which side the cores went to. SERVE_MODELS: minilm and/or thin (a
      # one-layer model: the request path without model cost).
      for _ in $(seq 50); do cat bench/corpora/short.txt; done > /tmp/short50.txt
      echo "open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"; ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn)
      for mname in ${SERVE_MODELS:-minilm}; do
        [ -f $M/$mname/model.safetensors ] || python3 bench/make_random_model.py --preset $mname --tokenizer-from $D/tokenizer --out $M/$mname
        # Offline three times (the first process on a fresh machine pays one-off start-up costs in
        # its timed part: 101k texts/s once against ~200k after); the best is the reference.
        for r in 1 2 3; do
          timeout 120 $D/bin/embedkit embed -m $M/$mname --device cuda -i /tmp/short50.txt -f npy -o /tmp/short50.npy --timings \
            > "$OUT/servecpp_offline_${mname}_$r.log" 2>&1
        done
        summary+=("serve-cpp $mname offline short×50 (3 runs): $(grep -hE 'embed total' "$OUT"/servecpp_offline_${mname}_*.log | tr -s ' ' | tr '\n' ';')")
        for ht in ${SERVE_HTTP_THREADS_LIST:-4 8}; do
          # SERVE_ARGS: more server flags. SERVE_SERVER_CPUS / SERVE_CLIENT_CPUS (taskset lists, e.g. 0-9 and 10-15): server and load
          # generator on disjoint cores, as if the client ran elsewhere (the server sizes its pools
          # from its affinity mask).
          # SERVE_BIN: another server binary (an A/B against an earlier build in the same call).
          ${SERVE_SERVER_CPUS:+taskset -c $SERVE_SERVER_CPUS} ${SERVE_BIN:-$D/bin/embedkit} serve -m $M/$mname --device cuda --port 18081 --log-level warn --http-threads $ht ${SERVE_ARGS:-} \
            > "$OUT/servecpp_${mname}_$ht.log" 2>&1 &
          spid=$!
          for _ in $(seq 300); do curl -sf localhost:18081/health >/dev/null && break; sleep 0.1; done
          for bs in ${SERVE_BATCHES:-1 32}; do
            n=$(( ${SERVE_REQS:-60000} / bs )); [ $n -lt 4096 ] && n=4096
            cpu0=$(awk '{print $14+$15}' /proc/$spid/stat); t0=$(date +%s.%N)
            # (client CPU seconds from getrusage of the child, printed after it)
            python3 -c 'import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); r = resource.getrusage(resource.RUSAGE_CHILDREN); open("/tmp/client_cpu", "w").write("%.1f" % (r.ru_utime + r.ru_stime)); sys.exit(rc)' \
              ${SERVE_CLIENT_CPUS:+taskset -c $SERVE_CLIENT_CPUS} timeout ${SERVE_CPP_TIMEOUT:-90} $D/bin/embedkit bench latency --url http://127.0.0.1:18081 -m $M/$mname --corpus short \
              --batch-size $bs --concurrency ${SERVE_CONC:-64,256,1024} --iterations $n --warmup 20 --no-local-tokens --no-progress -q --timeout 20 \
              -o "$OUT/servecpp_${mname}_h${ht}_b$bs" > "$OUT/servecpp_${mname}_h${ht}_b$bs.log" 2>&1
            rc=$?; cpu1=$(awk '{print $14+$15}' /proc/$spid/stat); t1=$(date +%s.%N)
            line=$(python3 - "$OUT/servecpp_${mname}_h${ht}_b$bs/embedbench.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("no report:", e); sys.exit(0)
out = []
for s in r["scenarios"]:
    for l in s.get("remote_levels", []):
        errs = "; ".join(f"{e['count']}x {e['message'][:90]}" for e in l.get("error_samples", [])[:2])
        sm = l.get("server_metrics", {})
        srv = (f" (server means ms: tokenize {sm['tokenization_mean_ms']:.2f} queue {sm['queue_mean_ms']:.2f} inference {sm['inference_mean_ms']:.2f} request {sm['request_mean_ms']:.2f}; client mean {l['latency_ms']['mean']:.2f})"
               if sm.get("available") and "request_mean_ms" in sm else "")
        out.append(f"c{l['concurrency']}: {l['requests_per_s']:.0f} req/s {l['texts_per_s']:.0f} texts/s p50 {l['latency_ms']['p50']:.2f} p99 {l['latency_ms']['p99']:.2f} err {l['errors']}" + (f" [{errs}]" if errs else "") + srv)
print("; ".join(out))
PY
)
            srv=$(python3 -c "print(f'{($cpu1-$cpu0)/100:.1f} server CPU-s, $(cat /tmp/client_cpu) client CPU-s over {$t1-$t0:.1f} s')")
            echo "serve-cpp $mname http-threads $ht batch $bs (rc $rc): $line; $srv"
            [ $rc = 0 ] || { tail -5 "$OUT/servecpp_${mname}_h${ht}_b$bs.log"; grep -v "^INFO" "$OUT/servecpp_${mname}_$ht.log" | tail -5; }
            summary+=("serve-cpp $mname http-threads $ht batch $bs (rc $rc): $line; $srv")
          done
          curl -s localhost:18081/metrics | grep -E "^te_(batch_next_size_(sum|count)|batch_next_tokens_sum)" | tr '\n' ' ' > "$OUT/servecpp_metrics_${mname}_$ht.txt"
          summary+=("serve-cpp metrics: $(cat "$OUT/servecpp_metrics_${mname}_$ht.txt")")
          kill -TERM $spid; wait $spid
        done
      done
      ;;
    serve-wrk)
      # Single- and 32-text requests from wrk (bench/server_wrk.py: an epoll client in C, a few µs
      # per request) against offline `embedkit embed` on the same texts (bench/corpora/short.txt ×
      # 50, best of five runs). SERVE_CONC, SERVE_BATCHES ("1,32"), SERVE_SECS, SERVE_WRK_THREADS,
      # SERVE_ARGS (server flags), SERVE_BIN (another server binary, for an A/B in one call),
      # SERVE_ROUNDS (repeat the whole set).
      for _ in $(seq 50); do cat bench/corpora/short.txt; done > /tmp/short50.txt
      ulimit -n 65536 2>/dev/null || ulimit -n $(ulimit -Hn)
      # Five offline runs (~0.5 s each, so their spread is wide): the best is the reference of the
      # table's ratio (the strictest reading), the median is printed beside it.
      for r in 1 2 3 4 5; do
        timeout 120 $D/bin/embedkit embed -m $M/minilm --device cuda -i /tmp/short50.txt -f npy -o /tmp/short50.npy --timings \
          > "$OUT/servewrk_offline_$r.log" 2>&1
      done
      rates=$(grep -hoE 'embed total[^(]*\(([0-9.]+) texts/s' "$OUT"/servewrk_offline_[0-9].log | grep -oE '[0-9.]+ texts/s' | cut -d' ' -f1 | sort -n)
      best=$(echo "$rates" | tail -1)
      summary+=("serve-wrk offline short×50 (5 runs): $(echo $rates | tr ' ' '/') texts/s; median $(echo "$rates" | sed -n "$(( ($(echo "$rates" | wc -l) + 1) / 2 ))p"), best $best (the ratios' reference)")
      # SERVE_PAIRED=1: one more offline run after each server run, and each server level divided by
      # the mean of the offline runs just before and after it (the machine's speed drifts between
      # runs; bench/server_vs_offline.py does the same on the CPU). The summary gives, per variant
      # and level, the median of those paired ratios beside the median ratio to the best.
      last_offline=$(grep -hoE 'embed total[^(]*\(([0-9.]+) texts/s' "$OUT/servewrk_offline_5.log" | grep -oE '[0-9.]+ texts/s' | cut -d' ' -f1)
      paired_log="$OUT/servewrk_paired.jsonl"
      : > "$paired_log"
      # SERVE_VARIANTS: server set-ups to compare in turn, separated by ';' — each a list of words,
      # EMBEDKIT_*=value ones set in the server's environment, the others added to its flags
      # (e.g. "--max-wait 0;--max-wait 0.1;EMBEDKIT_PIPELINE=1").
      IFS=';' read -ra variants <<< "${SERVE_VARIANTS:- }"
      for round in $(seq ${SERVE_ROUNDS:-1}); do
        for bin in ${SERVE_BIN:-$D/bin/embedkit}; do
          for v in "${variants[@]}"; do
            envs=(); args=()
            for w in $v; do if [[ $w == EMBEDKIT_*=* ]]; then envs+=("$w"); else args+=("$w"); fi; done
            tag="${round}_$(basename $bin)$(echo "$v" | tr -c 'A-Za-z0-9.\n' '_')"
            slog="$OUT/servewrk_server_$tag.log"
            env "${envs[@]}" $bin serve -m $M/minilm --device cuda --port 18082 --log-level warn ${SERVE_ARGS:-} "${args[@]}" > "$slog" 2>&1 &
            spid=$!
            for _ in $(seq 300); do curl -sf localhost:18082/health >/dev/null && break; sleep 0.1; done
            python3 bench/server_wrk.py --url http://127.0.0.1:18082 --texts /tmp/short50.txt --server-pid $spid \
              --offline-texts-per-s ${best:-0} --concurrency ${SERVE_CONC:-64,256,1024} --batch ${SERVE_BATCHES:-1,32} \
              --duration ${SERVE_SECS:-8} --threads ${SERVE_WRK_THREADS:-4} --wrk $D/bin/wrk \
              --json "$OUT/servewrk_$tag.json" 2>&1 | tee "$OUT/servewrk_$tag.log"
            summary+=("serve-wrk round $round $bin [$v]:" "$(grep '^|' "$OUT/servewrk_$tag.log")")
            kill -TERM $spid; wait $spid; echo "server exit code $?"
            if [ "${SERVE_PAIRED:-0}" = 1 ]; then
              timeout 120 $D/bin/embedkit embed -m $M/minilm --device cuda -i /tmp/short50.txt -f npy -o /tmp/short50.npy \
                --timings > "$OUT/servewrk_offline_after_$tag.log" 2>&1
              after=$(grep -hoE 'embed total[^(]*\(([0-9.]+) texts/s' "$OUT/servewrk_offline_after_$tag.log" | grep -oE '[0-9.]+ texts/s' | cut -d' ' -f1)
              python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); [print(json.dumps({"variant": sys.argv[2], "batch": r["batch"], "concurrency": r["concurrency"], "texts_per_s": r["texts_per_s"], "before": float(sys.argv[3]), "after": float(sys.argv[4]), "best": float(sys.argv[5])})) for r in d["rows"]]' \
                "$OUT/servewrk_$tag.json" "$v" "${last_offline:-0}" "${after:-0}" "${best:-0}" >> "$paired_log"
              last_offline=$after
            fi
            # EMBEDKIT_BATCHER_PROFILE=1: the submitter's and collector's time per step, printed at exit
            # EMBEDKIT_REQUEST_PROFILE=1: where a request's server time goes, printed at exit
            grep -hE "batcher (submitter|collector)|request profile" "$slog" && summary+=("$(grep -hE 'batcher (submitter|collector)|request profile' "$slog" | tr '\n' ' ')")
          done
        done
      done
      if [ "${SERVE_PAIRED:-0}" = 1 ] && [ -s "$paired_log" ]; then
        python3 - "$paired_log" <<'PY' | tee "$OUT/servewrk_paired.txt"
import collections, json, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["variant"].strip() or "default", r["batch"], r["concurrency"])].append(r)
print("| variant | texts/request | concurrency | runs | texts/s (each) | ÷ neighbouring offline runs: median (each) | ÷ best of the first five: median |")
print("|---|---:|---:|---:|---|---|---:|")
for (v, b, c), rs in rows.items():
    paired = [r["texts_per_s"] / ((r["before"] + r["after"]) / 2) for r in rs if r["before"] > 0 and r["after"] > 0]
    best = [r["texts_per_s"] / r["best"] for r in rs if r["best"] > 0]
    print("| %s | %d | %d | %d | %s | %.2f× (%s) | %.2f× |" % (
        v, b, c, len(rs), ", ".join("%.0f" % r["texts_per_s"] for r in rs),
        statistics.median(paired) if paired else float("nan"), ", ".join("%.2f" % x for x in paired),
        statistics.median(best) if best else float("nan")))
PY
        summary+=("$(cat "$OUT/servewrk_paired.txt")")
      fi
      ;;
    torch-minilm|torch-bge)
      name=${s#torch-}
      [ "$name" = bge ] && { [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge; }
      python3 bench/gpu_vs_pytorch.py --model $M/$name --name $name --embedkit-bench $D/bin/embedkit_gpu_bench \
        ${TORCH_FORMS:+--forms $TORCH_FORMS} ${WORKLOADS:+--workloads $WORKLOADS} 2>&1 | tee "$OUT/torch_$name.log" | grep -v "^    "
      summary+=("$(grep '^|' "$OUT/torch_$name.log")")
      ;;
    qwen3-tiny)
      # The tiny-config parity alone (the first part of qwen3-checks).
      qwen3_model tiny
      timeout ${QWEN3_E2E_TIMEOUT:-300} python3 tests/gpu/check_qwen3_e2e.py --bin $D/bin/embedkit --bench $D/bin/embedkit_gpu_bench \
        --model $M/qwen3-tiny --name tiny --texts tests/golden/texts.json --corpus $D/lines.txt --long-texts 1000 \
        --cpu-texts 400 > "$OUT/qwen3_e2e_tiny.log" 2>&1
      summary+=("$(sed -n '/^qwen3 e2e/,$p' "$OUT/qwen3_e2e_tiny.log")")
      [ -n "$(sed -n '/^qwen3 e2e/p' "$OUT/qwen3_e2e_tiny.log")" ] || summary+=("qwen3 e2e tiny: did not finish (timeout or crash; see qwen3_e2e_tiny.log)")
      ;;
    qwen3-checks)
      # Qwen3 op tests (decoder ops vs the fp32 CPU ops; BERT's attention tests too, since the flash
      # kernel gained a KV-head count), then end-to-end parity vs transformers fp32.
      timeout ${QWEN3_OPS_TIMEOUT:-300} $D/bin/embedkit_cuda_tests --gtest_filter='*Qwen3*:*VarlenAttention*' 2>&1 \
        | tee "$OUT/qwen3_ops.log" | grep -E "^\[  (PASSED|FAILED)|^\[  FAILED|Failure|rel_err|Expected|Which is" | head -60
      rc=${PIPESTATUS[0]}
      summary+=("qwen3 op tests: $(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/qwen3_ops.log" | tr '\n' ' ') (exit code $rc, 124 = timeout; log qwen3_ops.log)")
      while read -r l; do summary+=("  $l"); done < <(grep -E "^\[  FAILED  \] CudaOps" "$OUT/qwen3_ops.log" | sort -u | head -20)
      qwen3_model tiny
      timeout ${QWEN3_E2E_TIMEOUT:-300} python3 tests/gpu/check_qwen3_e2e.py --bin $D/bin/embedkit --bench $D/bin/embedkit_gpu_bench \
        --model $M/qwen3-tiny --name tiny --texts tests/golden/texts.json --corpus $D/lines.txt --long-texts 1000 \
        --cpu-texts 400 2>&1 | tee "$OUT/qwen3_e2e_tiny.log"
      summary+=("$(sed -n '/^qwen3 e2e/,$p' "$OUT/qwen3_e2e_tiny.log")")
      [ -n "$(sed -n '/^qwen3 e2e/p' "$OUT/qwen3_e2e_tiny.log")" ] || summary+=("qwen3 e2e tiny: did not finish (timeout or crash; see qwen3_e2e_tiny.log)")
      qwen3_model 0.6b
      timeout ${QWEN3_E2E_TIMEOUT:-420} python3 tests/gpu/check_qwen3_e2e.py --bin $D/bin/embedkit --bench $D/bin/embedkit_gpu_bench \
        --model $M/qwen3-0.6b --name 0.6b --texts tests/golden/texts.json --corpus $D/lines.txt --serve 2>&1 | tee "$OUT/qwen3_e2e_06b.log"
      summary+=("$(sed -n '/^qwen3 e2e/,$p' "$OUT/qwen3_e2e_06b.log")")
      [ -n "$(sed -n '/^qwen3 e2e/p' "$OUT/qwen3_e2e_06b.log")" ] || summary+=("qwen3 e2e 0.6b: did not finish (timeout or crash; see qwen3_e2e_06b.log)")
      ;;
    qwen3-torch)
      # Speed vs PyTorch eager and torch.compile, same token ids, 0.6B config (bench/qwen3_gpu_vs_pytorch.py).
      qwen3_model 0.6b
      timeout ${QWEN3_TORCH_TIMEOUT:-540} python3 bench/qwen3_gpu_vs_pytorch.py --model $M/qwen3-0.6b \
        --embedkit-bench $D/bin/embedkit_gpu_bench ${QWEN3_FORMS:+--forms $QWEN3_FORMS} \
        ${QWEN3_WORKLOADS:+--workloads $QWEN3_WORKLOADS} 2>&1 | tee "$OUT/qwen3_torch.log"
      summary+=("$(grep '^|' "$OUT/qwen3_torch.log")")
      [ -n "$(grep '^|' "$OUT/qwen3_torch.log")" ] || summary+=("qwen3-torch: no table (timeout or crash; see qwen3_torch.log)")
      ;;
    ab)
      # A/B of environment settings on EmbedKit alone (tokens/s, and per-op ms with profiling):
      #   AB_MODELS="minilm bge qwen3"  AB_WL="long medium" (qwen3: long512, medium, …)
      #   AB_SETTINGS="EMBEDKIT_LT_TUNE=0|EMBEDKIT_LT_TUNE=8"  ('|' between settings, spaces within)
      IFS='|' read -r -a settings <<< "${AB_SETTINGS:-EMBEDKIT_LT_TUNE=0|EMBEDKIT_LT_TUNE=8}"
      for name in ${AB_MODELS:-minilm bge qwen3}; do
        if [ $name = qwen3 ]; then qwen3_model 0.6b; mdir=$M/qwen3-0.6b; extra="--dtype bf16"; else
          [ $name = bge ] && { [ -f $M/bge/model.safetensors ] || python3 bench/make_random_model.py --preset bge-base --tokenizer-from $D/tokenizer --out $M/bge; }
          mdir=$M/$name; extra=""; fi
        for wl in ${AB_WL:-long}; do
          ids=/tmp/ab_${name}_$wl.bin
          if [ $name = qwen3 ]; then
            python3 -c "import sys; sys.path.insert(0, 'bench'); import qwen3_gpu_vs_pytorch as q; w = q.WORKLOADS['$wl']; q.write_ids('$ids', q.make_ids(w[0], w[1], w[2], list(q.WORKLOADS).index('$wl') + 1))"
          else
            workload_ids $wl $ids
          fi
          for setting in "${settings[@]}"; do
            for prof in ${AB_PROF:-0 1}; do
              r=$(env $setting EMBEDKIT_PROFILE_OPS=$prof timeout 120 $D/bin/embedkit_gpu_bench --model $mdir $extra \
                  --ids $ids --budgets ${AB_BUDGET:-65536} --reps ${AB_REPS:-3})
              echo "$r" >> "$OUT/ab.jsonl"
              line=$(echo "$r" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); m=r['ms']; print(f\"{r['tokens_per_s']/1e6:7.3f}M tok/s  fwd {m['forward']:7.1f}  gemm {m['gemm']:6.1f}  attn {m['attention']:6.1f}  norm {m['layernorm']:5.1f}  act {m['activation']:5.1f}\")" 2>&1)
              echo "ab $name $wl [$setting] profile $prof: $line"
              summary+=("ab $name $wl [$setting] profile $prof: $line")
            done
          done
        done
      done
      ;;
    qwen3-profile)
      # Per-op device time (EMBEDKIT_PROFILE_OPS=1: an event between ops) of EmbedKit alone, per
      # workload of the speed table, 64k-token batches (long4096: 32k).
      qwen3_model 0.6b
      for wl in $(echo ${QWEN3_WORKLOADS:-short,medium,long512,long4096} | tr , " "); do
        python3 -c "import sys; sys.path.insert(0, 'bench'); import qwen3_gpu_vs_pytorch as q; w = q.WORKLOADS['$wl']; q.write_ids('/tmp/qids_p_$wl.bin', q.make_ids(w[0], w[1], w[2], list(q.WORKLOADS).index('$wl') + 1))"
        b=65536; [ $wl = long4096 ] && b=32768
        r=$(EMBEDKIT_PROFILE_OPS=1 timeout 120 $D/bin/embedkit_gpu_bench --model $M/qwen3-0.6b --dtype bf16 --ids /tmp/qids_p_$wl.bin --budgets $b --reps 2)
        echo "qwen3 profile $wl: $r"
        summary+=("qwen3 profile $wl (ms; layernorm = RMSNorms + q/k-norm+RoPE, activation = SiLU·up): $r")
      done
      ;;
  esac
done
echo "================ summary"
printf '%s\n' "${summary[@]}"
