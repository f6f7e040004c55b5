"""GatedRmsNorm's CUDA kernel against ops_reference.gated_rms_norm_ref (float64): d and group
sizes from one channel to mamba2-2.7b's one group of 5120 and Codestral's 8 of 1024, odd groups,
groups below one vector, past the kernel's register cache (one group of 16384); batch and seqlen
from one row to a 2048-token prefill and a 64-row decode batch; both norm_before_gate values; z
whole and read at an offset of a wider packed row (aligned, as Mamba-2's in_proj output at
offset 0, and off 16-byte alignment); y and the weight off alignment (the scalar path) and the
scalar path forced; float32 / float16 / bfloat16; outputs NaN-poisoned. Tier: the op-level tier
of T. NaN groups and empty inputs as the CPU op has them (tests/python/test_ops_gated_rms_norm.py).

Written without a GPU: not yet run (see the helper's report)."""

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from cuda_harness import dev, error_string, gated_norm_inputs, run_gated_norm, to_host  # noqa: E402
from ops_reference import gated_rms_norm_ref, mismatch  # noqa: E402

ALL_T = ("float32", "float16", "bfloat16")
# (batch, seqlen, d, group_size, options, scalar settings (None = the plain entry point))
CASES = []
for d, gs in [(1, 1), (7, 7), (13, 13), (48, 16), (64, 8), (100, 25), (768, 96), (5120, 5120), (8192, 1024),
              (16384, 16384)]:
    CASES += [(2, 7, d, gs, {}, (None, 1)), (1, 3, d, gs, {"nbg": True}, (None,))]
CASES += [(b, L, 5120, 5120, {}, (None,)) for (b, L) in [(1, 2048), (64, 1), (1, 1), (4, 300)]]
# z read from a packed row: Mamba-2's [z | xBC | dt] at offset 0; an aligned offset; an odd one.
CASES += [(2, 7, 5120, 640, {"z_row": 5120 + 5120 + 256 + 80, "z_offset": 0}, (None, 1)),
          (2, 7, 256, 64, {"z_row": 600, "z_offset": 64, "nbg": True}, (None,)),
          (2, 7, 256, 64, {"z_row": 601, "z_offset": 3}, (None,))]
CASES += [(2, 7, d, gs, {"shift": True}, (None,)) for d, gs in [(64, 16), (5120, 5120), (13, 13)]]


def case_id(c):
    b, L, d, gs, opts, scalars = c
    on = ",".join(f"{k}={v}" for k, v in opts.items()) or "plain"
    return f"B{b}-L{L}-D{d}-G{gs}-{on}-{'+'.join(map(str, scalars))}"


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in ALL_T]


def reference(x, d, group_size, nbg, z_offset):
    z = to_host(x["z"])[..., z_offset:z_offset + d]
    return gated_rms_norm_ref(to_host(x["y"]), z, to_host(x["weight"]), d // group_size, 1e-5, nbg)


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_gated_rms_norm_matches_float64(case, dtype):
    batch, seqlen, d, gs, opts, scalars = case
    nbg, off = opts.get("nbg", False), opts.get("z_offset", 0)
    x = gated_norm_inputs(batch, seqlen, d, dtype, opts, seed=batch * 7 + seqlen + d)
    ref = reference(x, d, gs, nbg, off)
    fails = []
    for scalar in scalars:
        rc, out = run_gated_norm(x, dtype, gs, nbg, off, scalar=scalar)
        if rc != 0:
            fails.append(f"scalar {scalar}: {error_string(rc)} ({rc})")
            continue
        assert out.dtype == x["y"].dtype
        fails.append(mismatch(to_host(out), ref, dtype, f"scalar {scalar} out"))
    fails = [f for f in fails if f]
    assert not fails, "\n".join(fails)


def test_nan_stays_in_its_group():
    x = gated_norm_inputs(1, 3, 2048, "float16", {}, seed=2)
    x["y"][0, 1, 100] = float("nan")
    rc, out = run_gated_norm(x, "float16", 1024)
    assert rc == 0
    out = to_host(out)
    assert np.isnan(out[0, 1, :1024]).all() and np.isfinite(out[0, 1, 1024:]).all()
    assert np.isfinite(out[0, [0, 2]]).all()


@pytest.mark.parametrize("shape", [(0, 7, 64), (2, 0, 64), (2, 7, 0)])
def test_empty_inputs_launch_nothing(shape):
    x = {"y": torch.zeros(shape, dtype=torch.float16, device=dev),
         "z": torch.zeros(shape, dtype=torch.float16, device=dev), "weight": torch.ones(shape[2], device=dev)}
    rc, _ = run_gated_norm(x, "float16", 16)
    assert rc == 0


def test_group_size_not_dividing_d_is_refused():
    """The ORT op and the TensorRT plugin check first; a direct caller gets cudaErrorInvalidValue."""
    x = gated_norm_inputs(1, 2, 48, "float32", {}, seed=3)
    rc, _ = run_gated_norm(x, "float32", 20)
    assert rc != 0 and "invalid argument" in error_string(rc)
