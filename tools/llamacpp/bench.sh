#!/usr/bin/env bash
# Measure the llama.cpp anchors on this machine (after tools/llamacpp/build.sh):
#   1. llama-bench, whole model, prompt 512 + decode 128, batch 1, f32, f16 and q8_0 GGUF
#   2. test-backend-ops perf for SSM_SCAN (its own built-in shapes; 1 thread on a 2-CPU box)
#   3. ssm-scan-bench: one ggml_ssm_scan node at seqlen 2048, d_state 16, dim 1536 and 5120
#
#   tools/llamacpp/bench.sh [MODEL_DIR=/tmp/130m]
#
# MODEL_DIR is a HF Mamba checkpoint (./target/release/mambac synth --preset 130m /tmp/130m);
# the GGUFs are written next to the build, in ${LLAMACPP_DIR:-/tmp/llamacpp}, once.
# THREADS (default 2), REPS (llama-bench repetitions, default 5) and FORMATS (default
# "f32 f16 q8_0") can be set. It first waits
# (up to 15 min) for the 1-minute load average to drop below IDLE_LOAD (default 0.5); before
# each part it prints the load and any process using > 5% CPU over one second (the load average
# includes the benchmark's own threads once it runs), and after each part the CPU time that
# everything else on the VM used while it ran.
set -euo pipefail

PIN=0.3.36
LLAMACPP_DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
BIN=$LLAMACPP_DIR/build-$PIN/bin
THREADS=${THREADS:-2}
REPS=${REPS:-5}
FORMATS=${FORMATS:-f32 f16 q8_0}
MODEL_DIR=${1:-/tmp/130m}
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=$(basename "$MODEL_DIR")

for t in $FORMATS; do
    if [ ! -f "$LLAMACPP_DIR/$NAME-$t.gguf" ]; then
        "$LLAMACPP_DIR/venv/bin/python" "$HERE/to_gguf.py" "$MODEL_DIR" "$LLAMACPP_DIR/$NAME-$t.gguf" \
            --outtype "$t" 2>/dev/null
    fi
done

busy() {
    echo "== $(uptime)"
    top -b -n 2 -d 1 -w 200 | awk '/^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 5 { print "   busy:", $1, $9 "% CPU", $12 }'
}

# section TITLE CMD...: run CMD; then print its CPU time and the CPU time everything else on the
# VM used meanwhile (from /proc/stat), so interference from other work shows up in the log.
TMPT=$(mktemp)
trap 'rm -f "$TMPT"' EXIT
cpu_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }
section() {
    local title=$1; shift
    echo "== $title"
    local b0 s0 b1 s1 u s w0 w1
    read -r b0 s0 < <(cpu_jiffies)
    w0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$TMPT" "$@"
    w1=$(date +%s.%N)
    read -r b1 s1 < <(cpu_jiffies)
    read -r u s < <(tail -1 "$TMPT")
    awk -v b=$((b1 - b0)) -v st=$((s1 - s0)) -v u="$u" -v s="$s" -v w0="$w0" -v w1="$w1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "   [%.0f s wall; this command %.1f CPU-s; everything else on the VM %.1f CPU-s; steal %.1f s]\n",
                 w1 - w0, u + s, b / hz - (u + s), st / hz }'
}

IDLE_LOAD=${IDLE_LOAD:-0.5}
for _ in $(seq 90); do
    awk -v max="$IDLE_LOAD" '{ exit !($1 < max) }' /proc/loadavg && break
    sleep 10
done
echo "== $(date -Is)"
busy
echo "== $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) CPUs; llama-cpp-python $PIN sdist (llama.cpp 0c1e57098)"

for t in $FORMATS; do
    section "llama-bench $NAME-$t.gguf" \
        "$BIN/llama-bench" -m "$LLAMACPP_DIR/$NAME-$t.gguf" -p 512 -n 128 -t "$THREADS" -r "$REPS"
done
busy

section "test-backend-ops perf -o SSM_SCAN -b CPU (its own shapes; threads = nproc/2)" \
    "$BIN/test-backend-ops" perf -o SSM_SCAN -b CPU
section "ssm-scan-bench, $THREADS threads" "$BIN/ssm-scan-bench" "$THREADS" 2048 20
section "ssm-scan-bench, 1 thread" "$BIN/ssm-scan-bench" 1 2048 10
busy
