"""The chunked SSD decomposition of the CUDA prefill kernel (cpp/cuda/ssd_chunk_impl.cuh), as a
float64 numpy model of its exact steps, against ops_reference.ssd_scan_ref (step by step): the
math is proved on the CPU before a GPU runs it.

The model follows the kernel phase by phase, with its padding and masks:

1. prep: per (batch, head, chunk of Q steps) dt' = clamp(softplus(dt + dt_bias)) and the
   inclusive cumulative sum cs of dt' A inside the chunk; steps past the sequence take dt' = 0
   and a log-decay of exactly 0 (selected, not multiplied), so cs[Q - 1] is the decay of the
   chunk's real steps;
2. chunk states from zero: S[p, n] = sum_i (x[i, p] dt'[i] exp(cs[Q-1] - cs[i])) B[i, n];
3. state passing: H_0 = initial_state or 0, H_{c+1} = exp(cs_c[Q-1]) H_c + S_c; the last H is the
   final state;
4. output: y[i, p] = exp(cs[i]) (C H_c^T)[i, p] + sum_j M[i, j] x[j, p] + D x[i, p], with
   M[i, j] = (C_i . B_j) exp(cs[i] - cs[j]) dt'[j] for j <= i, and exactly 0 (a select) above;
   where x holds a NaN or an infinity the masked terms are left out of the sum (0 * inf).

`operand` rounds what the kernel rounds before a product (the scaled x of 2, the chunk-start
state H_c and M of 4) to the input type, and sums cs in float32 as the kernel does, so the
float32 / fp16 / bf16 cases show those roundings stay inside the op tiers of docs/op-contract.md
(scaled atol, as the GPU tests read them). Measured margins: float32 at chunk 256 is ~2e-6 of
max|y| against the 1e-5 tier."""

import numpy as np
import pytest

from ops_reference import BF16, mismatch, softplus, ssd_scan_ref

ROUND = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
if BF16 is not None:
    ROUND["bfloat16"] = BF16


def chunked_ssd(x, dt, A, B, C, D=None, dt_bias=None, initial_state=None, dt_softplus=True, dt_min=0.0,
                dt_max=np.inf, chunk=64, operand="float64", mask=True):
    """The kernel's decomposition in float64; returns (y, final_state) as ssd_scan_ref does.
    mask=False keeps M above the diagonal (a broken kernel, to show the comparison can fail)."""
    rnd = lambda a: a.astype(ROUND[operand]).astype(np.float64)  # noqa: E731
    x, dt, A, B, C = (np.asarray(a, np.float64) for a in (x, dt, A, B, C))
    batch, seqlen, heads, head_dim = x.shape
    ngroups, dstate = B.shape[2:]
    hpg = heads // ngroups
    nchunks = -(-seqlen // chunk)
    pad = nchunks * chunk - seqlen
    # Past the sequence: x, B, C = 0 and dt' = 0 with a log-decay of exactly 0.
    padded = lambda a: np.concatenate([a, np.zeros((batch, pad) + a.shape[2:])], axis=1)  # noqa: E731
    valid = np.arange(nchunks * chunk) < seqlen
    # 1. prep
    d = dt + (np.asarray(dt_bias, np.float64) if dt_bias is not None else 0.0)
    if dt_softplus:
        d = softplus(d)
    d = np.where(d < dt_min, dt_min, d)
    d = np.where(d > dt_max, dt_max, d)
    d = np.where(valid[None, :, None], padded(d), 0.0)  # [b, Lp, heads]
    la = np.where(valid[None, :, None], d * A, 0.0)
    d = d.reshape(batch, nchunks, chunk, heads)
    # Inclusive, per chunk; the kernel sums in float32 (sequentially here, in lane runs and a
    # shuffle scan there).
    acc = np.float64 if operand == "float64" else np.float32
    cs = np.cumsum(la.reshape(batch, nchunks, chunk, heads).astype(acc), axis=2).astype(np.float64)
    xc = padded(x).reshape(batch, nchunks, chunk, heads, head_dim)
    g = np.arange(heads) // hpg
    bc = padded(B).reshape(batch, nchunks, chunk, ngroups, dstate)[:, :, :, g]  # [b, c, Q, heads, N]
    cc = padded(C).reshape(batch, nchunks, chunk, ngroups, dstate)[:, :, :, g]
    # 2. chunk states from zero
    w = d * np.exp(cs[:, :, -1:, :] - cs)  # [b, c, Q, heads]
    xs = rnd(xc * w[..., None])
    S = np.einsum("bcihp,bcihn->bchpn", xs, bc)
    # 3. state passing
    H = np.zeros((batch, heads, head_dim, dstate)) if initial_state is None else np.asarray(initial_state, np.float64)
    starts = []
    for c in range(nchunks):
        starts.append(H)
        H = np.exp(cs[:, c, -1])[:, :, None, None] * H + S[:, c]
    # 4. output
    y = np.empty_like(xc)
    causal = np.tril(np.ones((chunk, chunk), bool)) if mask else np.ones((chunk, chunk), bool)
    for c in range(nchunks):
        cb = np.einsum("bihn,bjhn->bhij", cc[:, c], bc[:, c])
        csc = cs[:, c].transpose(0, 2, 1)  # [b, heads, Q]
        seg = np.where(causal, csc[:, :, :, None] - csc[:, :, None, :], -np.inf)
        M = rnd(np.where(causal, cb * np.exp(seg) * d[:, c].transpose(0, 2, 1)[:, :, None, :], 0.0))
        if np.isfinite(xc[:, c]).all():
            intra = np.einsum("bhij,bjhp->bihp", M, xc[:, c])
        else:  # the kernel sums a tile holding a non-finite x without the masked terms (0 * inf)
            with np.errstate(invalid="ignore"):
                prod = M[..., None] * xc[:, c].transpose(0, 2, 1, 3)[:, :, None]  # [b, heads, i, j, p]
            intra = np.where(causal[None, None, :, :, None], prod, 0.0).sum(3).transpose(0, 2, 1, 3)
        off = np.einsum("bihn,bhpn->bihp", cc[:, c], rnd(starts[c])) * np.exp(cs[:, c])[..., None]
        y[:, c] = intra + off
        if D is not None:
            y[:, c] += np.asarray(D, np.float64)[:, None] * xc[:, c]
    return y.reshape(batch, nchunks * chunk, heads, head_dim)[:, :seqlen], H


def inputs(rng, batch, seqlen, heads, head_dim, ngroups, dstate, dtype="float64", init=True, softplus_on=True):
    """test_ops_ssd.py's distributions (and cuda_harness.ssd_inputs'), rounded to `dtype`."""
    t = lambda a: a.astype(ROUND[dtype]).astype(np.float64)  # noqa: E731
    r = rng.standard_normal
    dt = 0.5 * r((batch, seqlen, heads)) - 1.0 if softplus_on else np.abs(0.1 * r((batch, seqlen, heads)))
    return dict(
        x=t(r((batch, seqlen, heads, head_dim))), dt=t(dt), A=-np.exp(0.5 * r(heads)),
        B=t(r((batch, seqlen, ngroups, dstate))), C=t(r((batch, seqlen, ngroups, dstate))), D=r(heads),
        dt_bias=0.5 * r(heads) - 1.0, initial_state=r((batch, heads, head_dim, dstate)) if init else None)


# (batch, seqlen, heads, head_dim, ngroups, dstate, chunk): chunks that do and do not divide
# seqlen, one chunk longer than the sequence, one step, groups of 1, 2 and one a head.
EXACT = [(2, 64, 4, 8, 2, 16, 16), (1, 100, 3, 5, 1, 7, 16), (2, 37, 6, 4, 3, 16, 64), (1, 1, 2, 3, 1, 4, 16),
         (1, 300, 8, 16, 8, 32, 64), (1, 257, 2, 8, 1, 64, 256), (2, 513, 4, 8, 2, 16, 128)]


@pytest.mark.parametrize("shape", EXACT, ids=lambda s: "B{}-L{}-H{}-P{}-G{}-N{}-Q{}".format(*s))
@pytest.mark.parametrize("init", [True, False], ids=["init", "zeros"])
@pytest.mark.parametrize("limit", [None, (0.05, 0.5)], ids=["nolimit", "limit"])
def test_chunked_decomposition_is_the_scan(shape, init, limit):
    """In float64 the decomposition is the step-by-step scan up to rounding (1e-10 relative)."""
    *dims, chunk = shape
    rng = np.random.default_rng(sum(shape))
    feeds = inputs(rng, *dims, init=init)
    lim = dict(dt_min=limit[0], dt_max=limit[1]) if limit else {}
    y, h = chunked_ssd(**feeds, chunk=chunk, **lim)
    ry, rh = ssd_scan_ref(**feeds, **lim)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-10 * np.abs(ry).max())
    np.testing.assert_allclose(h, rh, rtol=1e-10, atol=1e-10 * np.abs(rh).max())


def test_without_softplus_d_or_dt_bias():
    rng = np.random.default_rng(3)
    feeds = inputs(rng, 2, 90, 4, 6, 2, 8, softplus_on=False)
    feeds.update(D=None, dt_bias=None)
    y, h = chunked_ssd(**feeds, dt_softplus=False, chunk=32)
    ry, rh = ssd_scan_ref(**feeds, dt_softplus=False)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-10 * np.abs(ry).max())
    np.testing.assert_allclose(h, rh, rtol=1e-10, atol=1e-10 * np.abs(rh).max())


def test_a_broken_mask_is_caught():
    """The comparison can fail: the model without its causal mask (every M[i, j] kept) is far
    from the scan."""
    rng = np.random.default_rng(4)
    feeds = inputs(rng, 1, 40, 2, 4, 1, 8)
    ry, _ = ssd_scan_ref(**feeds)
    y, _ = chunked_ssd(**feeds, chunk=16, mask=False)
    assert mismatch(y, ry, "float32", "y", scaled_atol=True) is not None


# The kernel's operand roundings, on the shapes of the GPU grid (head_dim 64, dstate 64 / 128,
# long sequences, chunk 64 / 256 and one that does not divide seqlen): within the op tier.
ROUNDED = [(1, 1000, 4, 64, 2, 128, 256), (1, 1000, 8, 64, 8, 64, 64), (2, 300, 2, 64, 1, 128, 128)]


@pytest.mark.parametrize("shape", ROUNDED, ids=lambda s: "B{}-L{}-H{}-P{}-G{}-N{}-Q{}".format(*s))
@pytest.mark.parametrize("dtype", [d for d in ("float32", "float16", "bfloat16") if d in ROUND])
def test_operand_roundings_stay_in_the_tier(shape, dtype):
    *dims, chunk = shape
    rng = np.random.default_rng(sum(shape) + len(dtype))
    feeds = inputs(rng, *dims, dtype=dtype)
    ry, rh = ssd_scan_ref(**feeds)
    y, h = chunked_ssd(**feeds, chunk=chunk, operand=dtype)
    # y is stored as T by the kernel: round it as the kernel's store does.
    y = y.astype(ROUND[dtype]).astype(np.float64)
    assert mismatch(y, ry, dtype, "y", scaled_atol=True) is None
    assert mismatch(h, rh, dtype, "final_state", scaled_atol=True) is None


@pytest.mark.parametrize("dtype", [d for d in ("float32", "float16", "bfloat16") if d in ROUND])
@pytest.mark.parametrize("dstate", [1, 5, 64])
@pytest.mark.parametrize("special", ["nan", "inf", "-inf"])
def test_nonfinite_x_positions(special, dstate, dtype):
    """What tests/python/gpu/test_ssd_scan_cuda.py test_chunked_nonfinite_x asks of the kernel,
    shown for the decomposition first (same shape, steps and chunk): a NaN in x gives the
    reference's NaN positions; an infinity its non-finite positions in y (C . B summed before x
    multiplies it may give +-inf where the step equations add +inf to -inf) and its exact kinds in
    the final state; y stays finite before the special step."""
    rng = np.random.default_rng(13 + dstate)
    feeds = inputs(rng, 1, 100, 2, 3, 1, dstate, dtype=dtype)
    feeds["x"][0, 40, 1, 2] = float(special)
    feeds["x"][0, 70, 0, 1] = float(special)
    with np.errstate(invalid="ignore", over="ignore"):
        ry, rh = ssd_scan_ref(**feeds)
        y, h = chunked_ssd(**feeds, chunk=64, operand=dtype)
    y = y.astype(ROUND[dtype]).astype(np.float64)
    assert np.isfinite(y[0, :40]).all() and np.isfinite(y[0, :70, 0]).all()
    assert mismatch(y, ry, dtype, "y", scaled_atol=True, any_nonfinite=special != "nan") is None
    assert mismatch(h, rh, dtype, "final_state", scaled_atol=True) is None
