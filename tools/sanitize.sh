#!/usr/bin/env bash
# Runs the op tests against the op library built with AddressSanitizer and UBSan
# (MAMBAC_SANITIZE=1, read by build.rs; its own target dir, so release builds stay clean):
# the Rust op tests (tests/ops_errors.rs, tests/shape_agreement.rs) and the Python op grid
# (tests/python/test_ops*.py) through stock onnxruntime, with the sanitizer runtimes preloaded
# into Python (the library is dlopened by ORT, after the process has started). Any report stops
# the run with a non-zero status (halt_on_error, no UB recovery).
#
#   tools/sanitize.sh [pytest args...]        # e.g. -x -k scan
set -euo pipefail
cd "$(dirname "$0")/.."
export MAMBAC_SANITIZE=1 CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/sanitize}
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(tools/setup.sh | tail -n1)}
export ORT_DYLIB_PATH
# Leaks: ORT and Python keep allocations to exit by design; the checks here are the memory errors.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
echo "== Rust op tests (ASan + UBSan)"
mkdir -p "$CARGO_TARGET_DIR"
log=$CARGO_TARGET_DIR/sanitize-rust.log
# The test binaries (not cargo and rustc) run with the runtimes preloaded, through cargo's runner:
# ASan wants to come first in the process.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env LD_PRELOAD=$preload"
if ! cargo test --release -p mambac-ops --test ops_errors --test shape_agreement >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "Rust op tests failed under the sanitizers (whole log: $log)" >&2
    exit 1
fi
grep -E "^test result" "$log"

echo "== Python op grid (ASan + UBSan)"
LD_PRELOAD=$preload MAMBAC_OPS_LIB=$PWD/$CARGO_TARGET_DIR/release/libmambac_ops.so \
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/python/test_ops.py tests/python/test_ops_errors.py \
    tests/python/test_ops_empty.py tests/python/test_ops_nonfinite.py "$@"
