"""Shared helpers of the Python tests: paths, the float64 reference of the fused ops
(DESIGN.md's equations, written independently of the Rust and C++ code), and the error metric."""

import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
MAMBA1_FIXTURES = ["mamba-tiny-hf", "mamba-tiny-ssm"]


def mambac_bin() -> Path:
    return Path(os.environ.get("MAMBAC_BIN", ROOT / "target" / "release" / "mambac"))


def ops_lib() -> Path:
    return Path(os.environ.get("MAMBAC_OPS_LIB", ROOT / "target" / "release" / "libmambac_ops.so"))


def model_session(model, threads=2):
    """A stock onnxruntime CPU session of an exported model with libmambac_ops.so registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def mambac(*args, check=True):
    """Runs the mambac CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([str(mambac_bin()), *map(str, args)], capture_output=True, text=True, check=check)


def load_reference(fixture="mamba-tiny-hf"):
    from safetensors.numpy import load_file

    # mamba-tiny-ssm holds the same weights as mamba-tiny-hf and has no reference of its own.
    return load_file(str(TESTDATA / "mamba-tiny-hf" / "reference.safetensors"))


def worst_rel(out, ref):
    """DESIGN.md's model-level metric: max|out - ref| / max|ref|; NaN gives inf."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape}"
    diff = np.abs(out - ref)
    if np.isnan(diff).any():
        return float("inf")
    return float(diff.max() / np.abs(ref).max())


def softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def silu(x):
    return x / (1.0 + np.exp(-x))


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, delta_softplus=True):
    """DESIGN.md SelectiveScan in float64. u, delta, z: [b, l, d]; A: [d, n]; B, C: [b, l, g, n]."""
    u, delta, A, B, C = (np.asarray(t, dtype=np.float64) for t in (u, delta, A, B, C))
    b, l, d = u.shape
    g, n = B.shape[2], B.shape[3]
    dt = delta + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    if delta_softplus:
        dt = softplus(dt)
    group_of = np.arange(d) // (d // g)
    Bd = B[:, :, group_of, :]  # [b, l, d, n]
    Cd = C[:, :, group_of, :]
    h = np.zeros((b, d, n)) if initial_state is None else np.asarray(initial_state, np.float64).copy()
    y = np.empty((b, l, d))
    for t in range(l):
        h = np.exp(dt[:, t, :, None] * A[None]) * h + (dt[:, t, :] * u[:, t, :])[:, :, None] * Bd[:, t]
        y[:, t] = np.einsum("bdn,bdn->bd", Cd[:, t], h)
    if D is not None:
        y = y + u * np.asarray(D, np.float64)
    if z is not None:
        y = y * silu(np.asarray(z, np.float64))
    return y, h


def causal_conv1d_ref(x, weight, bias=None, initial_state=None, activation="silu"):
    """DESIGN.md CausalConv1d in float64. x: [b, l, d]; weight: [d, w]; state: [b, d, w-1]."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    b, l, d = x.shape
    w = weight.shape[1]
    past = np.zeros((b, d, w - 1)) if initial_state is None else np.asarray(initial_state, np.float64)
    hist = np.concatenate([past, x.transpose(0, 2, 1)], axis=2)  # [b, d, w-1+l]
    y = np.zeros((b, l, d))
    for k in range(w):
        y += (hist[:, :, k : k + l] * weight[None, :, k, None]).transpose(0, 2, 1)
    if bias is not None:
        y += np.asarray(bias, np.float64)
    if activation == "silu":
        y = silu(y)
    return y, hist[:, :, l:]
