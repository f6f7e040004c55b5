#!/usr/bin/env bash
# The last onnxruntime-gpu part, its install into /root/ortsite, then the checks on ORT's CUDA EP:
# the zero-state model, `mambac conformance --ep cuda`, ort_cuda_e2e.py parts A and B.
# Here first: tools/gpu/ort_cuda_e2e.py prepare, then tools/gpu/pack.sh --e2e and copy the e2e
# and pylib archives to .device/pack_e2e (with the last part the call must stay under 64 MiB).
# carry [".device/ortgpu/p04.d", ".device/pack_e2e"]
cd "$(dirname "$0")/../../.."
source tools/gpu/calls/ort_install.sh
export PYTHONPATH=/root/ortsite
python3 tools/gpu/zero_session_check.py 2>&1 | tail -8
capi=/root/ortsite/onnxruntime/capi
libs=$(python3 -c "import sys,glob,os; d=[]; [d.extend(glob.glob(os.path.join(sp,p))) for sp in sys.path if sp for p in ('nvidia/*/lib','nvidia/*/*/lib','torch/lib')]; print(':'.join(dict.fromkeys(d)))")
ORT_DYLIB_PATH=$(ls $capi/libonnxruntime.so.* | head -1) LD_LIBRARY_PATH=$libs:$capi MAMBAC_OPS_LIB=$PWD/.device/e2e/libmambac_ops.so \
  timeout 200 .device/e2e/mambac conformance --ep cuda 2>&1 | tail -25
timeout 240 python3 tools/gpu/ort_cuda_e2e.py run --bundle .device/e2e --work /root/e2e --parts ab --skip-hf 2>&1 | tail -45
