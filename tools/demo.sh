#!/usr/bin/env bash
# The main job on the bundled tiny checkpoint: build, export to ONNX with the fused ops, run it in
# ONNX Runtime with libmambac_ops.so through `mambac run`, and compare with the Hugging Face
# reference logits.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_DYLIB_PATH=$(tools/setup.sh | tail -n 1)
export ORT_DYLIB_PATH
cargo build --release --workspace
mkdir -p out
./target/release/mambac export testdata/mamba-tiny-hf -o out/mamba-tiny.onnx
.venv/bin/python - <<'PY'
from safetensors.numpy import load_file, save_file
ref = load_file("testdata/mamba-tiny-hf/reference.safetensors")
save_file({"input_ids": ref["input_ids"]}, "out/input.safetensors")
PY
./target/release/mambac run out/mamba-tiny.onnx --input out/input.safetensors -o out/logits.safetensors \
  --ops-lib target/release/libmambac_ops.so --threads 2
.venv/bin/python - <<'PY'
import numpy as np
from safetensors.numpy import load_file
ref = load_file("testdata/mamba-tiny-hf/reference.safetensors")["logits"]
out = load_file("out/logits.safetensors")["logits"]
err = np.abs(out - ref).max() / np.abs(ref).max()
print(f"logits {out.shape}: worst relative error vs the Hugging Face float64 reference {err:.2e} (tolerance 1e-4)")
raise SystemExit(0 if err <= 1e-4 else 1)
PY
# Generation: the stateful export and its decode graph (one fused MambaLayerStep node a layer,
# the decode path on the CUDA EP; forced here on the CPU EP): the same seeded sample either way
# (the tiny checkpoint's greedy continuation repeats one token, which would show little).
./target/release/mambac export testdata/mamba-tiny-hf -o out/mamba-tiny-stateful.onnx --stateful --logits last --decode-graph -q
a=$(./target/release/mambac generate out/mamba-tiny-stateful.onnx --prompt-ids 17,900,3,44 --max-new-tokens 12 --temperature 1.0 --top-k 50 --seed 3 --json --decode-graph off 2>/dev/null | tail -n 1)
b=$(./target/release/mambac generate out/mamba-tiny-stateful.onnx --prompt-ids 17,900,3,44 --max-new-tokens 12 --temperature 1.0 --top-k 50 --seed 3 --json --decode-graph on 2>/dev/null | tail -n 1)
echo "generate, stateful graph: $a; decode graph: $b"
[ "$a" = "$b" ]
