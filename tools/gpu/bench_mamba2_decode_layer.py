#!/usr/bin/env python3
"""Speed of the fused Mamba-2 decode layer (cpp/cuda/mamba2_decode_layer.cu) on the H200 (its
conformance is tests/python/gpu/test_mamba2_layer_step_cuda.py); bench_decode_layer.py's method
for the mamba2-2.7b layer shape (hidden 2560, 80 heads of 64, 1 group, N 128, width 4), float16,
batch 1, 8, 16 and 64, each with the GEMV kernel the default picks and with the other one forced,
replayed from a CUDA graph over 8 weight sets (weights from HBM, as in a 64-layer model).
MAMBAC_PROFILE=1 adds a per-kernel CUPTI breakdown.

Usage (on the device): python3 tools/gpu/bench_mamba2_decode_layer.py [path/to/libmambac_cuda_harness.so]
"""
import ctypes
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if len(sys.argv) > 1:
    os.environ["MAMBAC_CUDA_HARNESS"] = sys.argv[1]
import bench_kernels as bk  # noqa: E402  (puts tests/python/gpu on the path)
from gpu_timing import kernel_profile  # noqa: E402
from cuda_harness import check_rc, dev, lib, step2_inputs, step2_params, stream, torch, tuning_args  # noqa: E402

log = bk.log
ATTRS = {"eps": 1e-5, "dt_min": 0.0, "dt_max": math.inf, "norm_before_gate": False}


def bench():
    log("== Mamba-2 decode layer: speed (2.7b layer, float16, CUDA-graph replay, 8 weight sets) ==")
    H, HEADS, P, G, N, K = 2560, 80, 64, 1, 128, 4
    for B in (1, 8, 16, 64):
        sets = [step2_inputs(B, H, HEADS, P, G, N, K, "float16", {"bias": False}, 50 + i) for i in range(8)]
        wbytes = sum(v.numel() * v.element_size() for k, v in sets[0].items()
                     if v is not None and k not in ("residual", "conv_state", "ssm_state"))
        outs = {k: torch.empty_like(sets[0][k]) for k in ("residual", "conv_state", "ssm_state")}
        nbytes = lib.mambac_cuda_mamba2_decode_layer_scratch_bytes(ctypes.byref(step2_params(sets[0], outs, "float16",
                                                                                             ATTRS)))
        scratch = torch.empty(max(1, nbytes // 4), device=dev)
        ps = [step2_params(x, outs, "float16", ATTRS, scratch=scratch) for x in sets]
        k = [0]
        tuning = [(0, 0, 0, 0)]  # DecodeTuning; zeros = the defaults

        def step():
            p = ps[k[0] % len(ps)]
            check_rc(lib.mambac_cuda_mamba2_decode_layer_tuned(ctypes.byref(p), stream(), *tuning_args(tuning[0])),
                     "mamba2_decode_layer")
            k[0] += 1

        layer_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, -1 if B >= 4 else 1)  # the other GEMV kernel
        other_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0, -1)  # plain stream order instead of dependent launches
        plain_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0, 0, -1)  # batch 1's FMA GEMVs: next pass's loads after the FMAs
        in_turn_us = bk.graph_time_us(step, per_graph=64)
        tuning[0] = (0, 0, 0, 0)
        if os.environ.get("MAMBAC_PROFILE"):
            kernel_profile(step, log)
        log(f"  batch {B}: {layer_us:.1f} us a layer ({wbytes / layer_us / 1e6:.2f} TB/s of weights; the other "
            f"GEMV kernel {other_us:.1f} us; without dependent launches {plain_us:.1f} us; "
            f"loads in turn {in_turn_us:.1f} us)")
        del sets, ps


if __name__ == "__main__":
    try:
        bench()
    finally:
        if bk.OUT:
            with open(os.path.join(bk.OUT, "mamba2_decode_layer_bench.txt"), "w") as fh:
                fh.write("\n".join(bk.LOG) + "\n")
