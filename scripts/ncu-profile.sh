#!/usr/bin/env bash
# Nsight Compute on the device machine: per-kernel duration, throughput and warp stall reasons for
# one forward pass of the long workload (64k-token batches). Usage (device, carry .device):
#   NCU_MODELS="minilm bge" bash scripts/ncu-profile.sh
# Prints one compact line per kernel (attention, then each GEMM of a layer) and the attention
# kernel's top stall reasons; full reports go to $OUT/ncu_<model>_*.txt.
set -uo pipefail
source "$(dirname "$0")/ncu-env.sh"
for name in ${NCU_MODELS:-minilm bge}; do
  ncu_model $name
  run="$D/bin/embedkit_gpu_bench --model $M/$name --ids /tmp/ids_ncu_long.bin --budgets 65536 --reps 1"
  # The attention kernel: full sections for the stall reasons.
  $NCU -k regex:flash_attention --launch-skip 20 --launch-count 1 --section SpeedOfLight --section WarpStateStats \
    --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis $run > "$OUT/ncu_${name}_attention.txt" 2>&1
  echo "== $name attention"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|Executed Ipc A|Issue Slots Busy|Stall|Warp Cycles Per Issued" "$OUT/ncu_${name}_attention.txt" | tr -s ' ' | head -30
  # Every kernel of one layer after warm-up: name, duration, SM and tensor-pipe use.
  $NCU --launch-skip 400 --launch-count 24 --csv --page raw --metrics \
    gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
    $run > "$OUT/ncu_${name}_kernels.csv" 2>&1
  echo "== $name kernels (us, SM%, tensor%, XU%, DRAM%, grid)"
  python3 - "$OUT/ncu_${name}_kernels.csv" <<'PY'
import csv, sys
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
r = list(csv.DictReader(rows))
for x in r[1:]:
    def g(k):
        try: return float(x[k].replace(',', ''))
        except Exception: return float('nan')
    print(f"{x['Kernel Name'][:60]:60s} {g('gpu__time_duration.sum')/1e3:8.1f} {g('sm__throughput.avg.pct_of_peak_sustained_elapsed'):5.1f} {g('sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active'):5.1f} {g('sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active'):5.1f} {g('dram__throughput.avg.pct_of_peak_sustained_elapsed'):5.1f} {x.get('launch__grid_size','')}")
PY
done
