"""mambac.SsdScan (Mamba-2's scan) through stock onnxruntime against the float64 reference
(ops_reference.ssd_scan_ref), over a seeded grid, plus every error path's message.

The grid cycles each axis at its own period so every value appears: heads, head_dim, groups
(every divisor of heads up to 4), state sizes, sequence lengths that are and are not multiples
of 16 (the fixture's chunk_size; the CPU kernel is step by step today, the chunked kernel must
keep these), every dtype, with and without D, dt_bias, initial and final state, softplus and a
clamping time_step_limit.
"""

import numpy as np
import pytest

from ops_reference import (
    DTYPES,
    SSD_INPUTS,
    assert_close,
    run_op,
    selective_scan_ref,
    ssd_scan_ref,
)
from test_ops_errors import expect_error, expect_run_error, expect_session_error, with_

DTYPE_NAMES = list(DTYPES)
HEADS = [1, 3, 8, 4]
HEAD_DIMS = [1, 4, 16, 33]
DSTATES = [1, 5, 8, 16, 64]
SEQLENS = [1, 7, 16, 37, 64, 100]


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    a = rng.standard_normal(shape).astype(np.float32) * scale + shift
    return a.astype(DTYPES[dtype][0])


def cases(count=60, seed=77):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        heads = HEADS[i % len(HEADS)]
        groups = [g for g in (1, 2, 3, 4) if heads % g == 0]
        out.append(dict(
            dtype=DTYPE_NAMES[i % len(DTYPE_NAMES)],
            batch=1 + (i % 2),
            seqlen=SEQLENS[i % len(SEQLENS)],
            heads=heads,
            head_dim=HEAD_DIMS[(i // 2) % len(HEAD_DIMS)],
            ngroups=groups[(i // len(HEADS)) % len(groups)],
            dstate=DSTATES[(i // 3) % len(DSTATES)],
            D=bool(rng.integers(2)),
            dt_bias=bool(rng.integers(2)),
            initial_state=bool(rng.integers(2)),
            final_state=bool(rng.integers(2)),
            dt_softplus=int(i % 5 != 4),
            limit=(0.05, 0.5) if i % 4 == 1 else None,
        ))
    return out


def feeds_of(c, seed):
    rng = np.random.default_rng(seed)
    b, L, h, p, g, n, t = (c[k] for k in ("batch", "seqlen", "heads", "head_dim", "ngroups", "dstate", "dtype"))
    f = {
        "x": rand(rng, (b, L, h, p), t),
        # Without softplus dt is used as given: keep it positive, as a real model's would be.
        "dt": rand(rng, (b, L, h), t, 0.5, -1.0) if c["dt_softplus"] else np.abs(rand(rng, (b, L, h), t, 0.1)),
        "A": -np.exp(rand(rng, (h,), "float32", 0.5)),
        "B": rand(rng, (b, L, g, n), t),
        "C": rand(rng, (b, L, g, n), t),
    }
    if c["D"]:
        f["D"] = rand(rng, (h,), "float32")
    if c["dt_bias"]:
        f["dt_bias"] = rand(rng, (h,), "float32", 0.5, -1.0)
    if c["initial_state"]:
        f["initial_state"] = rand(rng, (b, h, p, n), "float32")
    return f


def attrs_of(c):
    a = {"dt_softplus": c["dt_softplus"]}
    if c["limit"]:
        a["dt_min"], a["dt_max"] = c["limit"]
    return a


@pytest.mark.parametrize("i,c", list(enumerate(cases())), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_ssd_scan_grid(i, c):
    feeds = feeds_of(c, 1000 + i)
    slots = [n if n in feeds else "" for n in SSD_INPUTS]
    outputs = ["y", "final_state" if c["final_state"] else ""]
    got = run_op("SsdScan", slots, feeds, outputs, attrs_of(c))
    lo, hi = c["limit"] or (0.0, np.inf)
    y, h = ssd_scan_ref(**feeds, dt_softplus=bool(c["dt_softplus"]), dt_min=lo, dt_max=hi)
    assert_close(got[0], y, c["dtype"], f"y {c}")
    if c["final_state"]:
        # The state is float32 for every T: T's tolerance covers the inputs' rounding path.
        assert got[1].dtype == np.float32
        assert_close(got[1], h, c["dtype"], f"final_state {c}")


def test_reference_is_selective_scan_with_tied_heads():
    """The float64 SsdScan is SelectiveScan with A and dt shared by a head's channels and D per
    head: checks the reference against the other, independently written one."""
    rng = np.random.default_rng(3)
    b, L, h, p, g, n = 2, 9, 4, 3, 2, 5
    x, dt = rng.standard_normal((b, L, h, p)), rng.standard_normal((b, L, h))
    A, D, bias = -np.exp(rng.standard_normal(h)), rng.standard_normal(h), rng.standard_normal(h)
    B, C, s0 = rng.standard_normal((b, L, g, n)), rng.standard_normal((b, L, g, n)), rng.standard_normal((b, h, p, n))
    y, fin = ssd_scan_ref(x, dt, A, B, C, D, bias, s0)
    y2, fin2 = selective_scan_ref(
        x.reshape(b, L, h * p), np.repeat(dt, p, axis=2), np.repeat(np.repeat(A, p)[:, None], n, axis=1), B, C,
        D=np.repeat(D, p), delta_bias=np.repeat(bias, p), initial_state=s0.reshape(b, h * p, n))
    np.testing.assert_allclose(y.reshape(b, L, h * p), y2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fin.reshape(b, h * p, n), fin2, rtol=1e-12, atol=1e-12)


def test_empty_sequence_passes_the_state_through():
    f = feeds_of(dict(dtype="float32", batch=2, seqlen=0, heads=4, head_dim=3, ngroups=2, dstate=5, D=True,
                      dt_bias=True, initial_state=True, dt_softplus=1), 9)
    y, h = run_op("SsdScan", SSD_INPUTS, f, ["y", "final_state"])
    assert y.shape == (2, 0, 4, 3)
    np.testing.assert_array_equal(h, f["initial_state"])


def good_feeds(b=2, L=7, h=6, p=4, g=3, n=8):
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"x": r(b, L, h, p), "dt": r(b, L, h), "A": -np.exp(r(h)), "B": r(b, L, g, n), "C": r(b, L, g, n),
            "D": r(h), "dt_bias": r(h), "initial_state": r(b, h, p, n)}


SSD_BAD = {
    "x_rank": (dict(x=np.ones((2, 7, 24), np.float32)),
               "SsdScan: input 'x' has shape [2, 7, 24], expected [batch, seqlen, heads, head_dim]"),
    "dt_dims": (dict(dt=np.ones((2, 7, 5), np.float32)),
                "SsdScan: input 'dt' has shape [2, 7, 5], expected [2, 7, 6] ([batch, seqlen, heads] from 'x')"),
    "dt_type": (dict(dt=np.ones((2, 7, 6), np.float16)),
                "SsdScan: input 'dt' has element type float16, expected float32 (same as 'x')"),
    "A_dims": (dict(A=np.ones((6, 8), np.float32)),
               "SsdScan: input 'A' has shape [6, 8], expected [6] (heads from 'x')"),
    "A_type": (dict(A=np.ones((6,), np.float16)),
               "SsdScan: input 'A' has element type float16, expected float32"),
    "B_groups": (dict(B=np.ones((2, 7, 4, 8), np.float32)),
                 "SsdScan: input 'B' has shape [2, 7, 4, 8], expected [2, 7, ngroups, dstate] with heads 6 "
                 "divisible by ngroups"),
    "B_batch": (dict(B=np.ones((1, 7, 3, 8), np.float32)),
                "SsdScan: input 'B' has shape [1, 7, 3, 8], expected [2, 7, ngroups, dstate] with heads 6"),
    "B_type": (dict(B=np.ones((2, 7, 3, 8), np.float64)),
               "SsdScan: input 'B' has element type float64, expected float32 (same as 'x')"),
    "C_dims": (dict(C=np.ones((2, 7, 3, 4), np.float32)),
               "SsdScan: input 'C' has shape [2, 7, 3, 4], expected [2, 7, 3, 8] (same as 'B')"),
    "D_dims": (dict(D=np.ones((24,), np.float32)),
               "SsdScan: input 'D' has shape [24], expected [6] (heads from 'x')"),
    "dt_bias_type": (dict(dt_bias=np.ones((6,), np.float16)),
                     "SsdScan: input 'dt_bias' has element type float16, expected float32"),
    "state_dims": (dict(initial_state=np.ones((2, 24, 8), np.float32)),
                   "SsdScan: input 'initial_state' has shape [2, 24, 8], expected [2, 6, 4, 8] "
                   "([batch, heads, head_dim, dstate] from 'x' and 'B')"),
    "state_type": (dict(initial_state=np.ones((2, 6, 4, 8), np.float16)),
                   "SsdScan: input 'initial_state' has element type float16, expected float32"),
}


@pytest.mark.parametrize("name", list(SSD_BAD))
def test_ssd_bad_input(name):
    good = good_feeds()
    changes, message = SSD_BAD[name]
    expect_error("SsdScan", SSD_INPUTS, good, with_(good, **changes), message)


@pytest.mark.parametrize("slot", ["x", "dt", "A", "B", "C"])
def test_ssd_missing_required_input(slot):
    slots = ["" if n == slot else n for n in SSD_INPUTS]
    expect_run_error("SsdScan", slots, good_feeds(), ["y"], f"SsdScan: required input '{slot}' is missing")


@pytest.mark.parametrize("attrs,message", [
    (dict(dt_softplus=2), "attribute 'dt_softplus' is 2, expected 0 or 1"),
    (dict(dt_min=0.5, dt_max=0.1), "attribute 'dt_max' is 0.1, expected at least dt_min (0.5)"),
    (dict(dt_min=float("nan")), "attribute 'dt_min' is NaN, expected a number below +inf"),
    (dict(dt_max=float("nan")), "attribute 'dt_max' is NaN, expected at least dt_min (0)"),
    (dict(dt_min="x"), "attribute 'dt_min' must be a float"),
])
def test_ssd_bad_attribute(attrs, message):
    expect_session_error("SsdScan", SSD_INPUTS, good_feeds(), ["y"], attrs, message)
