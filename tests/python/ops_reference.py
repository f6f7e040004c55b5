"""Float64 references of the fused ops (docs/op-contract.md), one-node ONNX models of them, and the tolerance
tiers, shared by the op tests (test_ops*.py) and tools/bench_ops.py.

The references take the inputs exactly as the op receives them (already rounded to T) and
compute in float64, so a comparison measures the kernel, not the input rounding.
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


def onnx_type(array):
    if BF16 is not None and array.dtype == BF16:
        return TensorProto.BFLOAT16
    return helper.np_dtype_to_tensor_dtype(array.dtype)


def output_types(op, feeds, slots):
    """ONNX types of (y, final_state): y has T (the type of input 0); SelectiveScan's state is
    float32, SsdScan's too, CausalConv1d's is T. The layer steps: (residual_out float32,
    conv_state_out T, ssm_state_out float32)."""
    t = onnx_type(feeds[slots[0]]) if slots and slots[0] else TensorProto.FLOAT
    if op in ("MambaLayerStep", "Mamba2LayerStep"):  # residual_out, conv_state_out, ssm_state_out
        return [TensorProto.FLOAT, t, TensorProto.FLOAT]
    return [t, TensorProto.FLOAT if op in ("SelectiveScan", "SsdScan") else t]


def one_node_model(op, input_names, feeds, outputs, attrs=None):
    """A model with one `mambac` node. `input_names` holds every slot in order ("" = absent);
    graph inputs take the types of `feeds`; shapes are left open so bad shapes reach the op."""
    node = helper.make_node(op, input_names, outputs, domain="mambac", **(attrs or {}))
    inputs = [helper.make_tensor_value_info(n, onnx_type(feeds[n]), None) for n in input_names if n]
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


def f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, delta_softplus=True):
    """SelectiveScan (docs/op-contract.md) in float64. Returns (y, final_state)."""
    u, delta, A, B, C, D, z, delta_bias, h = map(f64, (u, delta, A, B, C, D, z, delta_bias, initial_state))
    batch, seqlen, dim = u.shape
    dstate = A.shape[1]
    ngroups = B.shape[2]
    group = np.arange(dim) // (dim // ngroups)  # g = d / (dim / ngroups)
    dt = delta + (delta_bias if delta_bias is not None else 0.0)
    if delta_softplus:
        dt = softplus(dt)
    if h is None:
        h = np.zeros((batch, dim, dstate))
    y = np.empty((batch, seqlen, dim))
    for t in range(seqlen):
        bt = B[:, t][:, group, :]  # [batch, dim, dstate]
        ct = C[:, t][:, group, :]
        dtt = dt[:, t, :, None]
        h = np.exp(dtt * A[None]) * h + dtt * bt * u[:, t, :, None]
        y[:, t] = (h * ct).sum(-1)
        if D is not None:
            y[:, t] += D * u[:, t]
    if z is not None:
        y *= z / (1.0 + np.exp(-z))
    return y, h


def ssd_dt(dt, dt_bias=None, dt_softplus=True, dt_min=0.0, dt_max=np.inf):
    """SsdScan's step size: clamp(softplus(dt + dt_bias), dt_min, dt_max), NaN kept."""
    dt = f64(dt) + (f64(dt_bias) if dt_bias is not None else 0.0)
    if dt_softplus:
        dt = softplus(dt)
    dt = np.where(dt < dt_min, dt_min, dt)
    return np.where(dt > dt_max, dt_max, dt)


def ssd_scan_ref(x, dt, A, B, C, D=None, dt_bias=None, initial_state=None, dt_softplus=True, dt_min=0.0,
                 dt_max=np.inf):
    """SsdScan (docs/op-contract.md "SsdScan", Mamba-2) in float64, step by step. Head h reads group
    h // (heads // ngroups) of B and C. Returns (y [b, L, heads, head_dim], final_state
    [b, heads, head_dim, dstate])."""
    x, A, B, C, D, h = map(f64, (x, A, B, C, D, initial_state))
    batch, seqlen, heads, head_dim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    group = np.arange(heads) // (heads // ngroups)
    dt = ssd_dt(dt, dt_bias, dt_softplus, dt_min, dt_max)  # [b, L, heads]
    if h is None:
        h = np.zeros((batch, heads, head_dim, dstate))
    y = np.empty(x.shape)
    for t in range(seqlen):
        bt = B[:, t][:, group, None, :]  # [b, heads, 1, dstate]
        ct = C[:, t][:, group, None, :]
        dtt = dt[:, t, :, None, None]
        h = np.exp(dtt * A[None, :, None, None]) * h + dtt * x[:, t, :, :, None] * bt
        y[:, t] = (h * ct).sum(-1)
        if D is not None:
            y[:, t] += D[:, None] * x[:, t]
    return y, h


def causal_conv1d_ref(x, weight, bias=None, initial_state=None, silu=True):
    """CausalConv1d (docs/op-contract.md) in float64. Returns (y, final_state)."""
    x, weight, bias, s0 = map(f64, (x, weight, bias, initial_state))
    batch, seqlen, dim = x.shape
    width = weight.shape[1]
    hist = np.zeros((batch, width - 1, dim)) if s0 is None else s0.transpose(0, 2, 1)
    xp = np.concatenate([hist, x], axis=1)  # [batch, width - 1 + seqlen, dim]
    y = sum(weight[:, k] * xp[:, k : k + seqlen, :] for k in range(width))
    if bias is not None:
        y = y + bias
    if silu:
        y = y / (1.0 + np.exp(-y))
    final = xp[:, xp.shape[1] - (width - 1) :, :].transpose(0, 2, 1)
    return y, final


def mamba_layer_step_ref(feeds, eps=1e-5):
    """MambaLayerStep (docs/decode-graph.md) in float64. `feeds` maps LAYER_STEP_INPUTS names to
    arrays as the op receives them (absent optional inputs left out); returns (residual_out
    [B, 1, H], conv_state_out [B, I, K-1], ssm_state_out [B, I, N])."""
    d = {k: f64(v) for k, v in feeds.items() if v is not None}
    r = d["residual"][:, 0]
    i = d["conv_weight"].shape[0]
    n = d["A"].shape[1]
    rk = d["dt_proj_weight"].shape[0]
    v = r / np.sqrt((r * r).mean(-1, keepdims=True) + eps) * d["norm_weight"]
    xz = v @ d["in_proj_weight"] + d.get("in_proj_bias", 0)
    x, z = xz[:, :i], xz[:, i:]
    win = np.concatenate([d["conv_state"], x[:, :, None]], axis=2)
    c = (win * d["conv_weight"]).sum(-1) + d.get("conv_bias", 0)
    xc = c / (1 + np.exp(-c))
    dbc = xc @ d["x_proj_weight"]
    dt = softplus(dbc[:, :rk] @ d["dt_proj_weight"] + d.get("dt_bias", 0))
    h = np.exp(dt[:, :, None] * d["A"]) * d["ssm_state"] + (dt * xc)[:, :, None] * dbc[:, None, rk:rk + n]
    y = (h * dbc[:, None, rk + n:]).sum(-1) + d.get("D", 0) * xc
    y = y * (z / (1 + np.exp(-z)))
    out = r + y @ d["out_proj_weight"] + d.get("out_proj_bias", 0)
    return out[:, None], win[:, :, 1:], h


def gated_rms_norm_ref(y, z, w, ngroups, eps=1e-5, norm_before_gate=False):
    """Mamba-2's gated RMSNorm over `ngroups` groups of the last axis, float64:
    rms(y * silu(z)) * w, or with norm_before_gate rms(y) * w * silu(z)."""
    y, z, w = map(f64, (y, z, w))
    gate = z / (1 + np.exp(-z))
    x = y if norm_before_gate else y * gate
    g = x.reshape(*x.shape[:-1], ngroups, -1)
    out = (g / np.sqrt((g * g).mean(-1, keepdims=True) + eps)).reshape(x.shape) * w
    return out * gate if norm_before_gate else out


def mamba2_layer_step_ref(feeds, eps=1e-5, dt_min=0.0, dt_max=np.inf, norm_before_gate=False):
    """Mamba2LayerStep (docs/decode-graph.md "Mamba2LayerStep") in float64. `feeds` maps
    MAMBA2_STEP_INPUTS names to arrays as the op receives them (absent optional inputs left out);
    ngroups comes from the shapes, as the op's check derives it. Returns (residual_out [B, 1, H],
    conv_state_out [B, conv_dim, K-1], ssm_state_out [B, heads, head_dim, N])."""
    d = {k: f64(v) for k, v in feeds.items() if v is not None}
    r = d["residual"][:, 0]
    _, heads, head_dim, n = d["ssm_state"].shape
    inner = heads * head_dim
    conv_dim = d["conv_weight"].shape[0]
    ngroups = (conv_dim - inner) // (2 * n)
    v = r / np.sqrt((r * r).mean(-1, keepdims=True) + eps) * d["norm_weight"]
    proj = v @ d["in_proj_weight"] + d.get("in_proj_bias", 0)
    z, xbc, dt = proj[:, :inner], proj[:, inner:inner + conv_dim], proj[:, inner + conv_dim:]
    win = np.concatenate([d["conv_state"], xbc[:, :, None]], axis=2)
    c = (win * d["conv_weight"]).sum(-1) + d.get("conv_bias", 0)
    xc = c / (1 + np.exp(-c))
    x = xc[:, :inner].reshape(-1, heads, head_dim)
    bm = xc[:, inner:inner + ngroups * n].reshape(-1, ngroups, n)
    cm = xc[:, inner + ngroups * n:].reshape(-1, ngroups, n)
    # One scan step of SsdScan's reference: the same dt rule, groups and D skip.
    y, h = ssd_scan_ref(x[:, None], dt[:, None], d["A"], bm[:, None], cm[:, None], d.get("D"), d.get("dt_bias"),
                        d["ssm_state"], True, dt_min, dt_max)
    y = gated_rms_norm_ref(y[:, 0].reshape(-1, inner), z, d["gate_norm_weight"], ngroups, eps, norm_before_gate)
    out = r + y @ d["out_proj_weight"] + d.get("out_proj_bias", 0)
    return out[:, None], win[:, :, 1:], h


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
