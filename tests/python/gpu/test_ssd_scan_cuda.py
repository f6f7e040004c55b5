"""SsdScan's CUDA kernel (cpp/cuda/ssd_scan_impl.cuh) against ops_reference.ssd_scan_ref (float64):
a grid over heads, head_dim, groups, dstate (1, 16, 64, 128, and the 256 / 512 register layouts),
seqlen (1, 2, 37, 300), float32 / float16 / bfloat16, with and without D, dt_bias, initial and
final state, softplus and a clamping time_step_limit; the mamba2-2.7b and Codestral shapes; the
empty and refused shapes. Outputs are NaN-poisoned so an element not written fails. Tier:
ops_reference.TIERS with atol taken relative to the tensor's scale (docs/decisions.md, long
float32 scans), as for SelectiveScan's kernels."""

import itertools

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import torch  # noqa: E402
from cuda_harness import error_string, failures_over_splits, run_ssd, ssd_inputs, to_host  # noqa: E402
from ops_reference import SSD_INPUTS, ssd_scan_ref  # noqa: E402

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
    (1, 33, 128, 64, 8, 128, {"initial_state": False}),
]


def case_id(c):
    b, L, h, p, g, n, opts = c
    off = ",".join(k for k, v in opts.items() if v is False) or "all"
    lim = f"-limit{opts['limit'][0]}-{opts['limit'][1]}" if "limit" in opts else ""
    return f"B{b}-L{L}-H{h}-P{p}-G{g}-N{n}-{off}{lim}"


def check(case, dtype, seed):
    """The kernel's y and final state against the float64 reference; [] when within the tier."""
    batch, seqlen, heads, head_dim, ngroups, dstate, opts = case
    softplus, want_final = opts.get("softplus", True), opts.get("final", True)
    lo, hi = opts.get("limit", (0.0, float("inf")))
    x = ssd_inputs(batch, seqlen, heads, head_dim, ngroups, dstate, dtype, opts, seed)
    refs = ssd_scan_ref(*(to_host(x[k]) for k in SSD_INPUTS), dt_softplus=softplus, dt_min=lo, dt_max=hi)
    return failures_over_splits(lambda _: run_ssd(x, dtype, softplus, want_final, lo, hi), (None,), refs, dtype,
                                want_final)


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
