"""The CUDA kernels through the harness library's C entry points (cpp/cuda/c_api.cu,
cpp/cuda/harness_api.cu), for the GPU tests here and the benchmarks in tools/gpu/.

The kernel ABI structs (custom-ops/src/kernel_abi.rs) and their element codes are built from the
layout the library reports, so nothing here copies them. Importing it raises ImportError where
torch or a CUDA device is missing (the tests skip on that), and FileNotFoundError, saying how to
build it, where the library is missing.
"""

import ctypes
import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    raise ImportError("no CUDA device")

from mambac_testing import ROOT  # noqa: E402

LIB_PATH = Path(os.environ.get("MAMBAC_CUDA_HARNESS", ROOT / ".device" / "gpu" / "libmambac_cuda_harness.so"))
if not LIB_PATH.is_file():
    raise FileNotFoundError(f"{LIB_PATH}: no CUDA harness library; build it with tools/gpu/build_harness.sh "
                            "(or set MAMBAC_CUDA_HARNESS)")
lib = ctypes.CDLL(str(LIB_PATH))
lib.mambac_harness_abi_layout.restype = ctypes.c_char_p
lib.mambac_harness_abi_layout.argtypes = [ctypes.c_char_p]
lib.mambac_cuda_error_string.restype = ctypes.c_char_p
dev = torch.device("cuda")


def _layout(name):
    text = lib.mambac_harness_abi_layout(name.encode())
    assert text, f"the harness library does not know {name}"
    return [f.split(":") for f in text.decode().split(";")]


def abi_struct(name):
    """The kernel ABI struct `name` as ctypes. Sizes: 8 = size_t (sizes and addresses), 4 = float
    (eps), 1 = the u8 element code or a bool."""
    parts = _layout(name)
    total = int(parts[-1][1])
    kinds = {8: ctypes.c_size_t, 4: ctypes.c_float, 1: ctypes.c_uint8}
    fields, at = [], 0
    # In offset order: the library lists fields as they were added, not as they lie.
    for i, (fname, off, size) in enumerate(sorted(parts[:-1], key=lambda f: int(f[1]))):
        off, size = int(off), int(size)
        if off > at:
            fields.append((f"_pad{i}", ctypes.c_uint8 * (off - at)))
        fields.append((fname, kinds[size]))
        at = off + size
    if total > at:
        fields.append(("_pad_end", ctypes.c_uint8 * (total - at)))
    struct = type(name, (ctypes.Structure,), {"_fields_": fields})
    assert ctypes.sizeof(struct) == total, f"{name}: ctypes size {ctypes.sizeof(struct)} != {total}"
    return struct


_CODES = {k: int(v) for k, v in _layout("ElemType")}
# dtype name (ops_reference.TIERS' keys) -> (torch dtype, the ABI's element code)
DTYPES = {
    "float32": (torch.float32, _CODES["F32"]),
    "float16": (torch.float16, _CODES["F16"]),
    "bfloat16": (torch.bfloat16, _CODES["BF16"]),
}

ScanParams = abi_struct("SelectiveScanParams")
SsdParams = abi_struct("SsdScanParams")
ConvParams = abi_struct("CausalConv1dParams")
StepParams = abi_struct("MambaLayerStepParams")
Step2Params = abi_struct("Mamba2LayerStepParams")
NormParams = abi_struct("AddRmsNormParams")
GatedNormParams = abi_struct("GatedRmsNormParams")
vp = ctypes.c_void_p
lib.mambac_cuda_selective_scan.argtypes = [ctypes.POINTER(ScanParams), vp]
lib.mambac_cuda_ssd_scan.argtypes = [ctypes.POINTER(SsdParams), vp]
lib.mambac_cuda_ssd_scan_scratch_bytes.argtypes = [ctypes.POINTER(SsdParams)]
lib.mambac_cuda_ssd_scan_scratch_bytes.restype = ctypes.c_size_t
# (path, chunk): SsdConfig (cpp/cuda/ssd_scan.h); path 1 = the step kernel, -1 = the chunked
# prefill; chunk 64, 128 or 256; 0 = by shape.
lib.mambac_cuda_ssd_scan_cfg.argtypes = [ctypes.POINTER(SsdParams), vp, ctypes.c_int, ctypes.c_int]
lib.mambac_cuda_ssd_scan_cfg_scratch_bytes.argtypes = [ctypes.POINTER(SsdParams), ctypes.c_int, ctypes.c_int]
lib.mambac_cuda_ssd_scan_cfg_scratch_bytes.restype = ctypes.c_size_t
lib.mambac_cuda_causal_conv1d.argtypes = [ctypes.POINTER(ConvParams), vp]
lib.mambac_cuda_gated_rms_norm.argtypes = [ctypes.POINTER(GatedNormParams), vp]
lib.mambac_cuda_gated_rms_norm_cfg.argtypes = [ctypes.POINTER(GatedNormParams), vp, ctypes.c_int]
lib.mambac_cuda_decode_layer.argtypes = [ctypes.POINTER(StepParams), vp]
lib.mambac_cuda_add_rms_norm.argtypes = [ctypes.POINTER(NormParams), vp]
lib.mambac_cuda_add_rms_norm_cfg.argtypes = [ctypes.POINTER(NormParams), vp, ctypes.c_int]
lib.mambac_cuda_decode_layer_scratch_bytes.argtypes = [ctypes.POINTER(StepParams)]
lib.mambac_cuda_decode_layer_scratch_bytes.restype = ctypes.c_size_t
lib.mambac_cuda_mamba2_decode_layer.argtypes = [ctypes.POINTER(Step2Params), vp]
lib.mambac_cuda_mamba2_decode_layer_scratch_bytes.argtypes = [ctypes.POINTER(Step2Params)]
lib.mambac_cuda_mamba2_decode_layer_scratch_bytes.restype = ctypes.c_size_t
# (lanes, ch, w, s, cpt, step): ScanConfig (cpp/cuda/selective_scan.h); 0 = automatic.
SCAN_CFG_LEN = 6
lib.mambac_cuda_selective_scan_cfg.argtypes = [ctypes.POINTER(ScanParams), vp] + [ctypes.c_int] * SCAN_CFG_LEN
# (v, lt, step): ConvConfig (cpp/cuda/causal_conv1d.h); 0 = automatic.
CONV_CFG_LEN = 3
lib.mambac_cuda_causal_conv1d_cfg.argtypes = [ctypes.POINTER(ConvParams), vp] + [ctypes.c_int] * CONV_CFG_LEN
# (loads in flight a thread, longest K tile, blocks a multiprocessor, tensor cores 1/-1,
# dependent launches -1 = off, batch 1's next-pass loads ahead -1 = off): DecodeTuning;
# 0 = default. A shorter tuple is padded with 0.
TUNING_LEN = 6
lib.mambac_cuda_decode_layer_tuned.argtypes = [ctypes.POINTER(StepParams), vp] + [ctypes.c_int] * TUNING_LEN
lib.mambac_cuda_mamba2_decode_layer_tuned.argtypes = [ctypes.POINTER(Step2Params), vp] + [ctypes.c_int] * TUNING_LEN


def tuning_args(tuning):
    """DecodeTuning's fields as the _tuned entry points take them, defaults (0) filled in."""
    assert len(tuning) <= TUNING_LEN, tuning
    return tuple(tuning) + (0,) * (TUNING_LEN - len(tuning))


def ptr(t):
    return 0 if t is None else t.data_ptr()


def stream():
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def error_string(rc):
    return lib.mambac_cuda_error_string(rc).decode()


def check_rc(rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: {error_string(rc)} ({rc})")


def to_host(t):
    """A device tensor as a float64 numpy array (the references' input)."""
    return None if t is None else t.double().cpu().numpy()


# --- SelectiveScan ------------------------------------------------------------------------------
# The op's input names (ops_reference.SCAN_INPUTS) -> the ABI struct's fields.
SCAN_FIELDS = {"u": "u", "delta": "delta", "A": "a", "B": "b", "C": "c", "D": "d", "z": "z",
               "delta_bias": "delta_bias", "initial_state": "initial_state"}


def row_stride(t):
    """Elements between consecutive rows of `t`'s last axis: its length for a contiguous tensor,
    the packed row's for a view of channels of a packed last axis (docs/op-contract.md "Sliced
    inputs"), which is what the ABI's `*_stride` fields hold. 0 (contiguous) for an absent input."""
    if t is None:
        return 0
    if t.is_contiguous():
        return t.shape[-1]  # also for an empty last axis, which no reshape takes
    rows = t
    assert t.stride(-1) == 1, "rows must be contiguous"
    assert all(t.stride(k) == t.stride(k + 1) * t.shape[k + 1] for k in range(t.dim() - 2)), "rows evenly spaced"
    return rows.stride(-2) if t.dim() >= 2 else t.shape[-1]


def token_stride(t):
    """Elements between consecutive tokens of a [batch, seqlen, a, b] tensor whose token rows are
    contiguous: a * b when all of it is, the packed row's length for a view of channels of a
    packed [batch, seqlen, row] tensor reshaped to [.., a, b] (SsdScan's x, B, C, docs/op-contract.md
    "Sliced inputs"): the ABI's x/b/c_stride. 0 (contiguous) for an absent input."""
    if t is None:
        return 0
    if t.is_contiguous():
        return t.shape[2] * t.shape[3]  # also for empty dims, whose strides torch rounds up
    assert t.stride(3) == 1 and t.stride(2) == t.shape[3], "a token's row must be contiguous"
    if t.shape[1] == 1:
        # One token a sequence: torch gives a size-1 axis any stride, and only the batch axis
        # steps between token rows.
        return t.stride(0)
    assert t.shape[0] == 1 or t.stride(0) == t.stride(1) * t.shape[1], "tokens evenly spaced"
    return t.stride(1)


def off_16_bytes(t, fill=None):
    """A float32 tensor shaped like `t` whose data starts 4 bytes past a 16-byte boundary: a copy
    of `t`, or filled with `fill`. Kernels that read states as float4s must take another path."""
    buf = torch.empty(t.numel() + 1, device=t.device)
    view = buf[1:].view(t.shape)
    if fill is None:
        view.copy_(t)
    else:
        view.fill_(fill)
    return view


def scan_params(x, y, final_state, dtype, delta_softplus):
    """x: the op's inputs by name (None = absent), on the device; z, B and C may be views of
    channels of packed tensors (their row strides go into the params)."""
    batch, seqlen, dim = x["u"].shape
    return ScanParams(batch=batch, seqlen=seqlen, dim=dim, dstate=x["A"].shape[1], ngroups=x["B"].shape[2],
                      elem=DTYPES[dtype][1], delta_softplus=bool(delta_softplus), y=ptr(y), final_state=ptr(final_state),
                      z_stride=row_stride(x.get("z")), b_stride=row_stride(x["B"]), c_stride=row_stride(x["C"]),
                      **{SCAN_FIELDS[k]: ptr(v) for k, v in x.items()})


def launch_scan(p, cfg=None):
    """Returns the CUDA status; cfg forces a work split (ScanConfig's fields, zeros filled in)."""
    if cfg is None:
        return lib.mambac_cuda_selective_scan(ctypes.byref(p), stream())
    return lib.mambac_cuda_selective_scan_cfg(ctypes.byref(p), stream(), *(tuple(cfg) + (0,) * (SCAN_CFG_LEN - len(cfg))))


def run_scan(x, dtype, delta_softplus, want_final, cfg=None, poison=float("nan")):
    """Runs the scan on outputs filled with `poison` (so an element it does not write fails).
    Returns (status, y, final_state or None)."""
    batch, seqlen, dim = x["u"].shape
    y = torch.full((batch, seqlen, dim), poison, dtype=x["u"].dtype, device=dev)
    fs = torch.full((batch, dim, x["A"].shape[1]), poison, device=dev) if want_final else None
    rc = launch_scan(scan_params(x, y, fs, dtype, delta_softplus), cfg)
    torch.cuda.synchronize()
    return rc, y, fs


# --- SsdScan -----------------------------------------------------------------------------------
# The op's input names (ops_reference.SSD_INPUTS) -> the ABI struct's fields.
SSD_FIELDS = {"x": "x", "dt": "dt", "A": "a", "B": "b", "C": "c", "D": "d", "dt_bias": "dt_bias",
              "initial_state": "initial_state"}


def ssd_params(x, y, final_state, dtype, dt_softplus, dt_min=0.0, dt_max=float("inf")):
    """x: the op's inputs by name (None = absent), on the device."""
    batch, seqlen, heads, head_dim = x["x"].shape
    _, _, ngroups, dstate = x["B"].shape
    return SsdParams(batch=batch, seqlen=seqlen, heads=heads, head_dim=head_dim, ngroups=ngroups, dstate=dstate,
                     elem=DTYPES[dtype][1], dt_softplus=bool(dt_softplus), dt_min=dt_min, dt_max=dt_max,
                     dt_stride=row_stride(x["dt"]), x_stride=token_stride(x["x"]),
                     b_stride=token_stride(x["B"]), c_stride=token_stride(x["C"]), y=ptr(y),
                     final_state=ptr(final_state), **{SSD_FIELDS[k]: ptr(v) for k, v in x.items()})


def ssd_scratch(p, cfg=None, poison=float("nan")):
    """The device scratch SsdScan asks for with params `p` (cfg: (path, chunk) forced), filled with
    `poison` so a stale value read before it is written shows; None when it asks for none."""
    if cfg is None:
        nbytes = lib.mambac_cuda_ssd_scan_scratch_bytes(ctypes.byref(p))
    else:
        nbytes = lib.mambac_cuda_ssd_scan_cfg_scratch_bytes(ctypes.byref(p), *cfg)
    return torch.full((nbytes // 4,), poison, device=dev) if nbytes else None


def launch_ssd(p, cfg=None):
    """Returns the CUDA status; cfg = (path, chunk) forces SsdConfig (zeros = by shape)."""
    if cfg is None:
        return lib.mambac_cuda_ssd_scan(ctypes.byref(p), stream())
    return lib.mambac_cuda_ssd_scan_cfg(ctypes.byref(p), stream(), *cfg)


def run_ssd(x, dtype, dt_softplus, want_final, dt_min=0.0, dt_max=float("inf"), poison=float("nan"), cfg=None,
            scratch=True):
    """Runs SsdScan on outputs filled with `poison` (so an element it does not write fails), with
    the scratch it asks for (poisoned too) unless scratch=False. cfg: (path, chunk), as launch_ssd.
    Returns (status, y, final_state or None)."""
    batch, seqlen, heads, head_dim = x["x"].shape
    y = torch.full(x["x"].shape, poison, dtype=x["x"].dtype, device=dev)
    fs = torch.full((batch, heads, head_dim, x["B"].shape[3]), poison, device=dev) if want_final else None
    p = ssd_params(x, y, fs, dtype, dt_softplus, dt_min, dt_max)
    buf = ssd_scratch(p, cfg) if scratch else None
    p.scratch = ptr(buf)
    rc = launch_ssd(p, cfg)
    torch.cuda.synchronize()
    return rc, y, fs


# --- CausalConv1d -------------------------------------------------------------------------------
def conv_params(x, y, final_state, dtype, silu):
    batch, seqlen, dim = x["x"].shape
    return ConvParams(batch=batch, seqlen=seqlen, dim=dim, width=x["weight"].shape[1], elem=DTYPES[dtype][1],
                      silu=bool(silu), x=ptr(x["x"]), x_stride=row_stride(x["x"]), weight=ptr(x["weight"]), bias=ptr(x.get("bias")),
                      initial_state=ptr(x.get("initial_state")), y=ptr(y), final_state=ptr(final_state))


def launch_conv(p, cfg=None):
    if cfg is None:
        return lib.mambac_cuda_causal_conv1d(ctypes.byref(p), stream())
    return lib.mambac_cuda_causal_conv1d_cfg(ctypes.byref(p), stream(), *(tuple(cfg) + (0,) * (CONV_CFG_LEN - len(cfg))))


def run_conv(x, dtype, silu, want_final, cfg=None, poison=float("nan")):
    batch, seqlen, dim = x["x"].shape
    t = x["x"].dtype
    y = torch.full((batch, seqlen, dim), poison, dtype=t, device=dev)
    fs = torch.full((batch, dim, x["weight"].shape[1] - 1), poison, dtype=t, device=dev) if want_final else None
    rc = launch_conv(conv_params(x, y, fs, dtype, silu), cfg)
    torch.cuda.synchronize()
    return rc, y, fs


# --- AddRmsNorm ----------------------------------------------------------------------------------
def add_norm_params(x, y, residual_out, dtype, eps):
    """x: the op's inputs by name (x [batch, seqlen, hidden] T, residual or None, weight)."""
    batch, seqlen, hidden = x["x"].shape
    return NormParams(rows=batch * seqlen, hidden=hidden, elem=DTYPES[dtype][1], eps=eps, x=ptr(x["x"]),
                      residual=ptr(x.get("residual")), weight=ptr(x["weight"]), y=ptr(y),
                      residual_out=ptr(residual_out))


def run_add_norm(x, dtype, eps=1e-5, want_residual_out=True, scalar=None, poison=float("nan")):
    """AddRmsNorm on NaN-poisoned outputs; `scalar` 1 forces the scalar loads, 0 the choice by
    alignment, None the plain entry point. Returns (status, y, residual_out)."""
    y = torch.full_like(x["x"], poison)
    r_out = torch.full(x["x"].shape, poison, dtype=torch.float32, device=dev) if want_residual_out else None
    p = add_norm_params(x, y, r_out, dtype, eps)
    if scalar is None:
        rc = lib.mambac_cuda_add_rms_norm(ctypes.byref(p), stream())
    else:
        rc = lib.mambac_cuda_add_rms_norm_cfg(ctypes.byref(p), stream(), scalar)
    torch.cuda.synchronize()
    return rc, y, r_out


# --- GatedRmsNorm -------------------------------------------------------------------------------
def gated_norm_params(x, out, dtype, group_size, eps, norm_before_gate, z_offset):
    """x: the op's inputs by name (y [batch, seqlen, d] T; z [batch, seqlen, row] T, read from
    channel z_offset; weight [d] float32). z's rows may be a view with a row stride: its stride(1)."""
    batch, seqlen, d = x["y"].shape
    z = x["z"]
    return GatedNormParams(rows=batch * seqlen, d=d, group_size=group_size, z_stride=z.stride(1),
                           elem=DTYPES[dtype][1], eps=eps, norm_before_gate=bool(norm_before_gate),
                           y=ptr(x["y"]), z=ptr(z) + z_offset * z.element_size(), weight=ptr(x["weight"]),
                           out=ptr(out))


def run_gated_norm(x, dtype, group_size, norm_before_gate=False, z_offset=0, eps=1e-5, scalar=None,
                   poison=float("nan")):
    """GatedRmsNorm on a NaN-poisoned output; `scalar` 1 forces the scalar loads, 0 the choice by
    alignment, None the plain entry point. Returns (status, out)."""
    out = torch.full_like(x["y"], poison)
    p = gated_norm_params(x, out, dtype, group_size, eps, norm_before_gate, z_offset)
    if scalar is None:
        rc = lib.mambac_cuda_gated_rms_norm(ctypes.byref(p), stream())
    else:
        rc = lib.mambac_cuda_gated_rms_norm_cfg(ctypes.byref(p), stream(), scalar)
    torch.cuda.synchronize()
    return rc, out


def gated_norm_inputs(batch, seqlen, d, dtype, opts, seed):
    """y, z ~ 2 N(0, 1) in T, weight ~ 1 + N(0, 0.5^2). opts: z_row (z a packed [batch, seqlen,
    z_row] tensor the op reads at z_offset, as Mamba-2's in_proj output); shift: y and the weight
    one element past an aligned address (the kernel's scalar path)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    sh = 1 if opts.get("shift") else 0
    n = batch * seqlen * d
    row = opts.get("z_row", d)
    return {
        "y": (2.0 * r(n + sh)).to(t)[sh:].view(batch, seqlen, d),
        "z": (2.0 * r(batch, seqlen, row)).to(t),
        "weight": (1.0 + 0.5 * r(d + sh))[sh:],
    }


# --- MambaLayerStep -----------------------------------------------------------------------------
# The op's input names (ops_reference.LAYER_STEP_INPUTS) -> the ABI struct's fields.
STEP_FIELDS = {"conv_state": "conv_state_in", "ssm_state": "ssm_state_in", "residual": "residual_in",
               "norm_weight": "norm_weight", "in_proj_weight": "in_proj_weight", "in_proj_bias": "in_proj_bias",
               "conv_weight": "conv_weight", "conv_bias": "conv_bias", "x_proj_weight": "x_proj_weight",
               "dt_proj_weight": "dt_proj_weight", "dt_bias": "dt_bias", "A": "a", "D": "d",
               "out_proj_weight": "out_proj_weight", "out_proj_bias": "out_proj_bias"}


def step_params(x, outs, dtype, eps=1e-5, scratch=None):
    """x: the op's inputs by name (residual [B, H] or [B, 1, H]); outs: residual, conv_state, ssm_state."""
    batch, hidden = x["residual"].shape[0], x["residual"].shape[-1]
    inner, width = x["conv_weight"].shape
    dstate = x["A"].shape[1]
    return StepParams(elem=DTYPES[dtype][1], batch=batch, hidden=hidden, inner=inner, dstate=dstate,
                      dt_rank=x["dt_proj_weight"].shape[0], width=width, eps=eps,
                      residual_out=ptr(outs["residual"]), conv_state_out=ptr(outs["conv_state"]),
                      ssm_state_out=ptr(outs["ssm_state"]), scratch=ptr(scratch),
                      **{STEP_FIELDS[k]: ptr(v) for k, v in x.items()})


def layer_outputs(x, poison):
    """A decode step's outputs (residual, conv_state, ssm_state), shaped like its inputs and
    filled with `poison`."""
    return {k: torch.full_like(x[k], poison) for k in ("residual", "conv_state", "ssm_state")}


def launch_layer(p, name, poison, tuning):
    """Runs layer `name` ("decode_layer" or "mamba2_decode_layer") on params `p` with the scratch
    it asks for, poisoned, and DecodeTuning `tuning` when given. Returns the status."""
    nbytes = getattr(lib, f"mambac_cuda_{name}_scratch_bytes")(ctypes.byref(p))
    scratch = torch.full((max(1, nbytes // 4),), poison, device=dev)
    p.scratch = ptr(scratch)
    if tuning is None:
        rc = getattr(lib, f"mambac_cuda_{name}")(ctypes.byref(p), stream())
    else:
        rc = getattr(lib, f"mambac_cuda_{name}_tuned")(ctypes.byref(p), stream(), *tuning_args(tuning))
    torch.cuda.synchronize()
    return rc


def run_chained(name, layers, make_params, dependent):
    """Layer `name`'s step ("decode_layer" or "mamba2_decode_layer") for each input set of
    `layers`, queued back to back on one stream with no synchronisation in between, each reading
    the residual_out of the one before (as in a decode graph) and all sharing one NaN-poisoned
    scratch (ORT may hand each layer the same block); dependent launches on (`dependent` 0) or
    off (-1). make_params(x, outs) builds a layer's ABI struct. Rewires layers[i]["residual"]
    to the previous layer's output. Returns (statuses, outputs a layer)."""
    outs = [layer_outputs(x, float("nan")) for x in layers]
    for i in range(1, len(layers)):
        layers[i]["residual"] = outs[i - 1]["residual"]
    params = [make_params(x, o) for x, o in zip(layers, outs)]
    nbytes = max(getattr(lib, f"mambac_cuda_{name}_scratch_bytes")(ctypes.byref(p)) for p in params)
    scratch = torch.full((max(1, nbytes // 4),), float("nan"), device=dev)
    for p in params:
        p.scratch = ptr(scratch)
    torch.cuda.synchronize()
    launch = getattr(lib, f"mambac_cuda_{name}_tuned")
    rcs = [launch(ctypes.byref(p), stream(), *tuning_args((0, 0, 0, 0, dependent))) for p in params]
    torch.cuda.synchronize()
    return rcs, outs


def run_step(x, dtype, eps=1e-5, poison=float("nan"), tuning=None):
    """One decode step on poisoned outputs and scratch (stale values must not leak), with the
    GEMVs' DecodeTuning forced when `tuning` is given. Returns (status, {residual, conv_state,
    ssm_state})."""
    outs = layer_outputs(x, poison)
    return launch_layer(step_params(x, outs, dtype, eps), "decode_layer", poison, tuning), outs


# --- Mamba2LayerStep ----------------------------------------------------------------------------
# The op's input names (ops_reference.MAMBA2_STEP_INPUTS) -> the ABI struct's fields.
STEP2_FIELDS = {"conv_state": "conv_state_in", "ssm_state": "ssm_state_in", "residual": "residual_in",
                "norm_weight": "norm_weight", "in_proj_weight": "in_proj_weight", "in_proj_bias": "in_proj_bias",
                "conv_weight": "conv_weight", "conv_bias": "conv_bias", "dt_bias": "dt_bias", "A": "a", "D": "d",
                "gate_norm_weight": "gate_norm_weight", "out_proj_weight": "out_proj_weight",
                "out_proj_bias": "out_proj_bias"}


def step2_params(x, outs, dtype, attrs, scratch=None):
    """x: the op's inputs by name; outs: residual, conv_state, ssm_state; attrs: eps, dt_min,
    dt_max, norm_before_gate (the op's attributes). ngroups comes from the shapes, as the op's
    check derives it."""
    batch, heads, head_dim, dstate = x["ssm_state"].shape
    conv_dim, width = x["conv_weight"].shape
    ngroups = (conv_dim - heads * head_dim) // (2 * dstate)
    return Step2Params(elem=DTYPES[dtype][1], batch=batch, hidden=x["residual"].shape[-1], heads=heads,
                       head_dim=head_dim, ngroups=ngroups, dstate=dstate, width=width, eps=attrs["eps"],
                       dt_min=attrs["dt_min"], dt_max=attrs["dt_max"], norm_before_gate=bool(attrs["norm_before_gate"]),
                       residual_out=ptr(outs["residual"]), conv_state_out=ptr(outs["conv_state"]),
                       ssm_state_out=ptr(outs["ssm_state"]), scratch=ptr(scratch),
                       **{STEP2_FIELDS[k]: ptr(v) for k, v in x.items()})


def run_step2(x, dtype, attrs, poison=float("nan"), tuning=None):
    """One Mamba-2 decode step, as run_step. Returns (status, {residual, conv_state,
    ssm_state})."""
    outs = layer_outputs(x, poison)
    return launch_layer(step2_params(x, outs, dtype, attrs), "mamba2_decode_layer", poison, tuning), outs


# --- Comparing ---------------------------------------------------------------------------------
def failures_over_splits(run, cfgs, refs, dtype, want_final):
    """Runs `run(cfg)` -> (status, y, final_state) for each forced work split and lists what
    differs from the float64 `refs` (y, final_state) beyond the tier (atol relative to the
    tensor's scale, docs/decisions.md), or the status of a launch that failed."""
    from ops_reference import mismatch

    fails = []
    for cfg in cfgs:
        rc, y, fs = run(cfg)
        if rc != 0:
            fails.append(f"cfg {cfg}: {error_string(rc)} ({rc})")
            continue
        fails.append(mismatch(to_host(y), refs[0], dtype, f"cfg {cfg} y", scaled_atol=True))
        if want_final:
            fails.append(mismatch(to_host(fs), refs[1], dtype, f"cfg {cfg} final_state", scaled_atol=True))
    return [f for f in fails if f]


# --- Seeded inputs, drawn on the device and rounded to T there ----------------------------------
def scan_inputs(batch, seqlen, dim, dstate, ngroups, dtype, opts, seed):
    """The CPU op tests' distributions (test_ops.py): A = -exp(N(0, 1)); delta ~ N(-1, 0.5) before
    softplus, or small and positive without it. T inputs are rounded to `dtype` on the device."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    sp = opts.get("softplus", True)
    sh = 1 if opts.get("shift") else 0  # D and delta_bias one element past an aligned address
    on = lambda k: opts.get(k, True)  # noqa: E731
    return {
        "u": r(batch, seqlen, dim).to(t),
        "delta": (0.5 * r(batch, seqlen, dim) - 1.0 if sp else (0.3 * r(batch, seqlen, dim)).abs() + 0.01).to(t),
        "A": (-torch.exp(r(dim, dstate))).contiguous(),
        "B": r(batch, seqlen, ngroups, dstate).to(t),
        "C": r(batch, seqlen, ngroups, dstate).to(t),
        "D": r(dim + sh)[sh:] if on("D") else None,
        "z": r(batch, seqlen, dim).to(t) if on("z") else None,
        "delta_bias": ((0.5 * r(dim + sh) if sp else (0.1 * r(dim + sh)).abs())[sh:]) if on("delta_bias") else None,
        "initial_state": r(batch, dim, dstate) if on("initial_state") else None,
    }


def ssd_inputs(batch, seqlen, heads, head_dim, ngroups, dstate, dtype, opts, seed):
    """test_ops_ssd.py's distributions: A = -exp(N(0, 0.25)); dt ~ N(-1, 0.25) before softplus, or
    small and positive without it. T inputs are rounded to `dtype` on the device."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    sp = opts.get("softplus", True)
    on = lambda k: opts.get(k, True)  # noqa: E731
    return {
        "x": r(batch, seqlen, heads, head_dim).to(t),
        "dt": (0.5 * r(batch, seqlen, heads) - 1.0 if sp else (0.1 * r(batch, seqlen, heads)).abs()).to(t),
        "A": -torch.exp(0.5 * r(heads)),
        "B": r(batch, seqlen, ngroups, dstate).to(t),
        "C": r(batch, seqlen, ngroups, dstate).to(t),
        "D": r(heads) if on("D") else None,
        "dt_bias": 0.5 * r(heads) - 1.0 if on("dt_bias") else None,
        "initial_state": r(batch, heads, head_dim, dstate) if on("initial_state") else None,
    }


def add_norm_inputs(batch, seqlen, hidden, dtype, opts, seed):
    """x ~ N(0, 1) in T, the float32 stream ~ N(0, 4^2) (a deep model's is larger than a mixer
    output), weight ~ 1 + N(0, 0.5^2). opts: residual (default on); shift: every buffer one element
    past an aligned address (the kernel's scalar path)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    sh = 1 if opts.get("shift") else 0
    n = batch * seqlen * hidden
    return {
        "x": r(n + sh).to(DTYPES[dtype][0])[sh:].view(batch, seqlen, hidden),
        "residual": (4.0 * r(n + sh))[sh:].view(batch, seqlen, hidden) if opts.get("residual", True) else None,
        "weight": (1.0 + 0.5 * r(hidden + sh))[sh:],
    }


def conv_inputs(batch, seqlen, dim, width, dtype, opts, seed):
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    sh = 1 if opts.get("shift") else 0  # weight and bias one element past an aligned address
    return {
        "x": r(batch, seqlen, dim).to(t),
        "weight": (0.5 * r(dim * width + sh)).to(t)[sh:].view(dim, width),
        "bias": r(dim + sh).to(t)[sh:] if opts.get("bias", True) else None,
        "initial_state": r(batch, dim, width - 1).to(t) if opts.get("initial_state", True) and width > 1 else None,
    }


def step_inputs(batch, hidden, inner, dstate, rank, width, dtype, opts, seed):
    """Weights stored [in, out] as the decode graph feeds them; the residual and ssm_state are
    float32 (docs/decode-graph.md), the rest T."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    on = lambda k, default=True: opts.get(k, default)  # noqa: E731
    return {
        "conv_state": r(batch, inner, width - 1).to(t),
        "ssm_state": r(batch, inner, dstate),
        "residual": r(batch, 1, hidden),
        "norm_weight": (1 + 0.1 * r(hidden)).float(),
        "in_proj_weight": (r(hidden, 2 * inner) / hidden ** 0.5).to(t),
        "in_proj_bias": (0.1 * r(2 * inner)).to(t) if on("proj_bias", False) else None,
        "conv_weight": (0.5 * r(inner, width)).to(t),
        "conv_bias": (0.1 * r(inner)).to(t) if on("conv_bias") else None,
        "x_proj_weight": (r(inner, rank + 2 * dstate) / inner ** 0.5).to(t),
        "dt_proj_weight": (r(rank, inner) / rank ** 0.5).to(t),
        "dt_bias": (0.5 * r(inner) - 1.0) if on("dt_bias") else None,
        "A": (-torch.exp(r(inner, dstate))).contiguous(),
        "D": r(inner) if on("D") else None,
        "out_proj_weight": (r(inner, hidden) / inner ** 0.5).to(t),
        "out_proj_bias": (0.1 * r(hidden)).to(t) if on("proj_bias", False) else None,
    }


def step2_inputs(batch, hidden, heads, head_dim, ngroups, dstate, width, dtype, opts, seed):
    """test_decode_graph_mamba2.py's distributions (step_feeds): weights scaled like a trained
    layer's, A = -exp(N(0, 1)), dt_bias ~ N(-1, 0.5) so softplus sees both signs. The residual,
    ssm_state and the per-head / norm weights are float32, the rest T. opts: "bias" (in_proj and
    out_proj biases, default on), "conv_bias", "dt_bias", "D" (default on)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    t = DTYPES[dtype][0]
    on = lambda k: opts.get(k, True)  # noqa: E731
    inner = heads * head_dim
    conv_dim = inner + 2 * ngroups * dstate
    in_dim = inner + conv_dim + heads
    return {
        "conv_state": r(batch, conv_dim, width - 1).to(t),
        "ssm_state": r(batch, heads, head_dim, dstate),
        "residual": r(batch, 1, hidden),
        "norm_weight": 1 + 0.1 * r(hidden),
        "in_proj_weight": (r(hidden, in_dim) / hidden ** 0.5).to(t),
        "in_proj_bias": (0.1 * r(in_dim)).to(t) if on("bias") else None,
        "conv_weight": (0.5 * r(conv_dim, width)).to(t),
        "conv_bias": (0.1 * r(conv_dim)).to(t) if on("conv_bias") else None,
        "dt_bias": 0.5 * r(heads) - 1.0 if on("dt_bias") else None,
        "A": -torch.exp(r(heads)),
        "D": r(heads) if on("D") else None,
        "gate_norm_weight": 1 + 0.1 * r(inner),
        "out_proj_weight": (r(inner, hidden) / inner ** 0.5).to(t),
        "out_proj_bias": (0.1 * r(hidden)).to(t) if on("bias") else None,
    }
