# Sourced by the Nsight Compute scripts (ncu-profile.sh, ncu-source.sh) on the device machine:
# the device environment, $NCU, the model directory $M and the long workload's ids in
# /tmp/ids_ncu_long.bin; ncu_model NAME makes the random model NAME (minilm | bge) if missing.
source "$(dirname "${BASH_SOURCE[0]}")/device-env.sh"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this machine"; exit 1; }
M=/tmp/ek-models
mkdir -p $M
python3 -c "import sys; sys.path.insert(0, 'bench'); import gpu_vs_pytorch as g; n, lo, hi = g.WORKLOADS['long']; g.write_ids('/tmp/ids_ncu_long.bin', g.make_ids(n, lo, hi, 3))"
ncu_model() {
  local preset=$1; [ $1 = bge ] && preset=bge-base
  [ -f $M/$1/model.safetensors ] || python3 bench/make_random_model.py --preset $preset --tokenizer-from $D/tokenizer --out $M/$1 >/dev/null
}
