#!/usr/bin/env bash
# Nsight Compute on the device machine: where one kernel's warps stall, per SASS instruction.
# Profiles one launch of the kernel matching KREGEX (default: the wgmma attention kernel) in a
# 64k-token batch of the long workload of MODEL (minilm | bge), then prints its duration,
# registers and occupancy, and every SASS instruction holding ≥ 1.2% of the warp stall samples
# (with the running total and the two instructions before it); the report and the per-instruction
# CSV (stall reasons per instruction) stay in $OUT.
# Usage (device, carry .device): KREGEX=flash_attention MODEL=bge bash scripts/ncu-source.sh
set -uo pipefail
source "$(dirname "$0")/ncu-env.sh"
name=${MODEL:-minilm}
ncu_model $name
run="$D/bin/embedkit_gpu_bench --model $M/$name --ids /tmp/ids_ncu_long.bin --budgets 65536 --reps 1"
$NCU -k regex:${KREGEX:-wgmma_attention} --launch-skip 10 --launch-count 1 --section WarpStateStats --section SourceCounters \
  --section SpeedOfLight -o $OUT/source_$name $run > $OUT/ncu_source_$name.log 2>&1 || tail -5 $OUT/ncu_source_$name.log
$NCU --import $OUT/source_$name.ncu-rep --page details 2>/dev/null | grep -E "Duration|Registers Per|Theoretical Occ|Achieved Occ" | tr -s ' '
$NCU --import $OUT/source_$name.ncu-rep --page source --csv --print-source sass > $OUT/source_$name.csv 2>&1
python3 - $OUT/source_$name.csv <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hi = next((i for i, r in enumerate(rows) if 'Source' in r), None)
if hi is None:
    print('no source page'); sys.exit()
h, data = rows[hi], rows[hi + 1:]
si, ci = h.index('Source'), h.index('Warp Stall Sampling (All Samples)')
f = lambda x: float(x.replace(',', '')) if x.replace(',', '').replace('.', '').isdigit() else 0.0
tot = sum(f(r[ci]) for r in data if len(r) > ci) or 1.0
cum = 0.0
for i, r in enumerate(data):
    v = f(r[ci]); cum += v
    if v > 0.012 * tot:
        prev = ' | '.join(d[si].strip()[:38] for d in data[max(0, i - 2):i])
        print(f"{v / tot * 100:5.1f}% (cum {cum / tot * 100:5.1f}%) #{i:4d} {r[si].strip()[:60]:60s} prev: {prev}")
PY
