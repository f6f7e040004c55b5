#!/usr/bin/env bash
# Builds the device harness library, .device/gpu/libmambac_cuda_harness.so, from cpp/cuda/*.cu
# (the same sources and flags as the `cuda` cargo feature) with the static CUDA runtime, stripped,
# for tests/python/gpu and tools/gpu/bench_*.py to load through ctypes on the H200 machine.
#
#   tools/gpu/build_harness.sh            # needs nvcc (see cpp/cuda/build_support.rs, PIP_INSTALL)
#
# The kernel ABI header is cxx's: taken from a `cargo build --features cuda` OUT_DIR when one
# exists, else from CXX_INCLUDE (a folder holding mambac-ops/custom-ops/src/kernel_abi.rs.h and
# rust/cxx.h).
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-$(command -v nvcc || ls .venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -1)}
[ -x "$NVCC" ] || { echo "nvcc not found: pip install nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85" >&2; exit 1; }
if [ -z "${CXX_INCLUDE:-}" ]; then
    # The newest, from target/release or a CARGO_TARGET_DIR such as target/cuda (its release/).
    hdr=$(ls -t target/*/build/mambac-ops-*/out/cxxbridge/include/mambac-ops/custom-ops/src/kernel_abi.rs.h \
                target/*/release/build/mambac-ops-*/out/cxxbridge/include/mambac-ops/custom-ops/src/kernel_abi.rs.h \
                2>/dev/null | head -1 || true)
    [ -n "$hdr" ] || { echo "no cxx header: run cargo build first or set CXX_INCLUDE" >&2; exit 1; }
    CXX_INCLUDE=${hdr%/mambac-ops/custom-ops/src/kernel_abi.rs.h}
fi
out=.device/gpu
mkdir -p "$out/obj"
# The kernels' objects of a `cargo build --features cuda` (same sources and flags) are taken when
# they are newer than their source and every header, so only harness_api.cu compiles here.
cargo_objs=${CUDA_OBJECTS:-$(ls -td target/*/release/build/mambac-ops-*/out/cuda 2>/dev/null | head -1 || true)}
if [ -n "$cargo_objs" ]; then
    for o in "$cargo_objs"/*.o; do
        src=cpp/cuda/$(basename "${o%.o}").cu
        if [ -f "$src" ] && [ "$o" -nt "$src" ] &&
           [ -z "$(find cpp/cuda cpp/include -newer "$o" \( -name "*.cuh" -o -name "*.h" \) | head -1)" ]; then
            cp -p "$o" "$out/obj/"
        fi
    done
fi
flags=(-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
       -Xcompiler -fPIC -I"$CXX_INCLUDE" -Icpp/include -Icpp/cuda ${MAMBAC_NVCC_FLAGS:-})
pids=()
for f in cpp/cuda/*.cu; do
    o="$out/obj/$(basename "${f%.cu}").o"
    # Rebuilt when its source, or any header it may include, is newer than the object.
    if [ ! -f "$o" ] || [ "$f" -nt "$o" ] ||
       [ -n "$(find cpp/cuda cpp/include -newer "$o" \( -name "*.cuh" -o -name "*.h" \) | head -1)" ]; then
        "$NVCC" "${flags[@]}" -c "$f" -o "$o" &
        pids+=($!)
        if [ ${#pids[@]} -ge ${JOBS:-2} ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
done
for p in "${pids[@]}"; do wait "$p"; done
"$NVCC" -shared -cudart=static -L"$(dirname "$NVCC")/../lib" -o "$out/libmambac_cuda_harness.so" "$out"/obj/*.o
strip "$out/libmambac_cuda_harness.so"
ls -la "$out/libmambac_cuda_harness.so"
