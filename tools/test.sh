#!/usr/bin/env bash
# The test command (README, .ci/run): lint gates (rustfmt, clippy), set-up, release build, Rust
# tests, Python tests, then the CUDA kernels compiled (not run: no GPU here) with pip's nvcc, and
# that CUDA-enabled library checked to load and run on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
# Formatting first: it needs no build and fails in a second.
cargo fmt --all --check
ORT_DYLIB_PATH=$(tools/setup.sh | tail -n 1)
export ORT_DYLIB_PATH
export MAMBAC_OPS_LIB=$PWD/target/release/libmambac_ops.so
export MAMBAC_BIN=$PWD/target/release/mambac
# Release everywhere: the tests share the release build's artifacts (one compile, not two).
cargo build --release --workspace
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release --workspace
.venv/bin/python -m pytest -q tests/python

tools/setup-cuda.sh
# A target dir of its own, so the CPU-only library above is not replaced.
CARGO_TARGET_DIR=target/cuda cargo build --release -p mambac-ops --features cuda
MAMBAC_OPS_LIB=$PWD/target/cuda/release/libmambac_ops.so .venv/bin/python -m pytest -q tests/python/test_ort_models.py -k "stock_ort_float32"

# The TensorRT plugin library (docs/tensorrt.md), linked from the kernels just compiled, and the
# tests that need no GPU: its harness plays TensorRT's part.
tools/build-tensorrt.sh --cuda-objects "$(ls -td target/cuda/release/build/mambac-ops-*/out/cuda | head -1)"
MAMBAC_TRT_REQUIRED=1 .venv/bin/python -m pytest -q tests/python/test_tensorrt_plugin.py \
    tests/python/test_tensorrt_add_rms_norm.py tests/python/test_tensorrt_gated_rms_norm.py
