"""Empty work is free: a zero batch, sequence or channel count gives empty outputs at once, and the
state outputs of an empty sequence are the initial state (or zeros), whatever the other sizes. A
dstate, ngroups or width of 0 is not empty work but a shape error naming the input."""

import time

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from ops_reference import CONV_INPUTS, SCAN_INPUTS, run_op

ERRORS = (Fail, InvalidArgument, RuntimeException)
HUGE = 2**40  # a batch no buffer could hold a step of


def scan_feeds(b, L, d, n=16, g=1, seed=0, state=True):
    rng = np.random.default_rng(seed)
    f = lambda *s: np.empty(s, np.float32) if 0 in s else rng.standard_normal(s).astype(np.float32)  # noqa: E731
    feeds = {"u": f(b, L, d), "delta": f(b, L, d), "A": -np.exp(f(d, n)), "B": f(b, L, g, n), "C": f(b, L, g, n),
             "D": f(d), "z": f(b, L, d), "delta_bias": f(d)}
    if state:
        feeds["initial_state"] = f(b, d, n)
    return feeds


def conv_feeds(b, L, d, k=4, seed=0, state=True):
    rng = np.random.default_rng(seed)
    f = lambda *s: np.empty(s, np.float32) if 0 in s else rng.standard_normal(s).astype(np.float32)  # noqa: E731
    feeds = {"x": f(b, L, d), "weight": f(d, k), "bias": f(d)}
    if state:
        feeds["initial_state"] = f(b, d, k - 1)
    return feeds


@pytest.mark.parametrize("initial_state", [True, False])
@pytest.mark.parametrize("shape", [(0, 7, 48), (2, 0, 48), (2, 7, 0)], ids=["batch0", "seqlen0", "dim0"])
def test_scan_zero_dims(shape, initial_state):
    b, L, d = shape
    feeds = scan_feeds(b, L, d, seed=b + L + d)
    slots = SCAN_INPUTS if initial_state else SCAN_INPUTS[:8]
    y, h = run_op("SelectiveScan", slots, feeds, ["y", "final_state"])
    assert y.shape == (b, L, d) and h.shape == (b, d, 16)
    want = feeds["initial_state"] if initial_state else np.zeros((b, d, 16), np.float32)
    if L == 0:
        assert np.array_equal(h, want)  # no step: the state passes through unchanged


@pytest.mark.parametrize("initial_state", [True, False])
@pytest.mark.parametrize("shape", [(0, 7, 48), (2, 0, 48), (2, 7, 0)], ids=["batch0", "seqlen0", "dim0"])
def test_conv_zero_dims(shape, initial_state):
    b, L, d = shape
    feeds = conv_feeds(b, L, d, seed=b + L + d)
    slots = CONV_INPUTS if initial_state else CONV_INPUTS[:3]
    y, s = run_op("CausalConv1d", slots, feeds, ["y", "final_state"])
    assert y.shape == (b, L, d) and s.shape == (b, d, 3)
    want = feeds["initial_state"] if initial_state else np.zeros((b, d, 3), np.float32)
    if L == 0:
        assert np.array_equal(s, want)


def test_huge_batch_of_empty_sequences_returns_at_once():
    """[2^40, 0, 16] with no state output: nothing to compute (the task count once ignored seqlen
    and never finished)."""
    t0 = time.perf_counter()
    (y,) = run_op("SelectiveScan", SCAN_INPUTS[:8], scan_feeds(HUGE, 0, 16, state=False), ["y"])
    assert y.shape == (HUGE, 0, 16)
    (y,) = run_op("CausalConv1d", CONV_INPUTS[:3], conv_feeds(HUGE, 0, 16, state=False), ["y"])
    assert y.shape == (HUGE, 0, 16)
    assert time.perf_counter() - t0 < 10.0


def test_state_output_past_64_bits_is_named():
    """An empty sequence of 2^56 rows asks for a final_state of 2^56 * 16 * 16 float32s (2^66 bytes): an error
    naming the output, not an allocation attempt."""
    with pytest.raises(ERRORS) as e:
        run_op("SelectiveScan", SCAN_INPUTS[:8], scan_feeds(2**56, 0, 16, state=False), ["y", "final_state"])
    assert ("SelectiveScan: output 'final_state' would have shape [72057594037927936, 16, 16], "
            "whose size in bytes exceeds 2^63 - 1") in str(e.value)
    with pytest.raises(ERRORS) as e:
        run_op("CausalConv1d", CONV_INPUTS[:3], conv_feeds(2**56, 0, 16, k=4, state=False), ["y", "final_state"])
    assert ("CausalConv1d: output 'final_state' would have shape [72057594037927936, 16, 3], "
            "whose size in bytes exceeds 2^63 - 1") in str(e.value)


@pytest.mark.parametrize(
    "op,change,message",
    [
        ("SelectiveScan", ("A", (48, 0)), "SelectiveScan: input 'A' has shape [48, 0], expected [48, dstate] with dstate >= 1"),
        ("SelectiveScan", ("B", (2, 7, 0, 16)),
         "SelectiveScan: input 'B' has shape [2, 7, 0, 16], expected [2, 7, ngroups, 16] with dim 48 divisible by ngroups"),
        ("CausalConv1d", ("weight", (48, 0)), "CausalConv1d: input 'weight' has shape [48, 0], expected [48, width] with width >= 1"),
    ],
    ids=["dstate0", "ngroups0", "width0"],
)
def test_zero_sizes_that_are_not_empty_work(op, change, message):
    feeds = scan_feeds(2, 7, 48) if op == "SelectiveScan" else conv_feeds(2, 7, 48)
    name, shape = change
    feeds[name] = np.zeros(shape, np.float32)
    slots = SCAN_INPUTS[:5] if op == "SelectiveScan" else CONV_INPUTS[:2]
    with pytest.raises(ERRORS) as e:
        run_op(op, slots, feeds, ["y"])
    assert message in str(e.value)


def test_layer_step_zero_batch():
    """MambaLayerStep with batch 0: empty outputs of the right shapes."""
    from test_decode_graph import GOOD, run_step

    spec = dict(GOOD)
    for n in ("conv_state", "ssm_state", "residual"):
        spec[n] = ([0] + spec[n][0][1:], spec[n][1])
    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, (s, t) in spec.items()}
    res, conv, ssm = run_step(spec, feeds=feeds)
    assert res.shape == (0, 1, 8) and conv.shape == (0, 16, 3) and ssm.shape == (0, 16, 4)
