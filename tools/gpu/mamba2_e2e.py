#!/usr/bin/env python3
"""Mamba-2 end to end on the CUDA EP: a random-weight checkpoint of mamba2-2.7b's shape (d_model
2560, 64 layers, head_dim 64, d_state 128, 1 group, vocab 50280: what ../shared/tools/
anchor_mamba_ssm/bench.py --model mamba2 builds in mamba_ssm), exported float16 `--stateful
--logits last`, then `mambac bench --ep cuda` at each batch size (prefill 2048 tokens at batch 1,
16 at larger batches; 64 greedy decode steps), peak GPU memory beside each. Run it in the same
call as the anchor.

  on the H200 (onnxruntime-gpu in /root/ortsite, carry .device/e2e with a current mambac build):
    PYTHONPATH=/root/ortsite python3 tools/gpu/mamba2_e2e.py --bundle .device/e2e --work /root/m2e2e
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_cuda_e2e as e2e  # noqa: E402  (Runner, GpuMemPeak, last_json, log)

REPO = Path(__file__).resolve().parents[2]
SHAPE_2_7B = ["--hidden", "2560", "--layers", "64", "--state", "128", "--head-dim", "64", "--groups", "1",
              "--vocab", "50280"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(REPO / ".device/e2e"))
    ap.add_argument("--work", default="/root/m2e2e")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--decode-graph", action="store_true", help="export and use the decode graph too")
    ap.add_argument("--ep", default="cuda", help="cpu: a dry run of this script (with --small)")
    ap.add_argument("--small", action="store_true", help="2 layers of hidden 256 instead of the 2.7b shape")
    args = ap.parse_args()
    R = e2e.Runner(args.ep, args.bundle, args.work)
    shape = SHAPE_2_7B + (["--layers", "2", "--hidden", "256"] if args.small else [])
    ckpt, model = R.work / "synth-mamba2-2.7b", R.work / "m2-2.7b-float16.onnx"
    res = {"shape": "mamba2-2.7b", "dtype": "float16"}
    if not model.exists():
        t0 = time.time()
        subprocess.run([sys.executable, str(REPO / "tools/synth_mamba2.py"), str(ckpt), *shape], check=True)
        res["synth_s"] = time.time() - t0
        t0 = time.time()
        flags = ["--decode-graph"] if args.decode_graph else []
        R.mambac_run("export", ckpt, "-o", model, "--dtype", "float16", "--stateful", "--logits", "last", "-q", *flags,
                     timeout=600)
        res["export_s"] = time.time() - t0
        e2e.log(f"synth {res['synth_s']:.0f} s, export {res['export_s']:.0f} s")
    for batch in (int(b) for b in args.batches.split(",")):
        plen = 2048 if batch == 1 else 16
        with e2e.GpuMemPeak() as mem:
            r = R.mambac_run("bench", model, "--ep", args.ep, "--batch", batch, "--prompt-len", plen, "--decode-tokens",
                             args.decode_tokens, "--warmup", 1, "--reps", args.reps, "--json")
        j = e2e.last_json(r.stdout)
        j["peak_gpu_mem_mib"] = mem.peak
        res[f"b{batch}"] = j
        # The reset to zero states before each prefill (bench reports it from 45981a5 on).
        reset = f"reset {j['reset']['ms']['median']:.2f} ms, " if j.get("reset") else ""
        e2e.log(f"  mamba2 bench batch {batch}: {reset}prefill {j['prefill']['tokens_per_s']['median']:.0f} tok/s "
                f"({j['prefill']['ms']['median']:.1f} ms), "
                f"decode {j['decode']['tokens_per_s']['median']:.1f} tok/s ({j['decode']['ms']['median']:.3f} ms a step), "
                f"decode graph {j.get('decode_graph')}, peak {mem.peak} MiB")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
