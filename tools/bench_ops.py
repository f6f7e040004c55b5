#!/usr/bin/env python3
"""Times SelectiveScan (and CausalConv1d) from libmambac_ops.so through stock onnxruntime.

    .venv/bin/python tools/bench_ops.py [--threads 2] [--dims 1536 5120] [--seqlen 2048] [--repeat 10] [--state]

--state adds initial_state and final_state, as a stateful model's decode step has them
(e.g. `--batch 8 --seqlen 1 --dims 1536 --state` is one decode step of a 130m layer).

Prints one line per shape: median and best wall time of session.run over --repeat runs (after one
warm-up), with all of Mamba's optional inputs given (D, z, delta_bias). BENCHMARKS.md records the
results against the llama.cpp anchor. MAMBAC_CPU_ISA=generic|avx2 times a lower kernel build.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/python"))
from ops_reference import SCAN_INPUTS, one_node_model, run, session  # noqa: E402


def time_runs(sess, feeds, repeat):
    """Median and best wall time, and CPU time (all threads) per run: on a shared machine the
    wall time grows with other load, the CPU time much less."""
    run(sess, feeds)  # warm-up: first-run allocations
    times = []
    cpu0 = time.process_time()
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(sess, feeds)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / repeat
    return np.median(times), min(times), cpu


def scan_feeds(batch, seqlen, dim, dstate, rng):
    f32 = np.float32
    return {
        "u": rng.standard_normal((batch, seqlen, dim)).astype(f32),
        "delta": (rng.standard_normal((batch, seqlen, dim)) * 0.5 - 1).astype(f32),
        "A": -np.exp(rng.standard_normal((dim, dstate))).astype(f32),
        "B": rng.standard_normal((batch, seqlen, 1, dstate)).astype(f32),
        "C": rng.standard_normal((batch, seqlen, 1, dstate)).astype(f32),
        "D": rng.standard_normal(dim).astype(f32),
        "z": rng.standard_normal((batch, seqlen, dim)).astype(f32),
        "delta_bias": rng.standard_normal(dim).astype(f32),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dims", type=int, nargs="+", default=[1536, 5120])
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--dstate", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--state", action="store_true", help="with initial_state and final_state")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    from ops_reference import LIB
    import subprocess
    isa = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"library {LIB}; {isa} CPUs visible")
    print(f"threads={args.threads} batch={args.batch} seqlen={args.seqlen} dstate={args.dstate} float32")
    for dim in args.dims:
        feeds = scan_feeds(args.batch, args.seqlen, dim, args.dstate, rng)
        slots, outs = SCAN_INPUTS[:8], ["y"]
        if args.state:
            feeds["initial_state"] = rng.standard_normal((args.batch, dim, args.dstate)).astype(np.float32)
            slots, outs = SCAN_INPUTS, ["y", "final_state"]
        sess = session(one_node_model("SelectiveScan", slots, feeds, outs), args.threads)
        med, best, cpu = time_runs(sess, feeds, args.repeat)
        print(f"SelectiveScan dim={dim:5d}: median {med * 1e3:7.2f} ms  best {best * 1e3:7.2f} ms  cpu {cpu * 1e3:7.2f} ms")
    for dim in args.dims:
        x = rng.standard_normal((args.batch, args.seqlen, dim)).astype(np.float32)
        feeds = {"x": x, "weight": rng.standard_normal((dim, 4)).astype(np.float32),
                 "bias": rng.standard_normal(dim).astype(np.float32)}
        slots, outs = ["x", "weight", "bias"], ["y"]
        if args.state:
            feeds["initial_state"] = rng.standard_normal((args.batch, dim, 3)).astype(np.float32)
            slots, outs = slots + ["initial_state"], ["y", "final_state"]
        sess = session(one_node_model("CausalConv1d", slots, feeds, outs), args.threads)
        med, best, cpu = time_runs(sess, feeds, args.repeat)
        print(f"CausalConv1d  dim={dim:5d} width=4: median {med * 1e3:7.2f} ms  best {best * 1e3:7.2f} ms  cpu {cpu * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
