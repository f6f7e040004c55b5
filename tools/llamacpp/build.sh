#!/usr/bin/env bash
# Build llama.cpp's llama-bench and test-backend-ops (CPU backend only) from the llama.cpp
# vendored in a pinned llama-cpp-python sdist, plus tools/llamacpp/ssm_scan_bench.c against
# the same ggml. Everything goes to ${LLAMACPP_DIR:-/tmp/llamacpp}, outside the repository.
#
#   tools/llamacpp/build.sh            # download (once), unpack, configure, build
#   JOBS=1 tools/llamacpp/build.sh     # fewer compile jobs (default 2)
#
# Also creates ${LLAMACPP_DIR}/venv for tools/llamacpp/to_gguf.py.
# Prints the paths of the built binaries at the end.
set -euo pipefail

PIN=0.3.36                       # llama-cpp-python; vendors ggml-org/llama.cpp@0c1e57098
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMACPP_DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
JOBS=${JOBS:-2}

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
HERE=$REPO/tools/llamacpp

mkdir -p "$LLAMACPP_DIR"
cd "$LLAMACPP_DIR"

SDIST=llama_cpp_python-$PIN.tar.gz
if [ ! -f "$SDIST" ]; then
    # --no-binary only for llama-cpp-python itself: pip still prepares the sdist's metadata, and
    # with ':all:' it would also build its build dependencies (cmake, ...) from source.
    "$PY" -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$PIN" -d .
fi
echo "$SHA256  $SDIST" | sha256sum -c -

SRC=$LLAMACPP_DIR/llama_cpp_python-$PIN/vendor/llama.cpp
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tar xzf "$SDIST"
fi
grep -m1 "update llama.cpp to" "$LLAMACPP_DIR/llama_cpp_python-$PIN/CHANGELOG.md" || true

# cmake and ninja from PyPI into the venv if the system has none
BIN=$(dirname "$PY")
CMAKE=$(command -v cmake || true)
NINJA=$(command -v ninja || true)
if [ -z "$CMAKE" ] || [ -z "$NINJA" ]; then
    [ -x "$BIN/cmake" ] && [ -x "$BIN/ninja" ] || "$PY" -m pip install -q cmake==4.4.5 ninja==1.13.2
    CMAKE=${CMAKE:-$BIN/cmake}
    NINJA=${NINJA:-$BIN/ninja}
fi
"$CMAKE" --version | head -1

BUILD=$LLAMACPP_DIR/build-$PIN
"$CMAKE" -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF
"$CMAKE" --build "$BUILD" --target llama-bench test-backend-ops -j "$JOBS"

# python env for to_gguf.py (vendored gguf-py needs numpy, pyyaml, tqdm, requests)
if [ ! -x "$LLAMACPP_DIR/venv/bin/python" ]; then
    python3 -m venv "$LLAMACPP_DIR/venv"
    "$LLAMACPP_DIR/venv/bin/pip" install -q numpy==2.4.6 pyyaml==6.0.4 tqdm==4.70.1 requests==2.34.2
fi

# stand-alone timing of one ggml_ssm_scan node at the shapes of our benchmarks
cc -O2 -std=c11 -o "$BUILD/bin/ssm-scan-bench" "$HERE/ssm_scan_bench.c" \
    -I "$SRC/ggml/include" -L "$BUILD/bin" -lggml -lggml-base -lggml-cpu \
    -Wl,-rpath,"$BUILD/bin" -lm

echo "built:"
ls -1 "$BUILD/bin/llama-bench" "$BUILD/bin/test-backend-ops" "$BUILD/bin/ssm-scan-bench"
