#!/usr/bin/env bash
# Builds the TensorRT plugin library target/tensorrt/libmambac_trt.so (SelectiveScan,
# CausalConv1d, MambaLayerStep, SsdScan, Mamba2LayerStep, AddRmsNorm, GatedRmsNorm as IPluginV3
# plugins; docs/tensorrt.md)
# and its test harness target/tensorrt/trt_harness.
#
#   tools/build-tensorrt.sh [--tensorrt-include DIR] [--cuda-objects DIR]
#
# --tensorrt-include (or TENSORRT_INCLUDE): a TensorRT install's include/ folder.
# --cuda-objects: the kernels' objects of a `cargo build --features cuda` (its OUT_DIR/cuda), to
#   link instead of compiling cpp/cuda again (tools/test.sh does so; the sources are the same).
#
# TensorRT headers: DIR (a TensorRT install's include/), else the TensorRT 11.4 headers of the
# pinned trtx-sys crate, fetched by cargo (tensorrt/trtx-headers/Cargo.toml). The library uses no
# TensorRT symbol, so nothing of TensorRT is linked. The CUDA kernels (cpp/cuda) and the CUDA
# runtime are linked in statically; nvcc as for the `cuda` feature (tools/setup-cuda.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TRT_INC=${TENSORRT_INCLUDE:-}
CUDA_OBJS=
while [ $# -gt 0 ]; do
    case "$1" in
        --tensorrt-include) TRT_INC=$2; shift 2 ;;
        --cuda-objects) CUDA_OBJS=$2; shift 2 ;;
        *) echo "unknown argument $1 (usage: tools/build-tensorrt.sh [--tensorrt-include DIR] [--cuda-objects DIR])" >&2; exit 2 ;;
    esac
done
NVCC=${NVCC:-$(command -v nvcc || ls .venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -1)}
[ -x "$NVCC" ] || { echo "nvcc not found: run tools/setup-cuda.sh or set NVCC" >&2; exit 1; }
CUDA_ROOT=$(dirname "$(dirname "$NVCC")")
CXX=${CXX:-c++}

if [ -z "$TRT_INC" ]; then
    manifest=tensorrt/trtx-headers/Cargo.toml
    cargo fetch --locked -q --manifest-path "$manifest"
    crate=$(cargo metadata --locked --format-version 1 --manifest-path "$manifest" |
        python3 -c "import json,sys,os; print(next(os.path.dirname(p['manifest_path']) for p in json.load(sys.stdin)['packages'] if p['name']=='trtx-sys'))")
    TRT_INC=$crate/TensorRT-Headers/TRT-Enterprise-11.4
fi
[ -f "$TRT_INC/NvInferRuntime.h" ] || { echo "no NvInferRuntime.h in $TRT_INC" >&2; exit 1; }

# cxx's generated kernel ABI header (kernel_abi.rs.h, rust/cxx.h): from the op library's build.
out_dir=$(cargo build --release -q -p mambac-ops --message-format=json |
    python3 -c "import json,sys
for l in sys.stdin:
    m = json.loads(l)
    pid = m.get('package_id', '')
    if m.get('reason') == 'build-script-executed' and ('#mambac-ops@' in pid or pid.startswith('mambac-ops ')):
        print(m['out_dir'])" | tail -1)
CXX_INCLUDE=$out_dir/cxxbridge/include
[ -f "$CXX_INCLUDE/mambac-ops/custom-ops/src/kernel_abi.rs.h" ] || { echo "no cxx header in $CXX_INCLUDE" >&2; exit 1; }

out=target/tensorrt
mkdir -p "$out/obj"
cuflags=(-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
         -Xcompiler -fPIC,-fvisibility=hidden -I"$CXX_INCLUDE" -Icpp/include -Icpp/cuda)
pids=()
cuda_objs=()
for f in cpp/cuda/*.cu; do
    [ "$(basename "$f")" = harness_api.cu ] && continue  # the benchmark harness's, not shipped
    o="$out/obj/$(basename "${f%.cu}").o"
    if [ -n "$CUDA_OBJS" ]; then
        [ -f "$CUDA_OBJS/$(basename "$o")" ] || { echo "no $(basename "$o") in $CUDA_OBJS" >&2; exit 1; }
        cuda_objs+=("$CUDA_OBJS/$(basename "$o")")
        continue
    fi
    cuda_objs+=("$o")
    if [ ! -f "$o" ] || [ -n "$(find cpp/cuda cpp/include -newer "$o" \( -name "*.cu*" -o -name "*.h" \) | head -1)" ]; then
        "$NVCC" "${cuflags[@]}" -c "$f" -o "$o" &
        pids+=($!)
        if [ ${#pids[@]} -ge "${JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
done
for p in "${pids[@]}"; do wait "$p"; done

cxxflags=(-std=c++17 -O2 -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -Wall -Wno-deprecated-declarations
          -I"$TRT_INC" -I"$CUDA_ROOT/include" -I"$CXX_INCLUDE" -Icpp/include)
"$CXX" "${cxxflags[@]}" -shared -o "$out/libmambac_trt.so" \
    tensorrt/plugin.cpp tensorrt/entry.cpp tensorrt/selective_scan_plugin.cpp tensorrt/causal_conv1d_plugin.cpp \
    tensorrt/layer_step_plugin.cpp tensorrt/ssd_scan_plugin.cpp tensorrt/mamba2_layer_step_plugin.cpp \
    tensorrt/add_rms_norm_plugin.cpp \
    tensorrt/gated_rms_norm_plugin.cpp \
    cpp/shape_check.cpp "${cuda_objs[@]}" \
    -L"$CUDA_ROOT/lib" -L"$CUDA_ROOT/lib64" -lcudart_static -ldl -lrt -lpthread \
    -Wl,--version-script=tensorrt/exports.map -Wl,--exclude-libs,ALL -Wl,--no-undefined -Wl,-z,defs
strip --strip-unneeded "$out/libmambac_trt.so"

"$CXX" -std=c++17 -O1 -Wall -Wno-deprecated-declarations -I"$TRT_INC" -I"$CUDA_ROOT/include" \
    -o "$out/trt_harness" tensorrt/harness/harness.cpp \
    -L"$CUDA_ROOT/lib" -L"$CUDA_ROOT/lib64" -lcudart_static -ldl -lrt -lpthread
strip "$out/trt_harness"
echo "$out/libmambac_trt.so"
