"""NaN and infinities propagate through SelectiveScan, CausalConv1d and MambaLayerStep on the CPU
as they do through the float64 reference: the same NaN, +inf and -inf positions, and the op tier
on every other element (ops_reference.mismatch).

Cases (nonfinite_cases.py): every input of each op with NaN, +inf or -inf at three random
positions of seeded random data, over the scan's tiled and short paths and the conv's fixed- and
any-width kernels, float32, float16 and bfloat16. The widest kernel build this CPU has runs them
in this process; the generic and AVX2 builds (MAMBAC_CPU_ISA, read once per process) in a child
process each.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import nonfinite_cases as nc
from ops_reference import CONV_INPUTS, LIB, SCAN_INPUTS, causal_conv1d_ref, mamba_layer_step_ref, mismatch, run_op, selective_scan_ref


def scan_failures(c):
    feeds = nc.scan_feeds(c)
    sp = c["delta_softplus"]
    got = run_op("SelectiveScan", SCAN_INPUTS, feeds, ["y", "final_state"], {"delta_softplus": sp})
    with np.errstate(all="ignore"):
        y, h = selective_scan_ref(*(feeds[n] for n in SCAN_INPUTS), delta_softplus=bool(sp))
    return [m for m in (mismatch(got[0], y, c["dtype"], "y"), mismatch(got[1], h, c["dtype"], "final_state")) if m]


def conv_failures(c):
    feeds = nc.conv_feeds(c)
    got = run_op("CausalConv1d", CONV_INPUTS, feeds, ["y", "final_state"], {"activation": "silu" if c["silu"] else "none"})
    with np.errstate(all="ignore"):
        y, s = causal_conv1d_ref(*(feeds[n] for n in CONV_INPUTS), silu=c["silu"])
    return [m for m in (mismatch(got[0], y, c["dtype"], "y"), mismatch(got[1], s, c["dtype"], "final_state")) if m]


def all_failures():
    """Every case; one line per failing case (what the child processes print)."""
    out = []
    for c in nc.scan_cases():
        out += [f"SelectiveScan {nc.case_id(c)}: {m}" for m in scan_failures(c)]
    for c in nc.conv_cases():
        out += [f"CausalConv1d {nc.case_id(c)}: {m}" for m in conv_failures(c)]
    return out


@pytest.mark.parametrize("case", nc.scan_cases(), ids=nc.case_id)
def test_scan_nonfinite(case):
    assert not scan_failures(case)


@pytest.mark.parametrize("case", nc.conv_cases(), ids=nc.case_id)
def test_conv_nonfinite(case):
    assert not conv_failures(case)


def test_cases_reach_nan_and_both_infinities():
    """The grid would prove nothing if the reference stayed finite: over the scan cases it gives
    NaN, +inf and -inf somewhere in y, and some cases stay finite (NaN must not appear there)."""
    seen = set()
    finite_cases = 0
    for c in nc.scan_cases():
        feeds = nc.scan_feeds(c)
        with np.errstate(all="ignore"):
            y, _ = selective_scan_ref(*(feeds[n] for n in SCAN_INPUTS), delta_softplus=bool(c["delta_softplus"]))
        seen |= {k for k, f in [("nan", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)] if f(y).any()}
        finite_cases += bool(np.isfinite(y).all())
    assert seen == {"nan", "+inf", "-inf"}
    assert finite_cases > 0


def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_build(isa):
    """The whole grid on each kernel build, in a child process that sets MAMBAC_CPU_ISA."""
    if isa != "generic" and not cpu_has(isa + ("f" if isa == "avx512" else "")):
        pytest.skip(f"this CPU has no {isa}")
    code = "import sys; sys.path.insert(0, %r)\nimport test_ops_nonfinite as t\nfails = t.all_failures()\n" \
           "print('\\n'.join(fails)); sys.exit(1 if fails else 0)\n" % os.path.dirname(__file__)
    env = dict(os.environ, MAMBAC_CPU_ISA=isa, MAMBAC_OPS_LIB=LIB)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


# --- MambaLayerStep (the decode graph's fused layer) ---------------------------------------------
LAYER_INPUTS = ["conv_state", "ssm_state", "residual", "conv_weight", "conv_bias", "dt_bias", "A", "D",
                "in_proj_weight", "x_proj_weight", "dt_proj_weight", "out_proj_weight"]


@pytest.mark.parametrize("special", list(nc.SPECIALS))
@pytest.mark.parametrize("name", LAYER_INPUTS)
def test_layer_step_nonfinite(name, special):
    """A special value in one input of the fused decode layer: its three outputs have the NaN and
    infinities of docs/decode-graph.md's equations in float64, and the float32 tier elsewhere."""
    from test_decode_graph import GOOD, run_step

    rng = np.random.default_rng(LAYER_INPUTS.index(name) * 3 + list(nc.SPECIALS).index(special))
    feeds = {n: (0.5 * rng.standard_normal(s)).astype(np.float32) for n, (s, t) in GOOD.items()}
    feeds["A"] = -np.exp(rng.standard_normal(GOOD["A"][0])).astype(np.float32)
    feeds[name] = nc.inject(rng, feeds[name], nc.SPECIALS[special], 2)
    got = run_step(GOOD, feeds=feeds)
    with np.errstate(all="ignore"):
        want = mamba_layer_step_ref(feeds)
    fails = [mismatch(g, w, "float32", what) for g, w, what in zip(got, want, ["residual_out", "conv_state_out", "ssm_state_out"])]
    assert not any(fails), fails


def test_compare_any_nonfinite_relaxes_only_the_kind():
    """any_nonfinite (the CUDA check's A = +inf cases) accepts another non-finite value where the
    reference is non-finite, and nothing else: non-finite positions and the tier still hold."""
    ref = np.array([np.inf, -np.inf, np.nan, 1.0])
    other_kind = np.array([np.nan, np.nan, np.inf, 1.0])
    assert mismatch(other_kind, ref, "float32", "y").startswith("y (float32): NaN at 2 positions, the reference at 1")
    assert mismatch(other_kind, ref, "float32", "y", any_nonfinite=True) is None
    finite_for_inf = np.array([1.0, -np.inf, np.nan, 1.0])
    assert mismatch(finite_for_inf, ref, "float32", "y", any_nonfinite=True).startswith(
        "y (float32): non-finite at 2 positions, the reference at 3; first difference at (0,)")
    inf_for_finite = np.array([np.inf, -np.inf, np.nan, np.inf])
    assert "first difference at (3,)" in mismatch(inf_for_finite, ref, "float32", "y", any_nonfinite=True)
    off_tier = np.array([np.inf, -np.inf, np.nan, 1.1])
    assert mismatch(off_tier, ref, "float32", "y", any_nonfinite=True) == (
        "y (float32): 1 of 1 finite elements out of tolerance (worst rel 0.1); worst: got np.float64(1.1), expected np.float64(1.0)")
