"""AddRmsNorm's CUDA kernel against ops_reference.add_rms_norm_ref (float64): hidden sizes odd, below
one vector, not a multiple of 8, the 2.8b model's 2560 and past the kernel's register cache (16384:
residual_out read back); batch and seqlen from one row to a 2048-token prefill and a 64-row decode
batch; residual present or absent; residual_out asked for or not; buffers off the 16-byte
alignment (the scalar path) and the scalar path forced; float32 / float16 / bfloat16; outputs
NaN-poisoned. Tiers: y the op-level tier of T, residual_out float32's (one float32 add).
NaN rows and empty inputs as the CPU op has them (tests/python/test_ops_add_rms_norm.py)."""

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from cuda_harness import add_norm_inputs, dev, error_string, run_add_norm, to_host  # noqa: E402
from ops_reference import add_rms_norm_ref, mismatch  # noqa: E402

ALL_T = ("float32", "float16", "bfloat16")
# (batch, seqlen, hidden, options, scalar settings (None = the plain entry point))
CASES = []
for hidden in [1, 3, 8, 13, 64, 100, 257, 768, 2560, 4096, 16384]:
    CASES += [(2, 7, hidden, {}, (None, 1)), (1, 3, hidden, {"residual": False}, (None,))]
CASES += [(b, L, 2560, {}, (None,)) for (b, L) in [(1, 2048, ), (64, 1), (1, 1), (4, 300)]]
CASES += [(2, 7, h, {"shift": True}, (None,)) for h in [64, 2560, 13]]
CASES += [(2, 7, 2560, {"final": False}, (None, 1)), (2, 7, 2560, {"final": False, "residual": False}, (None,))]
# Past the registers' vectors (hidden > 8192 16-bit / 4096 float32) with no residual_out to read
# back: pass 2 recomputes the sums from x and residual on the 16-byte path.
CASES += [(2, 7, 16384, {"final": False}, (None, 1))]


def case_id(c):
    b, L, h, opts, scalars = c
    on = ",".join(f"{k}={v}" for k, v in opts.items()) or "all"
    return f"B{b}-L{L}-H{h}-{on}-{'+'.join(map(str, scalars))}"


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in ALL_T]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_add_rms_norm_matches_float64(case, dtype):
    batch, seqlen, hidden, opts, scalars = case
    want_out = opts.get("final", True)
    x = add_norm_inputs(batch, seqlen, hidden, dtype, opts, seed=batch * 7 + seqlen + hidden)
    y_ref, s_ref = add_rms_norm_ref(to_host(x["x"]), to_host(x["residual"]), to_host(x["weight"]))
    fails = []
    for scalar in scalars:
        rc, y, r_out = run_add_norm(x, dtype, want_residual_out=want_out, scalar=scalar)
        if rc != 0:
            fails.append(f"scalar {scalar}: {error_string(rc)} ({rc})")
            continue
        assert y.dtype == x["x"].dtype
        fails.append(mismatch(to_host(y), y_ref, dtype, f"scalar {scalar} y"))
        if want_out:
            fails.append(mismatch(to_host(r_out), s_ref, "float32", f"scalar {scalar} residual_out"))
    fails = [f for f in fails if f]
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("dtype", ALL_T)
def test_vector_and_scalar_paths_agree_bit_for_bit_in_residual_out(dtype):
    """residual_out is one float32 add per element on either path: identical bits."""
    x = add_norm_inputs(3, 5, 2560, dtype, {}, seed=1)
    _, _, vec = run_add_norm(x, dtype, scalar=0)
    _, _, sca = run_add_norm(x, dtype, scalar=1)
    assert torch.equal(vec, sca)


def test_nan_stays_in_its_row():
    x = add_norm_inputs(1, 3, 2560, "float16", {}, seed=2)
    x["x"][0, 1, 100] = float("nan")
    rc, y, r_out = run_add_norm(x, "float16")
    assert rc == 0
    y = to_host(y)
    assert np.isnan(y[0, 1]).all() and np.isfinite(y[0, [0, 2]]).all()
    assert int(torch.isnan(r_out).sum()) == 1


@pytest.mark.parametrize("shape", [(0, 7, 64), (2, 0, 64), (2, 7, 0)])
def test_empty_inputs_launch_nothing(shape):
    x = {"x": torch.zeros(shape, dtype=torch.float16, device=dev), "residual": None,
         "weight": torch.ones(shape[2], device=dev)}
    rc, _, _ = run_add_norm(x, "float16")
    assert rc == 0
