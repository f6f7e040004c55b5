#!/usr/bin/env bash
# J3 and M2 in one call (after ort_checks.sh, machine still warm): mamba_ssm's Mamba-1 (its
# kernels built on first use, ~90 s), then mambac's 2.8b Mamba-1, then mamba_ssm's Mamba2 and
# mambac's mamba2-2.7b with the decode graph. Each part's full output goes to $OUT.
#   bash tools/gpu/calls/end_to_end.sh [j3|m2|all]
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp}
# A fresh extensions folder: torch waits forever on the lock a killed build leaves behind.
export PYTHONPATH=/root/ortsite:.device/pylib TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/root/tx2}
what=${1:-all}
if [ "$what" != m2 ]; then
    MAX_JOBS=16 timeout 210 python3 .device/anchor/bench.py --batches 1,8,64 > "$OUT/anchor_m1.txt" 2>&1; tail -5 "$OUT/anchor_m1.txt"
    timeout 200 python3 tools/gpu/ort_cuda_e2e.py run --bundle .device/e2e --work /root/e2e --parts c --fast --skip-hf \
        --batches 1,8,64 --reps 3 > "$OUT/j3.txt" 2>&1
    grep -o '"decode": {"ms": {[^}]*}\|"prefill": {"ms": {[^}]*}\|bench batch [0-9]* [^:]*' "$OUT/j3.txt"
fi
if [ "$what" != j3 ]; then
    MAX_JOBS=16 timeout 150 python3 .device/anchor/bench.py --model mamba2 --batches 1,8,64 > "$OUT/anchor_m2.txt" 2>&1; tail -5 "$OUT/anchor_m2.txt"
    timeout 260 python3 tools/gpu/mamba2_e2e.py --bundle .device/e2e --work /root/m2dg --decode-graph --batches 1,8,64 > "$OUT/m2.txt" 2>&1
    tail -12 "$OUT/m2.txt"
fi
