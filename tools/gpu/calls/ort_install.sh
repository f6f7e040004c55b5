#!/usr/bin/env bash
# The last onnxruntime-gpu part (after ort_part.sh 0..3), its install into /root/ortsite, and the
# archives of .device/pack_e2e unpacked in place (tools/gpu/unpack.sh). Sourced by the calls that
# need ORT's CUDA EP; carry [".device/ortgpu/p04.d", ".device/pack_e2e"].
W=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cp .device/ortgpu/p04.d/p04 /root/stage/ && (cd /root/stage && cat p00 p01 p02 p03 p04 > $W &&
  python3 -m pip install -q --no-index --no-deps --target /root/ortsite $W) || exit 1
rm -f /root/stage/p0?
mkdir -p .device/pack && cp .device/pack_e2e/* .device/pack/ && tools/gpu/unpack.sh
