#!/usr/bin/env python3
"""SsdScan's CUDA kernels (cpp/cuda/ssd_scan.h) against mamba_ssm's `mamba_chunk_scan_combined`
(Triton) in the same process, on mamba2-2.7b's scan shapes: d_model 2560, expand 2 -> 80 heads of
head_dim 64, d_state 128, ngroups 1, chunk 256; seqlen 2048 and 8192, batch 1 and 8, float16 and
bfloat16; dt_bias, D, softplus on, final state out, no initial state (a prefill).

Per shape: mamba_ssm, ours as the shape chooses, and ours with chunk 64 / 128 / 256 forced,
interleaved (theirs, ours..., theirs again: a warm GPU runs 1.5x a cold one), CUDA-event medians
of back-to-back calls, then both replayed from a CUDA graph (GPU time without launch costs);
our y and final state are compared with mamba_ssm's (max |diff| / max |ref|) as a sanity line (the
conformance itself is `pytest tests/python/gpu/test_ssd_scan_cuda.py`). Then a crossover sweep,
the step kernel against the chunked path at short seqlens, which sets kSsdChunkedMinSeqlen.

Usage (on the device):
    python3 tools/gpu/bench_ssd.py [--anchor .device/anchor] [--quick] [harness.so]
mamba_ssm comes from the anchor tree (../shared/tools/anchor_mamba_ssm/prepare.sh writes it to
.device/anchor; only its Python sources are needed here, with triton and einops); without it the
anchor column is skipped with a line saying why. Prints a table last; writes it to $OUT/ssd_bench.txt
when OUT is set.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
ap = argparse.ArgumentParser()
ap.add_argument("harness", nargs="?", help="libmambac_cuda_harness.so (default: .device/gpu/)")
ap.add_argument("--anchor", default=os.path.join(ROOT, ".device", "anchor"), help="mamba_ssm's anchor tree")
ap.add_argument("--quick", action="store_true", help="seqlen 2048 only")
ap.add_argument("--profile", action="store_true",
                help="per-kernel CUPTI breakdown of ours and mamba_ssm's at fp16 batch 1 seqlen 2048, then stop")
ap.add_argument("--once", action="store_true",
                help="6 calls of ours (auto) at fp16 batch 1 seqlen 2048 and stop: for ncu --launch-skip 5")
args = ap.parse_args()
sys.path[:0] = [HERE, os.path.join(ROOT, "tests", "python"), os.path.join(ROOT, "tests", "python", "gpu")]
if args.harness:
    os.environ["MAMBAC_CUDA_HARNESS"] = args.harness
import cuda_harness as h  # noqa: E402
from cuda_harness import check_rc, ptr, ssd_inputs, ssd_params, ssd_scratch, torch  # noqa: E402
from gpu_timing import graph_time_us, kernel_profile, time_us  # noqa: E402

LOG = []
HEADS, HEAD_DIM, DSTATE, NGROUPS, CHUNK = 80, 64, 128, 1, 256


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def load_anchor():
    """mamba_chunk_scan_combined, or None after a line saying why not."""
    sys.path.insert(0, os.path.abspath(args.anchor))
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001 (any failure to import means: no anchor in this run)
        log(f"anchor: mamba_ssm not importable from {args.anchor} ({type(e).__name__}: {e}); "
            "the mamba_ssm column is skipped")
        return None
    return mamba_chunk_scan_combined


class Ours:
    """One shape's SsdScan call for a config (path, chunk), outputs and scratch allocated once."""

    def __init__(self, x, dtype, cfg):
        self.cfg = cfg
        self.y = torch.empty_like(x["x"])
        b, _, nh, p = x["x"].shape
        self.fs = torch.empty((b, nh, p, x["B"].shape[3]), device=h.dev)
        self.p = ssd_params(x, self.y, self.fs, dtype, True)
        self.scratch = ssd_scratch(self.p, cfg)
        self.p.scratch = ptr(self.scratch)

    def __call__(self):
        check_rc(h.launch_ssd(self.p, self.cfg), f"SsdScan {self.cfg}")


def rel(out, ref):
    out, ref = out.float(), ref.float()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def bench_shape(anchor, batch, seqlen, dtype, rows):
    x = ssd_inputs(batch, seqlen, HEADS, HEAD_DIM, NGROUPS, DSTATE, dtype, {"initial_state": False}, seed=seqlen + batch)
    variants = {"auto": None, "Q64": (-1, 64), "Q128": (-1, 128), "Q256": (-1, 256)}
    if batch * seqlen <= 2048:
        variants["step"] = (1, 0)
    ours = {k: Ours(x, dtype, c) for k, c in variants.items()}
    theirs = None
    if anchor is not None:
        def theirs():
            return anchor(x["x"], x["dt"], x["A"], x["B"], x["C"], CHUNK, D=x["D"], dt_bias=x["dt_bias"],
                          dt_softplus=True, return_final_states=True)
    with torch.inference_mode():
        t = {}
        if theirs:
            t["mamba_ssm"] = [time_us(theirs)]
        for k, f in ours.items():
            t[k] = time_us(f)
        if theirs:
            t["mamba_ssm"].append(time_us(theirs))
            t["mamba_ssm"] = min(t["mamba_ssm"])
            try:
                log(f"  CUDA-graph replay: mamba_ssm {graph_time_us(theirs, per_graph=10, reps=7):.1f} us, ours (auto) {graph_time_us(ours['auto'], per_graph=10, reps=7):.1f} us")
            except Exception as e:  # noqa: BLE001 (a capture failure leaves the eager figures)
                log(f"  CUDA-graph replay failed ({type(e).__name__}: {e})")
            ours["auto"]()
            y_ref, fs_ref = theirs()
            torch.cuda.synchronize()
            log(f"  agreement with mamba_ssm: y {rel(ours['auto'].y, y_ref):.2e}, final_state "
                f"{rel(ours['auto'].fs, fs_ref):.2e} (max |diff| / max |theirs|)")
    name = f"{dtype} b{batch} L{seqlen}"
    cells = " ".join(f"{k} {v:9.1f}" for k, v in t.items())
    log(f"{name}: {cells} us")
    best = min(v for k, v in t.items() if k != "mamba_ssm")
    rows.append((name, t.get("mamba_ssm"), t["auto"], best, min((k for k in t if k != "mamba_ssm"), key=t.get)))


def crossover():
    """Step kernel against chunk 64 at short seqlens (fp16, the 2.7b heads)."""
    log("crossover (fp16, 80 heads x 64, dstate 128): seqlen: step us / chunked Q64 us")
    for batch in (1, 8):
        cells = []
        for seqlen in (4, 8, 16, 32, 48, 64, 128):
            x = ssd_inputs(batch, seqlen, HEADS, HEAD_DIM, NGROUPS, DSTATE, "float16", {"initial_state": False},
                           seed=seqlen)
            step, chunk = Ours(x, "float16", (1, 0)), Ours(x, "float16", (-1, 64))
            cells.append(f"{seqlen}: {time_us(step):.1f}/{time_us(chunk):.1f}")
        log(f"  b{batch}  " + "  ".join(cells))


def profile(anchor):
    """Where each implementation's time goes, kernel by kernel (fp16, batch 1, seqlen 2048)."""
    x = ssd_inputs(1, 2048, HEADS, HEAD_DIM, NGROUPS, DSTATE, "float16", {"initial_state": False}, seed=7)
    with torch.inference_mode():
        for name, cfg in (("auto", None), ("Q128", (-1, 128)), ("Q256", (-1, 256))):
            log(f"  ours ({name}):")
            kernel_profile(Ours(x, "float16", cfg), log, reps=20)
        if anchor is not None:
            def theirs():
                return anchor(x["x"], x["dt"], x["A"], x["B"], x["C"], CHUNK, D=x["D"], dt_bias=x["dt_bias"],
                              dt_softplus=True, return_final_states=True)
            for _ in range(3):  # Triton autotunes on its first calls
                theirs()
            log("  mamba_ssm:")
            kernel_profile(theirs, log, reps=20)


def main():
    log(f"device: {torch.cuda.get_device_name()}; harness {h.LIB_PATH}")
    anchor = None if args.once else load_anchor()
    if args.profile:
        profile(anchor)
        return
    if args.once:
        x = ssd_inputs(1, 2048, HEADS, HEAD_DIM, NGROUPS, DSTATE, "float16", {"initial_state": False}, seed=7)
        f = Ours(x, "float16", None)
        for _ in range(6):
            f()
        torch.cuda.synchronize()
        return
    rows = []
    for seqlen in (2048,) if args.quick else (2048, 8192):
        for batch in (1, 8):
            for dtype in ("float16", "bfloat16"):
                bench_shape(anchor, batch, seqlen, dtype, rows)
    crossover()
    log("")
    log("| shape | mamba_ssm us | ours (auto) us | ratio | our best (config) |")
    log("|---|---|---|---|---|")
    for name, theirs, auto, best, which in rows:
        ratio = f"{theirs / auto:.2f}x" if theirs else "-"
        log(f"| {name} | {theirs:.1f} | {auto:.1f} | {ratio} | {best:.1f} ({which}) |" if theirs else
            f"| {name} | - | {auto:.1f} | - | {best:.1f} ({which}) |")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "ssd_bench.txt"), "w") as f:
            f.write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
