#!/usr/bin/env bash
# Where the decode steps and prefills go, kernel by kernel (CUPTI; tools/gpu/decode_probe.py
# parts S and P), for the 2.8b Mamba-1 and the mamba2-2.7b shapes, float16. After ort_part.sh
# 0..3; carry [".device/ortgpu/p04.d", ".device/pack_e2e"] (e2e + pylib archives). Full outputs
# go to $OUT.
cd "$(dirname "$0")/../../.."
source tools/gpu/calls/ort_install.sh
OUT=${OUT:-/tmp}
export PYTHONPATH=/root/ortsite:.device/pylib
# mamba2_e2e.py synthesises and exports the mamba2-2.7b shape (and benches batch 64 on the way).
timeout 200 python3 tools/gpu/mamba2_e2e.py --bundle .device/e2e --work /root/m2dg --batches 64 --reps 1 > "$OUT/m2_b64.txt" 2>&1
tail -3 "$OUT/m2_b64.txt"
timeout 150 python3 tools/gpu/decode_probe.py --bundle .device/e2e --work /root/m2dg --model /root/m2dg/m2-2.7b-float16.onnx \
    --parts sp --batches 8,64 --top 25 > "$OUT/probe_m2.txt" 2>&1
grep -A12 "GPU time\|\[P\] prefill" "$OUT/probe_m2.txt" | head -80
timeout 200 python3 tools/gpu/decode_probe.py --bundle .device/e2e --work /root/e2e --parts sp --batches 64 --top 25 \
    > "$OUT/probe_m1.txt" 2>&1
grep -A12 "GPU time\|\[P\] prefill" "$OUT/probe_m1.txt" | head -60
