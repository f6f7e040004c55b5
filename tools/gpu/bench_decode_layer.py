#!/usr/bin/env python3
"""Speed of the fused decode layer (cpp/cuda/decode_layer.cu) on the H200 (its conformance is
tests/python/gpu/test_layer_step_cuda.py).

The 2.8b layer shape (hidden 2560, inner 5120, N 16, dt_rank 160, width 4), float16, batch 1, 8,
16 and 64 (each with the GEMV kernel the default picks and with the other one forced), replayed from a CUDA graph over 8 distinct weight sets (so weights come from HBM, as in a
64-layer model); projected decode tokens/s of the whole model = 64 layers + the lm_head GEMV
(torch F.linear, same call). MAMBAC_PROFILE=1 adds a per-kernel CUPTI breakdown,
MAMBAC_SWEEP=1 the GEMVs' work splits.

Usage (on the device): python3 tools/gpu/bench_decode_layer.py [path/to/libmambac_cuda_harness.so]
"""
import ctypes
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if len(sys.argv) > 1:
    os.environ["MAMBAC_CUDA_HARNESS"] = sys.argv[1]
import bench_kernels as bk  # noqa: E402  (puts tests/python/gpu on the path)
from cuda_harness import check_rc, dev, lib, step_inputs, step_params, stream, torch, tuning_args  # noqa: E402
from gpu_timing import kernel_profile  # noqa: E402

log = bk.log
# (loads in flight a thread, longest K tile, blocks a multiprocessor) swept beside the default.
SWEEP = {1: [(r, k, b, 0) for r in (4, 8, 16) for k in (128, 256) for b in (4, 6, 8)],
         8: [(8, k, b, t) for k in (256, 512) for b in (1, 2, 3) for t in (1, -1)],
         16: [(0, k, b, 1) for k in (256, 512) for b in (1, 2, 3)],
         64: [(0, k, b, 1) for k in (256, 512) for b in (1, 2, 3)]}
BATCHES = (1, 8, 16, 64)


def bench():
    log("== decode layer: speed (2.8b layer, float16, CUDA-graph replay, 8 weight sets) ==")
    H, I, N, R, K = 2560, 5120, 16, 160, 4
    res = {}
    for B in BATCHES:
        sets = [step_inputs(B, H, I, N, R, K, "float16", {}, 50 + i) for i in range(8)]
        wbytes = sum(v.numel() * v.element_size() for k, v in sets[0].items()
                     if v is not None and k not in ("residual", "conv_state", "ssm_state"))
        outs = {k: torch.empty_like(sets[0][k]) for k in ("residual", "conv_state", "ssm_state")}
        nbytes = lib.mambac_cuda_decode_layer_scratch_bytes(ctypes.byref(step_params(sets[0], outs, "float16")))
        scratch = torch.empty(max(1, nbytes // 4), device=dev)
        ps = [step_params(x, outs, "float16", scratch=scratch) for x in sets]
        k = [0]
        tuning = [(0, 0, 0, 0)]  # DecodeTuning; zeros = the defaults

        def step():
            check_rc(lib.mambac_cuda_decode_layer_tuned(ctypes.byref(ps[k[0] % len(ps)]), stream(), *tuning_args(tuning[0])),
                     "decode_layer")
            k[0] += 1

        layer_us = bk.graph_time_us(step, per_graph=64)
        # The other GEMV kernel (tensor cores from batch 4 by default; cuda/decode_layer.cu).
        tuning[0] = (0, 0, 0, -1 if B >= 4 else 1)
        other_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0, -1)  # plain stream order instead of dependent launches
        plain_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0, 0, -1)  # batch 1's FMA GEMVs: next pass's loads after the FMAs
        in_turn_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0)
        if os.environ.get("MAMBAC_PROFILE"):
            kernel_profile(step, log)
        if os.environ.get("MAMBAC_SWEEP"):
            for t in SWEEP[B]:
                tuning[0] = t
                log(f"    batch {B} tuning {t}: {bk.graph_time_us(step, per_graph=64):.1f} us a layer")
            tuning[0] = (0, 0, 0, 0)
        lm = torch.randn(50280, H, device=dev).to(torch.float16)
        xb = torch.randn(B, H, device=dev).to(torch.float16)
        lm_us = bk.graph_time_us(lambda: torch.nn.functional.linear(xb, lm), per_graph=8)
        step_ms = (64 * layer_us + lm_us) / 1e3
        res[B] = (layer_us, lm_us, step_ms)
        log(f"  batch {B}: {layer_us:.1f} us a layer ({wbytes / layer_us / 1e6:.2f} TB/s of weights; the other "
            f"GEMV kernel {other_us:.1f} us; without dependent launches {plain_us:.1f} us; "
            f"loads in turn {in_turn_us:.1f} us), lm_head "
            f"{lm_us:.1f} us; projected 64-layer step {step_ms:.2f} ms = {B * 1e3 / step_ms:.0f} tok/s")
        del sets, ps
    return res


if __name__ == "__main__":
    try:
        bench()
    finally:
        if bk.OUT:
            with open(os.path.join(bk.OUT, "decode_layer_bench.txt"), "w") as fh:
                fh.write("\n".join(bk.LOG) + "\n")
