"""Bad inputs and attributes: an ONNX Runtime error naming the input (or attribute), the expected
and the actual shape or type, and the process goes on (the same session then runs good inputs)."""

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from ops_reference import CONV_INPUTS, SCAN_INPUTS, one_node_model, run, session

ERRORS = (Fail, InvalidArgument, RuntimeException)


def scan_feeds(b=2, L=7, d=48, n=16, g=3):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"u": f(b, L, d), "delta": f(b, L, d), "A": -np.exp(f(d, n)), "B": f(b, L, g, n), "C": f(b, L, g, n),
            "D": f(d), "z": f(b, L, d), "delta_bias": f(d), "initial_state": f(b, d, n)}


def conv_feeds(b=2, L=7, d=48, k=4):
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"x": f(b, L, d), "weight": f(d, k), "bias": f(d), "initial_state": f(b, d, k - 1)}


def expect_error(op, slots, good, bad, message):
    """Runs the node on `bad` (expecting `message` in the error), then on `good`: in the same
    session when the graph's declared input types allow, else in a new one."""
    sess = session(one_node_model(op, slots, bad, ["y"]))
    with pytest.raises(ERRORS) as e:
        run(sess, {n: bad[n] for n in slots if n})
    assert message in str(e.value), str(e.value)
    if any(bad[n].dtype != good[n].dtype for n in slots if n):
        sess = session(one_node_model(op, slots, good, ["y"]))
    out = run(sess, {n: good[n] for n in slots if n})
    assert np.isfinite(out[0]).all()


def expect_run_error(op, slots, feeds, outputs, message, attrs=None):
    """The node (`slots` in order, "" where an input is left empty) makes a session, and running
    it on `feeds` fails with `message`."""
    sess = session(one_node_model(op, slots, feeds, outputs, attrs))
    with pytest.raises(ERRORS) as e:
        run(sess, {n: feeds[n] for n in slots if n})
    assert message in str(e.value), str(e.value)


def expect_session_error(op, slots, feeds, outputs, attrs, message):
    """Making the node's session fails with `message`: attributes are read when the kernel is
    created, i.e. when the session is."""
    with pytest.raises(ERRORS) as e:
        session(one_node_model(op, slots, feeds, outputs, attrs))
    assert message in str(e.value), str(e.value)


def with_(feeds, **changes):
    f = dict(feeds)
    f.update(changes)
    return f


SCAN_BAD = {
    "rank": (dict(u=np.ones((2, 7), np.float32)),
             "SelectiveScan: input 'u' has shape [2, 7], expected [batch, seqlen, dim]"),
    "delta_dims": (dict(delta=np.ones((2, 7, 40), np.float32)),
                   "SelectiveScan: input 'delta' has shape [2, 7, 40], expected [2, 7, 48] (same as 'u')"),
    "ngroups": (dict(B=np.ones((2, 7, 5, 16), np.float32)),
                "SelectiveScan: input 'B' has shape [2, 7, 5, 16], expected [2, 7, ngroups, 16] with dim 48 divisible by ngroups"),
    "B_batch": (dict(B=np.ones((1, 7, 3, 16), np.float32)),
                "SelectiveScan: input 'B' has shape [1, 7, 3, 16], expected [2, 7, ngroups, 16]"),
    "C_groups": (dict(C=np.ones((2, 7, 1, 16), np.float32)),
                 "SelectiveScan: input 'C' has shape [2, 7, 1, 16], expected [2, 7, 3, 16] (same as 'B')"),
    "A_dim": (dict(A=np.ones((40, 16), np.float32)),
              "SelectiveScan: input 'A' has shape [40, 16], expected [48, dstate] (dim from 'u')"),
    "delta_type": (dict(delta=np.ones((2, 7, 48), np.float16)),
                   "SelectiveScan: input 'delta' has element type float16, expected float32 (same as 'u')"),
    "A_type": (dict(A=np.ones((48, 16), np.float16)),
               "SelectiveScan: input 'A' has element type float16, expected float32"),
    "D_dims": (dict(D=np.ones((47,), np.float32)),
               "SelectiveScan: input 'D' has shape [47], expected [48] (dim from 'u')"),
    "z_type": (dict(z=np.ones((2, 7, 48), np.float64)),
               "SelectiveScan: input 'z' has element type float64, expected float32 (same as 'u')"),
    "state_dims": (dict(initial_state=np.ones((2, 48, 8), np.float32)),
                   "SelectiveScan: input 'initial_state' has shape [2, 48, 8], expected [2, 48, 16]"),
}


@pytest.mark.parametrize("name", list(SCAN_BAD))
def test_scan_bad_input(name):
    good = scan_feeds()
    changes, message = SCAN_BAD[name]
    expect_error("SelectiveScan", SCAN_INPUTS, good, with_(good, **changes), message)


CONV_BAD = {
    "rank": (dict(x=np.ones((2, 7, 48, 1), np.float32)),
             "CausalConv1d: input 'x' has shape [2, 7, 48, 1], expected [batch, seqlen, dim]"),
    "weight_dim": (dict(weight=np.ones((47, 4), np.float32)),
                   "CausalConv1d: input 'weight' has shape [47, 4], expected [48, width] (dim from 'x')"),
    "bias_type": (dict(bias=np.ones((48,), np.float16)),
                  "CausalConv1d: input 'bias' has element type float16, expected float32 (same as 'x')"),
    "state_width": (dict(initial_state=np.ones((2, 48, 2), np.float32)),
                    "CausalConv1d: input 'initial_state' has shape [2, 48, 2], expected [2, 48, 3]"),
}


@pytest.mark.parametrize("name", list(CONV_BAD))
def test_conv_bad_input(name):
    good = conv_feeds()
    changes, message = CONV_BAD[name]
    expect_error("CausalConv1d", CONV_INPUTS, good, with_(good, **changes), message)


@pytest.mark.parametrize("missing", ["u", "A", "C"])
def test_scan_missing_required_input(missing):
    slots = [("" if n == missing else n) for n in SCAN_INPUTS[:5]]
    expect_run_error("SelectiveScan", slots, scan_feeds(), ["y"],
                     f"SelectiveScan: required input '{missing}' is missing")


def test_scan_required_inputs_omitted():
    """A node with only u and delta: the error names the first missing input."""
    expect_run_error("SelectiveScan", ["u", "delta"], scan_feeds(), ["y"],
                     "SelectiveScan: required input 'A' is missing")


def test_conv_missing_weight():
    expect_run_error("CausalConv1d", ["x", "", "bias"], conv_feeds(), ["y"],
                     "CausalConv1d: required input 'weight' is missing")


@pytest.mark.parametrize(
    "op,attrs,message",
    [
        ("CausalConv1d", {"activation": "relu"}, "CausalConv1d: attribute 'activation' is \"relu\", expected \"silu\" or \"none\""),
        ("CausalConv1d", {"activation": 1}, "CausalConv1d: attribute 'activation' must be a string"),
        ("SelectiveScan", {"delta_softplus": 2}, "SelectiveScan: attribute 'delta_softplus' is 2, expected 0 or 1"),
        ("SelectiveScan", {"delta_softplus": "yes"}, "SelectiveScan: attribute 'delta_softplus' must be an int"),
    ],
)
def test_bad_attribute(op, attrs, message):
    feeds, slots = (scan_feeds(), SCAN_INPUTS) if op == "SelectiveScan" else (conv_feeds(), CONV_INPUTS)
    expect_session_error(op, slots, feeds, ["y"], attrs, message)
