"""Float64 references of the fused ops (docs/op-contract.md), one-node ONNX models of them, and the tolerance
tiers, shared by the op tests (test_ops*.py) and tools/bench_ops.py.

The references live in the `mambac` Python package (python/mambac/reference.py), their one home,
which also ships them to users as onnx OpRun classes; they are imported from the source tree here.
They take the inputs exactly as the op receives them (already rounded to T) and compute in
float64, so a comparison measures the kernel, not the input rounding.
"""

import ctypes
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

try:  # bfloat16 for numpy; without it (e.g. a bare device machine) the bfloat16 cases drop out
    import ml_dtypes
except ImportError:
    ml_dtypes = None

from mambac_testing import ROOT, ops_lib  # noqa: E402  (the paths have one home)

sys.path.insert(0, str(ROOT / "tools" / "python"))
from mambac_onnx_shapes import OP_INPUTS  # noqa: E402  (the ops' input names have one Python home)

sys.path.insert(0, str(ROOT / "python"))
from mambac.reference import (  # noqa: E402,F401  (re-exported: the tests import them from here)
    add_rms_norm_ref,
    causal_conv1d_ref,
    f64,
    gated_rms_norm_ref,
    mamba2_layer_step_ref,
    mamba_layer_step_ref,
    selective_scan_ref,
    sliced,
    softplus,
    ssd_dt,
    ssd_scan_ref,
)

LIB = str(ops_lib())

# docs/op-contract.md's op-level tolerance tiers: dtype -> (rtol, atol).
TIERS = {"float32": (1e-5, 1e-5), "float16": (3e-3, 5e-3), "bfloat16": (3e-2, 5e-2)}
# name -> (numpy dtype, ONNX type, (rtol, atol)).
DTYPES = {
    "float32": (np.float32, TensorProto.FLOAT, TIERS["float32"]),
    "float16": (np.float16, TensorProto.FLOAT16, TIERS["float16"]),
}
if ml_dtypes is not None:
    DTYPES["bfloat16"] = (ml_dtypes.bfloat16, TensorProto.BFLOAT16, TIERS["bfloat16"])
BF16 = ml_dtypes.bfloat16 if ml_dtypes is not None else None

SCAN_INPUTS = OP_INPUTS["SelectiveScan"]
CONV_INPUTS = OP_INPUTS["CausalConv1d"]
LAYER_STEP_INPUTS = OP_INPUTS["MambaLayerStep"]
SSD_INPUTS = OP_INPUTS["SsdScan"]
MAMBA2_STEP_INPUTS = OP_INPUTS["Mamba2LayerStep"]
ADD_NORM_INPUTS = OP_INPUTS["AddRmsNorm"]
GATED_NORM_INPUTS = OP_INPUTS["GatedRmsNorm"]


def onnx_type(array):
    if BF16 is not None and array.dtype == BF16:
        return TensorProto.BFLOAT16
    return helper.np_dtype_to_tensor_dtype(array.dtype)


def output_types(op, feeds, slots):
    """ONNX types of (y, final_state): y has T (the type of input 0); SelectiveScan's state is
    float32, SsdScan's too, CausalConv1d's is T; AddRmsNorm's residual_out is float32. The layer steps: (residual_out float32,
    conv_state_out T, ssm_state_out float32)."""
    t = onnx_type(feeds[slots[0]]) if slots and slots[0] else TensorProto.FLOAT
    if op in ("MambaLayerStep", "Mamba2LayerStep"):  # residual_out, conv_state_out, ssm_state_out
        return [TensorProto.FLOAT, t, TensorProto.FLOAT]
    if op == "GatedRmsNorm":  # out only
        return [t]
    return [t, TensorProto.FLOAT if op in ("SelectiveScan", "SsdScan", "AddRmsNorm") else t]


def one_node_model(op, input_names, feeds, outputs, attrs=None):
    """A model with one `mambac` node. `input_names` holds every slot in order ("" = absent);
    graph inputs take the types of `feeds`; shapes are left open so bad shapes reach the op."""
    node = helper.make_node(op, input_names, outputs, domain="mambac", **(attrs or {}))
    # One graph input per name: a packed tensor may feed several slots (sliced inputs).
    inputs = [helper.make_tensor_value_info(n, onnx_type(feeds[n]), None) for n in dict.fromkeys(input_names) if n]
    types = output_types(op, feeds, input_names)
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(outputs, types) if n]
    graph = helper.make_graph([node], op, inputs, outs)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mambac", 1)], ir_version=9
    )


def session(model, threads=None):
    so = ort.SessionOptions()
    so.register_custom_ops_library(LIB)
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def to_ort(array):
    """numpy -> OrtValue; bfloat16 goes through its bits (onnxruntime's numpy bridge lacks it)."""
    if BF16 is not None and array.dtype == BF16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            np.ascontiguousarray(array).view(np.uint16), TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


def from_ort(value):
    if value.data_type() == "tensor(bfloat16)":
        shape = value.shape()
        n = int(np.prod(shape))
        bits = np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(value.data_ptr())) if n else np.zeros(0, np.uint16)
        return bits.copy().view(ml_dtypes.bfloat16).reshape(shape)
    return value.numpy()


def run(sess, feeds, outputs=None):
    """sess.run for any T, bfloat16 included."""
    names = outputs or [o.name for o in sess.get_outputs()]
    values = sess.run_with_ort_values(names, {n: to_ort(a) for n, a in feeds.items()})
    return [from_ort(v) for v in values]


def run_op(op, slots, feeds, outputs, attrs=None, threads=None):
    """Runs one node; `slots` is the full input list ("" = absent). Returns the outputs."""
    sess = session(one_node_model(op, slots, feeds, outputs, attrs), threads)
    return run(sess, {n: feeds[n] for n in slots if n}, [o for o in outputs if o])


def run_under_isa(isa, module, lines):
    """Runs `lines` (Python, after `import <module> as t`) in a fresh process whose kernels are
    the `isa` build (MAMBAC_CPU_ISA, read once per process); asserts it succeeds."""
    import os
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {here!r})\nimport {module} as t\n" + "\n".join(lines) + "\n"
    env = dict(os.environ, MAMBAC_CPU_ISA=isa, MAMBAC_OPS_LIB=LIB)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def worst_rel(out, ref):
    """max|out - ref| / max|ref| over the whole tensor, the figure docs/op-contract.md reports (op
    and model level alike); a NaN anywhere gives inf, an empty or all-zero reference the plain
    max error."""
    out, ref = f64(out), f64(ref)
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape}"
    if ref.size == 0:
        return 0.0
    diff = np.abs(out - ref)
    if np.isnan(diff).any():
        return float("inf")
    scale = np.max(np.abs(ref))
    return float(diff.max() / scale) if scale > 0 else float(diff.max())


def assert_close(out, ref, dtype, what):
    """np.allclose-style |out - ref| <= atol + rtol * |ref| over the whole tensor; NaN fails."""
    rtol, atol = DTYPES[dtype][2]
    o = f64(out)
    assert o.shape == ref.shape, f"{what}: shape {o.shape}, expected {ref.shape}"
    assert not np.isnan(o).any(), f"{what}: NaN in output"
    bad = np.abs(o - ref) > atol + rtol * np.abs(ref)
    if bad.any():
        i = np.unravel_index(np.argmax(np.abs(o - ref) - rtol * np.abs(ref)), ref.shape)
        raise AssertionError(
            f"{what} ({dtype}): {bad.sum()} of {bad.size} elements out of tolerance; worst rel "
            f"{worst_rel(o, ref):.3g}; at {i}: got {o[i]!r}, expected {ref[i]!r}"
        )
    return worst_rel(o, ref)


def mismatch(out, ref, dtype, what, scaled_atol=False, any_nonfinite=False):
    """None if `out` has the reference's NaN, +inf and -inf positions and is within the tier
    elsewhere; else a message saying where it is not. scaled_atol: atol times max(1, max|ref|)
    over the finite elements, the tier the CUDA kernels are held to (docs/decisions.md, long
    float32 scans). any_nonfinite: for inputs outside the op contract (A = +inf), where the result
    is specified only as "not finite": the non-finite positions must match, of any kind."""
    o = np.asarray(out).astype(np.float64)
    if o.shape != ref.shape:
        return f"{what}: shape {o.shape}, expected {ref.shape}"
    kinds = [("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)]
    if any_nonfinite:
        kinds = [("non-finite", lambda x: ~np.isfinite(x))]
    for kind, test in kinds:
        got, want = test(o), test(ref)
        if not np.array_equal(got, want):
            i = tuple(int(k) for k in np.argwhere(got != want)[0])
            return (f"{what} ({dtype}): {kind} at {int(got.sum())} positions, the reference at {int(want.sum())}; "
                    f"first difference at {i}: got {o[i]!r}, expected {ref[i]!r}")
    rtol, atol = TIERS[dtype]
    fin = np.isfinite(ref)
    if scaled_atol and fin.any():
        atol *= max(1.0, float(np.abs(ref[fin]).max()))
    err = np.abs(o[fin] - ref[fin])
    bad = err > atol + rtol * np.abs(ref[fin])
    if bad.any():
        k = int(np.argmax(err - rtol * np.abs(ref[fin])))
        return (f"{what} ({dtype}): {int(bad.sum())} of {int(fin.sum())} finite elements out of tolerance "
                f"(worst rel {worst_rel(o[fin], ref[fin]):.3g}); worst: got {o[fin][k]!r}, expected {ref[fin][k]!r}")
    return None
