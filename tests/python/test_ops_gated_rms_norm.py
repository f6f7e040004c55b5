"""GatedRmsNorm (docs/op-contract.md "GatedRmsNorm") through stock onnxruntime against the float64
reference: a grid over d and group sizes (one group, many, odd, below one vector, the 2.7b model's
5120 in 8 groups), batch and seqlen, every dtype, both norm_before_gate values, z whole and read
as a slice of a wider packed row (`z_offset`); then every error path with its message.

Run: cargo build --release -p mambac-ops && .venv/bin/pytest tests/python/test_ops_gated_rms_norm.py
"""

import numpy as np
import pytest

from ops_reference import (
    DTYPES,
    GATED_NORM_INPUTS,
    assert_close,
    gated_rms_norm_ref,
    one_node_model,
    run,
    run_op,
    run_under_isa,
    session,
)
from test_ops_errors import expect_run_error, expect_session_error, with_

DTYPE_NAMES = list(DTYPES)
# (d, group_size): one group, many groups, odd sizes, groups shorter than a vector, 2.7b's shape.
WIDTHS = [(1, 1), (7, 7), (13, 13), (48, 16), (64, 8), (100, 25), (105, 35), (5120, 640)]
SHAPES = [(1, 1), (2, 7), (3, 64), (1, 300)]  # (batch, seqlen)


def feeds_of(dtype, batch, seqlen, d, z_slice, seed):
    """y and z in T, the weight float32. With z_slice, z is a packed [batch, seqlen, d + 11]
    row whose channels [5, 5 + d) the op reads (as Mamba-2's z inside in_proj's output)."""
    rng = np.random.default_rng(seed)
    t = DTYPES[dtype][0]
    zw = d + 11 if z_slice else d
    return {
        "y": (2.0 * rng.standard_normal((batch, seqlen, d))).astype(np.float32).astype(t),
        "z": (2.0 * rng.standard_normal((batch, seqlen, zw))).astype(np.float32).astype(t),
        "weight": (1.0 + 0.5 * rng.standard_normal(d)).astype(np.float32),
    }


def attrs_of(group_size, norm_before_gate, z_slice, eps=1e-5):
    a = {"group_size": group_size, "norm_before_gate": int(norm_before_gate)}
    if z_slice:
        a["z_offset"] = 5
    if eps != 1e-5:
        a["epsilon"] = eps
    return a


def reference(f, group_size, norm_before_gate, z_slice, eps=1e-5):
    d = f["y"].shape[-1]
    z = f["z"][..., 5:5 + d] if z_slice else f["z"]
    return gated_rms_norm_ref(f["y"], z, f["weight"], d // group_size, eps, norm_before_gate)


def check(dtype, batch, seqlen, d, group_size, norm_before_gate, z_slice, eps=1e-5, seed=0):
    f = feeds_of(dtype, batch, seqlen, d, z_slice, seed)
    (out,) = run_op("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"],
                    attrs_of(group_size, norm_before_gate, z_slice, eps))
    what = (f"GatedRmsNorm {dtype} [{batch}, {seqlen}, {d}] group_size={group_size} "
            f"norm_before_gate={norm_before_gate} z_slice={z_slice}")
    assert out.dtype == f["y"].dtype, what
    assert_close(out, reference(f, group_size, norm_before_gate, z_slice, eps), dtype, what)


def grid():
    cases = []
    for i, (d, gs) in enumerate(WIDTHS):
        for j, (batch, seqlen) in enumerate(SHAPES):
            k = i + j
            cases.append((DTYPE_NAMES[k % len(DTYPE_NAMES)], batch, seqlen, d, gs, k % 2 == 0, (k // 2) % 2 == 0))
    return cases


@pytest.mark.parametrize("dtype,batch,seqlen,d,group_size,norm_before_gate,z_slice", grid())
def test_gated_rms_norm(dtype, batch, seqlen, d, group_size, norm_before_gate, z_slice):
    check(dtype, batch, seqlen, d, group_size, norm_before_gate, z_slice)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("z_slice", [False, True])
def test_every_dtype_both_gates_both_z(dtype, norm_before_gate, z_slice):
    check(dtype, 2, 5, 96, 24, norm_before_gate, z_slice, seed=3)


def test_grid_covers_every_axis_value():
    cases = grid()
    assert {c[0] for c in cases} == set(DTYPE_NAMES)
    assert {(c[3], c[4]) for c in cases} == set(WIDTHS)
    assert {(c[1], c[2]) for c in cases} == set(SHAPES)
    assert {c[5] for c in cases} == {True, False}
    assert {c[6] for c in cases} == {True, False}


def test_epsilon_attribute():
    """A large epsilon (groups of tiny values) changes the output the way the reference says."""
    check("float32", 2, 3, 40, 10, False, False, eps=0.5)


def test_groups_are_independent():
    """Scaling one group's y scales nothing else: each group has its own mean."""
    f = feeds_of("float32", 1, 2, 64, False, 7)
    attrs = attrs_of(16, True, False)
    (a,) = run_op("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"], attrs)
    f["y"][..., 16:32] *= 100.0
    (b,) = run_op("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"], attrs)
    keep = np.r_[0:16, 32:64]
    assert np.allclose(a[..., keep], b[..., keep], rtol=1e-6, atol=1e-6)


def test_many_rows_span_tasks():
    """Many short rows (several rows a task) and few long ones (one row a task) both come out
    whole: every row written once."""
    check("float32", 4, 1000, 16, 4, False, True, seed=3)
    check("float32", 1, 3, 40000, 5000, True, False, seed=4)


def test_thread_counts_agree():
    """1 and 4 threads split the rows differently; a group is summed in one place: bit-identical."""
    f = feeds_of("float16", 3, 200, 130, True, 9)
    model = one_node_model("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"], attrs_of(65, False, True))
    one = run(session(model, threads=1), f)
    four = run(session(model, threads=4), f)
    assert np.array_equal(one[0], four[0])


@pytest.mark.parametrize("shape", [(0, 7, 16), (2, 0, 16), (2, 7, 0)])
def test_empty_inputs(shape):
    """Zero-sized work returns an output of the right (empty) shape."""
    f = {"y": np.zeros(shape, np.float32), "z": np.zeros(shape, np.float32),
         "weight": np.ones(shape[2], np.float32)}
    (out,) = run_op("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"], {"group_size": 4})
    assert out.shape == shape


def test_nan_stays_in_its_group():
    """A NaN makes its group's mean NaN: that group of the row is NaN, as the reference's; other
    groups and rows are untouched."""
    f = feeds_of("float32", 1, 3, 20, False, 5)
    f["y"][0, 1, 4] = np.nan
    (out,) = run_op("GatedRmsNorm", GATED_NORM_INPUTS, f, ["out"], attrs_of(10, False, False))
    assert np.isnan(out[0, 1, :10]).all() and np.isfinite(out[0, 1, 10:]).all()
    assert np.isfinite(out[0, [0, 2]]).all()


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_builds(isa):
    """The baseline and AVX2 builds (MAMBAC_CPU_ISA, read once per process) pass the grid too."""
    run_under_isa(isa, "test_ops_gated_rms_norm", ["for c in t.grid()[::3]: t.check(*c)"])


# ---- errors ------------------------------------------------------------------------------------


def good_feeds(z_slice=False):
    return feeds_of("float32", 2, 7, 48, z_slice, 0)


def expect_error(feeds, message, attrs=None, slots=GATED_NORM_INPUTS):
    expect_run_error("GatedRmsNorm", slots, feeds, ["out"], message, attrs or {"group_size": 16})


BAD = {
    "y_rank": (dict(y=np.ones((2, 48), np.float32)),
               "GatedRmsNorm: input 'y' has shape [2, 48], expected [batch, seqlen, d]"),
    "z_shape": (dict(z=np.ones((2, 6, 48), np.float32)),
                "GatedRmsNorm: input 'z' has shape [2, 6, 48], expected [2, 7, 48] (same as 'y')"),
    "z_type": (dict(z=np.ones((2, 7, 48), np.float16)),
               "GatedRmsNorm: input 'z' has element type float16, expected float32 (same as 'y')"),
    "weight_dims": (dict(weight=np.ones((47,), np.float32)),
                    "GatedRmsNorm: input 'weight' has shape [47], expected [48] (d from 'y')"),
    "weight_type": (dict(weight=np.ones((48,), np.float16)),
                    "GatedRmsNorm: input 'weight' has element type float16, expected float32"),
}


# y's own type is ORT's to check (input 0 types the kernel); tests/ops_errors.rs reaches the C++
# check's message for it through the cxx bridge, as the TensorRT plugin would.
@pytest.mark.parametrize("name", list(BAD))
def test_bad_input(name):
    changes, message = BAD[name]
    expect_error(with_(good_feeds(), **changes), message)


def test_half_y_with_half_weight_names_the_weight():
    """A float16 export's norm weight stays float32: a float16 weight is refused, not misread."""
    f = feeds_of("float16", 2, 7, 48, False, 0)
    expect_error(with_(f, weight=f["weight"].astype(np.float16)),
                 "GatedRmsNorm: input 'weight' has element type float16, expected float32")


def test_group_size_must_divide_d():
    expect_error(good_feeds(), "GatedRmsNorm: attribute 'group_size' is 20, expected a positive divisor of "
                 "d = 48 (from input 'y')", {"group_size": 20})


def test_z_offset_past_the_row():
    expect_error(good_feeds(z_slice=True),
                 "GatedRmsNorm: attribute 'z_offset' = 12 reads channels [12, 60) of input 'z' of shape "
                 "[2, 7, 59], whose last dim is 59", {"group_size": 16, "z_offset": 12})


def test_z_offset_negative():
    expect_error(good_feeds(z_slice=True), "GatedRmsNorm: attribute 'z_offset' is -1, expected >= 0",
                 {"group_size": 16, "z_offset": -1})


def test_sliced_z_batch_mismatch():
    f = with_(good_feeds(z_slice=True), z=np.ones((1, 7, 59), np.float32))
    expect_error(f, "GatedRmsNorm: input 'z' has shape [1, 7, 59], expected [2, 7, row] ([batch, seqlen] as 'y')",
                 {"group_size": 16, "z_offset": 0})


def test_wide_z_without_offset():
    """A wider z with no z_offset is a shape error, not a silent slice."""
    expect_error(good_feeds(z_slice=True),
                 "GatedRmsNorm: input 'z' has shape [2, 7, 59], expected [2, 7, 48] (same as 'y')")


@pytest.mark.parametrize("missing", ["z", "weight"])
def test_missing_required_input(missing):
    f = good_feeds()
    slots = [("" if n == missing else n) for n in GATED_NORM_INPUTS]
    expect_error(f, f"GatedRmsNorm: required input '{missing}' is missing", slots=slots)


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({}, "GatedRmsNorm: attribute 'group_size' is missing (channels a group: d / ngroups)"),
        ({"group_size": 0}, "GatedRmsNorm: attribute 'group_size' is 0, expected a positive number"),
        ({"group_size": 1.5}, "GatedRmsNorm: attribute 'group_size' must be an int"),
        ({"group_size": 16, "epsilon": 0.0}, "GatedRmsNorm: attribute 'epsilon' is 0, expected a positive number"),
        ({"group_size": 16, "epsilon": float("nan")},
         "GatedRmsNorm: attribute 'epsilon' is NaN, expected a positive number"),
        ({"group_size": 16, "norm_before_gate": 2}, "GatedRmsNorm: attribute 'norm_before_gate' is 2, expected 0 or 1"),
        ({"group_size": 16, "z_offset": 1.0}, "GatedRmsNorm: attribute 'z_offset' must be an int"),
    ],
)
def test_bad_attribute(attrs, message):
    expect_session_error("GatedRmsNorm", GATED_NORM_INPUTS, good_feeds(), ["out"], attrs, message)
