"""SelectiveScan and CausalConv1d through stock onnxruntime against float64 references.

Run: cargo build --release -p mambac-ops && .venv/bin/pytest tests/python
(env MAMBAC_OPS_LIB overrides the library path). The grids are seeded samples of the full
product: every value of every axis appears, the whole product would take too long on 2 cores.
"""

import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from ops_reference import (
    CONV_INPUTS,
    DTYPES,
    LIB,
    SCAN_INPUTS,
    assert_close,
    causal_conv1d_ref,
    run,
    run_op,
    selective_scan_ref,
    session,
    one_node_model,
    run_under_isa,
)

DTYPE_NAMES = list(DTYPES)
SEQLENS = [1, 2, 7, 64, 300]
DIMS = [1, 5, 48, 130]
DSTATES = [1, 4, 8, 16, 3, 64]  # 3 and 64: the any-dstate kernel path (odd, and past registers)
WIDTHS = [2, 3, 4]


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    """Random normal data rounded to `dtype` (never zeros)."""
    a = rng.standard_normal(shape).astype(np.float32) * scale + shift
    return a.astype(DTYPES[dtype][0])


def ngroups_choices(dim):
    return [g for g in (1, 2, 3, 4) if dim % g == 0]


def scan_cases(count=72, seed=1234):
    """Cycles each axis at its own period so every value appears; booleans come from a seeded rng."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        dim = DIMS[i % len(DIMS)]
        groups = ngroups_choices(dim)
        cases.append(
            dict(
                dtype=DTYPE_NAMES[i % 3],
                seqlen=SEQLENS[i % len(SEQLENS)],
                dim=dim,
                dstate=DSTATES[(i // 2) % len(DSTATES)],
                ngroups=groups[(i // len(DIMS)) % len(groups)],
                batch=1 + (i % 2),
                D=bool(rng.integers(2)),
                z=bool(rng.integers(2)),
                delta_bias=bool(rng.integers(2)),
                initial_state=bool(rng.integers(2)),
                final_state=bool(rng.integers(2)),
                delta_softplus=int(i % 5 != 4),
            )
        )
    return cases


def scan_feeds(c, seed):
    rng = np.random.default_rng(seed)
    b, L, d, n, g, t = c["batch"], c["seqlen"], c["dim"], c["dstate"], c["ngroups"], c["dtype"]
    f = {
        "u": rand(rng, (b, L, d), t),
        # Without softplus dt is used as given: keep it positive, as a real model's would be.
        "delta": rand(rng, (b, L, d), t, 0.5, -1.0)
        if c["delta_softplus"]
        else np.abs(rand(rng, (b, L, d), t, 0.3)) + DTYPES[t][0](0.01),
        "A": -np.exp(rng.standard_normal((d, n)).astype(np.float32)),
        "B": rand(rng, (b, L, g, n), t),
        "C": rand(rng, (b, L, g, n), t),
        "D": rand(rng, (d,), "float32"),
        "z": rand(rng, (b, L, d), t),
        # Likewise delta + delta_bias stays positive without softplus (a negative dt grows the state).
        "delta_bias": rand(rng, (d,), "float32", 0.5)
        if c["delta_softplus"]
        else np.abs(rand(rng, (d,), "float32", 0.1)),
        "initial_state": rand(rng, (b, d, n), "float32"),
    }
    return f


def check_scan(c, seed=0, threads=None):
    feeds = scan_feeds(c, seed)
    slots = [n if (n in ("u", "delta", "A", "B", "C") or c[n]) else "" for n in SCAN_INPUTS]
    outputs = ["y", "final_state"] if c["final_state"] else ["y"]
    got = run_op("SelectiveScan", slots, feeds, outputs, {"delta_softplus": c["delta_softplus"]}, threads)
    kw = {n: feeds[n] for n in SCAN_INPUTS[5:] if c[n]}
    y, h = selective_scan_ref(*(feeds[n] for n in SCAN_INPUTS[:5]), **kw, delta_softplus=bool(c["delta_softplus"]))
    assert got[0].dtype == DTYPES[c["dtype"]][0]
    assert_close(got[0], y, c["dtype"], "y")
    if c["final_state"]:
        assert got[1].dtype == np.float32
        # The state is float32 whatever T is, but it integrates T-rounded inputs like y does.
        assert_close(got[1], h, c["dtype"], "final_state")


@pytest.mark.parametrize("case", scan_cases(), ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_selective_scan(case):
    check_scan(case)


def test_scan_grid_covers_every_axis_value():
    cases = scan_cases()
    for axis, values in [("dtype", DTYPE_NAMES), ("seqlen", SEQLENS), ("dim", DIMS), ("dstate", DSTATES)]:
        assert {c[axis] for c in cases} == set(values), axis
    assert {c["ngroups"] for c in cases} == {1, 2, 3, 4}
    for flag in ["D", "z", "delta_bias", "initial_state", "final_state", "delta_softplus"]:
        assert {bool(c[flag]) for c in cases} == {True, False}, flag


def test_scan_softplus_threshold():
    """delta + delta_bias above 20 takes softplus(x) = x exactly (docs/op-contract.md)."""
    c = dict(dtype="float32", seqlen=7, dim=5, dstate=4, ngroups=1, batch=1, D=True, z=False,
             delta_bias=True, initial_state=False, final_state=True, delta_softplus=1)
    feeds = scan_feeds(c, 7)
    feeds["delta"][0, ::2] = 25.0
    got = run_op("SelectiveScan", SCAN_INPUTS[:6] + ["", "delta_bias"], feeds, ["y", "final_state"])
    y, h = selective_scan_ref(*(feeds[n] for n in SCAN_INPUTS[:6]), delta_bias=feeds["delta_bias"])
    assert_close(got[0], y, "float32", "y")
    assert_close(got[1], h, "float32", "final_state")


def conv_cases(count=36, seed=99):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        cases.append(
            dict(
                dtype=DTYPE_NAMES[i % 3],
                width=WIDTHS[(i // 3) % 3],
                seqlen=[1, 2, 3, 7, 64, 300][i % 6],  # 1, 2 (and 3 for width 4): shorter than the width
                dim=DIMS[i % 4],
                batch=1 + (i % 2),
                bias=bool(rng.integers(2)),
                initial_state=bool(rng.integers(2)),
                final_state=bool(rng.integers(2)),
                silu=bool(i % 4 != 3),
            )
        )
    # Width 1 and a wide one take the any-width path.
    cases.append(dict(dtype="float32", width=1, seqlen=5, dim=48, batch=1, bias=True,
                      initial_state=True, final_state=True, silu=True))
    cases.append(dict(dtype="float16", width=7, seqlen=3, dim=130, batch=2, bias=True,
                      initial_state=True, final_state=True, silu=False))
    return cases


def check_conv(c, seed=0):
    rng = np.random.default_rng(seed)
    b, L, d, k, t = c["batch"], c["seqlen"], c["dim"], c["width"], c["dtype"]
    feeds = {
        "x": rand(rng, (b, L, d), t),
        "weight": rand(rng, (d, k), t, 0.5),
        "bias": rand(rng, (d,), t),
        "initial_state": rand(rng, (b, d, k - 1), t),
    }
    slots = [n if (n in ("x", "weight") or c[n]) else "" for n in CONV_INPUTS]
    outputs = ["y", "final_state"] if c["final_state"] else ["y"]
    got = run_op("CausalConv1d", slots, feeds, outputs, {"activation": "silu" if c["silu"] else "none"})
    y, s = causal_conv1d_ref(feeds["x"], feeds["weight"], feeds["bias"] if c["bias"] else None,
                             feeds["initial_state"] if c["initial_state"] else None, c["silu"])
    assert got[0].dtype == DTYPES[t][0]
    assert_close(got[0], y, t, "y")
    if c["final_state"]:
        assert got[1].dtype == DTYPES[t][0]
        assert_close(got[1], s, t, "final_state")


@pytest.mark.parametrize("case", conv_cases(), ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_causal_conv1d(case):
    check_conv(case)


def test_conv_grid_covers_every_axis_value():
    cases = conv_cases()
    for axis, values in [("dtype", DTYPE_NAMES), ("width", WIDTHS), ("dim", DIMS)]:
        assert set(values) <= {c[axis] for c in cases}, axis
    assert any(c["seqlen"] < c["width"] for c in cases)
    for flag in ["bias", "initial_state", "final_state", "silu"]:
        assert {c[flag] for c in cases} == {True, False}, flag


def test_default_attributes():
    """No attributes: delta_softplus = 1, activation = "silu"."""
    c = dict(dtype="float32", seqlen=7, dim=48, dstate=16, ngroups=2, batch=1, D=True, z=True,
             delta_bias=True, initial_state=False, final_state=False, delta_softplus=1)
    feeds = scan_feeds(c, 3)
    got = run_op("SelectiveScan", SCAN_INPUTS[:8], feeds, ["y"])
    y, _ = selective_scan_ref(*(feeds[n] for n in SCAN_INPUTS[:8]))
    assert_close(got[0], y, "float32", "y")
    rng = np.random.default_rng(3)
    x, w = rand(rng, (1, 9, 5), "float32"), rand(rng, (5, 4), "float32")
    got = run_op("CausalConv1d", ["x", "weight"], {"x": x, "weight": w}, ["y"])
    assert_close(got[0], causal_conv1d_ref(x, w)[0], "float32", "y")


def test_chunked_scan_equals_whole():
    """final_state of one chunk fed as initial_state of the next equals one long scan: what a
    chunked prefill and a resumed conversation rely on."""
    c = dict(dtype="float32", seqlen=64, dim=48, dstate=16, ngroups=1, batch=2, D=True, z=True,
             delta_bias=True, initial_state=True, final_state=True, delta_softplus=1)
    f = scan_feeds(c, 11)
    slots = SCAN_INPUTS
    whole = run_op("SelectiveScan", slots, f, ["y", "final_state"])
    first = {k: (v[:, :40] if k in ("u", "delta", "B", "C", "z") else v) for k, v in f.items()}
    second = {k: (v[:, 40:] if k in ("u", "delta", "B", "C", "z") else v) for k, v in f.items()}
    y1, h1 = run_op("SelectiveScan", slots, first, ["y", "final_state"])
    second["initial_state"] = h1
    y2, h2 = run_op("SelectiveScan", slots, second, ["y", "final_state"])
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), whole[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h2, whole[1], rtol=1e-5, atol=1e-5)


def test_eight_threads_same_outputs():
    """One session run from 8 threads, 10 times each: every output bit-identical."""
    c = dict(dtype="float32", seqlen=64, dim=130, dstate=16, ngroups=2, batch=2, D=True, z=True,
             delta_bias=True, initial_state=True, final_state=True, delta_softplus=1)
    feeds = scan_feeds(c, 5)
    sess = session(one_node_model("SelectiveScan", SCAN_INPUTS, feeds, ["y", "final_state"]))
    expected = run(sess, feeds)
    failures = []

    def worker():
        for _ in range(10):
            out = run(sess, feeds)
            if not all(np.array_equal(a, b) for a, b in zip(out, expected)):
                failures.append("mismatch")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_thread_counts_agree():
    """intra_op_num_threads 1 and 2 split the work differently; results must not change."""
    c = dict(dtype=DTYPE_NAMES[-1], seqlen=64, dim=130, dstate=16, ngroups=2, batch=2, D=True, z=True,
             delta_bias=True, initial_state=True, final_state=True, delta_softplus=1)
    feeds = scan_feeds(c, 8)
    model = one_node_model("SelectiveScan", SCAN_INPUTS, feeds, ["y", "final_state"])
    one = run(session(model, threads=1), feeds)
    two = run(session(model, threads=2), feeds)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_builds(isa):
    """The kernels' baseline and AVX2 builds (picked with MAMBAC_CPU_ISA, read once per process)
    pass a sample of the grid too; the default run covers the widest build this CPU has."""
    run_under_isa(isa, "test_ops", [
        "for i, c in enumerate(t.scan_cases()[::5]): t.check_scan(c, seed=i)",
        "for i, c in enumerate(t.conv_cases()[::4]): t.check_conv(c, seed=i)",
    ])


# The decode path (seqlen < 8: each channel vectorised over its states) for dstate values around
# its limits: odd, one vector, several, and 200 (> 128 states on AVX2: the general path).
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("dstate", [3, 8, 17, 64, 200])
@pytest.mark.parametrize("seqlen", [1, 7])
def test_scan_short_sequences(dtype, dstate, seqlen):
    check_scan(dict(dtype=dtype, seqlen=seqlen, dim=130, dstate=dstate, ngroups=2, batch=2, D=True, z=True,
                    delta_bias=True, initial_state=True, final_state=True, delta_softplus=1), seed=dstate + seqlen)


def test_decode_steps_equal_one_scan():
    """A prompt of 9 steps then 5 single-step calls, carrying the state (the decode path), equals
    one scan of 14 steps (the long path) — the two kernels agree."""
    c = dict(dtype="float32", seqlen=14, dim=130, dstate=16, ngroups=2, batch=2, D=True, z=True,
             delta_bias=True, initial_state=True, final_state=True, delta_softplus=1)
    f = scan_feeds(c, 21)
    whole = run_op("SelectiveScan", SCAN_INPUTS, f, ["y", "final_state"])
    seq = ("u", "delta", "B", "C", "z")
    ys, h = [], f["initial_state"]
    for t0, t1 in [(0, 9)] + [(t, t + 1) for t in range(9, 14)]:
        part = {k: (v[:, t0:t1] if k in seq else v) for k, v in f.items()}
        part["initial_state"] = h
        y, h = run_op("SelectiveScan", SCAN_INPUTS, part, ["y", "final_state"])
        ys.append(y)
    np.testing.assert_allclose(np.concatenate(ys, axis=1), whole[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, whole[1], rtol=1e-5, atol=1e-5)
