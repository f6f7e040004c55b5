"""SsdScan's packed x, B and C (docs/op-contract.md "Sliced inputs"): x, B and C read from one
rank-3 [batch, seqlen, row] tensor (Mamba-2's conv output) at x_offset, B_offset, C_offset, with
head_dim, ngroups and dstate as attributes, through stock onnxruntime, against the float64
reference of the slices themselves; aligned and odd offsets and rows, 1 and more groups, every
dtype; and every error of the offsets and the dim attributes, with its exact message."""

import numpy as np
import pytest

from ops_reference import DTYPES, SSD_INPUTS, assert_close, run_op, ssd_scan_ref
from test_ops import rand  # random normal data rounded to T, never zeros: a wrong offset reads other numbers
from test_ops_sliced import expect_refused

DTYPE_NAMES = list(DTYPES)


def mamba2_layout(heads, head_dim, ngroups, dstate):
    """Mamba-2's conv output [x (I) | B (G N) | C (G N)]: the offsets of x, B and C."""
    inner, gn = heads * head_dim, ngroups * dstate
    return 0, inner, inner + gn


def packed_feeds(dtype, seqlen, heads, head_dim, ngroups, dstate, offsets, row, seed):
    """Feeds with x, B and C written into one packed [2, seqlen, row] tensor `xbc` at `offsets`
    (the rest random), and the unpacked x, B, C the reference reads."""
    rng = np.random.default_rng(seed)
    b, inner, gn = 2, heads * head_dim, ngroups * dstate
    xbc = rand(rng, (b, seqlen, row), dtype)
    x_o, b_o, c_o = offsets
    f = {
        "xbc": xbc,
        "dt": rand(rng, (b, seqlen, heads), dtype, 0.5, -1.0),
        "A": -np.exp(rand(rng, (heads,), "float32", 0.5)),
        "D": rand(rng, (heads,), "float32"),
        "dt_bias": rand(rng, (heads,), "float32", 0.5, -1.0),
        "initial_state": rand(rng, (b, heads, head_dim, dstate), "float32"),
    }
    f["x"] = xbc[..., x_o:x_o + inner].reshape(b, seqlen, heads, head_dim)
    f["B"] = xbc[..., b_o:b_o + gn].reshape(b, seqlen, ngroups, dstate)
    f["C"] = xbc[..., c_o:c_o + gn].reshape(b, seqlen, ngroups, dstate)
    return f


def packed_attrs(offsets, head_dim, ngroups, dstate):
    x_o, b_o, c_o = offsets
    return {"x_offset": x_o, "B_offset": b_o, "C_offset": c_o, "head_dim": head_dim, "ngroups": ngroups,
            "dstate": dstate}


def check_packed(dtype, case, seed=0):
    seqlen, heads, head_dim, ngroups, dstate, offsets, tail = case
    if offsets is None:
        offsets = mamba2_layout(heads, head_dim, ngroups, dstate)
    inner, gn = heads * head_dim, ngroups * dstate
    row = max(offsets[0] + inner, offsets[1] + gn, offsets[2] + gn) + tail
    f = packed_feeds(dtype, seqlen, heads, head_dim, ngroups, dstate, offsets, row, seed)
    slots = ["xbc", "dt", "A", "xbc", "xbc", "D", "dt_bias", "initial_state"]
    attrs = {**packed_attrs(offsets, head_dim, ngroups, dstate), "dt_max": 2.0}
    y, h = run_op("SsdScan", slots, f, ["y", "final_state"], attrs)
    ref_y, ref_h = ssd_scan_ref(*(f[n] for n in SSD_INPUTS), dt_max=2.0)
    assert_close(y, ref_y, dtype, "y")
    assert_close(h, ref_h, dtype, "final_state")


# (seqlen, heads, head_dim, ngroups, dstate, (x, B, C offsets) or None for Mamba-2's, tail): a
# decode step, prefills of 8 to 40 steps, Mamba-2's layout with aligned rows and odd ones, the
# parts in another order, at odd offsets, and overlapping (B and C the same channels).
SSD_CASES = [
    (1, 4, 8, 2, 16, None, 0),
    (40, 6, 4, 3, 8, None, 0),
    (33, 4, 16, 1, 16, None, 3),
    (8, 3, 5, 1, 4, (7, 1, 23), 2),
    (12, 4, 3, 2, 5, (21, 0, 10), 1),
    (5, 2, 6, 2, 3, (3, 15, 15), 0),
]


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("case", SSD_CASES, ids=lambda c: "L{}-H{}-P{}-G{}-N{}-{}".format(*c[:5], c[5] or "mamba2"))
def test_ssd_scan_reads_x_b_c_from_one_packed_tensor(dtype, case):
    check_packed(dtype, case, seed=case[0] + case[1])


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_ssd_scan_mixes_packed_and_whole_inputs(dtype):
    """Any of x, B, C may be packed alone: a packed C with a whole B takes ngroups, dstate from
    B; a packed x with whole B and C needs only head_dim; dt may come from the same tensor."""
    seqlen, heads, head_dim, ngroups, dstate = 9, 4, 3, 2, 5
    offsets = (2, 14, 25)
    f = packed_feeds(dtype, seqlen, heads, head_dim, ngroups, dstate, offsets, 40, seed=3)
    f["xbc"][..., 35:39] = f["dt"]
    ref_y, ref_h = ssd_scan_ref(*(f[n] for n in SSD_INPUTS))
    for slots, attrs in [
        (["xbc", "dt", "A", "B", "C"], {"x_offset": 2, "head_dim": head_dim}),
        (["x", "dt", "A", "B", "xbc"], {"C_offset": 25}),
        (["x", "dt", "A", "xbc", "C"], {"B_offset": 14, "ngroups": ngroups, "dstate": dstate}),
        (["xbc", "xbc", "A", "xbc", "xbc"], {**packed_attrs(offsets, head_dim, ngroups, dstate), "dt_offset": 35}),
    ]:
        slots = slots + ["D", "dt_bias", "initial_state"]
        y, h = run_op("SsdScan", slots, f, ["y", "final_state"], attrs)
        assert_close(y, ref_y, dtype, f"y {attrs}")
        assert_close(h, ref_h, dtype, f"final_state {attrs}")


def test_ssd_scan_whole_inputs_agree_with_their_dim_attributes():
    """Set, head_dim / ngroups / dstate are the dims whole inputs must have too."""
    seqlen, heads, head_dim, ngroups, dstate = 4, 4, 3, 2, 5
    f = packed_feeds("float32", seqlen, heads, head_dim, ngroups, dstate, (0, 12, 22), 32, seed=5)
    slots = ["x", "dt", "A", "B", "C"]
    ref_y, _ = ssd_scan_ref(f["x"], f["dt"], f["A"], f["B"], f["C"])
    y, = run_op("SsdScan", slots, f, ["y"], {"head_dim": head_dim, "ngroups": ngroups, "dstate": dstate})
    assert_close(y, ref_y, "float32", "y")


# The valid set the error cases change one thing of: heads 4, head_dim 2, ngroups 1, dstate 8,
# xbc [2, 3, 24] = [x (8) | B (8) | C (8)].
BASE = {"x_offset": 0, "B_offset": 8, "C_offset": 16, "head_dim": 2, "ngroups": 1, "dstate": 8}
PACKED_SLOTS = ["xbc", "dt", "A", "xbc", "xbc"]


def error_feeds():
    rng = np.random.default_rng(4)
    return {"xbc": rand(rng, (2, 3, 24), "float32"), "x": rand(rng, (2, 3, 4, 2), "float32"),
            "dt": rand(rng, (2, 3, 4), "float32"), "A": -np.ones(4, np.float32),
            "B": rand(rng, (2, 3, 1, 8), "float32"), "C": rand(rng, (2, 3, 1, 8), "float32")}


@pytest.mark.parametrize(
    "change,slots,message",
    [
        ({}, None, None),
        ({"x_offset": 17},
         None, "SsdScan: attribute 'x_offset' = 17 reads channels [17, 25) of input 'x' of shape [2, 3, 24], "
         "whose last dim is 24"),
        ({"C_offset": 17},
         None, "SsdScan: attribute 'C_offset' = 17 reads channels [17, 25) of input 'C' of shape [2, 3, 24], "
         "whose last dim is 24"),
        ({"B_offset": 20},
         None, "SsdScan: attribute 'B_offset' = 20 reads channels [20, 28) of input 'B' of shape [2, 3, 24], "
         "whose last dim is 24"),
        ({"x_offset": -1}, None, "SsdScan: attribute 'x_offset' is -1, expected >= 0"),
        ({"B_offset": -8}, None, "SsdScan: attribute 'B_offset' is -8, expected >= 0"),
        ({"C_offset": 1.5}, None, "SsdScan: attribute 'C_offset' must be an int"),
        ({"head_dim": "2"}, None, "SsdScan: attribute 'head_dim' must be an int"),
        ({"head_dim": 0}, None, "SsdScan: attribute 'head_dim' is 0, expected 1 to 2^31 - 1"),
        ({"ngroups": -1}, None, "SsdScan: attribute 'ngroups' is -1, expected 1 to 2^31 - 1"),
        ({"dstate": 2**31}, None, "SsdScan: attribute 'dstate' is 2147483648, expected 1 to 2^31 - 1"),
        ({"head_dim": None},
         None, "SsdScan: attribute 'x_offset' needs attribute 'head_dim': input 'x' read packed as "
         "[batch, seqlen, row] has no head_dim axis"),
        ({"ngroups": None},
         None, "SsdScan: attribute 'B_offset' needs attribute 'ngroups': input 'B' read packed as "
         "[batch, seqlen, row] has no ngroups axis"),
        ({"dstate": None},
         None, "SsdScan: attribute 'B_offset' needs attribute 'dstate': input 'B' read packed as "
         "[batch, seqlen, row] has no dstate axis"),
        ({"ngroups": 3, "dstate": 2},
         None, "SsdScan: input 'B' has ngroups 3 (attribute 'ngroups'), which does not divide heads 4"),
        # Rank mismatches: a packed input is rank 3, a whole one rank 4.
        ({}, ["x", "dt", "A", "xbc", "xbc"],
         "SsdScan: input 'x' has shape [2, 3, 4, 2], expected [batch, seqlen, row] (x read packed: "
         "'x_offset' is set)"),
        ({}, ["xbc", "dt", "A", "B", "xbc"],
         "SsdScan: input 'B' has shape [2, 3, 1, 8], expected [2, 3, row] (ngroups * dstate from attributes "
         "'ngroups', 'dstate')"),
        ({"x_offset": None}, None,
         "SsdScan: input 'x' has shape [2, 3, 24], expected [batch, seqlen, heads, 2] (head_dim from "
         "attribute 'head_dim')"),
        # A whole input disagreeing with a dim attribute.
        ({"x_offset": None, "head_dim": 3}, ["x", "dt", "A", "xbc", "xbc"],
         "SsdScan: input 'x' has shape [2, 3, 4, 2], expected [batch, seqlen, heads, 3] (head_dim from "
         "attribute 'head_dim')"),
        ({"B_offset": None, "C_offset": None, "dstate": 4}, ["xbc", "dt", "A", "B", "C"],
         "SsdScan: input 'B' has shape [2, 3, 1, 8], expected [2, 3, 1, 4] with heads 4 divisible by ngroups"),
        # The other inputs are checked against the dims a packed x takes from A.
        ({}, ["xbc", "B", "A", "xbc", "xbc"],
         "SsdScan: input 'dt' has shape [2, 3, 1, 8], expected [2, 3, 4] ([batch, seqlen] from 'x', heads from 'A')"),
    ],
)
def test_ssd_scan_packed_inputs_are_checked(change, slots, message):
    f = error_feeds()
    attrs = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    slots = slots or PACKED_SLOTS
    if message is None:  # the valid set runs
        assert np.isfinite(run_op("SsdScan", slots, f, ["y"], attrs)[0]).all()
        return
    expect_refused("SsdScan", slots, f, attrs, message)


def test_the_reference_unpacks_and_refuses_missing_dims():
    from mambac.reference import unpack_ssd_inputs

    f = error_feeds()
    x, b, c = unpack_ssd_inputs(f["xbc"], 4, f["xbc"], f["xbc"], 0, 8, 16, 2, 1, 8)
    assert np.array_equal(x, f["xbc"][..., :8].reshape(2, 3, 4, 2))
    assert np.array_equal(c, f["xbc"][..., 16:].reshape(2, 3, 1, 8))
    assert unpack_ssd_inputs(f["x"], 4, f["B"], f["C"])[1] is f["B"]
    with pytest.raises(ValueError) as e:
        unpack_ssd_inputs(f["xbc"], 4, f["B"], f["C"], x_offset=0)
    assert str(e.value) == "SsdScan: 'x_offset' needs attribute 'head_dim'"
    with pytest.raises(ValueError) as e:
        unpack_ssd_inputs(f["x"], 4, f["xbc"], f["C"], B_offset=8, ngroups=1)
    assert str(e.value) == "SsdScan: a packed B needs attributes 'ngroups' and 'dstate'"
    with pytest.raises(ValueError) as e:
        unpack_ssd_inputs(f["x"], 4, f["B"], f["xbc"], C_offset=17)
    assert str(e.value) == "SsdScan: 'C_offset' = 17 reads channels [17, 25) of a last axis of 24"


def test_onnx_shape_inference_gives_the_packed_scans_dims():
    """mambac_onnx_shapes' inference gives y [batch, seqlen, heads, head_dim] (heads from A,
    head_dim from its attribute) and final_state [batch, heads, head_dim, dstate], not x's shape."""
    import os
    import sys

    import onnx

    from ops_reference import one_node_model, run, session

    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "..", "tools", "python")))
    import mambac_onnx_shapes

    f = error_feeds()
    model = one_node_model("SsdScan", PACKED_SLOTS, f, ["y", "final_state"], BASE)
    for v in model.graph.input:
        v.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in f[v.name].shape)
    for o in model.graph.output:
        o.type.tensor_type.ClearField("shape")
    # The schemas are process-wide: removed again, as test_onnx_shapes.py expects them absent.
    mambac_onnx_shapes.register()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    finally:
        for name in mambac_onnx_shapes._OPS:
            onnx.defs.deregister_schema(name, mambac_onnx_shapes.VERSION, mambac_onnx_shapes.DOMAIN)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.output}
    assert dims == {"y": [2, 3, 4, 2], "final_state": [2, 4, 2, 8]}
    y, h = run(session(model), {n: f[n] for n in dict.fromkeys(PACKED_SLOTS)})
    assert y.shape == (2, 3, 4, 2) and h.shape == (2, 4, 2, 8)
