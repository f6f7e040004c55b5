"""AddRmsNorm (docs/op-contract.md "AddRmsNorm") through stock onnxruntime against the float64
reference: a grid over hidden sizes (odd, below one vector, not a multiple of 8, the 2.8b model's
2560), batch and seqlen, every dtype, residual present or absent, residual_out asked for or
not; then every error path with its message.

Run: cargo build --release -p mambac-ops && .venv/bin/pytest tests/python/test_ops_add_rms_norm.py
"""

import numpy as np
import pytest

from ops_reference import (
    ADD_NORM_INPUTS,
    DTYPES,
    add_rms_norm_ref,
    assert_close,
    one_node_model,
    run,
    run_op,
    run_under_isa,
    session,
)
from test_ops_errors import expect_error, expect_run_error, expect_session_error, with_

DTYPE_NAMES = list(DTYPES)
HIDDENS = [1, 3, 8, 13, 64, 100, 257, 2560]
SHAPES = [(1, 1), (2, 7), (3, 64), (1, 300)]  # (batch, seqlen)


def feeds_of(dtype, batch, seqlen, hidden, residual, seed):
    """x in T; the stream and the weight float32, the stream larger than x (as a deep model's is)."""
    rng = np.random.default_rng(seed)
    f = {
        "x": rng.standard_normal((batch, seqlen, hidden)).astype(np.float32).astype(DTYPES[dtype][0]),
        "weight": (1.0 + 0.5 * rng.standard_normal(hidden)).astype(np.float32),
    }
    if residual:
        f["residual"] = (4.0 * rng.standard_normal((batch, seqlen, hidden))).astype(np.float32)
    return f


def slots_of(residual):
    return [n if (residual or n != "residual") else "" for n in ADD_NORM_INPUTS]


def check(dtype, batch, seqlen, hidden, residual, both_outputs=True, eps=1e-5, seed=0):
    f = feeds_of(dtype, batch, seqlen, hidden, residual, seed)
    outputs = ["y", "residual_out"] if both_outputs else ["y"]
    attrs = {} if eps == 1e-5 else {"epsilon": eps}
    out = run_op("AddRmsNorm", slots_of(residual), f, outputs, attrs)
    y_ref, s_ref = add_rms_norm_ref(f["x"], f.get("residual"), f["weight"], eps)
    what = f"AddRmsNorm {dtype} [{batch}, {seqlen}, {hidden}] residual={residual}"
    assert out[0].dtype == f["x"].dtype, what
    assert_close(out[0], y_ref, dtype, what + " y")
    if both_outputs:
        assert out[1].dtype == np.float32, what
        # residual_out is one float32 add: within float32's tier whatever T is.
        assert_close(out[1], s_ref, "float32", what + " residual_out")


def grid():
    cases = []
    for i, hidden in enumerate(HIDDENS):
        for j, (batch, seqlen) in enumerate(SHAPES):
            cases.append((DTYPE_NAMES[(i + j) % len(DTYPE_NAMES)], batch, seqlen, hidden, (i + j) % 2 == 0))
    return cases


@pytest.mark.parametrize("dtype,batch,seqlen,hidden,residual", grid())
def test_add_rms_norm(dtype, batch, seqlen, hidden, residual):
    check(dtype, batch, seqlen, hidden, residual)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("hidden", [5, 24, 2560])
def test_every_dtype_with_and_without_residual(dtype, residual, hidden):
    check(dtype, 2, 7, hidden, residual, seed=hidden)


def test_grid_covers_every_axis_value():
    cases = grid()
    assert {c[0] for c in cases} == set(DTYPE_NAMES)
    assert {c[3] for c in cases} == set(HIDDENS)
    assert {(c[1], c[2]) for c in cases} == set(SHAPES)
    assert {c[4] for c in cases} == {True, False}


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_y_alone(dtype):
    """The final norm asks for y only (residual_out left off the node)."""
    check(dtype, 2, 5, 100, True, both_outputs=False)


def test_epsilon_attribute():
    """A large epsilon (rows of tiny values) changes y the way the reference says."""
    check("float32", 2, 3, 40, True, eps=0.5)


def test_large_rows_span_tasks():
    """Many short rows (several rows a task) and few long ones (one row a task) both come out
    whole: every row written once."""
    check("float32", 4, 1000, 16, True, seed=3)
    check("float32", 1, 3, 40000, False, seed=4)


def test_thread_counts_agree():
    """1 and 4 threads split the rows differently; a row is summed in one place, so bit-identical."""
    f = feeds_of("float16", 3, 200, 130, True, 9)
    model = one_node_model("AddRmsNorm", ADD_NORM_INPUTS, f, ["y", "residual_out"])
    one = run(session(model, threads=1), f)
    four = run(session(model, threads=4), f)
    for a, b in zip(one, four):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("shape", [(0, 7, 16), (2, 0, 16), (2, 7, 0)])
def test_empty_inputs(shape):
    """Zero-sized work returns outputs of the right (empty) shape."""
    f = {"x": np.zeros(shape, np.float32), "residual": np.zeros(shape, np.float32),
         "weight": np.ones(shape[2], np.float32)}
    y, s = run_op("AddRmsNorm", ADD_NORM_INPUTS, f, ["y", "residual_out"])
    assert y.shape == shape and s.shape == shape


def test_nan_stays_in_its_row():
    """A NaN makes its row's mean NaN: that row of y is NaN, as the reference's; other rows are
    untouched, and residual_out is NaN only where the sum is."""
    f = feeds_of("float32", 1, 3, 20, True, 5)
    f["x"][0, 1, 4] = np.nan
    y, s = run_op("AddRmsNorm", ADD_NORM_INPUTS, f, ["y", "residual_out"])
    assert np.isnan(y[0, 1]).all() and np.isfinite(y[0, [0, 2]]).all()
    assert np.isnan(s).sum() == 1 and np.isnan(s[0, 1, 4])


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_builds(isa):
    """The baseline and AVX2 builds (MAMBAC_CPU_ISA, read once per process) pass the grid too."""
    run_under_isa(isa, "test_ops_add_rms_norm", ["for c in t.grid()[::3]: t.check(*c)"])


# ---- errors ------------------------------------------------------------------------------------


def good_feeds():
    return feeds_of("float32", 2, 7, 48, True, 0)


BAD = {
    "x_rank": (dict(x=np.ones((2, 48), np.float32)),
               "AddRmsNorm: input 'x' has shape [2, 48], expected [batch, seqlen, hidden]"),
    "residual_shape": (dict(residual=np.ones((2, 6, 48), np.float32)),
                       "AddRmsNorm: input 'residual' has shape [2, 6, 48], expected [2, 7, 48] (same as 'x')"),
    "residual_type": (dict(residual=np.ones((2, 7, 48), np.float16)),
                      "AddRmsNorm: input 'residual' has element type float16, expected float32"),
    "weight_dims": (dict(weight=np.ones((47,), np.float32)),
                    "AddRmsNorm: input 'weight' has shape [47], expected [48] (hidden from 'x')"),
    "weight_rank": (dict(weight=np.ones((1, 48), np.float32)),
                    "AddRmsNorm: input 'weight' has shape [1, 48], expected [48] (hidden from 'x')"),
    "weight_type": (dict(weight=np.ones((48,), np.float16)),
                    "AddRmsNorm: input 'weight' has element type float16, expected float32"),
}


# x's own type is ORT's to check (input 0 types the kernel); tests/ops_errors.rs reaches the C++
# check's message for it through the cxx bridge, as the TensorRT plugin would.
@pytest.mark.parametrize("name", list(BAD))
def test_bad_input(name):
    good = good_feeds()
    changes, message = BAD[name]
    expect_error("AddRmsNorm", ADD_NORM_INPUTS, good, with_(good, **changes), message)


def test_half_x_with_half_weight_names_the_weight():
    """A float16 export's weight stays float32 (ORT's fused norm has no mixed variant): a float16
    weight is refused, not read as float32."""
    good = feeds_of("float16", 2, 7, 48, True, 0)
    bad = with_(good, weight=good["weight"].astype(np.float16))
    expect_error("AddRmsNorm", ADD_NORM_INPUTS, good, bad,
                 "AddRmsNorm: input 'weight' has element type float16, expected float32")


@pytest.mark.parametrize("missing", ["x", "weight"])
def test_missing_required_input(missing):
    slots = [("" if n == missing else n) for n in ADD_NORM_INPUTS]
    expect_run_error("AddRmsNorm", slots, good_feeds(), ["y"], f"AddRmsNorm: required input '{missing}' is missing")


def test_weight_omitted():
    """A node with x and residual only: the error names the weight."""
    expect_run_error("AddRmsNorm", ["x", "residual"], good_feeds(), ["y"],
                     "AddRmsNorm: required input 'weight' is missing")


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({"epsilon": 0.0}, "AddRmsNorm: attribute 'epsilon' is 0, expected a positive number"),
        ({"epsilon": -1.0}, "AddRmsNorm: attribute 'epsilon' is -1, expected a positive number"),
        ({"epsilon": float("nan")}, "AddRmsNorm: attribute 'epsilon' is NaN, expected a positive number"),
        ({"epsilon": 1}, "AddRmsNorm: attribute 'epsilon' must be a float"),
    ],
)
def test_bad_epsilon(attrs, message):
    expect_session_error("AddRmsNorm", ADD_NORM_INPUTS, good_feeds(), ["y"], attrs, message)
