#!/usr/bin/env python3
"""Speed of mambac's CUDA kernels on the H200, in one call (their conformance is
`pytest tests/python/gpu`).

DEVICE.md's shapes timed with CUDA events (warm-up, then the median of batches of back-to-back
launches, two input sets alternating), beside the mamba_ssm anchors and a PyTorch scan and a
device copy measured in the same call. Each time is also given as a fraction of its memory floor
(bytes / 4.22 TB/s) and exp floor (one exp per (b, l, d, n) over 132 SMs x 16/clk x 1.98 GHz):
floor / time, 1.0 = at the floor. Decode-step kernels are replayed from a CUDA graph, as ORT's
graph capture runs them.

Usage (on the device; see BENCHMARKS.md):
    python3 tools/gpu/bench_kernels.py [path/to/libmambac_cuda_harness.so]
    MAMBAC_GPU_WHAT=decode|profile ...  (decode steps only; one launch of each shape, for ncu)
Prints a short table last; writes the full log to $OUT/gpu_bench.txt when OUT is set.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "tests", "python"), os.path.join(HERE, "..", "..", "tests", "python", "gpu")]
if len(sys.argv) > 1:
    os.environ["MAMBAC_CUDA_HARNESS"] = sys.argv[1]
import cuda_harness as h  # noqa: E402
from cuda_harness import check_rc, conv_inputs, dev, launch_conv, launch_scan, scan_inputs, torch  # noqa: E402
from gpu_timing import graph_time_us, time_us  # noqa: E402

OUT = os.environ.get("OUT")
LOG = []
COPY_BW = 4.22e12  # DEVICE.md's figure, which defines the floors; this call measures its own too
EXP_RATE = 132 * 16 * 1.98e9
CONV_SPLITS = [(4, 8), (4, 32), (8, 8), (8, 16)]  # (channels, steps) a thread besides the default (4, 16)


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def alternating(params, launch, what):
    """A launch of params[0], params[1], params[0], ... (two input sets, so no run reads the last
    one's outputs from cache)."""
    k = [0]

    def f():
        rc = launch(params[k[0] & 1])
        k[0] += 1
        check_rc(rc, what)
    return f


def scan_sets(batch, seqlen, dim, dtype, final, seed):
    sets = []
    for s in range(2):
        x = scan_inputs(batch, seqlen, dim, 16, 1, dtype, {"initial_state": final, "final": final}, seed + s)
        y = torch.empty(batch, seqlen, dim, dtype=x["u"].dtype, device=dev)
        fs = torch.empty(batch, dim, 16, device=dev) if final else None
        sets.append((x, y, fs, h.scan_params(x, y, fs, dtype, True)))
    return sets


def conv_sets(batch, seqlen, dim, dtype, final, seed):
    sets = []
    for s in range(2):
        x = conv_inputs(batch, seqlen, dim, 4, dtype, {"initial_state": final}, seed + s)
        y = torch.empty(batch, seqlen, dim, dtype=x["x"].dtype, device=dev)
        fs = torch.empty(batch, dim, 3, dtype=x["x"].dtype, device=dev) if final else None
        sets.append((x, y, fs, h.conv_params(x, y, fs, dtype, True)))
    return sets


def bench_decode():
    """Decode steps (states in and out, as `mambac generate` runs them): the per-step kernels
    against the tiled ones, seqlen 1 and a few short chunks (where the default switches)."""
    rows = []
    for op, dtype, B, D, L in [("scan", "float16", 1, 5120, 1), ("scan", "float16", 8, 5120, 1),
                               ("scan", "float16", 1, 1536, 1), ("scan", "float32", 1, 5120, 1),
                               ("scan", "float16", 64, 5120, 1), ("scan", "float16", 1, 5120, 2),
                               ("scan", "float16", 1, 5120, 4),
                               ("scan", "float16", 1, 5120, 8), ("scan", "float16", 8, 5120, 4),
                               ("conv", "float16", 1, 5120, 1), ("conv", "float16", 8, 5120, 1),
                               ("conv", "float16", 64, 5120, 1),
                               ("conv", "float16", 1, 5120, 4), ("conv", "float16", 8, 5120, 4),
                               ("conv", "float16", 1, 5120, 16)]:
        sets = (scan_sets if op == "scan" else conv_sets)(B, L, D, dtype, True, 300)
        params = [s[3] for s in sets]
        res = {}
        for tag, step in (("step", 1), ("tiled", -1)):
            if op == "scan":
                launch = lambda p, st=step: launch_scan(p, (0, 0, 0, 0, 0, st))  # noqa: E731
            else:
                launch = lambda p, st=step: launch_conv(p, (0, 0, st))  # noqa: E731
            res[tag] = graph_time_us(alternating(params, launch, op))
        log(f"  decode {op} {dtype} B{B} D{D} L{L}: per-step kernel {res['step']:.1f} us, tiled {res['tiled']:.1f} us")
        rows.append((f"{op} {dtype} B={B} D={D} L={L}", res["step"], res["tiled"]))
        del sets
    tiny = torch.zeros(5120, dtype=torch.float16, device=dev)
    floor = graph_time_us(lambda: tiny.add_(1))
    log(f"  decode floor: one tiny elementwise kernel (torch add_, 5120 f16) in a graph: {floor:.2f} us")
    rows.append(("floor: torch add_ 5120 f16", floor, float("nan")))
    return rows


def bench():
    log("== speed ==")
    n = 1 << 29
    a = torch.empty(n * 2, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    a.random_(0, 255)
    t = time_us(lambda: b.copy_(a), per_batch=5, batches=7)
    measured = 2 * a.numel() / (t * 1e-6)
    log(f"  device copy: {measured / 1e12:.2f} TB/s (read + write), DEVICE.md 4.22")
    del a, b
    rows = []
    # (dtype, batch, dim, seqlen, mamba_ssm's time in us from DEVICE.md)
    anchors = [("float16", 1, 1536, 2048, 67), ("float16", 1, 5120, 2048, 202), ("float16", 8, 5120, 2048, 1431),
               ("float16", 64, 1536, 2048, 3400), ("float16", 1, 5120, 8192, 882), ("float32", 1, 5120, 2048, 392)]
    # Forced variants beside the automatic choice (ScanConfig; sub-chunks < 0 the warp split).
    nonsplit = [(4, 16, 1, 0, 2), (4, 32, 1, 0, 1)]
    sweeps = {(1, 5120): [(4, 0, -4, 8), (4, 0, -8, 8)], (1, 1536): [(4, 8, -8, 8), (4, 4, -8, 8), (4, 0, -4, 8)],
              (8, 5120): nonsplit, (64, 1536): nonsplit}
    N = 16
    for dtype, B, D, L, anchor in anchors:
        params = [s[3] for s in scan_sets(B, L, D, dtype, False, 100)]
        esz = torch.finfo(h.DTYPES[dtype][0]).bits // 8
        mem_floor = (4 * B * L * D * esz + 2 * B * L * N * esz + 3 * D * 4 + D * N * 4) / COPY_BW * 1e6
        exp_floor = B * L * D * N / EXP_RATE * 1e6
        best, auto_us = None, float("nan")
        for cfg in [None] + sweeps.get((B, D), []):
            try:
                us = time_us(alternating(params, lambda p, c=cfg: launch_scan(p, c), "scan"))
            except RuntimeError as e:
                log(f"  {dtype} B{B} D{D} L{L} cfg {cfg}: {e}")
                continue
            tag = "auto" if cfg is None else str(cfg)
            log(f"  scan {dtype} B{B} D{D} L{L} {tag:18s} {us:8.1f} us")
            if cfg is None:
                auto_us = us
            if best is None or us < best[0]:
                best = (us, tag)
        rows.append((f"SelectiveScan {dtype} B={B} D={D} L={L}", auto_us, anchor, mem_floor, exp_floor, best))
        del params
        torch.cuda.empty_cache()

    # PyTorch scan (float32, per-step ops) for one shape: the fallback the fused op replaces.
    B, D, L = 1, 5120, 2048
    x = scan_inputs(B, L, D, N, 1, "float32", {"initial_state": False}, 7)

    def torch_scan():
        dt = torch.nn.functional.softplus(x["delta"] + x["delta_bias"])
        dA = torch.exp(dt[..., None] * x["A"])
        dBu = dt[..., None] * x["B"][:, :, 0][:, :, None, :] * x["u"][..., None]
        st = torch.zeros(B, D, N, device=dev)
        ys = []
        for t in range(L):
            st = dA[:, t] * st + dBu[:, t]
            ys.append((st * x["C"][:, t, 0][:, None, :]).sum(-1))
        y = torch.stack(ys, 1) + x["D"] * x["u"]
        return y * torch.nn.functional.silu(x["z"])

    torch_us = time_us(torch_scan, per_batch=1, batches=3, warm=1)
    log(f"  PyTorch per-step scan f32 B1 D5120 L2048: {torch_us:.0f} us")
    del x

    conv_rows = []
    for dtype, B, L, D in [("float16", 1, 2048, 5120), ("float16", 8, 2048, 5120), ("float32", 1, 2048, 5120)]:
        sets = conv_sets(B, L, D, dtype, False, 200)
        nbytes = 2 * sets[0][0]["x"].numel() * sets[0][0]["x"].element_size()
        # A device copy of the same bytes, the two sets alternating like the kernel's: what ramp
        # and drain leave of the copy bandwidth at this size.
        kc = [0]

        def same_copy():
            s_ = sets[kc[0] & 1]
            kc[0] += 1
            s_[1].copy_(s_[0]["x"])

        cus = time_us(same_copy, per_batch=50)
        log(f"  copy of the same bytes ({nbytes / 2e6:.0f} MB each way) {cus:7.1f} us  {nbytes / cus / 1e6:.2f} TB/s")
        for cfg in [None] + [c for c in CONV_SPLITS if dtype != "float32" or c[0] != 8]:
            us = time_us(alternating([s[3] for s in sets], lambda p, c=cfg: launch_conv(p, c), "conv"), per_batch=50)
            bw = nbytes / (us * 1e-6)
            log(f"  conv {dtype} B{B} D{D} L{L} {'auto' if cfg is None else str(cfg):10s} {us:7.1f} us  {bw / 1e12:.2f} TB/s")
            if cfg is None:
                conv_rows.append((f"CausalConv1d {dtype} B={B} D={D} L={L} K=4", us, bw, cus))
        del sets

    step_rows = bench_decode()
    log("")
    log("== summary ==")
    log(f"copy bandwidth measured: {measured / 1e12:.2f} TB/s; floors below use DEVICE.md's 4.22 TB/s and "
        f"132 x 16 x 1.98 GHz exps; 'x floor' = floor / time")
    log(f"{'shape':46s} {'us':>7s} {'mamba_ssm':>9s} {'speedup':>7s} {'mem floor':>9s} {'x mem':>6s} "
        f"{'exp floor':>9s} {'x exp':>6s}  best cfg (us)")
    for name, us, anchor, mf, ef, best in rows:
        log(f"{name:46s} {us:7.1f} {anchor:9.0f} {anchor / us:6.2f}x {mf:8.1f}u {mf / us:6.2f} {ef:8.1f}u "
            f"{ef / us:6.2f}  {best[1]} ({best[0]:.1f})")
    log(f"{'PyTorch per-step scan f32 B=1 D=5120 L=2048':46s} {torch_us:7.0f}")
    for name, us, bw, cus in conv_rows:
        log(f"{name:46s} {us:7.1f}   {bw / 1e12:.2f} TB/s = {bw / measured:.0%} of measured copy, "
            f"{bw / 4.22e12:.0%} of 4.22; a copy of the same bytes {cus:.1f} us (kernel at {cus / us:.0%} of it)")
    for name, st, ti in step_rows:
        log(f"decode {name:40s} per-step {st:6.1f} us, tiled {ti:6.1f} us ({ti / st:.2f}x)")


def profile():
    """One launch of each production configuration, for ncu."""
    for B, D, L in [(1, 5120, 2048), (8, 5120, 2048)]:
        check_rc(launch_scan(scan_sets(B, L, D, "float16", False, 5)[0][3]), "scan")
    check_rc(launch_conv(conv_sets(1, 2048, 5120, "float16", False, 5)[0][3]), "conv")
    torch.cuda.synchronize()


if __name__ == "__main__":
    what = os.environ.get("MAMBAC_GPU_WHAT", "all")
    props = torch.cuda.get_device_properties(0)
    log(f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}")
    try:
        if what == "profile":
            profile()
        elif what == "decode":
            for name, st, ti in bench_decode():
                log(f"decode {name:40s} per-step {st:6.1f} us, tiled {ti:6.1f} us ({ti / st:.2f}x)")
        else:
            bench()
    finally:
        if OUT:
            with open(os.path.join(OUT, "gpu_bench.txt"), "w") as f:
                f.write("\n".join(LOG) + "\n")
