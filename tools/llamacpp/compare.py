#!/usr/bin/env python3
"""mambac beside llama.cpp on this machine, in the same window, round by round.

This VM's speed moves by up to 1.4x between minutes (tools/llamacpp/README.md), so comparing a
figure measured at one time with another measured later says little. Each round runs, back to
back with the same thread count: llama-bench on the f32 GGUF and `mambac bench` on the f32
stateful export of the same checkpoint (whole model: prefill 512, decode 128, batch 1), then
ggml's scan ("block": with dt bias, D skip and z gate, as our fused op) and our SelectiveScan
(seqlen 2048, dstate 16, dim 1536 and 5120). Prints each round and the median ratio per row.

    tools/llamacpp/build.sh && tools/llamacpp/bench.sh /tmp/130m    # once: build, GGUFs
    ./target/release/mambac export /tmp/130m -o /tmp/130m-last.onnx --stateful --logits last
    .venv/bin/python tools/llamacpp/compare.py --rounds 3

Needs: $LLAMACPP_DIR (default /tmp/llamacpp) with build-0.3.36/bin and 130m-f32.gguf,
target/release/{mambac,libmambac_ops.so}, .venv with onnxruntime.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLAMA = Path(os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp"))
BIN = LLAMA / "build-0.3.36" / "bin"


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {r.stderr[-2000:]}")
    return r.stdout


def llama_model(gguf, threads):
    out = sh([BIN / "llama-bench", "-m", gguf, "-p", "512", "-n", "128", "-t", str(threads), "-r", "3", "-o", "json"])
    rows = json.loads(out)
    res = {}
    for r in rows:
        key = "prefill" if r.get("n_prompt", 0) > 0 else "decode"
        res[key] = r["avg_ts"]
    return res


def mambac_model(model, threads):
    out = sh([REPO / "target/release/mambac", "bench", model, "--batch", "1", "--prompt-len", "512", "--decode-tokens", "128",
              "--warmup", "1", "--reps", "3", "--threads", str(threads), "--json"])
    j = json.loads(out.strip().splitlines()[-1])
    return {"prefill": j["prefill"]["tokens_per_s"]["median"], "decode": j["decode"]["tokens_per_s"]["median"]}


def llama_scan(threads):
    out = sh([BIN / "ssm-scan-bench", str(threads), "2048", "10"])
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^block dim=\s*(\d+).*?median\s+([\d.]+) ms", out, re.M)}


def mambac_scan(threads):
    out = sh([REPO / ".venv/bin/python", REPO / "tools/bench_ops.py", "--threads", str(threads), "--repeat", "10"])
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^SelectiveScan dim=\s*(\d+): median\s+([\d.]+) ms", out, re.M)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf", default=str(LLAMA / "130m-f32.gguf"))
    ap.add_argument("--model", default="/tmp/130m-last.onnx", help="mambac export --stateful --logits last of the same checkpoint")
    ap.add_argument("--int8-model", default="/tmp/130m-int8-last.onnx",
                    help="mambac export --quantize int8 of the same checkpoint, run beside llama.cpp's q8_0 GGUF (skipped if absent)")
    ap.add_argument("--q8-gguf", default=str(LLAMA / "130m-q8_0.gguf"))
    ap.add_argument("--json", help="write every round's figures here")
    a = ap.parse_args()
    rounds = []
    for k in range(a.rounds):
        t0 = time.time()
        load = Path("/proc/loadavg").read_text().split()[0]
        r = {"load_before": float(load)}
        r["llama_model"] = llama_model(a.gguf, a.threads)
        r["mambac_model"] = mambac_model(a.model, a.threads)
        if Path(a.int8_model).is_file() and Path(a.q8_gguf).is_file():
            r["llama_q8_0"] = llama_model(a.q8_gguf, a.threads)
            r["mambac_int8"] = mambac_model(a.int8_model, a.threads)
        r["llama_scan_ms"] = llama_scan(a.threads)
        r["mambac_scan_ms"] = mambac_scan(a.threads)
        r["seconds"] = time.time() - t0
        rounds.append(r)
        print(f"round {k + 1} (load before {load}, {r['seconds']:.0f} s): "
              f"prefill {r['mambac_model']['prefill']:.1f} vs {r['llama_model']['prefill']:.1f} tok/s, "
              f"decode {r['mambac_model']['decode']:.1f} vs {r['llama_model']['decode']:.1f} tok/s, "
              + (f"int8 decode {r['mambac_int8']['decode']:.1f} vs q8_0 {r['llama_q8_0']['decode']:.1f} tok/s, " if "mambac_int8" in r else "")
              + ", ".join(f"scan dim {d} {r['mambac_scan_ms'][d]:.1f} vs {r['llama_scan_ms'][d]:.1f} ms" for d in sorted(r["mambac_scan_ms"])),
              flush=True)
    med = statistics.median
    print(f"\nmedians over {a.rounds} rounds, {a.threads} threads (mambac / llama.cpp):")
    print("| what | mambac | llama.cpp 0c1e570 | ratio |")
    print("|---|---|---|---|")
    for phase in ("prefill", "decode"):
        m = med(r["mambac_model"][phase] for r in rounds)
        l = med(r["llama_model"][phase] for r in rounds)
        ratios = [r["mambac_model"][phase] / r["llama_model"][phase] for r in rounds]
        print(f"| 130m f32 {phase} (tok/s) | {m:.1f} | {l:.1f} | {med(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}) |")
    if "mambac_int8" in rounds[0]:
        for phase in ("prefill", "decode"):
            m = med(r["mambac_int8"][phase] for r in rounds)
            l = med(r["llama_q8_0"][phase] for r in rounds)
            ratios = [r["mambac_int8"][phase] / r["llama_q8_0"][phase] for r in rounds]
            print(f"| 130m int8 (mambac --quantize int8) vs q8_0 {phase} (tok/s) | {m:.1f} | {l:.1f} | {med(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}) |")
    for d in sorted(rounds[0]["mambac_scan_ms"]):
        m = med(r["mambac_scan_ms"][d] for r in rounds)
        l = med(r["llama_scan_ms"][d] for r in rounds)
        ratios = [r["llama_scan_ms"][d] / r["mambac_scan_ms"][d] for r in rounds]
        print(f"| SelectiveScan dim {d} (ms) | {m:.1f} | {l:.1f} | {med(ratios):.1f}x faster (rounds {min(ratios):.1f}-{max(ratios):.1f}) |")
    if a.json:
        Path(a.json).write_text(json.dumps(rounds, indent=1))


if __name__ == "__main__":
    sys.exit(main())
