"""Sliced inputs on the CUDA kernels (docs/op-contract.md "Sliced inputs"): SsdScan's dt, x, B and C
(Mamba-2's in_proj and conv outputs), SelectiveScan's z, B
and C and CausalConv1d's x read as channels of packed tensors (views of Mamba-1's xz and x_proj
outputs, and odd offsets and rows that break the 16-byte vector loads), through every work split,
against the float64 references of the slices, outputs NaN-poisoned. Tier as the other GPU tests.

Run on the device: PYTHONPATH=.device/pylib python3 -m pytest -q tests/python/gpu/test_sliced_inputs_cuda.py
"""

import ast

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import torch  # noqa: E402
from cuda_harness import conv_inputs, failures_over_splits, run_conv, run_scan, scan_inputs, to_host  # noqa: E402
from ops_reference import CONV_INPUTS, SCAN_INPUTS, causal_conv1d_ref, selective_scan_ref  # noqa: E402

ALL_T = ("float32", "float16", "bfloat16")
# test_selective_scan_cuda.py's forced splits: block split (1 and 2 channels a thread), warp
# split, per-step and tiled-at-decode kernels; None = automatic.
SCAN_SPLITS = [None, (4, 0, 1, 0, 1), (4, 0, 3, 12, 1), (4, 0, 1, 0, 2), (4, 16, 3, 8, 2), (4, 0, -4, 8),
               (4, 0, -8, 8), (4, 4, -8, 8), (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, -1)]


def tails(tail):
    """(xz's tail, x_proj's tail): one number for both, or a pair."""
    return tail if isinstance(tail, tuple) else (tail, tail)


def packed_scan_inputs(batch, seqlen, dim, dstate, ngroups, dt_rank, z_pad, tail, dtype, seed):
    """scan_inputs with z a view of xz [b, L, z_pad + dim + tail] at channel z_pad, and B, C views
    of x_proj's [b, L, ngroups, dt_rank + 2 dstate + tail] at dt_rank and dt_rank + dstate (tail:
    one number, or (xz's, x_proj's)). The other channels hold numbers too, so a wrong offset or
    stride reads them."""
    z_tail, bc_tail = tails(tail)
    x = scan_inputs(batch, seqlen, dim, dstate, ngroups, dtype, {}, seed)
    g = torch.Generator(device=x["u"].device).manual_seed(seed + 1)
    t = x["u"].dtype
    xz = torch.randn(batch, seqlen, z_pad + dim + z_tail, generator=g, device=x["u"].device).to(t)
    xz[..., z_pad:z_pad + dim] = x["z"]
    dbc = torch.randn(batch, seqlen, ngroups, dt_rank + 2 * dstate + bc_tail, generator=g, device=x["u"].device).to(t)
    dbc[..., dt_rank:dt_rank + dstate] = x["B"]
    dbc[..., dt_rank + dstate:dt_rank + 2 * dstate] = x["C"]
    x["z"] = xz[..., z_pad:z_pad + dim]
    x["B"] = dbc[..., dt_rank:dt_rank + dstate]
    x["C"] = dbc[..., dt_rank + dstate:dt_rank + 2 * dstate]
    return x


# (batch, seqlen, dim, dstate, ngroups, dt_rank, z_pad, tail). Mamba-1's layout: z_pad = dim (x
# first), tail 0, dt_rank a multiple of 8: every row 16-byte aligned (the vector paths: block
# split, warp split). dt_rank, z_pad or tail of 3 or 5 break it (the scalar paths); a pair of
# tails breaks only z's rows (3, 0) or only B's and C's (0, 4: 16-bit types only), so each of the
# launcher's alignment tests is needed on its own; 8 groups of 8 channels put several groups in
# one block of the vector path.
SCAN_CASES = [
    (1, 300, 256, 16, 1, 16, 256, 0), (2, 301, 256, 16, 2, 8, 256, 0), (1, 2048, 1536, 16, 1, 96, 1536, 0),
    (2, 1, 5120, 16, 1, 160, 5120, 0), (64, 1, 136, 16, 1, 8, 136, 0), (1, 99, 64, 32, 1, 8, 64, 0),
    (1, 200, 96, 16, 1, 3, 5, 1), (2, 7, 136, 16, 1, 5, 3, 3), (8, 1, 520, 16, 1, 3, 520, 0),
    (1, 50, 16, 64, 2, 5, 2, 1), (1, 300, 256, 16, 1, 16, 256, 3),
    (2, 300, 256, 16, 1, 16, 256, (3, 0)), (2, 300, 256, 16, 1, 16, 256, (0, 4)), (1, 300, 64, 16, 8, 8, 64, 0),
]


def aligned(dtype, *sizes):
    """Whether every size keeps 16-byte rows: a multiple of the elements in 16 bytes."""
    v = 4 if dtype == "float32" else 8
    return all(s % v == 0 for s in sizes)


def scan_needs_vectors(cfg):
    """A forced SelectiveScan split that only has a 16-byte vector path: the block split with
    several lanes a channel or two channels a thread, and the warp split (negative lanes)."""
    return cfg is not None and len(cfg) in (4, 5) and (cfg[2] > 1 or cfg[2] < 0 or (len(cfg) == 5 and cfg[4] == 2))


def conv_needs_vectors(cfg):
    """A forced CausalConv1d config of 4 or 8 channels a thread (vector loads only)."""
    return cfg is not None and len(cfg) == 2 and cfg[0] > 1


def vector_refusals_only(fails, is_aligned, needs_vectors):
    """The failures that count: a forced split that needs the 16-byte vectors is refused
    (cudaErrorInvalidValue, "invalid argument") where the slices break their alignment, never run
    wrong; the automatic choice and the scalar splits always run."""
    def forgiven(f):
        return (not is_aligned and "invalid argument" in f and f.startswith("cfg ")
                and needs_vectors(ast.literal_eval(f[4:f.index(":")])))  # the cfg failures_over_splits wrote
    return [f for f in fails if not forgiven(f)]


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("case", SCAN_CASES,
                         ids=lambda c: "B{}-L{}-D{}-N{}-G{}-R{}-Z{}-T{}".format(*c[:7], "-".join(map(str, tails(c[7])))))
def test_slice_scan_reads_packed_z_b_c(case, dtype):
    batch, seqlen, dim, dstate, ngroups, dt_rank, z_pad, tail = case
    x = packed_scan_inputs(batch, seqlen, dim, dstate, ngroups, dt_rank, z_pad, tail, dtype, seed=seqlen + dim)
    assert not x["z"].is_contiguous() and not x["B"].is_contiguous()
    refs = selective_scan_ref(*(to_host(x[n]) for n in SCAN_INPUTS))
    # Forced splits a shape cannot take report cudaErrorInvalidValue; those are the unsliced
    # test's business: here only splits the shape takes unsliced count.
    contiguous = {k: (v.contiguous() if v is not None else None) for k, v in x.items()}
    cfgs = [c for c in SCAN_SPLITS if run_scan(contiguous, dtype, True, True, c)[0] == 0]
    assert None in cfgs
    fails = failures_over_splits(lambda cfg: run_scan(x, dtype, True, True, cfg), cfgs, refs, dtype, True)
    fails = vector_refusals_only(fails, aligned(dtype, dt_rank, z_pad, *tails(tail)), scan_needs_vectors)
    assert not fails, "\n".join(fails)


CONV_SPLITS = [None, (4, 8), (4, 32), (0, 0, 1), (0, 0, -1)]
CONV_SPLITS_HALF = CONV_SPLITS + [(8, 8), (8, 16)]

# (batch, seqlen, dim, width, offset, row): Mamba-1's x at 0 of xz (row 2 dim) and odd offsets/rows.
CONV_CASES = [
    (1, 2048, 5120, 4, 0, 10240), (2, 300, 1000, 4, 0, 2000), (2, 300, 128, 4, 3, 133), (1, 64, 1024, 3, 8, 1040),
    (1, 1, 5120, 4, 0, 10240), (8, 1, 136, 4, 1, 139), (1, 40, 24, 6, 5, 30), (2, 33, 40, 2, 2, 45),
    (2, 300, 128, 4, 0, 130), (2, 300, 128, 4, 8, 140),  # aligned offset, misaligned row: the stride test alone
]


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "B{}-L{}-D{}-K{}-O{}-R{}".format(*c))
def test_slice_conv_reads_packed_x(case, dtype):
    batch, seqlen, dim, width, offset, row = case
    x = conv_inputs(batch, seqlen, dim, width, dtype, {}, seed=seqlen + row)
    g = torch.Generator(device=x["x"].device).manual_seed(row)
    packed = torch.randn(batch, seqlen, row, generator=g, device=x["x"].device).to(x["x"].dtype)
    packed[..., offset:offset + dim] = x["x"]
    x["x"] = packed[..., offset:offset + dim]
    refs = causal_conv1d_ref(*(to_host(x[n]) for n in CONV_INPUTS))
    splits = CONV_SPLITS_HALF if dtype != "float32" else CONV_SPLITS
    contiguous = {k: (v.contiguous() if v is not None else None) for k, v in x.items()}
    cfgs = [c for c in splits if run_conv(contiguous, dtype, True, True, c)[0] == 0]
    assert None in cfgs
    fails = failures_over_splits(lambda cfg: run_conv(x, dtype, True, True, cfg), cfgs, refs, dtype, True)
    # The conv's vectors are 4 or 8 channels (8 or 16 bytes): alignment to 8 channels covers both.
    fails = vector_refusals_only(fails, offset % 8 == 0 and row % 8 == 0, conv_needs_vectors)
    assert not fails, "\n".join(fails)


# SsdScan's dt from Mamba-2's in_proj output [z | xBC | dt]: (batch, seqlen, heads, head_dim,
# ngroups, dstate, offset, tail), through the step kernel and the chunked prefill.
SSD_CASES = [(1, 300, 8, 64, 1, 128, 8448, 0), (2, 65, 6, 16, 2, 16, 3, 1), (4, 1, 24, 64, 1, 128, 6400, 0),
             (1, 40, 3, 5, 1, 8, 1, 2)]
SSD_PATHS = [None, (1, 0), (-1, 64), (-1, 128)]


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("case", SSD_CASES, ids=lambda c: "B{}-L{}-H{}-P{}-G{}-N{}-O{}-T{}".format(*c))
def test_slice_ssd_reads_packed_dt(case, dtype):
    from cuda_harness import run_ssd, ssd_inputs
    from ops_reference import SSD_INPUTS, ssd_scan_ref

    batch, seqlen, heads, head_dim, ngroups, dstate, offset, tail = case
    x = ssd_inputs(batch, seqlen, heads, head_dim, ngroups, dstate, dtype, {}, seed=seqlen + heads)
    g = torch.Generator(device=x["x"].device).manual_seed(offset)
    packed = torch.randn(batch, seqlen, offset + heads + tail, generator=g, device=x["x"].device).to(x["x"].dtype)
    packed[..., offset:offset + heads] = x["dt"]
    x["dt"] = packed[..., offset:offset + heads]
    refs = ssd_scan_ref(*(to_host(x[n]) for n in SSD_INPUTS))
    paths = [p for p in SSD_PATHS if p is None or p[0] == 1 or seqlen > 1]
    fails = failures_over_splits(lambda cfg: run_ssd(x, dtype, True, True, cfg=cfg), paths, refs, dtype, True)
    assert not fails, "\n".join(fails)


# SsdScan's x, B and C from Mamba-2's conv output [x (I) | B (G N) | C (G N)] (offsets None) or
# odd offsets and rows that break the chunked path's 16-byte tile loads: (batch, seqlen, heads,
# head_dim, ngroups, dstate, (x, B, C offsets) or None, tail), through the step kernel and the
# chunked prefill at chunks 64 and 128. mamba2-2.7b's layer (80 heads of 64, 1 group of 128) at
# decode and prefill, 2 groups, odd sizes, tiles past the first.
SSD_PACKED_CASES = [(1, 300, 80, 64, 1, 128, None, 0), (4, 1, 80, 64, 1, 128, None, 0),
                    (2, 65, 6, 16, 2, 16, None, 0), (2, 65, 6, 16, 2, 16, (3, 101, 133), 5),
                    (1, 40, 3, 5, 1, 8, (9, 0, 30), 1), (1, 130, 4, 32, 2, 64, (256, 0, 128), 8),
                    # head_dim 96 and dstate 80: second p and n tiles (tp, tn > 0) read through slices
                    (1, 200, 2, 96, 1, 80, (5, 197, 283), 3)]


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("case", SSD_PACKED_CASES, ids=lambda c: "B{}-L{}-H{}-P{}-G{}-N{}-{}".format(*c[:6], c[6]))
def test_slice_ssd_reads_packed_x_b_c(case, dtype):
    from cuda_harness import run_ssd, ssd_inputs
    from ops_reference import SSD_INPUTS, ssd_scan_ref

    batch, seqlen, heads, head_dim, ngroups, dstate, offsets, tail = case
    inner, gn = heads * head_dim, ngroups * dstate
    x_o, b_o, c_o = offsets or (0, inner, inner + gn)
    row = max(x_o + inner, b_o + gn, c_o + gn) + tail
    x = ssd_inputs(batch, seqlen, heads, head_dim, ngroups, dstate, dtype, {}, seed=seqlen + heads + row)
    g = torch.Generator(device=x["x"].device).manual_seed(row)
    packed = torch.randn(batch, seqlen, row, generator=g, device=x["x"].device).to(x["x"].dtype)
    packed[..., x_o:x_o + inner] = x["x"].reshape(batch, seqlen, inner)
    packed[..., b_o:b_o + gn] = x["B"].reshape(batch, seqlen, gn)
    packed[..., c_o:c_o + gn] = x["C"].reshape(batch, seqlen, gn)
    x["x"] = packed[..., x_o:x_o + inner].unflatten(-1, (heads, head_dim))
    x["B"] = packed[..., b_o:b_o + gn].unflatten(-1, (ngroups, dstate))
    x["C"] = packed[..., c_o:c_o + gn].unflatten(-1, (ngroups, dstate))
    refs = ssd_scan_ref(*(to_host(x[n]) for n in SSD_INPUTS))
    paths = [p for p in SSD_PATHS if p is None or p[0] == 1 or seqlen > 1]
    fails = failures_over_splits(lambda cfg: run_ssd(x, dtype, True, True, cfg=cfg), paths, refs, dtype, True)
    assert not fails, "\n".join(fails)
