#!/usr/bin/env bash
# One H200 call: kernel conformance (tests/python/gpu, the TensorRT plugin's enqueue tests
# included) and the kernel benches (fused decode layers, SsdScan against mamba_ssm).
# Here first: tools/gpu/pack.sh --build (harness, TensorRT plugin, pytest's wheels, mamba_ssm's
# sources); then run with carry [".device/pack"]:  bash tools/gpu/calls/kernels.sh
cd "$(dirname "$0")/../../.."
tools/gpu/unpack.sh
export PYTHONPATH=.device/pylib
OUT=${OUT:-/tmp}
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/python/gpu 2>&1 | tail -40 | tee "$OUT/pytest.txt"
MAMBAC_PROFILE=1 timeout 100 python3 tools/gpu/bench_decode_layer.py 2>&1 | tail -40
MAMBAC_PROFILE=1 timeout 80 python3 tools/gpu/bench_mamba2_decode_layer.py 2>&1 | tail -30
PYTHONPATH=.device/pylib:.device/anchor timeout 120 python3 tools/gpu/bench_ssd.py --profile 2>&1 | tail -30
