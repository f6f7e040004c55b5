#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler set from pip into .venv (matches the H200 machines'
# driver; see ../shared/DEVICE.md) so `cargo build --release --features cuda` finds nvcc there.
# No GPU is needed to compile.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh >/dev/null
if ! ls .venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
  .venv/bin/pip install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
ls .venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc
