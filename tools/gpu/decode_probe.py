#!/usr/bin/env python3
"""Where a decode step of the 2.8b-shape float16 model goes on the H200, and what would shorten it.

Two questions that decide how `mambac generate --ep cuda` should run a decode step:

  G. GEMV layout. At batch 1 every projection is a GEMV. The exporter writes `MatMul(x, W^T)`
     with W^T stored [in, out]; cuBLAS may read [out, in] (Gemm transB=1) nearer the bandwidth.
     One-node ORT models per 2.8b projection shape, both layouts, batch 1 and 8; GPU time from
     CUPTI (torch.profiler), so ORT's per-Run host cost is not in it; torch's F.linear and the
     weight bytes at the device copy bandwidth beside them.
  P. Prefill: the GPU time of one 2048-token batch-1 prefill, kernel by kernel (CUPTI).
  S. Whole step. The stateful export through IoBinding with every input and output on the device:
     one ORT Run a step (states ping-pong between two buffer sets), and the same with the CUDA EP's
     graph capture, one graph per direction of the ping-pong (run option `gpu_graph_id` 1 and 2),
     so replays need no copies. ORT's log lines about the graph are kept to show it captured.

  on the H200 (onnxruntime-gpu in /root/ortsite, carry .device/e2e, as tools/gpu/ort_cuda_e2e.py):
    PYTHONPATH=/root/ortsite python3 tools/gpu/decode_probe.py --bundle .device/e2e --work /root/e2e
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_cuda_e2e as e2e  # noqa: E402  (Runner, BigModel, log)

log = e2e.log
# (name, in, out) of the 2.8b shape: hidden 2560, inner 5120, dt_rank 160, d_state 16, vocab 50280
SHAPES = [("in_proj", 2560, 10240), ("x_proj", 5120, 192), ("dt_proj", 160, 5120), ("out_proj", 5120, 2560), ("lm_head", 2560, 50280)]
CHAIN = 8  # nodes per probe model, distinct weights, so the GEMVs do not hit L2


def cupti_ms(fn, steps):
    """GPU time (ms) per call of fn, summed over every kernel CUPTI sees."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    total = 0.0
    names = {}
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t:
            total += t
            names[ev.key[:90]] = (ev.count / steps, t / steps)
    return total / 1e3 / steps, names


def gemv_model(k, n, batch, layout):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(k * 7 + n)
    nodes, inits = [], []
    x = "x"
    for i in range(CHAIN):
        w = (rng.standard_normal((n, k) if layout == "gemm_tb" else (k, n)) * 0.02).astype(np.float16)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        if layout == "gemm_tb":
            nodes.append(helper.make_node("Gemm", ["x", f"w{i}"], [f"y{i}"], transB=1))
        else:
            nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]))
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT16, [batch, n]) for i in range(CHAIN)]
    g = helper.make_graph(nodes, "gemv", [helper.make_tensor_value_info(x, TensorProto.FLOAT16, [batch, k])], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m.SerializeToString()


def part_g(R):
    import torch
    import torch.nn.functional as F

    ort = R.ort
    rows = []
    copy_bw = measure_copy_bw()
    for batch in (1, 8):
        for name, k, n in SHAPES:
            row = {"what": name, "batch": batch, "in": k, "out": n, "weight_mb": k * n * 2 / 1e6,
                   "floor_us": k * n * 2 / copy_bw * 1e6}
            x = torch.randn(batch, k, dtype=torch.float16, device="cuda")
            for layout in ("matmul", "gemm_tb"):
                so = ort.SessionOptions()
                so.log_severity_level = 3
                sess = ort.InferenceSession(gemv_model(k, n, batch, layout), so,
                                            providers=[("CUDAExecutionProvider", {"device_id": "0"})])
                io = sess.io_binding()
                io.bind_input("x", "cuda", 0, np.float16, [batch, k], x.data_ptr())
                ys = [torch.empty(batch, n, dtype=torch.float16, device="cuda") for _ in range(CHAIN)]
                for i, y in enumerate(ys):
                    io.bind_output(f"y{i}", "cuda", 0, np.float16, [batch, n], y.data_ptr())
                ms, kern = cupti_ms(lambda: sess.run_with_iobinding(io), 20)
                row[f"{layout}_us"] = ms * 1e3 / CHAIN
                row[f"{layout}_kernels"] = sorted(kern)[:3]
                del sess
            ws = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(CHAIN)]
            ms, _ = cupti_ms(lambda: [F.linear(x, w) for w in ws], 20)
            row["torch_linear_us"] = ms * 1e3 / CHAIN
            for key in ("matmul", "gemm_tb", "torch_linear"):
                row[f"{key}_bw_frac"] = row["weight_mb"] * 1e6 / (row[f"{key}_us"] * 1e-6) / copy_bw
            rows.append(row)
            log(f"  [G] b{batch} {name:8s} {k}x{n}: MatMul {row['matmul_us']:.1f} us, Gemm transB {row['gemm_tb_us']:.1f} us, "
                f"torch linear {row['torch_linear_us']:.1f} us, floor {row['floor_us']:.1f} us "
                f"(bandwidth fraction {row['matmul_bw_frac']:.2f} / {row['gemm_tb_bw_frac']:.2f} / {row['torch_linear_bw_frac']:.2f})")
    return {"copy_bw": copy_bw, "rows": rows}


def measure_copy_bw():
    import torch

    a = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20):
        b.copy_(a)
    e.record()
    torch.cuda.synchronize()
    bw = 2 * a.numel() * 20 / (s.elapsed_time(e) / 1e3)
    log(f"  device copy bandwidth {bw / 1e12:.2f} TB/s (read + write)")
    return bw


class Stderr:
    """Collects what native code writes to fd 2 (ORT's log) into a file while active."""

    def __enter__(self):
        sys.stderr.flush()
        self.f = tempfile.TemporaryFile(mode="w+")
        self.saved = os.dup(2)
        os.dup2(self.f.fileno(), 2)
        return self

    def __exit__(self, *a):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.f.seek(0)
        self.text = self.f.read()
        self.f.close()


def part_s(R, big, batches=(1, 8), top=40):
    import torch

    big.join()
    if big.error:
        raise big.error
    ort = R.ort
    tdt = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
    ndt = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    out = {}

    def make(graph):
        so = ort.SessionOptions()
        so.register_custom_ops_library(R.lib)
        so.log_severity_level = 1 if graph else 3
        opts = {"device_id": "0"}
        if graph:
            opts["enable_cuda_graph"] = "1"
        return ort.InferenceSession(str(big.model), so, providers=[("CUDAExecutionProvider", opts)])

    def setup(sess, batch):
        ins = [i for i in sess.get_inputs() if i.name != "input_ids"]
        lo = sess.get_outputs()[0]
        a = {i.name: torch.zeros([batch] + list(i.shape[1:]), dtype=tdt[i.type], device="cuda") for i in ins}
        b = {k: torch.zeros_like(v) for k, v in a.items()}
        ids = torch.full((batch, 1), 17, dtype=torch.int64, device="cuda")
        logits = torch.empty((batch, 1, int(lo.shape[2])), dtype=tdt[lo.type], device="cuda")
        # Exports since next_token have the greedy pick as an output: bound too, as generation does.
        has_next = any(o.name == "next_token" for o in sess.get_outputs())
        next_token = torch.empty((batch, 1), dtype=torch.int64, device="cuda")

        def bind(src, dst):
            io = sess.io_binding()
            io.bind_input("input_ids", "cuda", 0, np.int64, [batch, 1], ids.data_ptr())
            for i in ins:
                t = src[i.name]
                io.bind_input(i.name, "cuda", 0, ndt[i.type], list(t.shape), t.data_ptr())
                io.bind_output(i.name.replace("_state.", "_state_out."), "cuda", 0, ndt[i.type], list(t.shape), dst[i.name].data_ptr())
            io.bind_output(lo.name, "cuda", 0, ndt[lo.type], list(logits.shape), logits.data_ptr())
            if has_next:
                io.bind_output("next_token", "cuda", 0, np.int64, [batch, 1], next_token.data_ptr())
            return io

        return bind(a, b), bind(b, a), ids, logits

    def timed(sess, batch, graph, steps=60, host_io=False):
        io_ab, io_ba, ids, logits = setup(sess, batch)
        ros = []
        for gid in (1, 2):
            ro = ort.RunOptions()
            if graph:
                ro.add_run_config_entry("gpu_graph_id", str(gid))
            ros.append(ro)
        times = []
        for k in range(steps + 6):
            torch.cuda.synchronize()
            t = time.perf_counter()
            if host_io:  # what generation does: ids in from the host, last logits out to it
                ids.copy_(torch.full((batch, 1), 17 + k % 5, dtype=torch.int64))
            sess.run_with_iobinding(io_ab if k % 2 == 0 else io_ba, ros[k % 2])
            if host_io:
                logits.float().cpu()
            torch.cuda.synchronize()
            if k >= 6:
                times.append(time.perf_counter() - t)
        assert not torch.isnan(logits.float()).any()
        return statistics.median(times) * 1e3, logits.float().cpu().numpy()

    sess = make(False)
    plain = {}
    for batch in batches:
        ms, plain[batch] = timed(sess, batch, False)
        out[f"run_ms_b{batch}"] = ms
        ms2, _ = timed(sess, batch, False, host_io=True)
        out[f"run_hostio_ms_b{batch}"] = ms2
        log(f"  [S] ORT Run a step, batch {batch}: {ms:.2f} ms ({batch * 1e3 / ms:.0f} tok/s); with ids/logits through the host {ms2:.2f} ms")
    gpu_ms, _ = cupti_ms(lambda: None, 1)  # profiler warm-up
    for batch in batches:
        io_ab, io_ba, _, _ = setup(sess, batch)
        gpu_ms, kern = cupti_ms(lambda: sess.run_with_iobinding(io_ab), 10)
        out[f"gpu_ms_b{batch}"] = gpu_ms
        out[f"kernels_b{batch}"] = {k: {"per_step": c, "us_per_step": us} for k, (c, us) in kern.items()}
        n = sum(c for c, _ in kern.values())
        log(f"  [S] GPU time of a batch-{batch} step (CUPTI): {gpu_ms:.2f} ms, {n:.0f} kernels")
        for k, (c, us) in sorted(kern.items(), key=lambda kv: -kv[1][1])[:top]:
            log(f"      {us:8.1f} us  {c:6.1f}x  {k}")
    del sess
    for batch in batches:
        try:
            with Stderr() as err:
                sess = make(True)
                ms, lg = timed(sess, batch, True)
                ms2, _ = timed(sess, batch, True, host_io=True)
            lines = [l for l in err.text.splitlines() if "raph" in l]
            out[f"graph_ms_b{batch}"] = ms
            out[f"graph_hostio_ms_b{batch}"] = ms2
            out[f"graph_log_b{batch}"] = lines[:12]
            same = float(np.max(np.abs(lg - plain[batch])))
            out[f"graph_vs_run_maxdiff_b{batch}"] = same
            log(f"  [S] CUDA graph (ids 1/2 ping-pong), batch {batch}: {ms:.2f} ms ({batch * 1e3 / ms:.0f} tok/s); "
                f"host ids/logits {ms2:.2f} ms; logits vs plain Run max diff {same:.2e}")
            for l in lines[:12]:
                log("      ORT: " + l[-200:])
            del sess
        except Exception as e:  # noqa: BLE001
            out[f"graph_error_b{batch}"] = str(e)[:800]
            log(f"  [S] CUDA graph batch {batch}: {e}")
    return out


def part_p(R, big, seqlen=2048, top=30):
    """Where a batch-1 prefill of `seqlen` tokens goes: GPU time per kernel (CUPTI), one plain
    ORT Run on the general graph (what `mambac bench` times as prefill, less the host copies)."""
    import torch

    big.join()
    if big.error:
        raise big.error
    ort = R.ort
    so = ort.SessionOptions()
    so.register_custom_ops_library(R.lib)
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(big.model), so, providers=[("CUDAExecutionProvider", {"device_id": "0"})])
    ndt = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    tdt = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
    io = sess.io_binding()
    keep = []
    ids = torch.randint(0, 50000, (1, seqlen), dtype=torch.int64, device="cuda")
    io.bind_input("input_ids", "cuda", 0, np.int64, [1, seqlen], ids.data_ptr())
    for i in sess.get_inputs():
        if i.name == "input_ids":
            continue
        t = torch.zeros([1] + list(i.shape[1:]), dtype=tdt[i.type], device="cuda")
        o = torch.empty_like(t)
        keep += [t, o]
        io.bind_input(i.name, "cuda", 0, ndt[i.type], list(t.shape), t.data_ptr())
        io.bind_output(i.name.replace("_state.", "_state_out."), "cuda", 0, ndt[i.type], list(o.shape), o.data_ptr())
    for o in sess.get_outputs():
        if not o.name.endswith(tuple(f".{k}" for k in range(1000))):
            io.bind_output(o.name, "cuda")
    for _ in range(3):
        sess.run_with_iobinding(io)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(5):
        sess.run_with_iobinding(io)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / 5 * 1e3
    gpu_ms, kern = cupti_ms(lambda: sess.run_with_iobinding(io), 3)
    n = sum(c for c, _ in kern.values())
    log(f"  [P] prefill {seqlen} tokens, batch 1: ORT Run {wall:.2f} ms ({seqlen / wall * 1e3:.0f} tok/s); "
        f"GPU time (CUPTI) {gpu_ms:.2f} ms in {n:.0f} kernels")
    for k, (c, us) in sorted(kern.items(), key=lambda kv: -kv[1][1])[:top]:
        log(f"      {us:8.1f} us  {c:6.1f}x  {k}")
    return {"run_ms": wall, "gpu_ms": gpu_ms, "kernels": {k: {"per_step": c, "us_per_step": us} for k, (c, us) in kern.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(e2e.REPO / ".device/e2e"))
    ap.add_argument("--work", default="/root/e2e")
    ap.add_argument("--parts", default="gs")
    ap.add_argument("--model", help="an existing stateful 2.8b export (else synth + export, ~35 s)")
    ap.add_argument("--batches", default="1,8", help="batch sizes of part S, comma-separated")
    ap.add_argument("--top", type=int, default=40, help="kernels listed per batch (the longest first)")
    args = ap.parse_args()
    import torch

    R = e2e.Runner("cuda", args.bundle, args.work)
    log(f"device: {torch.cuda.get_device_name(0)}")
    res = {}
    big = e2e.BigModel(R, "2.8b", "float16")
    if args.model:
        big.model = Path(args.model)
    if "s" in args.parts or "p" in args.parts:
        big.start()
    if "g" in args.parts:
        log("== G. GEMV layout ==")
        try:
            res["gemv"] = part_g(R)
        except Exception as e:  # noqa: BLE001
            res["gemv_error"] = repr(e)
            log(f"  [G] {e!r}")
    if "s" in args.parts:
        log("== S. whole decode step ==")
        try:
            res["step"] = part_s(R, big, [int(b) for b in args.batches.split(",")], args.top)
        except Exception as e:  # noqa: BLE001
            res["step_error"] = repr(e)
            log(f"  [S] {e!r}")
    if "p" in args.parts:
        log("== P. prefill ==")
        try:
            res["prefill"] = part_p(R, big, top=args.top)
        except Exception as e:  # noqa: BLE001
            res["prefill_error"] = repr(e)
            log(f"  [P] {e!r}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "decode-probe.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
