#!/usr/bin/env bash
# Carries one part of the onnxruntime-gpu wheel to the H200 (../shared/tools/ort-gpu-parts.sh
# splits it into .device/ortgpu/p00.d .. p04.d). Five calls in a row, the machine kept warm:
#   bash tools/gpu/calls/ort_part.sh K     with carry [".device/ortgpu/p0K.d"], K = 0..3
# then tools/gpu/calls/ort_checks.sh carries the last part and installs the wheel.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p /root/stage && cp ".device/ortgpu/p0$1.d/p0$1" /root/stage/ && ls -la /root/stage
