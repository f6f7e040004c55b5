#!/usr/bin/env bash
# Packs what a GPU check needs into .device/pack as xz archives, so one device call can carry
# them all (the carry limit is 64 MiB a call with the working tree; the harness library is 21 MB
# raw and ~6 MB packed). On the device, tools/gpu/unpack.sh puts them back in place.
#
#   tools/gpu/pack.sh [--build] [--e2e]
#
# --build: rebuild the harness (tools/gpu/build_harness.sh) and the TensorRT plugin library
#   (tools/build-tensorrt.sh, linking the harness's kernel objects) first.
# --e2e: also pack .device/e2e (tools/gpu/ort_cuda_e2e.py prepare: the CUDA build of mambac and
#   libmambac_ops.so, fixture exports).
# Packed when present: .device/gpu's harness, target/tensorrt's plugin library and its harness,
# .device/pylib (pytest's wheels) and .device/anchor (mamba_ssm's sources). Carry .device/pack.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=0 e2e=0
for a in "$@"; do
    case "$a" in
        --build) build=1 ;;
        --e2e) e2e=1 ;;
        *) echo "unknown argument $a (usage: tools/gpu/pack.sh [--build] [--e2e])" >&2; exit 2 ;;
    esac
done
if [ $build = 1 ]; then
    tools/gpu/build_harness.sh
    tools/build-tensorrt.sh --cuda-objects .device/gpu/obj
fi
out=.device/pack
rm -rf "$out" && mkdir -p "$out"
# pack NAME DIR PATH...: DIR/PATH... into NAME.tar.xz, paths relative to DIR; skipped when absent.
pack() {
    local name=$1 dir=$2; shift 2
    local have=()
    for p in "$@"; do [ -e "$dir/$p" ] && have+=("$p"); done
    [ ${#have[@]} -gt 0 ] || { echo "pack: nothing for $name" >&2; return 0; }
    tar cf - -C "$dir" "${have[@]}" | xz -T0 -6 > "$out/$name.tar.xz"
}
pack harness .device gpu/libmambac_cuda_harness.so
pack trt target tensorrt/libmambac_trt.so tensorrt/trt_harness
pack pylib .device pylib anchor
[ $e2e = 1 ] && pack e2e .device e2e
ls -la "$out"
du -sh "$out"
