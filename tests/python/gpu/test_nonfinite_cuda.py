"""NaN, infinities and empty work on the CUDA kernels.

1. nonfinite_cases.py's cases (every input of SelectiveScan and CausalConv1d with NaN, +inf or
   -inf injected into seeded data; the CPU tests' cases) and EXTRA_SCAN_SHAPES (shapes reaching
   the tiled kernels' padded steps, padded states and sub-chunk folds), float32 / float16 /
   bfloat16, through the automatic dispatch and every forced split the shape takes: the same NaN,
   +inf and -inf positions as ops_reference's float64 references, the tier elsewhere. A = +inf is
   outside the op contract: there only the non-finite positions must match. The fused decode
   layer likewise, a special in each input.
2. Empty work: a zero batch, sequence or channel count launches nothing and succeeds at once
   (2^40 empty sequences too); an empty sequence's final state is the initial one, or 0.
"""

import ctypes
import time

import numpy as np
import pytest

import nonfinite_cases as nc
pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
from cuda_harness import (ConvParams, DTYPES, ScanParams, dev, launch_conv, lib, ptr, run_conv,  # noqa: E402
                          run_scan, run_step, step_inputs, stream, to_host, torch)
from ops_reference import CONV_INPUTS, SCAN_INPUTS, causal_conv1d_ref, mamba_layer_step_ref, mismatch, selective_scan_ref  # noqa: E402

POISON = 1.0e4  # outside every tier: an element the kernel does not write fails
SCAN_CFGS = [None, (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, -1), (4, 0, 1, 0, 1), (4, 0, 3, 12, 1), (4, 0, 8, 8, 1),
             (8, 0, 2, 16), (16, 0, 4, 16), (4, 0, 1, 0, 2), (4, 16, 3, 8, 2), (4, 0, -4, 8), (4, 0, -8, 12),
             (4, 4, -8, 8)]
CONV_CFGS = [None, (0, 0, 1), (0, 0, -1), (4, 8), (4, 32), (8, 8), (8, 16)]
ALL_T = ("float32", "float16", "bfloat16")
# dstate 16 (vector, split and warp-split kernels; dim 64 in 1 or 2 groups) and dstate 5 (padded
# states), seqlens leaving the last tile of every tile size partial. The long dstate-16 shape takes
# NaN in every input and A's infinities only: there an infinite state or C through the split
# kernels can give NaN where the step-by-step reference keeps +-inf (cpp/cuda/README.md,
# "Non-finite inputs": a known divergence of the split scans this test does not hold them to).
EXTRA_SCAN_SHAPES = [(300, 64, 16, 1), (5, 64, 16, 2), (37, 40, 5, 1)]


def extra_scan_cases():
    cases = []
    for i, (name, special) in enumerate((n, s) for n in SCAN_INPUTS for s in nc.SPECIALS):
        for j, (seqlen, dim, dstate, ngroups) in enumerate(EXTRA_SCAN_SHAPES):
            if seqlen > 256 and special != "nan" and name != "A":
                continue
            cases.append(dict(input=name, special=special, dtype="float32", seqlen=seqlen, dim=dim, dstate=dstate,
                              ngroups=ngroups, batch=2, delta_softplus=int(i % 2 == 0),
                              seed=3000 + len(EXTRA_SCAN_SHAPES) * i + j))
    return cases


def on_device(feeds, dtype, t_inputs):
    t = DTYPES[dtype][0]
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev).to(t if k in t_inputs else torch.float32)
            for k, v in feeds.items()}


@pytest.mark.parametrize("case", nc.scan_cases() + extra_scan_cases(), ids=nc.case_id)
@pytest.mark.parametrize("dtype", ALL_T)
def test_scan_nonfinite(case, dtype):
    loose = case["input"] == "A" and case["special"] == "+inf"  # outside the op contract
    x = on_device(nc.scan_feeds(dict(case, dtype="float32")), dtype, {"u", "delta", "B", "C", "z"})
    sp = bool(case["delta_softplus"])
    with np.errstate(all="ignore"):
        y_ref, h_ref = selective_scan_ref(*(to_host(x[n]) for n in SCAN_INPUTS), delta_softplus=sp)
    fails = []
    for cfg in SCAN_CFGS:
        rc, y, fs = run_scan(x, dtype, sp, True, cfg, poison=POISON)
        if rc != 0:
            if cfg is None:
                fails.append(f"automatic dispatch: CUDA status {rc}")
            continue  # a forced split this shape does not take
        fails += [mismatch(to_host(y), y_ref, dtype, f"cfg {cfg} y", scaled_atol=True, any_nonfinite=loose),
                  mismatch(to_host(fs), h_ref, dtype, f"cfg {cfg} final_state", scaled_atol=True, any_nonfinite=loose)]
    assert not any(fails), "\n".join(f for f in fails if f)


@pytest.mark.parametrize("case", nc.conv_cases(), ids=nc.case_id)
@pytest.mark.parametrize("dtype", ALL_T)
def test_conv_nonfinite(case, dtype):
    x = on_device(nc.conv_feeds(dict(case, dtype="float32")), dtype, set(CONV_INPUTS))
    with np.errstate(all="ignore"):
        y_ref, s_ref = causal_conv1d_ref(*(to_host(x[n]) for n in CONV_INPUTS), silu=case["silu"])
    fails = []
    for cfg in CONV_CFGS:
        if cfg is not None and cfg[0] == 8 and dtype == "float32":
            continue  # 8 float32 channels a thread is not a variant
        rc, y, fs = run_conv(x, dtype, case["silu"], True, cfg, poison=POISON)
        if rc != 0:
            if cfg is None:
                fails.append(f"automatic dispatch: CUDA status {rc}")
            continue
        fails += [mismatch(to_host(y), y_ref, dtype, f"cfg {cfg} y", scaled_atol=True),
                  mismatch(to_host(fs), s_ref, dtype, f"cfg {cfg} final_state", scaled_atol=True)]
    assert not any(fails), "\n".join(f for f in fails if f)


LAYER_TARGETS = ["residual", "conv_state", "ssm_state", "A", "dt_bias", "D", "conv_weight", "conv_bias",
                 "in_proj_weight", "x_proj_weight", "dt_proj_weight", "out_proj_weight"]


@pytest.mark.parametrize("special", list(nc.SPECIALS))
@pytest.mark.parametrize("name", LAYER_TARGETS)
def test_layer_step_nonfinite(name, special):
    i, j = LAYER_TARGETS.index(name), list(nc.SPECIALS).index(special)
    x = step_inputs(3, 64, 128, 16, 4, 4, "float32", {}, seed=i)
    rng = np.random.default_rng(10 * i + j)
    x[name].copy_(torch.from_numpy(nc.inject(rng, x[name].cpu().numpy(), nc.SPECIALS[special], 2)).to(dev))
    with np.errstate(all="ignore"):
        want = mamba_layer_step_ref({k: to_host(v) for k, v in x.items()})
    rc, o = run_step(x, "float32", poison=POISON)
    assert rc == 0
    got = [to_host(o[k]) for k in ("residual", "conv_state", "ssm_state")]
    fails = [mismatch(g, w, "float32", what, scaled_atol=True)
             for g, w, what in zip(got, want, ["residual_out", "conv_state_out", "ssm_state_out"])]
    assert not any(fails), "\n".join(f for f in fails if f)


@pytest.mark.parametrize("dtype", ALL_T)
def test_empty_batch_of_2_pow_40_returns_at_once(dtype):
    code = DTYPES[dtype][1]
    a = torch.zeros(16, 16, device=dev)
    for name, launch in [
        ("scan", lambda: lib.mambac_cuda_selective_scan(ctypes.byref(ScanParams(
            batch=2**40, seqlen=0, dim=16, dstate=16, ngroups=1, elem=code, delta_softplus=True, a=ptr(a))), stream())),
        ("conv", lambda: launch_conv(ConvParams(batch=2**40, seqlen=0, dim=16, width=4, elem=code, silu=True))),
    ]:
        t0 = time.perf_counter()
        rc = launch()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        assert rc == 0 and ms < 100, f"{name}: status {rc}, {ms:.1f} ms"


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("shape", [(0, 7, 48), (2, 0, 48), (2, 7, 0)])
@pytest.mark.parametrize("dtype", ALL_T)
def test_zero_dims(dtype, shape, init):
    batch, seqlen, dim = shape
    n, k = 16, 4
    g = torch.Generator(device=dev).manual_seed(batch + seqlen + dim)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    x = {"u": r(batch, seqlen, dim).to(t), "A": -torch.exp(r(dim, n)), "B": r(batch, seqlen, 1, n).to(t),
         "initial_state": r(batch, dim, n) if init else None}
    x["delta"], x["C"] = x["u"], x["B"]
    rc, _, fs = run_scan(x, dtype, True, True, poison=POISON)
    assert rc == 0
    if seqlen == 0:
        want = x["initial_state"] if init else torch.zeros_like(fs)
        assert torch.equal(fs, want), "scan: final_state of an empty sequence is not the initial state"
    c = {"x": x["u"], "weight": r(dim, k).to(t), "initial_state": r(batch, dim, k - 1).to(t) if init else None}
    rc, _, cfs = run_conv(c, dtype, True, True, poison=POISON)
    assert rc == 0
    if seqlen == 0:
        want = c["initial_state"] if init else torch.zeros_like(cfs)
        assert torch.equal(cfs, want), "conv: final_state of an empty sequence is not the initial state"
