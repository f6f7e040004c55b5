#!/usr/bin/env python3
"""The fused decode-layer kernels (cpp/cuda/decode_layer.cu) on the H200: conformance and speed.

1. Conformance: one layer's decode step (residual RMSNorm, in_proj, conv step + SiLU, x_proj,
   dt_proj + softplus, scan step, D skip, SiLU(z) gate, out_proj, residual add) against a float64
   torch reference of the same math, float32 / float16 / bfloat16, odd shapes, batch 1 to 8 and
   past one batch chunk, every optional input on and off. Outputs are NaN-poisoned first. Checked:
   the layer's contribution (residual_out - residual_in), conv_state_out and ssm_state_out, with
   check_and_bench.py's tiers (atol relative to the tensor's scale).
2. Speed: the 2.8b layer shape (hidden 2560, inner 5120, N 16, dt_rank 160, width 4), float16,
   batch 1 and 8, replayed from a CUDA graph over 8 distinct weight sets (so weights come from
   HBM, as in a 64-layer model); projected decode tokens/s of the whole model = 64 layers + the
   lm_head GEMV (torch F.linear, same call), beside the unfused step's figures in BENCHMARKS.md.

Usage (on the device): python3 tools/gpu/decode_layer_check.py .device/gpu/libmambac_cuda_harness.so
"""
import ctypes
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_and_bench as cb  # noqa: E402  (loads the library named by argv[1])

lib, log, dev = cb.lib, cb.log, cb.dev
ptr = cb.ptr
vp = ctypes.c_void_p


# The kernel ABI's MambaLayerStepParams (custom-ops/src/kernel_abi.rs), from the library's layout.
LSParams = cb.abi_struct("MambaLayerStepParams")
lib.mambac_cuda_decode_layer.argtypes = [ctypes.POINTER(LSParams), vp]
lib.mambac_cuda_decode_layer_scratch_bytes.argtypes = [ctypes.POINTER(LSParams)]
lib.mambac_cuda_decode_layer_scratch_bytes.restype = ctypes.c_size_t
lib.mambac_cuda_decode_layer_tuned.argtypes = [ctypes.POINTER(LSParams), vp] + [ctypes.c_int] * 3
# This script's weight names -> the ABI struct's fields.
FIELD = {"norm_w": "norm_weight", "in_proj_t": "in_proj_weight", "in_proj_b": "in_proj_bias",
         "conv_w": "conv_weight", "conv_b": "conv_bias", "x_proj_t": "x_proj_weight",
         "dt_proj_t": "dt_proj_weight", "dt_bias": "dt_bias", "A": "a", "D": "d",
         "out_proj_t": "out_proj_weight", "out_proj_b": "out_proj_bias"}
# (loads in flight a thread, longest K tile, blocks a multiprocessor) swept beside the default.
SWEEP = {1: [(r, k, b) for r in (4, 8, 16) for k in (128, 256) for b in (4, 6, 8)],
         8: [(8, k, b) for k in (256, 512) for b in (1, 2, 3)]}
EPS = 1e-5


def weights(H, I, N, R, K, dt, opts, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)
    E = R + 2 * N
    return {
        "norm_w": (1 + 0.1 * r(H)).float(),
        "in_proj_t": (r(H, 2 * I) / H ** 0.5).to(dt),
        "in_proj_b": (0.1 * r(2 * I)).to(dt) if opts.get("proj_bias", False) else None,
        "conv_w": (0.5 * r(I, K)).to(dt),
        "conv_b": (0.1 * r(I)).to(dt) if opts.get("conv_bias", True) else None,
        "x_proj_t": (r(I, E) / I ** 0.5).to(dt),
        "dt_proj_t": (r(R, I) / R ** 0.5).to(dt),
        "dt_bias": (0.5 * r(I) - 1.0) if opts.get("dt_bias", True) else None,
        "A": (-torch.exp(r(I, N))).contiguous(),
        "D": r(I) if opts.get("D", True) else None,
        "out_proj_t": (r(I, H) / I ** 0.5).to(dt),
        "out_proj_b": (0.1 * r(H)).to(dt) if opts.get("proj_bias", False) else None,
    }


def states(B, H, I, N, K, dt, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)
    return {"residual": r(B, H), "conv": r(B, I, K - 1).to(dt), "ssm": r(B, I, N)}


def reference(w, s, N, R):
    """Float64, the unfused graph's math (docs/op-contract.md's lowering)."""
    f = lambda t: None if t is None else t.double()
    r = s["residual"].double()
    I = w["conv_w"].shape[0]
    xn = r / torch.sqrt((r * r).mean(-1, keepdim=True) + EPS) * f(w["norm_w"])
    xz = xn @ f(w["in_proj_t"])
    if w["in_proj_b"] is not None:
        xz = xz + f(w["in_proj_b"])
    x, z = xz[:, :I], xz[:, I:]
    win = torch.cat([f(s["conv"]), x[:, :, None]], dim=2)  # [B, I, K]
    c = (win * f(w["conv_w"])).sum(-1)
    if w["conv_b"] is not None:
        c = c + f(w["conv_b"])
    xc = c * torch.sigmoid(c)
    dbc = xc @ f(w["x_proj_t"])
    dtl, Bm, Cm = dbc[:, :R], dbc[:, R:R + N], dbc[:, R + N:]
    dt = dtl @ f(w["dt_proj_t"])
    if w["dt_bias"] is not None:
        dt = dt + f(w["dt_bias"])
    dt = torch.where(dt <= 20, torch.nn.functional.softplus(dt), dt)
    h = torch.exp(dt[:, :, None] * f(w["A"])) * f(s["ssm"]) + (dt * xc)[:, :, None] * Bm[:, None, :]
    y = (h * Cm[:, None, :]).sum(-1)
    if w["D"] is not None:
        y = y + f(w["D"]) * xc
    y = y * (z * torch.sigmoid(z))
    out = y @ f(w["out_proj_t"])
    if w["out_proj_b"] is not None:
        out = out + f(w["out_proj_b"])
    return out, win[:, :, 1:], h


def params(w, s, outs, code, N, R, scratch):
    B, H = s["residual"].shape
    I, K = w["conv_w"].shape
    return LSParams(elem=code, batch=B, hidden=H, inner=I, dstate=N, dt_rank=R, width=K, eps=EPS,
                    residual_in=ptr(s["residual"]), residual_out=ptr(outs["residual"]),
                    conv_state_in=ptr(s["conv"]), conv_state_out=ptr(outs["conv"]),
                    ssm_state_in=ptr(s["ssm"]), ssm_state_out=ptr(outs["ssm"]),
                    scratch=ptr(scratch), **{FIELD[k]: ptr(v) for k, v in w.items()})


def run(w, s, code, N, R):
    outs = {k: torch.full_like(v, float("nan")) for k, v in s.items()}
    p = params(w, s, outs, code, N, R, None)
    nbytes = lib.mambac_cuda_decode_layer_scratch_bytes(ctypes.byref(p))
    scratch = torch.full((max(1, nbytes // 4),), float("nan"), device=dev)  # stale values must not leak
    p.scratch = ptr(scratch)
    cb.check_rc(lib.mambac_cuda_decode_layer(ctypes.byref(p), cb.stream()), "decode_layer")
    torch.cuda.synchronize()
    return outs


def check(B, H, I, N, R, K, opts, dnames=("f32", "f16", "bf16"), seed=0):
    for dname in dnames:
        dt, code = cb.DTYPES[dname]
        w = weights(H, I, N, R, K, dt, opts, seed)
        s = states(B, H, I, N, K, dt, seed + 1)
        ref_out, ref_conv, ref_h = reference(w, s, N, R)
        name = f"B{B} H{H} I{I} N{N} R{R} K{K} " + (",".join(f"{k}={int(v)}" for k, v in opts.items()) or "default")
        try:
            o = run(w, s, code, N, R)
        except RuntimeError as e:
            cb.record("DecodeLayer", dname, name, False, float("nan"))
            log("     ", e)
            continue
        oks, errs = [], []
        for what, got, ref in (("mixer", o["residual"] - s["residual"], ref_out), ("conv_state", o["conv"], ref_conv),
                               ("ssm_state", o["ssm"], ref_h)):
            ok, err = cb.compare(got, ref, dname, f"{name} {what}")
            oks.append(ok)
            errs.append(err)
        cb.record("DecodeLayer", dname, name, all(oks), max(errs) if all(e == e for e in errs) else float("nan"))


def conformance():
    log("== decode layer: conformance (float64 reference; NaN-poisoned outputs and scratch) ==")
    check(1, 2560, 5120, 16, 160, 4, {})                       # the 2.8b layer
    check(8, 2560, 5120, 16, 160, 4, {}, dnames=("f16",))
    check(5, 768, 1536, 16, 48, 4, {"proj_bias": True})        # 130m layer, a partial batch chunk
    check(11, 64, 128, 16, 4, 4, {})                           # two batch chunks
    check(3, 40, 80, 8, 5, 3, {"proj_bias": True})             # odd: x_proj has 21 outputs (scalar path)
    check(2, 24, 48, 4, 2, 2, {"conv_bias": False, "dt_bias": False, "D": False})
    check(1, 72, 136, 32, 9, 4, {"proj_bias": True, "conv_bias": False})
    check(2, 16, 40, 16, 3, 1, {})                             # width 1: no conv state
    check(2, 64, 96, 64, 300, 4, {"proj_bias": True})          # dstate > 32 (state loop), dt_rank > 256
    log(f"  decode layer conformance: {'PASS' if not cb.FAILS else 'FAIL (' + str(len(cb.FAILS)) + ')'}")
    for f in cb.FAILS:
        log("   ", f)


def kernel_profile(step, reps=64):
    """Per-kernel GPU time of the step (CUPTI through torch.profiler), averaged over reps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    for ev in sorted(prof.key_averages(), key=lambda e: -(getattr(e, "device_time_total", 0) or 0)):
        t = getattr(ev, "device_time_total", 0) or 0
        if t:
            log(f"      {t / reps:7.2f} us  {ev.count / reps:4.1f}x  {ev.key[:110]}")


def bench():
    log("== decode layer: speed (2.8b layer, float16, CUDA-graph replay, 8 weight sets) ==")
    H, I, N, R, K = 2560, 5120, 16, 160, 4
    dt, code = cb.DTYPES["f16"]
    sets = [weights(H, I, N, R, K, dt, {}, 50 + i) for i in range(8)]
    wbytes = sum(v.numel() * v.element_size() for v in sets[0].values() if v is not None)
    lm = torch.randn(50280, H, device=dev).to(dt)
    res = {}
    for B in (1, 8):
        s = states(B, H, I, N, K, dt, 7)
        outs = {k: torch.empty_like(v) for k, v in s.items()}
        nbytes = lib.mambac_cuda_decode_layer_scratch_bytes(ctypes.byref(params(sets[0], s, outs, code, N, R, None)))
        scratch = torch.empty(nbytes // 4, device=dev)
        ps = [params(w, s, outs, code, N, R, scratch) for w in sets]
        k = [0]

        tuning = [(0, 0, 0)]  # the GEMVs' work split (DecodeTuning); zeros = the defaults

        def step():
            rc = lib.mambac_cuda_decode_layer_tuned(ctypes.byref(ps[k[0] % len(ps)]), cb.stream(), *tuning[0])
            cb.check_rc(rc, "decode_layer")
            k[0] += 1

        layer_us = cb.graph_time_us(step, per_graph=64)
        if os.environ.get("MAMBAC_PROFILE"):
            kernel_profile(step)
        if os.environ.get("MAMBAC_SWEEP"):
            for t in SWEEP[B]:
                tuning[0] = t
                log(f"    batch {B} tuning {t}: {cb.graph_time_us(step, per_graph=64):.1f} us a layer")
            tuning[0] = (0, 0, 0)
        xb = torch.randn(B, H, device=dev).to(dt)
        lm_us = cb.graph_time_us(lambda: torch.nn.functional.linear(xb, lm), per_graph=8)
        step_ms = (64 * layer_us + lm_us) / 1e3
        res[B] = (layer_us, lm_us, step_ms)
        log(f"  batch {B}: {layer_us:.1f} us a layer ({wbytes / layer_us / 1e6:.2f} TB/s of weights), lm_head {lm_us:.1f} us; "
            f"projected 64-layer step {step_ms:.2f} ms = {B * 1e3 / step_ms:.0f} tok/s")
    return res


if __name__ == "__main__":
    what = os.environ.get("MAMBAC_GPU_WHAT", "all")
    try:
        if what in ("all", "check"):
            conformance()
        if what in ("all", "bench"):
            bench()
    finally:
        if cb.OUT:
            with open(os.path.join(cb.OUT, "decode_layer_check.txt"), "w") as fh:
                fh.write("\n".join(cb.LOG) + "\n")
    sys.exit(1 if cb.FAILS else 0)
