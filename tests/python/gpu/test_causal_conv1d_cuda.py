"""CausalConv1d's CUDA kernels against ops_reference.causal_conv1d_ref (float64): full and partial
chunks, each width, every optional input and output, weight and bias off the vector loads'
alignment, every forced split, the decode-step kernel, float32 / float16 / bfloat16, outputs
NaN-poisoned. Tier: ops_reference.TIERS, atol relative to the tensor's scale."""

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
from cuda_harness import conv_inputs, error_string, run_conv, to_host  # noqa: E402
from ops_reference import CONV_INPUTS, causal_conv1d_ref, mismatch  # noqa: E402

ALL = {}
ALL_T = ("float32", "float16", "bfloat16")
HALF = ("float16", "bfloat16")
# ConvConfig (channels a thread, steps a thread, step): 0 = default; step 1 = the per-step
# kernel, -1 = never it. 8 channels a thread only for 16-bit types (a 32-byte float32 access).
SPLITS = [(4, 8), (4, 32), (8, 8), (8, 16)]
STEP, TILED = (0, 0, 1), (0, 0, -1)
OPTION_SETS = [{"bias": False}, {"initial_state": False}, {"final": False}, {"silu": False},
               {"bias": False, "initial_state": False, "final": False, "silu": False}]

# (batch, seqlen, dim, width, options, splits (None = automatic), dtypes)
CASES = []
for (b, L, d, k) in [(2, 300, 1000, 4), (1, 64, 1024, 4), (1, 64, 1024, 3), (1, 64, 1024, 2)]:
    CASES += [(b, L, d, k, ALL, (None,), ALL_T), (b, L, d, k, {"initial_state": False, "bias": False}, (None,), HALF)]
CASES += [(b, L, d, k, ALL, (None,), ALL_T) for (b, L, d, k) in [
    (1, 1, 1, 4), (2, 2, 5, 4), (2, 300, 130, 4), (2, 100, 64, 4), (1, 50, 64, 3), (1, 50, 64, 2), (1, 40, 24, 6),
    (1, 40, 24, 1), (1, 17, 16, 4), (1, 2048, 5120, 4), (3, 33, 40, 4)]]
for o in OPTION_SETS:
    CASES += [(2, 100, 64, 4, o, (None,), ALL_T), (2, 37, 13, 4, o, (None,), ("float16",))]
for (b, L, d, k) in [(2, 100, 64, 4), (1, 2048, 5120, 4), (1, 50, 64, 3)]:
    CASES += [(b, L, d, k, {"shift": True}, (None,), ALL_T), (b, L, d, k, {"shift": True}, ((8, 16),), HALF)]
for (b, L, d, k, o) in [(2, 300, 128, 4, ALL), (1, 3, 64, 4, ALL), (3, 33, 40, 4, {"initial_state": False}),
                        (1, 50, 64, 3, ALL), (1, 50, 64, 2, {"bias": False}), (1, 2048, 5120, 4, ALL)]:
    CASES += [(b, L, d, k, o, SPLITS, HALF), (b, L, d, k, o, [c for c in SPLITS if c[0] != 8], ("float32",))]
CASES += [(b, L, d, k, ALL, (None, TILED), ALL_T) for (b, L, d, k) in [
    (1, 1, 5120, 4), (8, 1, 5120, 4), (2, 1, 13, 3), (2, 1, 13, 2), (2, 1, 24, 6), (2, 1, 24, 1), (64, 1, 136, 4)]]
for o in OPTION_SETS:
    CASES += [(2, 1, 64, 4, o, (None,), ALL_T), (2, 5, 13, 4, o, (STEP,), ALL_T)]
CASES += [(b, L, d, k, ALL, (STEP,), ALL_T) for (b, L, d, k) in [(1, 2, 64, 4), (3, 33, 40, 3), (1, 300, 128, 2)]]


def case_id(c):
    b, L, d, k, opts, cfgs, _ = c
    off = ",".join(key for key, v in opts.items() if v is False) or "all"
    return f"B{b}-L{L}-D{d}-K{k}-{off}{'-shifted' if opts.get('shift') else ''}-{'+'.join(map(str, cfgs))}"


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in c[6]]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_causal_conv1d_matches_float64(case, dtype):
    batch, seqlen, dim, width, opts, cfgs, _ = case
    silu, want_final = opts.get("silu", True), opts.get("final", True)
    x = conv_inputs(batch, seqlen, dim, width, dtype, opts, seed=seqlen * 5 + dim + width)
    y_ref, s_ref = causal_conv1d_ref(*(to_host(x[n]) for n in CONV_INPUTS), silu=silu)
    fails = []
    for cfg in cfgs:
        rc, y, fs = run_conv(x, dtype, silu, want_final, cfg)
        if rc != 0:
            fails.append(f"cfg {cfg}: {error_string(rc)} ({rc})")
            continue
        msgs = [mismatch(to_host(y), y_ref, dtype, f"cfg {cfg} y", scaled_atol=True)]
        if want_final:
            msgs.append(mismatch(to_host(fs), s_ref, dtype, f"cfg {cfg} final_state", scaled_atol=True))
        fails += [m for m in msgs if m]
    assert not fails, "\n".join(fails)
