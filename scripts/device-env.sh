# Sourced by the device-machine scripts (gpu-check.sh, embedbench-device.sh): the repo root as
# working directory, D (the .device/ staging from build-device.sh), OUT (results; the device tool
# sets it), the bundled shared libraries unpacked and on the loader path.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
D=.device
OUT=${OUT:-/tmp/ek-out}
mkdir -p "$OUT"
[ -d $D/lib ] || tar -C $D -xJf $D/lib.tar.xz
export LD_LIBRARY_PATH="$PWD/$D/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
