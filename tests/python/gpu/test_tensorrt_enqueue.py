"""The TensorRT plugins' enqueue on a CUDA device, through the harness that plays TensorRT's part
(tests/python/trt_harness.py): fields -> createPlugin -> configurePlugin / getWorkspaceSize ->
attachToContext -> onShapeChange -> enqueue on a stream of the harness's own, over an op grid,
every output compared whole with the float64 references and tiers of ops_reference.py (AddRmsNorm
too, with and without its residual) (SsdScan
with the CUDA kernels' scaled atol, `mismatch(scaled_atol=True)`, as tests/python/gpu/
test_ssd_scan_cuda.py holds them), and the sliced inputs' offset fields. MambaLayerStep is compared in float32 with a float64 reference of docs/decode-graph.md's
equations (its 16-bit path rounds intermediates to T, which that reference does not model).

On the H200: tools/build-tensorrt.sh here, carry target/tensorrt/libmambac_trt.so and
target/tensorrt/trt_harness (not the whole folder: its obj/ is most of the 64 MiB a call takes)
and pytest, then `python3 -m pytest -q tests/python/gpu/test_tensorrt_enqueue.py`. Skips without
a CUDA device."""

import os
import sys

import numpy as np
import pytest

# The shared test modules live one folder up (this file needs no conftest of its own).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops_reference import (  # noqa: E402
    DTYPES,
    add_rms_norm_ref,
    assert_close,
    MAMBA2_STEP_INPUTS,
    causal_conv1d_ref,
    f64,
    mamba2_layer_step_ref,
    mismatch,
    selective_scan_ref,
    softplus,
    ssd_scan_ref,
    worst_rel,
)
from trt_harness import require_built, run  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="no CUDA device")


@pytest.fixture(autouse=True)
def built():
    require_built()


def enqueue(tmp_path, op, fields, inputs, profiles=None):
    """Runs one plugin on the device; `inputs` is a list of arrays (present inputs, in order).
    `profiles`: per input, None or the (min, max) shapes of the build profile (default: its shape)."""
    names = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}
    if DTYPES.get("bfloat16"):
        names[np.dtype(DTYPES["bfloat16"][0])] = "bfloat16"
    dims = lambda shape: ",".join(map(str, shape))  # noqa: E731
    script = f"op {op}\n" + "".join(f"field {f}\n" for f in fields) + "create\n"
    for i, a in enumerate(inputs):
        bounds = (profiles or [None] * len(inputs))[i]
        script += f"in {names[a.dtype]} {dims(a.shape)}" + (f" {dims(bounds[0])}:{dims(bounds[1])}" if bounds else "") + "\n"
        np.ascontiguousarray(a).tofile(tmp_path / f"in{i}.bin")
    out = run(script + f"run {tmp_path}\n", tmp_path)
    assert [l for l in out if l.startswith("log ")] == [], out
    assert out[-1].startswith("enqueue rc=0"), out
    tmp_path.joinpath("workspace").write_text(out[-1].split("workspace=")[1])
    return tmp_path


def read(tmp_path, k, dtype, shape):
    return np.fromfile(tmp_path / f"out{k}.bin", dtype=dtype).reshape(shape)


SCAN_GRID = [
    # batch, seqlen, dim, dstate, ngroups, optional inputs, delta_softplus
    (2, 37, 64, 16, 1, "all", 1),
    (1, 300, 128, 16, 2, "all", 1),
    (3, 2, 48, 16, 1, "all", 0),   # the per-step (decode) kernel
    (2, 64, 32, 8, 4, "none", 1),  # no D, z, delta_bias, initial_state
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", SCAN_GRID, ids=str)
def test_selective_scan(tmp_path, dtype, case):
    batch, seqlen, dim, dstate, ngroups, optional, softplus_on = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(seqlen * 31 + dim)
    u = rng.standard_normal((batch, seqlen, dim)).astype(t)
    delta = (rng.standard_normal((batch, seqlen, dim)) * 0.5).astype(t)
    A = -np.exp(rng.standard_normal((dim, dstate)) * 0.5).astype(np.float32)
    B = rng.standard_normal((batch, seqlen, ngroups, dstate)).astype(t)
    C = rng.standard_normal((batch, seqlen, ngroups, dstate)).astype(t)
    inputs = [u, delta, A, B, C]
    extra = {}
    if optional == "all":
        extra = dict(D=rng.standard_normal(dim).astype(np.float32), z=rng.standard_normal((batch, seqlen, dim)).astype(t),
                     delta_bias=(rng.standard_normal(dim) * 0.3).astype(np.float32),
                     initial_state=rng.standard_normal((batch, dim, dstate)).astype(np.float32))
        inputs += list(extra.values())
    d = enqueue(tmp_path, "SelectiveScan", [f"delta_softplus i32 {softplus_on}"], inputs)
    y_ref, h_ref = selective_scan_ref(u, delta, A, B, C, **extra, delta_softplus=bool(softplus_on))
    assert_close(read(d, 0, t, y_ref.shape), y_ref, dtype, "y")
    assert_close(read(d, 1, np.float32, h_ref.shape), h_ref, "float32" if dtype == "float32" else dtype, "final_state")


SSD_GRID = [
    # batch, seqlen, heads, head_dim, ngroups, dstate, optional inputs, dt_softplus, (dt_min, dt_max)
    (2, 20, 4, 16, 1, 16, "all", 1, None),            # below kSsdChunkedMinSeqlen: the step kernel
    (3, 32, 6, 8, 3, 16, "none", 1, None),            # the last step-kernel length; no D, dt_bias, state
    (1, 200, 8, 64, 2, 64, "all", 1, None),           # chunked: 2 chunks of 128, the last partial
    (2, 77, 6, 24, 3, 32, "none", 1, (0.05, 0.5)),    # chunks of 64; a clamping time_step_limit
    (1, 600, 4, 32, 4, 128, "all", 0, None),          # 3 chunks of 256; a group a head; no softplus
]


def ssd_arrays(batch, seqlen, heads, head_dim, ngroups, dstate, optional, softplus_on, t, seed):
    """test_ops_ssd.py's distributions: A = -exp(N(0, 0.25)); dt ~ N(-1, 0.25) before softplus,
    small and positive without it. Returns (present inputs in slot order, the reference's kwargs)."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    dt = 0.5 * r(batch, seqlen, heads) - 1.0 if softplus_on else np.abs(0.1 * r(batch, seqlen, heads))
    inputs = [r(batch, seqlen, heads, head_dim).astype(t), dt.astype(t), -np.exp(0.5 * r(heads)).astype(np.float32),
              r(batch, seqlen, ngroups, dstate).astype(t), r(batch, seqlen, ngroups, dstate).astype(t)]
    extra = {}
    if optional == "all":
        extra = dict(D=r(heads).astype(np.float32), dt_bias=(0.5 * r(heads) - 1.0).astype(np.float32),
                     initial_state=r(batch, heads, head_dim, dstate).astype(np.float32))
    return inputs + list(extra.values()), extra


def check_ssd(d, inputs, extra, dtype, t, softplus_on, limit=None):
    lo, hi = limit or (0.0, np.inf)
    y_ref, h_ref = ssd_scan_ref(*inputs[:5], **extra, dt_softplus=bool(softplus_on), dt_min=lo, dt_max=hi)
    fails = [mismatch(read(d, 0, t, y_ref.shape), y_ref, dtype, "y", scaled_atol=True),
             mismatch(read(d, 1, np.float32, h_ref.shape), h_ref, dtype, "final_state", scaled_atol=True)]
    assert [f for f in fails if f] == []


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", SSD_GRID, ids=str)
def test_ssd_scan(tmp_path, dtype, case):
    batch, seqlen, heads, head_dim, ngroups, dstate, optional, softplus_on, limit = case
    t = DTYPES[dtype][0]
    inputs, extra = ssd_arrays(*case[:8], t, seed=seqlen * 31 + heads)
    fields = [f"dt_softplus i32 {softplus_on}"] + ([f"dt_min f32 {limit[0]}", f"dt_max f32 {limit[1]}"] if limit else [])
    d = enqueue(tmp_path, "SsdScan", fields, inputs)
    # The chunked prefill runs exactly when the plugin asked TensorRT for its scratch.
    assert (int(d.joinpath("workspace").read_text()) > 0) == (seqlen >= 33)
    check_ssd(d, inputs, extra, dtype, t, softplus_on, limit)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_ssd_scan_below_the_profile_max(tmp_path, dtype):
    """Built for seqlen 1 to 600, run at 512: 4 chunks of 128 want more scratch than 600's 3 of
    256 (32 heads of 64 x 128 states), so a workspace sized at the max shape alone would be short."""
    t = DTYPES[dtype][0]
    inputs, extra = ssd_arrays(1, 512, 32, 64, 1, 128, "all", 1, t, seed=512)
    # x, dt, B and C carry seqlen; A, D, dt_bias and the state (batch 1) have one shape.
    profiles = [((1, 1) + a.shape[2:], (1, 600) + a.shape[2:]) if i in (0, 1, 3, 4) else None
                for i, a in enumerate(inputs)]
    d = enqueue(tmp_path, "SsdScan", [], inputs, profiles)
    check_ssd(d, inputs, extra, dtype, t, 1)


CONV_GRID = [(2, 40, 64, 4, True, "silu"), (1, 3, 32, 4, True, "none"), (2, 17, 16, 3, False, "silu")]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CONV_GRID, ids=str)
def test_causal_conv1d(tmp_path, dtype, case):
    batch, seqlen, dim, width, with_optional, act = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(seqlen * 7 + dim)
    x = rng.standard_normal((batch, seqlen, dim)).astype(t)
    w = rng.standard_normal((dim, width)).astype(t)
    inputs, extra = [x, w], {}
    if with_optional:
        extra = dict(bias=rng.standard_normal(dim).astype(t), initial_state=rng.standard_normal((batch, dim, width - 1)).astype(t))
        inputs += list(extra.values())
    d = enqueue(tmp_path, "CausalConv1d", [f"activation str {act}"], inputs)
    y_ref, s_ref = causal_conv1d_ref(x, w, **extra, silu=act == "silu")
    assert_close(read(d, 0, t, y_ref.shape), y_ref, dtype, "y")
    assert_close(read(d, 1, t, s_ref.shape), s_ref, dtype, "final_state")


# Sliced inputs (docs/op-contract.md "Sliced inputs"): the packed tensors go in whole with the
# offset fields; the references take the slices. dt_rank 8 keeps Mamba-1's 16-byte rows (the
# vector paths), 5 breaks them (the scalar paths).
SLICED_SCAN_GRID = [(2, 37, 64, 16, 1, 8), (1, 300, 128, 16, 2, 5), (3, 2, 48, 16, 1, 8)]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", SLICED_SCAN_GRID, ids=str)
def test_selective_scan_reads_slices(tmp_path, dtype, case):
    batch, seqlen, dim, dstate, ngroups, rank = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(seqlen * 17 + rank)
    r = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    u, delta = r(batch, seqlen, dim).astype(t), (0.5 * r(batch, seqlen, dim)).astype(t)
    A = -np.exp(0.5 * r(dim, dstate)).astype(np.float32)
    xz = r(batch, seqlen, 2 * dim).astype(t)  # in_proj's output: x, then z
    dbc = r(batch, seqlen, ngroups, rank + 2 * dstate).astype(t)  # x_proj's: dt, B, C
    D, delta_bias = r(dim).astype(np.float32), (0.3 * r(dim)).astype(np.float32)
    state = r(batch, dim, dstate).astype(np.float32)
    fields = ["delta_softplus i32 1", f"z_offset i32 {dim}", f"B_offset i32 {rank}", f"C_offset i32 {rank + dstate}"]
    d = enqueue(tmp_path, "SelectiveScan", fields, [u, delta, A, dbc, dbc, D, xz, delta_bias, state])
    y_ref, h_ref = selective_scan_ref(u, delta, A, dbc[..., rank:rank + dstate], dbc[..., rank + dstate:], D=D,
                                      z=xz[..., dim:], delta_bias=delta_bias, initial_state=state, delta_softplus=True)
    assert_close(read(d, 0, t, y_ref.shape), y_ref, dtype, "y")
    assert_close(read(d, 1, np.float32, h_ref.shape), h_ref, "float32" if dtype == "float32" else dtype, "final_state")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", [(2, 40, 64, 4, 0, 128), (1, 17, 24, 3, 5, 31)], ids=str)
def test_causal_conv1d_reads_a_slice(tmp_path, dtype, case):
    batch, seqlen, dim, width, offset, row = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(seqlen * 13 + offset)
    packed = rng.standard_normal((batch, seqlen, row)).astype(t)
    w, bias = rng.standard_normal((dim, width)).astype(t), rng.standard_normal(dim).astype(t)
    state = rng.standard_normal((batch, dim, width - 1)).astype(t)
    d = enqueue(tmp_path, "CausalConv1d", ["activation str silu", f"x_offset i32 {offset}"], [packed, w, bias, state])
    y_ref, s_ref = causal_conv1d_ref(packed[..., offset:offset + dim], w, bias=bias, initial_state=state, silu=True)
    assert_close(read(d, 0, t, y_ref.shape), y_ref, dtype, "y")
    assert_close(read(d, 1, t, s_ref.shape), s_ref, dtype, "final_state")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("seqlen", [20, 200])  # the step kernel, the chunked prefill
def test_ssd_scan_reads_a_dt_slice(tmp_path, dtype, seqlen):
    t = DTYPES[dtype][0]
    inputs, extra = ssd_arrays(2, seqlen, 8, 16, 2, 32, "all", 1, t, seed=seqlen + 3)
    offset, tail = 40, 3  # Mamba-2's in_proj output: [z | xBC | dt], here with numbers around dt
    rng = np.random.default_rng(seqlen)
    packed = rng.standard_normal((2, seqlen, offset + 8 + tail)).astype(t)
    packed[..., offset:offset + 8] = inputs[1]
    d = enqueue(tmp_path, "SsdScan", [f"dt_offset i32 {offset}"], [inputs[0], packed] + inputs[2:])
    check_ssd(d, inputs, extra, dtype, t, 1)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("seqlen", [20, 200])  # the step kernel, the chunked prefill
@pytest.mark.parametrize("layout", ["mamba2", "odd"])
def test_ssd_scan_reads_packed_x_b_c(tmp_path, dtype, seqlen, layout):
    """x, B and C from one packed [batch, seqlen, row] (Mamba-2's conv output [x | B | C], or odd
    offsets with numbers around them), head_dim, ngroups and dstate as fields."""
    t = DTYPES[dtype][0]
    heads, head_dim, ngroups, dstate = 8, 16, 2, 32
    inner, gn = heads * head_dim, ngroups * dstate
    inputs, extra = ssd_arrays(2, seqlen, heads, head_dim, ngroups, dstate, "all", 1, t, seed=seqlen + 7)
    x_o, b_o, c_o = (0, inner, inner + gn) if layout == "mamba2" else (3, inner + 70, inner + 5)
    row = max(x_o + inner, b_o + gn, c_o + gn) + (0 if layout == "mamba2" else 1)
    packed = np.random.default_rng(seqlen).standard_normal((2, seqlen, row)).astype(t)
    packed[..., x_o:x_o + inner] = inputs[0].reshape(2, seqlen, inner)
    packed[..., b_o:b_o + gn] = inputs[3].reshape(2, seqlen, gn)
    packed[..., c_o:c_o + gn] = inputs[4].reshape(2, seqlen, gn)
    fields = [f"x_offset i32 {x_o}", f"B_offset i32 {b_o}", f"C_offset i32 {c_o}", f"head_dim i32 {head_dim}",
              f"ngroups i32 {ngroups}", f"dstate i32 {dstate}"]
    d = enqueue(tmp_path, "SsdScan", fields, [packed, inputs[1], inputs[2], packed, packed] + inputs[5:])
    assert (int(d.joinpath("workspace").read_text()) > 0) == (seqlen >= 33)  # 200: the chunked prefill ran
    check_ssd(d, inputs, extra, dtype, t, 1)


def layer_step_ref(conv_state, h, r, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w, eps):
    """MambaLayerStep (docs/decode-graph.md) in float64, without in_proj_bias and out_proj_bias."""
    conv_state, h, r, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w = map(
        f64, (conv_state, h, r, norm_w, in_w, conv_w, conv_b, x_w, dt_w, dt_b, A, D, out_w))
    inner, rank, n = conv_state.shape[1], dt_w.shape[0], A.shape[1]
    v = r[:, 0] / np.sqrt((r[:, 0] ** 2).mean(-1, keepdims=True) + eps) * norm_w
    xz = v @ in_w
    x, z = xz[:, :inner], xz[:, inner:]
    window = np.concatenate([conv_state, x[:, :, None]], axis=2)
    xc = (window * conv_w).sum(-1) + conv_b
    xc = xc / (1 + np.exp(-xc))
    dbc = xc @ x_w
    dt = softplus(dbc[:, :rank] @ dt_w + dt_b)
    Bm, Cm = dbc[:, rank:rank + n], dbc[:, rank + n:]
    h2 = np.exp(dt[..., None] * A) * h + dt[..., None] * Bm[:, None, :] * xc[..., None]
    y = ((h2 * Cm[:, None, :]).sum(-1) + D * xc) * (z / (1 + np.exp(-z)))
    return r + (y @ out_w)[:, None, :], window[:, :, 1:], h2


@pytest.mark.parametrize("batch", [1, 3])
def test_mamba_layer_step_float32(tmp_path, batch):
    hidden, inner, n, rank, width, eps = 64, 128, 16, 4, 4, 1e-5
    rng = np.random.default_rng(batch)
    f = np.float32
    arrays = [
        rng.standard_normal((batch, inner, width - 1)).astype(f),   # conv_state
        rng.standard_normal((batch, inner, n)).astype(f),           # ssm_state
        rng.standard_normal((batch, 1, hidden)).astype(f),          # residual
        (1 + 0.1 * rng.standard_normal(hidden)).astype(f),          # norm_weight
        (rng.standard_normal((hidden, 2 * inner)) / 8).astype(f),   # in_proj_weight
        (rng.standard_normal((inner, width)) / 2).astype(f),        # conv_weight
        (rng.standard_normal(inner) / 4).astype(f),                 # conv_bias
        (rng.standard_normal((inner, rank + 2 * n)) / 11).astype(f),  # x_proj_weight
        (rng.standard_normal((rank, inner)) / 2).astype(f),         # dt_proj_weight
        (rng.standard_normal(inner) / 4).astype(f),                 # dt_bias
        -np.exp(rng.standard_normal((inner, n)) / 2).astype(f),     # A
        rng.standard_normal(inner).astype(f),                       # D
        (rng.standard_normal((inner, hidden)) / 11).astype(f),      # out_proj_weight
    ]
    mask = (1 << 15) - 1 - (1 << 5) - (1 << 14)  # no in_proj_bias, no out_proj_bias
    d = enqueue(tmp_path, "MambaLayerStep", [f"present_inputs i32 {mask}", f"epsilon f32 {eps}"], arrays)
    refs = layer_step_ref(*arrays, eps)
    for k, (name, ref) in enumerate(zip(["residual_out", "conv_state_out", "ssm_state_out"], refs)):
        assert_close(read(d, k, np.float32, ref.shape), ref, "float32", name)


MAMBA2_GRID = [
    # batch, hidden, heads, head_dim, ngroups, dstate, width, biases, norm_before_gate, (dt_min, dt_max)
    (2, 64, 4, 16, 2, 16, 4, True, False, None),
    (3, 40, 6, 4, 3, 5, 3, False, True, (0.05, 0.5)),  # no in_proj / conv / out_proj bias: a gap in the slots
]


def mamba2_arrays(batch, hidden, heads, head_dim, ngroups, dstate, width, biases, t, seed):
    """tests/python/gpu/cuda_harness.py step2_inputs' distributions: weights scaled like a trained
    layer's, A = -exp(N(0, 1)), dt_bias ~ N(-1, 0.5). The residual, ssm_state, the per-head and
    norm weights are float32, the rest T. Returns {name: array} of the present inputs."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    f = np.float32
    inner = heads * head_dim
    conv_dim = inner + 2 * ngroups * dstate
    in_dim = inner + conv_dim + heads
    a = {
        "conv_state": r(batch, conv_dim, width - 1).astype(t),
        "ssm_state": r(batch, heads, head_dim, dstate).astype(f),
        "residual": r(batch, 1, hidden).astype(f),
        "norm_weight": (1 + 0.1 * r(hidden)).astype(f),
        "in_proj_weight": (r(hidden, in_dim) / hidden ** 0.5).astype(t),
        "in_proj_bias": (0.1 * r(in_dim)).astype(t),
        "conv_weight": (0.5 * r(conv_dim, width)).astype(t),
        "conv_bias": (0.1 * r(conv_dim)).astype(t),
        "dt_bias": (0.5 * r(heads) - 1.0).astype(f),
        "A": -np.exp(r(heads)).astype(f),
        "D": r(heads).astype(f),
        "gate_norm_weight": (1 + 0.1 * r(inner)).astype(f),
        "out_proj_weight": (r(inner, hidden) / inner ** 0.5).astype(t),
        "out_proj_bias": (0.1 * r(hidden)).astype(t),
    }
    if not biases:
        for k in ("in_proj_bias", "conv_bias", "out_proj_bias"):
            del a[k]
    return a


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", MAMBA2_GRID, ids=str)
def test_mamba2_layer_step(tmp_path, dtype, case):
    batch, hidden, heads, head_dim, ngroups, dstate, width, biases, nbg, limit = case
    t = DTYPES[dtype][0]
    feeds = mamba2_arrays(batch, hidden, heads, head_dim, ngroups, dstate, width, biases, t, seed=hidden + batch)
    present = [n for n in MAMBA2_STEP_INPUTS if n in feeds]
    mask = sum(1 << k for k, n in enumerate(MAMBA2_STEP_INPUTS) if n in feeds)
    lo, hi = limit or (0.0, np.inf)
    fields = [f"present_inputs i32 {mask}", "epsilon f32 1e-5", f"norm_before_gate i32 {int(nbg)}"]
    fields += [f"dt_min f32 {lo}", f"dt_max f32 {hi}"] if limit else []
    d = enqueue(tmp_path, "Mamba2LayerStep", fields, [feeds[n] for n in present])
    res_ref, conv_ref, ssm_ref = mamba2_layer_step_ref(feeds, 1e-5, lo, hi, nbg)
    residual = feeds["residual"]
    got = [read(d, 0, np.float32, res_ref.shape), read(d, 1, t, conv_ref.shape), read(d, 2, np.float32, ssm_ref.shape)]
    fails = [
        # The layer's contribution, not residual_out itself: the residual would hide its error.
        mismatch(got[0] - residual, res_ref - residual, dtype, "residual_out - residual", scaled_atol=True),
        mismatch(got[1], conv_ref, dtype, "conv_state_out", scaled_atol=True),
        mismatch(got[2], ssm_ref, dtype, "ssm_state_out", scaled_atol=True),
    ]
    assert [f for f in fails if f] == []
    assert worst_rel(got[2], feeds["ssm_state"]) > 1e-2  # the state moved


ADD_NORM_GRID = [
    # batch, seqlen, hidden, residual present
    (2, 7, 2560, True),
    (1, 64, 768, False),   # the first layer's node: no residual (present_inputs 0b101)
    (3, 5, 13, True),      # odd hidden: the kernel's scalar path
    (64, 1, 2560, True),   # a decode batch
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", ADD_NORM_GRID, ids=str)
def test_add_rms_norm(tmp_path, dtype, case):
    batch, seqlen, hidden, residual = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(hidden + seqlen)
    x = rng.standard_normal((batch, seqlen, hidden)).astype(t)
    r = (4.0 * rng.standard_normal((batch, seqlen, hidden))).astype(np.float32)
    w = (1.0 + 0.5 * rng.standard_normal(hidden)).astype(np.float32)
    fields = ["epsilon f32 0.00001"] + ([] if residual else ["present_inputs i32 5"])
    d = enqueue(tmp_path, "AddRmsNorm", fields, [x, r, w] if residual else [x, w])
    y_ref, s_ref = add_rms_norm_ref(x, r if residual else None, w, 1e-5)
    assert_close(read(d, 0, t, y_ref.shape), y_ref, dtype, "y")
    assert_close(read(d, 1, np.float32, s_ref.shape), s_ref, "float32", "residual_out")


# GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): (batch, seqlen, d, group_size, z row, z_offset
# or None, norm_before_gate). A z row of d + 2 * 64 + 8 read at 0 is Mamba-2's in_proj output;
# an odd offset takes the scalar path.
GATED_NORM_GRID = [(2, 37, 256, 256, 0, None, 0), (1, 300, 512, 64, 512 + 136, 0, 0),
                   (3, 2, 96, 32, 200, 5, 1), (1, 1, 5120, 5120, 0, None, 1)]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", GATED_NORM_GRID, ids=str)
def test_gated_rms_norm(tmp_path, dtype, case):
    from ops_reference import gated_rms_norm_ref

    batch, seqlen, d, gs, row, offset, nbg = case
    t = DTYPES[dtype][0]
    rng = np.random.default_rng(seqlen * 11 + d)
    y = (2 * rng.standard_normal((batch, seqlen, d))).astype(t)
    z = (2 * rng.standard_normal((batch, seqlen, row or d))).astype(t)
    w = (1 + 0.5 * rng.standard_normal(d)).astype(np.float32)
    fields = [f"group_size i32 {gs}", f"norm_before_gate i32 {nbg}"]
    if offset is not None:
        fields.append(f"z_offset i32 {offset}")
    d_ = enqueue(tmp_path, "GatedRmsNorm", fields, [y, z, w])
    zs = z if offset is None else z[..., offset:offset + d]
    ref = gated_rms_norm_ref(y, zs, w, d // gs, 1e-5, bool(nbg))
    assert_close(read(d_, 0, t, ref.shape), ref, dtype, "out")
