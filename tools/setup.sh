#!/usr/bin/env bash
# Set-up shared by the README's commands: a Python venv in .venv with the pinned test and runtime
# packages (ONNX Runtime's shared library comes from its pip wheel). Idempotent and quiet when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if ! { .venv/bin/python -c "import numpy, onnx, onnxruntime, safetensors, pytest, sympy, maturin, ziglang" 2>/dev/null &&
  [[ -x .venv/bin/cargo-zigbuild ]]; }; then
  .venv/bin/pip install -q -r tools/requirements.txt
fi
# mambac finds ONNX Runtime through this variable, else through the absolute path recorded here
# beside the executables (mambac-ort.path), else through python3 on PATH (see `mambac --help`).
ORT_DYLIB_PATH=$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)
export ORT_DYLIB_PATH
for profile in release debug; do
  mkdir -p "${CARGO_TARGET_DIR:-$PWD/target}/$profile"
  printf '%s\n' "$ORT_DYLIB_PATH" >"${CARGO_TARGET_DIR:-$PWD/target}/$profile/mambac-ort.path"
done
echo "$ORT_DYLIB_PATH"
