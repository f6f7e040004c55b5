#!/usr/bin/env bash
# After a kernel change, one call: install onnxruntime-gpu (after ort_part.sh 0..3), the kernel
# tests named in $TESTS (default: the scans'), J3 (mamba_ssm's Mamba-1 and mambac's 2.8b, same
# call), then mambac's mamba2-2.7b with the decode graph and the general graph at the decode
# graph's batches (mamba_ssm's Mamba2 left to `end_to_end.sh m2` when the budget allows).
# carry [".device/ortgpu/p04.d", ".device/pack_e2e"] (e2e, pylib and harness archives).
cd "$(dirname "$0")/../../.."
source tools/gpu/calls/ort_install.sh
OUT=${OUT:-/tmp}
TESTS=${TESTS:-"tests/python/gpu/test_ssd_scan_cuda.py tests/python/gpu/test_selective_scan_cuda.py"}
PYTHONPATH=.device/pylib timeout 150 python3 -m pytest -q -p no:cacheprovider $TESTS 2>&1 | tail -15 | tee "$OUT/pytest.txt"
bash tools/gpu/calls/end_to_end.sh j3
export PYTHONPATH=/root/ortsite:.device/pylib
timeout 150 python3 tools/gpu/mamba2_e2e.py --bundle .device/e2e --work /root/m2dg --decode-graph --batches 1,8,64 > "$OUT/m2.txt" 2>&1
grep "mamba2 bench" "$OUT/m2.txt"
m=/root/m2dg/m2-2.7b-float16.onnx
capi=/root/ortsite/onnxruntime/capi
libs=$(python3 -c "import sys,glob,os; d=[]; [d.extend(glob.glob(os.path.join(sp,p))) for sp in sys.path if sp for p in ('nvidia/*/lib','nvidia/*/*/lib','torch/lib')]; print(':'.join(dict.fromkeys(d)))")
for b in 1 8; do
    ORT_DYLIB_PATH=$(ls $capi/libonnxruntime.so.* | head -1) LD_LIBRARY_PATH=$libs:$capi MAMBAC_OPS_LIB=$PWD/.device/e2e/libmambac_ops.so \
        timeout 60 .device/e2e/mambac bench $m --ep cuda --batch $b --prompt-len 16 --decode-tokens 64 --warmup 1 --reps 3 \
        --decode-graph off --json > "$OUT/m2_general_b$b.json" 2> "$OUT/m2_general_b$b.err"
    tail -1 "$OUT/m2_general_b$b.err"; grep -o '"decode": {"ms": {[^}]*}' "$OUT/m2_general_b$b.json"
done
