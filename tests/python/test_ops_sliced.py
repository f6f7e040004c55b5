"""Sliced inputs (docs/op-contract.md "Sliced inputs"): SelectiveScan's z, B and C and
CausalConv1d's x read as channels [offset, offset + count) of a packed last axis, through stock
onnxruntime, against the float64 references of the slices themselves, at aligned and odd offsets
and row lengths; and the offsets' errors, with their exact messages."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ops_reference import (
    DTYPES,
    assert_close,
    causal_conv1d_ref,
    one_node_model,
    run,
    run_op,
    run_under_isa,
    selective_scan_ref,
    session,
)
from test_ops import rand  # random normal data rounded to T, never zeros: a wrong offset reads other numbers
from test_ops_errors import ERRORS

DTYPE_NAMES = list(DTYPES)


# (seqlen, dim, dstate, ngroups, dt_rank): decode steps (the short-sequence path) and prefills
# (the tiled path), dstate 16 (the usual one), 3 (odd) and 64 (past the registers); dt_rank puts
# B at an odd offset (3, 5) or at a 16-byte boundary (8, 16), as in Mamba-1's x_proj output.
SCAN_SHAPES = [
    (1, 48, 16, 1, 3),
    (7, 130, 16, 2, 8),
    (64, 48, 16, 1, 16),
    (300, 32, 16, 1, 5),
    (40, 24, 3, 3, 3),
    (9, 16, 64, 1, 8),
]


def packed_scan_feeds(dtype, seqlen, dim, dstate, ngroups, dt_rank, seed, batch=2):
    """Mamba-1's layout: xz [b, L, 2 dim] with z in its second half, and x_proj's output
    [b, L, ngroups, dt_rank + 2 dstate] (the group axis is Mamba-1's unsqueezed 1) holding dt, B, C."""
    rng = np.random.default_rng(seed)
    b, L, d, n, g, t = batch, seqlen, dim, dstate, ngroups, dtype
    return {
        "u": rand(rng, (b, L, d), t),
        "delta": rand(rng, (b, L, d), t, 0.5, -1.0),
        "A": -np.exp(rng.standard_normal((d, n)).astype(np.float32)),
        "dbc": rand(rng, (b, L, g, dt_rank + 2 * n), t),
        "D": rand(rng, (d,), "float32"),
        "xz": rand(rng, (b, L, 2 * d), t),
        "delta_bias": rand(rng, (d,), "float32", 0.5),
        "initial_state": rand(rng, (b, d, n), "float32"),
    }


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", SCAN_SHAPES, ids=lambda s: "L{}-d{}-n{}-g{}-r{}".format(*s))
def test_scan_reads_z_b_c_from_packed_tensors(dtype, shape):
    seqlen, dim, dstate, ngroups, dt_rank = shape
    f = packed_scan_feeds(dtype, *shape, seed=seqlen + dstate)
    slots = ["u", "delta", "A", "dbc", "dbc", "D", "xz", "delta_bias", "initial_state"]
    attrs = {"B_offset": dt_rank, "C_offset": dt_rank + dstate, "z_offset": dim}
    y, h = run_op("SelectiveScan", slots, f, ["y", "final_state"], attrs)
    dbc = f["dbc"]
    ref_y, ref_h = selective_scan_ref(
        f["u"], f["delta"], f["A"], dbc[..., dt_rank:dt_rank + dstate], dbc[..., dt_rank + dstate:], f["D"],
        f["xz"][..., dim:], f["delta_bias"], f["initial_state"],
    )
    assert_close(y, ref_y, dtype, "y")
    assert_close(h, ref_h, dtype, "final_state")


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_scan_slices_at_any_offset_and_row(dtype):
    """z, B and C each from its own packed tensor, with rows longer than the slice on both sides
    and odd offsets, so no row keeps 16-byte alignment."""
    rng = np.random.default_rng(7)
    b, L, d, n, g = 2, 33, 40, 16, 2
    f = {
        "u": rand(rng, (b, L, d), dtype),
        "delta": rand(rng, (b, L, d), dtype, 0.5, -1.0),
        "A": -np.exp(rng.standard_normal((d, n)).astype(np.float32)),
        "Bp": rand(rng, (b, L, g, n + 5), dtype),
        "Cp": rand(rng, (b, L, g, n + 2), dtype),
        "zp": rand(rng, (b, L, d + 9), dtype),
    }
    slots = ["u", "delta", "A", "Bp", "Cp", "", "zp"]
    y, = run_op("SelectiveScan", slots, f, ["y"], {"B_offset": 3, "C_offset": 1, "z_offset": 7})
    ref, _ = selective_scan_ref(f["u"], f["delta"], f["A"], f["Bp"][..., 3:3 + n], f["Cp"][..., 1:1 + n],
                                z=f["zp"][..., 7:7 + d])
    assert_close(y, ref, dtype, "y")


def test_offset_zero_of_a_whole_tensor_changes_nothing():
    """An offset of 0 over a tensor exactly as wide as the slice is the whole tensor: same bits."""
    f = packed_scan_feeds("float32", 9, 48, 16, 1, 8, seed=3)
    f["B"], f["C"], f["z"] = f["dbc"][..., 8:24], f["dbc"][..., 24:], f["xz"][..., 48:]
    whole = run_op("SelectiveScan", ["u", "delta", "A", "B", "C", "", "z"], f, ["y"])
    attrs = {"B_offset": 0, "C_offset": 0, "z_offset": 0}
    sliced = run_op("SelectiveScan", ["u", "delta", "A", "B", "C", "", "z"], f, ["y"], attrs)
    assert np.array_equal(whole[0], sliced[0])


# (seqlen, dim, width, offset, row): Mamba-1's x at offset 0 of xz (row 2 dim), and odd offsets
# and rows; decode steps and prefills; the widths with their own kernels (2-4) and a generic one.
CONV_SHAPES = [
    (1, 48, 4, 0, 96),
    (7, 48, 4, 48, 96),
    (64, 130, 4, 0, 260),
    (40, 20, 3, 3, 27),
    (33, 16, 2, 5, 21),
    (20, 12, 6, 1, 13),
]


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "L{}-d{}-k{}-o{}-r{}".format(*s))
def test_conv_reads_x_from_a_packed_tensor(dtype, shape):
    seqlen, dim, width, offset, row = shape
    rng = np.random.default_rng(seqlen + row)
    b = 2
    f = {
        "xz": rand(rng, (b, seqlen, row), dtype),
        "weight": rand(rng, (dim, width), dtype, 0.5),
        "bias": rand(rng, (dim,), dtype),
        "initial_state": rand(rng, (b, dim, width - 1), dtype),
    }
    slots = ["xz", "weight", "bias", "initial_state"]
    y, state = run_op("CausalConv1d", slots, f, ["y", "final_state"], {"x_offset": offset})
    ref_y, ref_state = causal_conv1d_ref(f["xz"][..., offset:offset + dim], f["weight"], f["bias"],
                                         f["initial_state"])
    assert y.shape == (b, seqlen, dim)
    assert_close(y, ref_y, dtype, "y")
    assert_close(state, ref_state, dtype, "final_state")


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_lower_isa_builds_read_slices_too(isa):
    run_under_isa(isa, "test_ops_sliced", [
        "for s in t.SCAN_SHAPES: t.test_scan_reads_z_b_c_from_packed_tensors('float16', s)",
        "t.test_scan_slices_at_any_offset_and_row('float32')",
        "for s in t.CONV_SHAPES: t.test_conv_reads_x_from_a_packed_tensor('float16', s)",
        "t.test_ssd_scan_reads_dt_from_a_packed_tensor('float16', 40, 6, 4, 3, 8, 3, 1)",
    ])


def expect_refused(op, slots, feeds, attrs, message):
    """A bad attribute's kind fails the session's creation, a bad value the run."""
    with pytest.raises(ERRORS) as e:
        run(session(one_node_model(op, slots, feeds, ["y"], attrs)), {n: feeds[n] for n in slots if n})
    assert message in str(e.value), str(e.value)


SCAN_SLOTS = ["u", "delta", "A", "dbc", "dbc", "", "xz"]


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({"z_offset": 49},
         "SelectiveScan: attribute 'z_offset' = 49 reads channels [49, 97) of input 'z' of shape [2, 7, 96], "
         "whose last dim is 96"),
        ({"z_offset": 48}, None),
        ({"B_offset": -1}, "SelectiveScan: attribute 'B_offset' is -1, expected >= 0"),
        ({"C_offset": 25},
         "SelectiveScan: attribute 'C_offset' = 25 reads channels [25, 41) of input 'C' of shape [2, 7, 1, 40], "
         "whose last dim is 40"),
        ({"B_offset": 1.5}, "SelectiveScan: attribute 'B_offset' must be an int"),
    ],
)
def test_scan_offsets_are_checked(attrs, message):
    """Each case changes one offset of a valid set (dt_rank 8, dstate 16, dim 48)."""
    f = packed_scan_feeds("float32", 7, 48, 16, 1, 8, seed=1)
    attrs = {"B_offset": 8, "C_offset": 24, "z_offset": 48, **attrs}
    if message is None:  # the largest offset that fits runs
        assert np.isfinite(run_op("SelectiveScan", SCAN_SLOTS, f, ["y"], attrs)[0]).all()
        return
    expect_refused("SelectiveScan", SCAN_SLOTS, f, attrs, message)


def test_scan_sliced_input_keeps_its_other_dims_checked():
    f = packed_scan_feeds("float32", 7, 48, 16, 1, 8, seed=1)
    f["xz"] = f["xz"][:1]
    expect_refused("SelectiveScan", SCAN_SLOTS, f, {"B_offset": 8, "C_offset": 24, "z_offset": 48},
                   "SelectiveScan: input 'z' has shape [1, 7, 96], expected [2, 7, row] (same as 'u')")


@pytest.mark.parametrize(
    "attrs,weight_dim,message",
    [
        ({"x_offset": 2}, 4, "CausalConv1d: attribute 'x_offset' = 2 reads channels [2, 6) of input 'x' of shape "
         "[2, 3, 5], whose last dim is 5"),
        ({"x_offset": -3}, 4, "CausalConv1d: attribute 'x_offset' is -3, expected >= 0"),
        ({"x_offset": "0"}, 4, "CausalConv1d: attribute 'x_offset' must be an int"),
        # Whole x: its last dim is dim, and the weight must match it, as before.
        ({}, 4, "CausalConv1d: input 'weight' has shape [4, 4], expected [5, width] (dim from 'x')"),
    ],
)
def test_conv_offsets_are_checked(attrs, weight_dim, message):
    rng = np.random.default_rng(2)
    f = {"x": rand(rng, (2, 3, 5), "float32"), "weight": rand(rng, (weight_dim, 4), "float32")}
    expect_refused("CausalConv1d", ["x", "weight"], f, attrs, message)


def test_conv_sliced_bias_takes_dim_from_weight():
    rng = np.random.default_rng(2)
    f = {"x": rand(rng, (2, 3, 9), "float32"), "weight": rand(rng, (4, 4), "float32"),
         "bias": rand(rng, (9,), "float32")}
    expect_refused("CausalConv1d", ["x", "weight", "bias"], f, {"x_offset": 1},
                   "CausalConv1d: input 'bias' has shape [9], expected [4] (dim from 'weight')")


def test_onnx_shape_inference_gives_the_sliced_dims():
    """mambac_onnx_shapes' inference (and ORT's own, through the op library) give y the weight's
    dim, not the packed x's row."""
    import onnx

    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "..", "tools", "python")))
    import mambac_onnx_shapes

    mambac_onnx_shapes.register()
    rng = np.random.default_rng(2)
    f = {"x": rand(rng, (2, 3, 9), "float32"), "weight": rand(rng, (4, 4), "float32")}
    model = one_node_model("CausalConv1d", ["x", "weight"], f, ["y", "final_state"], {"x_offset": 5})
    for v in model.graph.input:
        name = v.name
        v.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in f[name].shape)
    for o in model.graph.output:
        o.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.output}
    assert dims == {"y": [2, 3, 4], "final_state": [2, 4, 3]}
    y, _ = run(session(model), f)
    assert y.shape == (2, 3, 4)


# SsdScan's dt from Mamba-2's in_proj output [z (I) | xBC (I + 2 G N) | dt (heads)] and odd
# offsets; seqlen 1-8 and 40 (the CPU kernel is one path; the CUDA ones differ: gpu/).
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("seqlen,heads,head_dim,ngroups,dstate,offset,tail",
                         [(1, 4, 8, 2, 16, 96, 0), (40, 6, 4, 3, 8, 3, 1), (8, 3, 5, 1, 4, 0, 2)])
def test_ssd_scan_reads_dt_from_a_packed_tensor(dtype, seqlen, heads, head_dim, ngroups, dstate, offset, tail):
    from ops_reference import SSD_INPUTS, ssd_scan_ref

    rng = np.random.default_rng(seqlen + offset)
    b = 2
    f = {
        "x": rand(rng, (b, seqlen, heads, head_dim), dtype),
        "zxbcdt": rand(rng, (b, seqlen, offset + heads + tail), dtype, 0.5, -1.0),
        "A": -np.exp(rand(rng, (heads,), "float32", 0.5)),
        "B": rand(rng, (b, seqlen, ngroups, dstate), dtype),
        "C": rand(rng, (b, seqlen, ngroups, dstate), dtype),
        "D": rand(rng, (heads,), "float32"),
        "dt_bias": rand(rng, (heads,), "float32", 0.5, -1.0),
        "initial_state": rand(rng, (b, heads, head_dim, dstate), "float32"),
    }
    slots = ["x", "zxbcdt"] + list(SSD_INPUTS[2:])
    y, h = run_op("SsdScan", slots, f, ["y", "final_state"], {"dt_offset": offset, "dt_max": 2.0})
    dt = f["zxbcdt"][..., offset:offset + heads]
    ref_y, ref_h = ssd_scan_ref(f["x"], dt, f["A"], f["B"], f["C"], f["D"], f["dt_bias"], f["initial_state"],
                                dt_max=2.0)
    assert_close(y, ref_y, dtype, "y")
    assert_close(h, ref_h, dtype, "final_state")


def test_ssd_scan_dt_offset_is_checked():
    from ops_reference import SSD_INPUTS

    rng = np.random.default_rng(4)
    f = {"x": rand(rng, (2, 3, 4, 2), "float32"), "zxbcdt": rand(rng, (2, 3, 10), "float32"),
         "A": -np.ones(4, np.float32), "B": rand(rng, (2, 3, 1, 8), "float32"), "C": rand(rng, (2, 3, 1, 8), "float32")}
    slots = ["x", "zxbcdt"] + list(SSD_INPUTS[2:5])
    expect_refused("SsdScan", slots, f, {"dt_offset": 7},
                   "SsdScan: attribute 'dt_offset' = 7 reads channels [7, 11) of input 'dt' of shape [2, 3, 10], "
                   "whose last dim is 10")
    expect_refused("SsdScan", slots, f, {"dt_offset": -2}, "SsdScan: attribute 'dt_offset' is -2, expected >= 0")
