#!/usr/bin/env bash
# The CLI on ONNX Runtime's CUDA EP, on the H200: the op grid (`mambac conformance --ep cuda`) and
# greedy generation on the CUDA EP against the CPU EP's ids, for exports the ORT end-to-end script
# (ort_cuda_e2e.py) does not cover: Mamba-2 (its decode graph too), the bfloat16 export (CUDA
# only: the CPU EP refuses it), the float16 decode graphs.
#
#   tools/gpu/cuda_ep_checks.sh BUNDLE      # BUNDLE holds mambac and the CUDA-built libmambac_ops.so
#
# Needs onnxruntime-gpu: ORT_DYLIB_PATH set to its libonnxruntime.so. Exits 1 on the first mismatch.
set -euo pipefail
B=$(cd "$1" && pwd)
M="$B/mambac"
export MAMBAC_OPS_LIB="$B/libmambac_ops.so"
W=$(mktemp -d)
"$M" conformance --ep cuda | tail -n 4
ids() { "$M" generate "$1" --prompt-ids "$2" --max-new-tokens 8 --greedy --ignore-eos --json --ep "$3" 2>/dev/null | tail -n 1; }
check() {  # name, export flags..., prompt
    local name=$1 prompt=$2 fixture=$3; shift 3
    "$M" export "testdata/$fixture" -o "$W/$name/model.onnx" -q "$@" 2>/dev/null
    local cuda cpu
    cuda=$(ids "$W/$name/model.onnx" "$prompt" cuda)
    if [[ " $* " == *" bfloat16 "* ]]; then
        echo "$name: cuda $cuda (the CPU EP refuses bfloat16)"
        [[ $cuda == *'"ids"'* ]] || { echo "FAIL $name: no ids"; exit 1; }
        return
    fi
    cpu=$(ids "$W/$name/model.onnx" "$prompt" cpu)
    echo "$name: cuda $cuda cpu $cpu"
    [[ $cuda == "$cpu" ]] || { echo "FAIL $name: the CUDA EP's ids differ from the CPU EP's"; exit 1; }
}
check mamba2-f32 "5,6,7;9" mamba2-tiny-hf --stateful
check mamba2-f16 "5,6,7;9" mamba2-tiny-hf --stateful --dtype float16
check mamba1-bf16 "1,2,3" mamba-tiny-hf --stateful --dtype bfloat16
check mamba1-f16-decode-graph "1,2,3;4,5" mamba-tiny-hf --stateful --dtype float16 --decode-graph
check mamba2-f32-decode-graph "5,6,7;9" mamba2-groups2 --stateful --decode-graph
check mamba2-f16-decode-graph "5,6,7;9" mamba2-tiny-hf --stateful --dtype float16 --decode-graph
echo "cuda_ep_checks: PASS"
