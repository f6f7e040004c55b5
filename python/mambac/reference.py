"""The `mambac` ops in float64 numpy, and as onnx `OpRun` classes.

The functions are the ops' equations (docs/op-contract.md, docs/decode-graph.md's layer steps)
in float64, the references the project's tests hold every kernel to: they take the inputs as the
op receives them (already rounded to T) and return float64 arrays.

`OPS` holds one `onnx.reference.op_run.OpRun` class per op, for onnx's Python runtime:

    from onnx.reference import ReferenceEvaluator
    import mambac.reference
    ReferenceEvaluator(model, new_ops=mambac.reference.OPS).run(None, feeds)

They run the same float64 equations and round the outputs to the types the library gives (y in
T, SelectiveScan's and SsdScan's states float32, CausalConv1d's state T).
"""

import numpy as np
from onnx.reference.op_run import OpRun

DOMAIN = "mambac"
# The layer steps' inputs in slot order (docs/decode-graph.md), the names their references take;
# their Python home (tools/python/mambac_onnx_shapes.py takes them from here).
LAYER_STEP_INPUTS = [
    "conv_state",
    "ssm_state",
    "residual",
    "norm_weight",
    "in_proj_weight",
    "in_proj_bias",
    "conv_weight",
    "conv_bias",
    "x_proj_weight",
    "dt_proj_weight",
    "dt_bias",
    "A",
    "D",
    "out_proj_weight",
    "out_proj_bias",
]
MAMBA2_STEP_INPUTS = [
    "conv_state",
    "ssm_state",
    "residual",
    "norm_weight",
    "in_proj_weight",
    "in_proj_bias",
    "conv_weight",
    "conv_bias",
    "dt_bias",
    "A",
    "D",
    "gate_norm_weight",
    "out_proj_weight",
    "out_proj_bias",
]


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


def rms_norm_ref(r, w, eps=1e-5):
    """RMSNorm over the last axis, float64: r / sqrt(mean(r^2) + eps) * w."""
    r, w = map(f64, (r, w))
    return r / np.sqrt((r * r).mean(-1, keepdims=True) + eps) * w


def add_rms_norm_ref(x, residual, weight, eps=1e-5):
    """AddRmsNorm (docs/op-contract.md) in float64. Returns (y, residual_out): residual_out =
    residual + x (x alone when residual is None), y its RMSNorm times weight."""
    s = f64(x) if residual is None else f64(residual) + f64(x)
    return rms_norm_ref(s, weight, eps), s


def mamba_layer_step_ref(feeds, eps=1e-5):
    """MambaLayerStep (docs/decode-graph.md) in float64. `feeds` maps LAYER_STEP_INPUTS names to
    arrays as the op receives them (absent optional inputs left out); returns (residual_out
    [B, 1, H], conv_state_out [B, I, K-1], ssm_state_out [B, I, N])."""
    d = {k: f64(v) for k, v in feeds.items() if v is not None}
    r = d["residual"][:, 0]
    i = d["conv_weight"].shape[0]
    n = d["A"].shape[1]
    rk = d["dt_proj_weight"].shape[0]
    v = rms_norm_ref(r, d["norm_weight"], eps)
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

def sliced(x, offset, count, what):
    """Channels [offset, offset + count) of x's last axis: a fused op's input read as a slice of
    a packed last axis (its `<input>_offset` attribute, docs/op-contract.md "Sliced inputs");
    x itself when offset is None or x is absent. `what` ("SelectiveScan: 'z_offset'") names
    the attribute in the error."""
    if x is None or offset is None:
        return x
    if offset < 0 or offset + count > x.shape[-1]:
        raise ValueError(f"{what} = {offset} reads channels [{offset}, {offset + count}) of a last axis of "
                         f"{x.shape[-1]}")
    return x[..., offset:offset + count]


def unpack_ssd_inputs(x, heads, B, C, x_offset=None, B_offset=None, C_offset=None, head_dim=None, ngroups=None,
                      dstate=None):
    """SsdScan's x, B and C as rank-4 arrays: a packed one ([batch, seqlen, row], its
    `<input>_offset` set; docs/op-contract.md "Sliced inputs") is sliced and reshaped to
    [batch, seqlen, heads, head_dim] or [batch, seqlen, ngroups, dstate], those dims from the
    attributes (dstate and ngroups from a whole B when unset); whole ones pass as they are."""
    if x_offset is not None:
        if head_dim is None:
            raise ValueError("SsdScan: 'x_offset' needs attribute 'head_dim'")
        x = sliced(x, x_offset, heads * head_dim, "SsdScan: 'x_offset'").reshape(*x.shape[:2], heads, head_dim)
    if B_offset is None and B is not None:
        ngroups, dstate = B.shape[2], B.shape[3]
    if B_offset is not None or C_offset is not None:
        if ngroups is None or dstate is None:
            raise ValueError("SsdScan: a packed B needs attributes 'ngroups' and 'dstate'")

    def groups(t, offset, name):
        if offset is None:
            return t
        return sliced(t, offset, ngroups * dstate, f"SsdScan: '{name}'").reshape(*t.shape[:2], ngroups, dstate)

    return x, groups(B, B_offset, "B_offset"), groups(C, C_offset, "C_offset")


def _attr(value, default):
    """An attribute the node may leave out (None from onnx when a schema is registered too)."""
    return default if value is None else value


class SelectiveScan(OpRun):
    op_domain = DOMAIN

    def _run(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, delta_softplus=None,
             z_offset=None, B_offset=None, C_offset=None):
        dstate = A.shape[1]
        B = sliced(B, B_offset, dstate, "SelectiveScan: 'B_offset'")
        C = sliced(C, C_offset, dstate, "SelectiveScan: 'C_offset'")
        z = sliced(z, z_offset, u.shape[2], "SelectiveScan: 'z_offset'")
        y, h = selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, initial_state, bool(_attr(delta_softplus, 1))
        )
        return y.astype(u.dtype), h.astype(np.float32)


class SsdScan(OpRun):
    op_domain = DOMAIN

    def _run(self, x, dt, A, B, C, D=None, dt_bias=None, initial_state=None, dt_softplus=None, dt_min=None,
             dt_max=None, dt_offset=None, x_offset=None, B_offset=None, C_offset=None, head_dim=None, ngroups=None,
             dstate=None):
        x, B, C = unpack_ssd_inputs(x, A.shape[0], B, C, x_offset, B_offset, C_offset, head_dim, ngroups, dstate)
        dt = sliced(dt, dt_offset, A.shape[0], "SsdScan: 'dt_offset'")
        y, h = ssd_scan_ref(
            x, dt, A, B, C, D, dt_bias, initial_state, bool(_attr(dt_softplus, 1)), _attr(dt_min, 0.0),
            _attr(dt_max, np.inf),
        )
        return y.astype(x.dtype), h.astype(np.float32)


class CausalConv1d(OpRun):
    op_domain = DOMAIN

    def _run(self, x, weight, bias=None, initial_state=None, activation=None, x_offset=None):
        x = sliced(x, x_offset, weight.shape[0], "CausalConv1d: 'x_offset'")
        activation = _attr(activation, "silu")
        if activation not in ("silu", "none"):
            raise ValueError(f"CausalConv1d: attribute activation is {activation!r}; expected \"silu\" or \"none\"")
        y, state = causal_conv1d_ref(x, weight, bias, initial_state, activation == "silu")
        return y.astype(x.dtype), state.astype(x.dtype)


class MambaLayerStep(OpRun):
    op_domain = DOMAIN

    def _run(self, *inputs, epsilon=None):
        feeds = {name: a for name, a in zip(LAYER_STEP_INPUTS, inputs) if a is not None}
        out, conv, ssm = mamba_layer_step_ref(feeds, _attr(epsilon, 1e-5))
        return out.astype(np.float32), conv.astype(feeds["conv_state"].dtype), ssm.astype(np.float32)


class Mamba2LayerStep(OpRun):
    op_domain = DOMAIN

    def _run(self, *inputs, epsilon=None, dt_min=None, dt_max=None, norm_before_gate=None):
        feeds = {name: a for name, a in zip(MAMBA2_STEP_INPUTS, inputs) if a is not None}
        out, conv, ssm = mamba2_layer_step_ref(
            feeds, _attr(epsilon, 1e-5), _attr(dt_min, 0.0), _attr(dt_max, np.inf), bool(_attr(norm_before_gate, 0))
        )
        return out.astype(np.float32), conv.astype(feeds["conv_state"].dtype), ssm.astype(np.float32)


class AddRmsNorm(OpRun):
    op_domain = DOMAIN

    def _run(self, x, residual=None, weight=None, epsilon=None):
        y, s = add_rms_norm_ref(x, residual, weight, _attr(epsilon, 1e-5))
        return y.astype(x.dtype), s.astype(np.float32)



class GatedRmsNorm(OpRun):
    op_domain = DOMAIN

    def _run(self, y, z, weight, epsilon=None, group_size=None, norm_before_gate=None, z_offset=None):
        z = sliced(z, z_offset, y.shape[-1], "GatedRmsNorm: 'z_offset'")
        ngroups = y.shape[-1] // group_size
        out = gated_rms_norm_ref(y, z, weight, ngroups, _attr(epsilon, 1e-5), bool(_attr(norm_before_gate, 0)))
        return (out.astype(y.dtype),)


# For ReferenceEvaluator(new_ops=OPS).
OPS = [SelectiveScan, SsdScan, CausalConv1d, MambaLayerStep, Mamba2LayerStep, AddRmsNorm, GatedRmsNorm]
