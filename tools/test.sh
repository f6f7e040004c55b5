#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, release build, Rust tests, Python tests, and a
# compile of the CUDA kernels when pip's nvcc is installed (tools/setup-cuda.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_DYLIB_PATH=$(tools/setup.sh | tail -n 1)
export ORT_DYLIB_PATH
export MAMBAC_OPS_LIB=$PWD/target/release/libmambac_ops.so
export MAMBAC_BIN=$PWD/target/release/mambac
# Release everywhere: the tests share the release build's artifacts (one compile, not two).
cargo build --release --workspace
cargo test --release --workspace
.venv/bin/python -m pytest -q tests/python
