"""SelectiveScan's CUDA kernels against ops_reference.selective_scan_ref (float64): the op grid of
odd sizes, every optional input and output, every forced work split (block split, channels a
thread, warp split, per-step decode kernel) and the benchmark shapes, float32 / float16 / bfloat16,
outputs NaN-poisoned so an element not written fails. Tier: ops_reference.TIERS with atol taken
relative to the tensor's scale (docs/decisions.md, long float32 scans)."""

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
from cuda_harness import failures_over_splits, run_scan, scan_inputs, to_host  # noqa: E402
from ops_reference import SCAN_INPUTS, selective_scan_ref  # noqa: E402

ALL = {}
NONE = {"z": False, "D": False, "delta_bias": False, "softplus": False, "initial_state": False, "final": False}
OPTION_SETS = [NONE, {"z": False}, {"D": False}, {"delta_bias": False}, {"softplus": False},
               {"initial_state": False}, {"final": False}]
# ScanConfig (lanes, channels a block, sub-chunks, steps a sub-chunk, channels a thread, step);
# 0 = automatic; sub-chunks < 0 force the warp split; step 1 = the per-step kernel, -1 = never it.
SPLITS = [(4, 0, 1, 0, 1), (4, 0, 2, 8, 1), (4, 0, 3, 12, 1), (4, 0, 8, 8, 1), (4, 16, 4, 12, 1), (8, 0, 2, 16),
          (8, 0, 1, 0), (16, 0, 4, 16), (4, 0, 1, 0, 2), (4, 16, 3, 8, 2), (4, 32, 2, 12, 2), (4, 16, 8, 12, 2)]
WARP = [(4, 0, -2, 8), (4, 0, -2, 12), (4, 0, -4, 8), (4, 0, -4, 12), (4, 0, -8, 8), (4, 0, -8, 12),
        (4, 4, -8, 8), (4, 8, -8, 8)]
STEP, TILED = (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, -1)
F32 = ("float32",)
ALL_T = ("float32", "float16", "bfloat16")

# (batch, seqlen, dim, dstate, ngroups, options, work splits (None = automatic), dtypes)
CASES = [(b, L, d, n, g, ALL, (None,), ALL_T) for (b, L, d, n, g) in [
    (1, 1, 1, 1, 1), (2, 7, 5, 4, 1), (2, 300, 130, 16, 2), (1, 300, 130, 1, 1), (3, 33, 40, 8, 1),
    (1, 77, 24, 32, 1), (1, 50, 16, 64, 2), (1, 20, 8, 256, 1), (1, 300, 96, 4, 3), (1, 300, 128, 16, 4),
    (2, 2100, 64, 16, 1), (1, 300, 128, 16, 128)]]
CASES += [(2, 300, 136, 16, 1, o, (None,), ALL_T) for o in OPTION_SETS]
CASES += [(1, 65, 5, 16, 1, o, (None,), F32) for o in OPTION_SETS]
CASES += [
    (2, 301, 256, 16, 2, ALL, SPLITS + WARP, ALL_T),
    (1, 1000, 64, 16, 1, {"initial_state": False}, SPLITS + WARP, ALL_T),
    (1, 200, 96, 16, 3, ALL, [(4, 16, 3, 8, 2), (4, 0, 1, 0, 2)] + WARP, ALL_T),
    (2, 99, 64, 8, 1, ALL, [(2, 0, 1, 0), (2, 0, 3, 12), (2, 0, 8, 12)], ALL_T),
    (2, 99, 64, 4, 2, ALL, [(1, 0, 1, 0), (1, 0, 5, 12)], F32),
    (1, 99, 64, 32, 1, ALL, [(8, 0, 1, 0), (8, 0, 4, 8)], ALL_T),
]
CASES += [(b, L, 24, 16, 1, ALL, [None] + WARP, ALL_T) for (b, L) in [(2, 1), (3, 7), (1, 95), (2, 97)]]
CASES += [(2, 300, 136, 16, 1, o, [(4, 0, -4, 8), (4, 0, -8, 12), (4, 4, -8, 8)], ALL_T) for o in OPTION_SETS]
# The benchmark shapes with their own configurations.
CASES += [
    (1, 2048, 5120, 16, 1, ALL, (None, (4, 0, -4, 8), (4, 0, -8, 8)), ALL_T),
    (1, 2048, 1536, 16, 1, ALL, (None, (4, 8, -8, 8), (4, 4, -8, 8)), ALL_T),
    (2, 512, 5120, 16, 1, ALL, (None,), ("float16",)),
    # D and delta_bias one element off 16-byte alignment: the prep's scalar parameter loads.
    (8, 200, 256, 16, 1, {"shift": True}, (None, (4, 0, 1, 0, 1), (4, 0, 3, 12, 1), (4, 0, -4, 8)), ALL_T),
]
# Decode steps: automatic at seqlen 1 (the one-token kernel where dstate / 4 is a power of two up
# to 32, four batch rows a lane group from 8192 rows; else the per-step kernel), the per-step
# kernel forced (STEP; also on longer sequences) and the tiled kernels forced (TILED).
CASES += [(b, L, d, n, g, ALL, (None, STEP, TILED), ALL_T) for (b, L, d, n, g) in [
    (1, 1, 5120, 16, 1), (8, 1, 5120, 16, 1), (3, 1, 40, 8, 2), (2, 1, 130, 1, 1), (1, 1, 8, 256, 1),
    (2, 1, 24, 16, 3), (1, 1, 7, 5, 1), (64, 1, 136, 16, 1), (64, 1, 5120, 16, 1), (5, 1, 2000, 16, 1),
    (6, 1, 2048, 32, 2), (4, 1, 2048, 64, 1), (4, 1, 2048, 128, 4), (9, 1, 1000, 4, 1), (3, 1, 50, 12, 1)]]
CASES += [(2, 1, 136, 16, 1, o, (None,), ALL_T) for o in OPTION_SETS]
CASES += [(2, 9, 136, 16, 2, o, (STEP,), ALL_T) for o in OPTION_SETS]
CASES += [(b, L, d, n, g, ALL, (STEP,), ALL_T) for (b, L, d, n, g) in [
    (2, 2, 40, 16, 1), (1, 7, 130, 16, 2), (3, 33, 24, 64, 1), (1, 300, 64, 16, 1)]]


def case_id(c):
    b, L, d, n, g, opts, cfgs, _ = c
    off = ",".join(k for k, v in opts.items() if v is False) or "all"
    extra = "-shifted" if opts.get("shift") else ""
    return f"B{b}-L{L}-D{d}-N{n}-G{g}-{off}{extra}-{len(cfgs)}cfg"


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in c[7]]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_selective_scan_matches_float64(case, dtype):
    batch, seqlen, dim, dstate, ngroups, opts, cfgs, _ = case
    softplus, want_final = opts.get("softplus", True), opts.get("final", True)
    x = scan_inputs(batch, seqlen, dim, dstate, ngroups, dtype, opts, seed=seqlen * 7 + dim)
    y_ref, h_ref = selective_scan_ref(*(to_host(x[n]) for n in SCAN_INPUTS), delta_softplus=softplus)
    fails = failures_over_splits(lambda cfg: run_scan(x, dtype, softplus, want_final, cfg), cfgs, (y_ref, h_ref),
                                 dtype, want_final)
    assert not fails, "\n".join(fails)



@pytest.mark.parametrize("dtype", ALL_T)
def test_decode_with_states_off_16_bytes_matches_float64(dtype):
    """initial_state and final_state 4 bytes past a 16-byte boundary at seqlen 1: the one-token
    kernel reads states as float4s, so the per-step kernel runs instead (selective_scan_token.cuh)."""
    import torch
    from cuda_harness import launch_scan, off_16_bytes, scan_params
    from ops_reference import mismatch

    x = scan_inputs(16, 1, 1024, 16, 1, dtype, ALL, seed=21)
    y_ref, h_ref = selective_scan_ref(*(to_host(x[n]) for n in SCAN_INPUTS), delta_softplus=True)
    fs = off_16_bytes(x["initial_state"], fill=float("nan"))
    x = dict(x, initial_state=off_16_bytes(x["initial_state"]))
    y = torch.full(x["u"].shape, float("nan"), dtype=x["u"].dtype, device=x["u"].device)
    rc = launch_scan(scan_params(x, y, fs, dtype, True), None)
    torch.cuda.synchronize()
    assert rc == 0
    fails = [mismatch(to_host(y), y_ref, dtype, "y", scaled_atol=True),
             mismatch(to_host(fs), h_ref, dtype, "final_state", scaled_atol=True)]
    assert not any(fails), "\n".join(f for f in fails if f)
