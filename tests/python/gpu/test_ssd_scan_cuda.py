"""SsdScan's CUDA kernels against ops_reference.ssd_scan_ref (float64).

1. The step kernel (cpp/cuda/ssd_scan_impl.cuh) and the automatic choice: a grid over heads,
   head_dim, groups, dstate (1, 16, 64, 128, and the 256 / 512 register layouts), seqlen (1, 2,
   37, 300), float32 / float16 / bfloat16, with and without D, dt_bias, initial and final state,
   softplus and a clamping time_step_limit; the mamba2-2.7b and Codestral shapes; the empty and
   refused shapes. Each case runs as the shape chooses (the one-token kernel at seqlen 1, the
   chunked prefill from seqlen 33) and with the step kernel forced.
2. The chunked prefill (cpp/cuda/ssd_chunk_impl.cuh) forced, at chunk 64, 128 and 256: chunks that
   do and do not divide seqlen, long sequences (1000-4096), groups 1 / 2 / 8, head_dim 64 and
   odd ones, dstate 64 / 128 and odd ones up to 512, every dtype, initial state on and off; its
   scratch (missing, misaligned) and config errors; NaN and infinities in x.

Outputs and the chunked path's scratch are NaN-poisoned so an element not written (or read
before it is written) fails. Tier: ops_reference.TIERS with atol taken relative to the tensor's
scale (docs/decisions.md, long float32 scans), as for SelectiveScan's kernels."""

import ctypes
import itertools

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import torch  # noqa: E402
from cuda_harness import (error_string, failures_over_splits, launch_ssd, lib, off_16_bytes, run_ssd,  # noqa: E402
                          ssd_inputs, ssd_params, ssd_scratch, to_host)
from ops_reference import SSD_INPUTS, mismatch, ssd_scan_ref  # noqa: E402

ALL_T = ("float32", "float16", "bfloat16")
ALL = {}
NONE = {"D": False, "dt_bias": False, "initial_state": False, "final": False, "softplus": False}
OPTION_SETS = [NONE, {"D": False}, {"dt_bias": False}, {"initial_state": False}, {"final": False},
               {"softplus": False}, {"limit": (0.05, 0.5)}, {"softplus": False, "limit": (0.02, 0.08)}]
# (heads, head_dim, ngroups): one head, odd sizes, groups of 1, 2, 3 and one a head.
SHAPES = [(1, 1, 1), (3, 5, 1), (4, 16, 2), (6, 33, 3), (8, 64, 8), (2, 64, 1)]
DSTATES = (1, 16, 64, 128)
SEQLENS = (1, 2, 37, 300)

# (batch, seqlen, heads, head_dim, ngroups, dstate, options)
CASES = [(1 + i % 2, L, *SHAPES[i % len(SHAPES)], n, ALL)
         for i, (n, L) in enumerate(itertools.product(DSTATES, SEQLENS))]
CASES += [(2, 37, 6, 24, 3, n, o) for n in (16, 64) for o in OPTION_SETS]
CASES += [(2, 1, 6, 24, 3, 128, o) for o in OPTION_SETS]
CASES += [
    (1, 37, 2, 8, 1, 256, ALL),  # 32 lanes x 8 states
    (2, 20, 4, 4, 2, 512, ALL),  # 32 lanes x 16 states: the kernel's largest
    (1, 9, 2, 8, 1, 200, ALL),  # dstate not a multiple of the lanes
    (2, 5, 4, 8, 2, 0, ALL),  # no state: y = D x
    (1, 1, 80, 64, 1, 128, ALL),  # mamba2-2.7b decode
    (8, 1, 80, 64, 1, 128, ALL),
    (1, 130, 80, 64, 1, 128, ALL),  # mamba2-2.7b prefill
    (2, 1, 128, 64, 8, 128, ALL),  # Codestral decode
    # The one-token kernel (automatic at seqlen 1): four rows a lane group from 8192 rows, rows
    # of a group across heads (head_dim 245) and past the end; every lane count (dstate / 4).
    (16, 1, 80, 64, 1, 128, ALL),
    (5, 1, 7, 245, 7, 64, ALL),
    (3, 1, 64, 48, 4, 32, ALL),
    (2, 1, 9, 7, 3, 8, ALL),
    (2, 1, 5, 3, 1, 4, ALL),
    (70, 1, 4, 33, 2, 16, {"initial_state": False}),
    (1, 1, 3, 5, 1, 12, ALL),  # dstate / 4 not a power of two: the step kernel
    (1, 33, 128, 64, 8, 128, {"initial_state": False}),
]


def case_id(c):
    b, L, h, p, g, n, opts = c
    off = ",".join(k for k, v in opts.items() if v is False) or "all"
    lim = f"-limit{opts['limit'][0]}-{opts['limit'][1]}" if "limit" in opts else ""
    return f"B{b}-L{L}-H{h}-P{p}-G{g}-N{n}-{off}{lim}"


STEP = (1, 0)  # SsdConfig (path, chunk): the step kernel forced


def check(case, dtype, seed, cfgs=(None, STEP)):
    """The kernels' y and final state against the float64 reference, for each forced config
    (None = as the shape chooses); [] when within the tier."""
    batch, seqlen, heads, head_dim, ngroups, dstate, opts = case
    softplus, want_final = opts.get("softplus", True), opts.get("final", True)
    lo, hi = opts.get("limit", (0.0, float("inf")))
    x = ssd_inputs(batch, seqlen, heads, head_dim, ngroups, dstate, dtype, opts, seed)
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS), dt_softplus=softplus, dt_min=lo, dt_max=hi)
    return failures_over_splits(lambda cfg: run_ssd(x, dtype, softplus, want_final, lo, hi, cfg=cfg), cfgs, refs,
                                dtype, want_final)


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in ALL_T]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_ssd_scan_matches_float64(case, dtype):
    fails = check(case, dtype, seed=case[1] * 7 + case[3] + case[5])
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("init", [True, False], ids=["initial_state", "zeros"])
def test_empty_sequence_writes_the_state_through(init):
    fails = check((2, 0, 4, 8, 2, 16, {"initial_state": init}), "float16", seed=5)
    assert not fails, "\n".join(fails)


def test_no_rows_returns_at_once():
    x = ssd_inputs(0, 5, 4, 8, 2, 16, "float32", ALL, seed=6)
    rc, y, fs = run_ssd(x, "float32", True, True)
    assert rc == 0, error_string(rc)
    assert y.numel() == 0 and fs.numel() == 0


def test_dstate_past_the_kernel_is_refused_untouched():
    x = ssd_inputs(1, 3, 2, 4, 1, 513, "float32", ALL, seed=7)
    rc, y, fs = run_ssd(x, "float32", True, True)
    assert error_string(rc) == "invalid argument"
    assert torch.isnan(y).all() and torch.isnan(fs).all()


@pytest.mark.parametrize("dstate", [1, 5, 16])
def test_infinite_x_stays_infinite_where_the_equations_say(dstate):
    """States past dstate in a lane's registers must not turn an infinite x into NaN (0 * inf):
    the NaN and +-inf positions of y and the final state must be the reference's."""
    x = ssd_inputs(1, 4, 2, 3, 1, dstate, "float32", ALL, seed=8)
    x["x"][0, 1, 1, 2] = float("inf")
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS))
    fails = failures_over_splits(lambda _: run_ssd(x, "float32", True, True), (None,), refs, "float32", True)
    assert not fails, "\n".join(fails)


# --- The chunked prefill, forced ------------------------------------------------------------------
def chunked(q):
    return (-1, q)  # SsdConfig (path, chunk)


# (batch, seqlen, heads, head_dim, ngroups, dstate, options, chunk)
CHUNK_CASES = [
    (1, 1000, 8, 64, 1, 128, ALL, 256),  # 3 chunks and 232 steps
    (1, 1024, 8, 64, 8, 128, ALL, 256),  # chunks divide seqlen; a group a head
    (2, 1000, 8, 64, 2, 64, {"initial_state": False}, 128),
    (1, 4096, 4, 64, 2, 128, {"initial_state": False}, 256),
    (1, 2000, 16, 64, 8, 64, ALL, 64),
    (1, 1536, 8, 64, 1, 64, ALL, 128),
    (2, 300, 6, 64, 3, 128, {"D": False, "dt_bias": False}, 128),
    (1, 130, 80, 64, 1, 128, ALL, 64),  # mamba2-2.7b prefill
    (1, 600, 16, 64, 8, 128, {"final": False}, 256),  # Codestral's groups
    (2, 100, 4, 64, 2, 64, {"softplus": False, "limit": (0.02, 0.08)}, 64),
    (1, 500, 4, 64, 1, 64, {"limit": (0.05, 0.5)}, 256),
    (1, 37, 4, 16, 2, 16, ALL, 64),  # one partial chunk
    (1, 1, 2, 64, 1, 64, ALL, 64),  # one step
    (2, 150, 3, 5, 1, 7, ALL, 64),  # head_dim and dstate far from the tiles
    (1, 200, 2, 100, 1, 200, ALL, 128),  # two head_dim tiles, four dstate tiles, both partial
    (1, 257, 2, 8, 1, 512, ALL, 64),  # the largest dstate
]


def chunk_id(c):
    return f"{case_id(c[:7])}-Q{c[7]}"


CHUNK_PARAMS = [pytest.param(c, t, id=f"{chunk_id(c)}-{t}") for c in CHUNK_CASES for t in ALL_T]


@pytest.mark.parametrize("case,dtype", CHUNK_PARAMS)
def test_chunked_prefill_matches_float64(case, dtype):
    fails = check(case[:7], dtype, seed=case[1] * 3 + case[3] + case[5] + case[7], cfgs=(chunked(case[7]),))
    assert not fails, "\n".join(fails)


def test_the_chunked_path_starts_at_33_steps():
    """cpp/cuda/ssd_scan.h kSsdChunkedMinSeqlen: scratch is asked for (the chunked path) from 33
    steps on, none below; and the step kernel forced asks for none."""
    def scratch_bytes(seqlen, cfg=None):
        x = ssd_inputs(1, seqlen, 4, 16, 2, 16, "float16", ALL, seed=9)
        p = ctypes.byref(ssd_params(x, x["x"], None, "float16", True))
        if cfg is None:
            return lib.mambac_cuda_ssd_scan_scratch_bytes(p)
        return lib.mambac_cuda_ssd_scan_cfg_scratch_bytes(p, *cfg)

    assert scratch_bytes(32) == 0
    assert scratch_bytes(33) > 0
    assert scratch_bytes(1000, STEP) == 0
    assert scratch_bytes(32, chunked(64)) > 0


def test_chunked_without_scratch_is_refused_untouched():
    x = ssd_inputs(1, 100, 4, 16, 2, 16, "float16", ALL, seed=10)
    rc, y, fs = run_ssd(x, "float16", True, True, cfg=chunked(64), scratch=False)
    assert error_string(rc) == "invalid argument"
    assert torch.isnan(y).all() and torch.isnan(fs).all()


def test_chunked_with_misaligned_scratch_is_refused_untouched():
    # The chunked kernels read their scratch in 16-byte vectors (cpp/cuda/ssd_scan.h).
    x = ssd_inputs(1, 100, 4, 16, 2, 16, "float16", ALL, seed=11)
    y = torch.full(x["x"].shape, float("nan"), dtype=x["x"].dtype, device=x["x"].device)
    fs = torch.full((1, 4, 16, 16), float("nan"), device=x["x"].device)
    p = ssd_params(x, y, fs, "float16", True)
    nbytes = lib.mambac_cuda_ssd_scan_cfg_scratch_bytes(ctypes.byref(p), *chunked(64))
    buf = torch.full((nbytes // 4 + 4,), float("nan"), device=x["x"].device)
    p.scratch = buf.data_ptr() + 4
    rc = launch_ssd(p, chunked(64))
    torch.cuda.synchronize()
    assert error_string(rc) == "invalid argument"
    assert torch.isnan(y).all() and torch.isnan(fs).all()


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("seqlen", [1, 300])
def test_states_off_16_bytes_match_float64(seqlen, dtype):
    """initial_state and final_state 4 bytes past a 16-byte boundary: the chunked state pass
    (seqlen 300, cpp/cuda/ssd_chunk_impl.cuh) reads and writes them one element a thread instead
    of in float4s; at seqlen 1 the step kernel runs instead of the one-token kernel
    (cpp/cuda/ssd_token_impl.cuh)."""
    x = ssd_inputs(8, seqlen, 16, 64, 2, 16, dtype, ALL, seed=12) if seqlen == 1 else \
        ssd_inputs(1, 300, 4, 16, 2, 16, dtype, ALL, seed=12)
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS))
    fs = off_16_bytes(x["initial_state"], fill=float("nan"))
    x = dict(x, initial_state=off_16_bytes(x["initial_state"]))
    y = torch.full(x["x"].shape, float("nan"), dtype=x["x"].dtype, device=x["x"].device)
    p = ssd_params(x, y, fs, dtype, True)
    cfg = chunked(64) if seqlen > 1 else None
    buf = ssd_scratch(p, cfg)
    p.scratch = buf.data_ptr() if buf is not None else 0
    rc = launch_ssd(p, cfg)
    torch.cuda.synchronize()
    assert rc == 0, error_string(rc)
    fails = [mismatch(to_host(y), refs[0], dtype, "y", scaled_atol=True),
             mismatch(to_host(fs), refs[1], dtype, "final_state", scaled_atol=True)]
    assert not any(fails), "\n".join(f for f in fails if f)


def test_automatic_without_scratch_takes_the_step_kernel():
    """A caller that gives no scratch (one built before the chunked path) still gets the scan."""
    x = ssd_inputs(1, 100, 4, 16, 2, 16, "float32", ALL, seed=11)
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS))
    fails = failures_over_splits(lambda _: run_ssd(x, "float32", True, True, scratch=False), (None,), refs,
                                 "float32", True)
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("chunk", [32, 100, 512])
def test_a_chunk_the_kernel_has_not_is_refused_untouched(chunk):
    x = ssd_inputs(1, 100, 4, 16, 2, 16, "float16", ALL, seed=12)
    rc, y, fs = run_ssd(x, "float16", True, True, cfg=chunked(chunk))
    assert error_string(rc) == "invalid argument"
    assert torch.isnan(y).all() and torch.isnan(fs).all()


@pytest.mark.parametrize("dtype", ALL_T)
@pytest.mark.parametrize("dstate", [1, 5, 64])
@pytest.mark.parametrize("special", ["nan", "inf", "-inf"])
def test_chunked_nonfinite_x(special, dstate, dtype):
    """A NaN or an infinity in x, inside a chunk (step 40 of chunk 0, which shares a tile of the
    intra-chunk product with earlier steps, and step 70 of chunk 1): y stays finite before it, in
    its row and chunk alike (the kernel sums such a tile without the masked terms). A NaN gives
    the reference's NaN positions exactly. An infinity gives the reference's non-finite
    positions, of any kind in y: the chunked product sums C . B before the infinite x multiplies
    it (+-inf), where the step equations put x into dstate states first and may add +inf and -inf
    (NaN); the final state has its exact kinds."""
    x = ssd_inputs(1, 100, 2, 3, 1, dstate, dtype, ALL, seed=13 + dstate)
    x["x"][0, 40, 1, 2] = float(special)
    x["x"][0, 70, 0, 1] = float(special)
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS))
    rc, y, fs = run_ssd(x, dtype, True, True, cfg=chunked(64))
    assert rc == 0, error_string(rc)
    loose = special != "nan"
    fails = [mismatch(to_host(y), refs[0], dtype, "y", scaled_atol=True, any_nonfinite=loose),
             mismatch(to_host(fs), refs[1], dtype, "final_state", scaled_atol=True)]
    assert not any(fails), "\n".join(f for f in fails if f)
