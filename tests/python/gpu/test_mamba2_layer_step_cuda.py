"""Mamba2LayerStep's fused CUDA decode layer (cpp/cuda/mamba2_decode_layer.cu) against
ops_reference.mamba2_layer_step_ref (float64): the mamba2-130m and 2.7b layer shapes, Codestral's
8 groups, odd sizes (head_dim 1 and 2 so a block's channels span heads and groups, dstate 5 and
160, width 1 to 4, in_dim not a multiple of 8: the scalar GEMV paths), batches 1 / 3 / 8 / 9 / 37
across the GEMVs' batch chunks and n-tiles, every optional input on and off, norm_before_gate
both ways, a clamping dt limit, float32 / float16 / bfloat16, outputs and scratch NaN-poisoned.
Checked: the layer's contribution (residual_out - residual), conv_state_out and ssm_state_out,
tier atol relative to the tensor's scale. Then each GEMV kernel forced, and the launches the
launcher refuses (nothing written)."""

import ctypes
import math

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
import torch  # noqa: E402
from cuda_harness import (error_string, layer_outputs, lib, run_chained, run_step2, step2_inputs,  # noqa: E402
                          step2_params, stream, to_host)
from ops_reference import mamba2_layer_step_ref, mismatch, worst_rel  # noqa: E402

ALL_T = ("float32", "float16", "bfloat16")
HALF_T = ("float16", "bfloat16")
NO_LIMIT = (0.0, math.inf)
INVALID_VALUE = 1  # cudaErrorInvalidValue
# (batch, hidden, heads, head_dim, ngroups, dstate, width, options, norm_before_gate, (dt_min, dt_max), dtypes)
CASES = [
    (1, 768, 24, 64, 1, 128, 4, {}, False, NO_LIMIT, ALL_T),  # the mamba2-130m layer
    (8, 768, 24, 64, 1, 128, 4, {}, False, NO_LIMIT, ALL_T),  # its batch 8: tensor-core GEMVs
    (1, 2560, 80, 64, 1, 128, 4, {}, False, NO_LIMIT, ("float16",)),  # the mamba2-2.7b layer
    (9, 512, 16, 64, 8, 128, 4, {}, True, NO_LIMIT, ALL_T),  # Codestral's 8 groups; two n-tiles
    (37, 200, 8, 8, 2, 64, 4, {"conv_bias": False}, False, NO_LIMIT, ALL_T),  # 3 batch chunks
    (3, 40, 2, 8, 2, 16, 3, {"bias": False}, True, (0.05, 0.5), ALL_T),
    (3, 64, 8, 2, 8, 16, 2, {}, False, (0.001, 0.1), ALL_T),  # head_dim 2: a block spans 16 heads
    (1, 24, 1, 1, 1, 16, 1,  # one channel, width 1 (no conv state), every optional input absent
     {"bias": False, "conv_bias": False, "dt_bias": False, "D": False}, False, NO_LIMIT, ALL_T),
    (8, 48, 2, 1, 1, 64, 4, {}, True, NO_LIMIT, ALL_T),
    (37, 96, 8, 8, 1, 128, 4, {"dt_bias": False, "D": False}, True, NO_LIMIT, HALF_T),
    (2, 40, 6, 4, 3, 5, 3, {}, False, NO_LIMIT, ALL_T),  # in_dim 74, hidden 40: scalar GEMV paths
    (2, 32, 4, 8, 2, 160, 4, {}, False, NO_LIMIT, ALL_T),  # dstate past 128: the looping scan
    (9, 64, 2, 40, 2, 16, 4, {}, True, (0.1, 0.2), ALL_T),  # norm groups of 40: a block spans two
    (1, 256, 8, 16, 2, 64, 2, {"bias": False}, False, NO_LIMIT, ALL_T),
]
# Forced GEMV kernels: the tensor-core one at every batch and the FMA one (16-bit T only); the
# FMA kernel's 4, 8 and 16 loads in flight (batch 1).
FORCED_TC = [(0, 0, 0, 1), (0, 0, 0, -1)]
# Then 4 and 8 without the next pass's loads going out ahead (the last DecodeTuning field).
FORCED_ROWS = [(4, 0, 0, 0), (8, 0, 0, 0), (16, 0, 0, 0), (4, 0, 0, 0, 0, -1), (8, 0, 0, 0, 0, -1)]


def case_id(c):
    b, h, heads, hd, g, n, k, opts, nbg, (lo, hi), _ = c
    off = ",".join(f"no-{key}" for key, v in opts.items() if not v)
    limit = f"-dt{lo}-{hi}" if (lo, hi) != NO_LIMIT else ""
    return f"B{b}-H{h}-heads{heads}x{hd}-G{g}-N{n}-K{k}-nbg{int(nbg)}{limit}" + (f"-{off}" if off else "")


def attrs_of(nbg, limit):
    return {"eps": 1e-5, "dt_min": limit[0], "dt_max": limit[1], "norm_before_gate": nbg}


def step2_failures(x, o, dtype, attrs, what=""):
    """What of the step's outputs `o` differs from the float64 step on inputs `x` beyond the
    tier, or left the states where they were (a step that ignored them would pass a loose check)."""
    feeds = {k: to_host(v) for k, v in x.items() if v is not None}
    res_ref, conv_ref, ssm_ref = mamba2_layer_step_ref(feeds, attrs["eps"], attrs["dt_min"], attrs["dt_max"],
                                                       attrs["norm_before_gate"])
    residual = feeds["residual"]
    fails = [
        # The layer's contribution, not residual_out itself: the residual would hide its error.
        mismatch(to_host(o["residual"]) - residual, res_ref - residual, dtype, f"{what}residual_out - residual",
                 scaled_atol=True),
        mismatch(to_host(o["conv_state"]), conv_ref, dtype, f"{what}conv_state_out", scaled_atol=True),
        mismatch(to_host(o["ssm_state"]), ssm_ref, dtype, f"{what}ssm_state_out", scaled_atol=True),
    ]
    if worst_rel(to_host(o["ssm_state"]), feeds["ssm_state"]) <= 1e-2:
        fails.append(f"{what}ssm_state_out barely moved from ssm_state")
    return [f for f in fails if f]


def check_step2(x, dtype, attrs, tuning=None):
    rc, o = run_step2(x, dtype, attrs, tuning=tuning)
    assert rc == 0, f"{error_string(rc)} ({rc})"
    fails = step2_failures(x, o, dtype, attrs)
    assert not fails, "\n".join(fails)


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in c[-1]]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_mamba2_layer_step_matches_float64(case, dtype):
    batch, hidden, heads, hd, g, n, width, opts, nbg, limit, _ = case
    x = step2_inputs(batch, hidden, heads, hd, g, n, width, dtype, opts, seed=hidden + heads * hd + batch)
    check_step2(x, dtype, attrs_of(nbg, limit))


@pytest.mark.parametrize("tuning", FORCED_TC, ids=["tensor-cores", "fma"])
@pytest.mark.parametrize("batch,dtype", [(1, "float16"), (3, "bfloat16"), (8, "bfloat16"), (9, "float16"),
                                         (37, "float16")])
def test_mamba2_gemv_kernels_agree_with_float64(batch, dtype, tuning):
    """Each GEMV kernel forced where the default would pick the other one (in_dim 520 and
    hidden 256: whole 16-byte vectors, so the tensor-core kernel can take both)."""
    x = step2_inputs(batch, 256, 8, 16, 2, 64, 4, dtype, {}, seed=11 * batch)
    check_step2(x, dtype, attrs_of(batch % 2 == 1, NO_LIMIT), tuning)


@pytest.mark.parametrize("tuning", FORCED_ROWS, ids=["rows4", "rows8", "rows16", "rows4-in-turn", "rows8-in-turn"])
@pytest.mark.parametrize("dtype", ALL_T)
def test_mamba2_fma_loads_in_flight_agree_with_float64(dtype, tuning):
    x = step2_inputs(1, 768, 24, 64, 1, 128, 4, dtype, {}, seed=5)
    check_step2(x, dtype, attrs_of(False, NO_LIMIT), tuning)


@pytest.mark.parametrize("dependent", [0, -1], ids=["dependent-launches", "stream-order"])
@pytest.mark.parametrize("batch,hidden,heads,dtype", [(1, 2560, 80, "float16"), (8, 256, 8, "bfloat16"),
                                                      (3, 200, 4, "float32")])
def test_mamba2_layers_chained_on_one_stream_match_float64(batch, hidden, heads, dtype, dependent):
    """Four layers queued back to back with no synchronisation, sharing one NaN-poisoned scratch
    buffer, each reading the one before's residual_out (test_layer_step_cuda.py's chained test:
    with dependent launches a kernel touching a buffer before its wait would show here)."""
    attrs = attrs_of(False, NO_LIMIT)
    layers = [step2_inputs(batch, hidden, heads, 64, 1, 128, 4, dtype, {}, seed=17 * i + batch) for i in range(4)]
    rcs, outs = run_chained("mamba2_decode_layer", layers, lambda x, o: step2_params(x, o, dtype, attrs), dependent)
    assert rcs == [0] * len(layers), [error_string(rc) for rc in rcs]
    fails = [f for i, (x, o) in enumerate(zip(layers, outs)) for f in step2_failures(x, o, dtype, attrs, f"layer {i}: ")]
    assert not fails, "\n".join(fails)


def prepared(batch=2):
    """Valid params of a small float32 step on NaN outputs and scratch: (params, outputs, keep),
    keep holding the buffers alive."""
    x = step2_inputs(batch, 32, 4, 8, 2, 16, 4, "float32", {}, seed=3)
    outs = layer_outputs(x, float("nan"))
    p = step2_params(x, outs, "float32", attrs_of(False, NO_LIMIT))
    scratch = torch.full((lib.mambac_cuda_mamba2_decode_layer_scratch_bytes(ctypes.byref(p)) // 4,), float("nan"),
                         device=outs["residual"].device)
    p.scratch = scratch.data_ptr()
    return p, outs, (x, scratch)


def launch(p):
    rc = lib.mambac_cuda_mamba2_decode_layer(ctypes.byref(p), stream())
    torch.cuda.synchronize()
    return rc


def test_the_prepared_step_runs():
    """The params the refusal tests below break are good ones."""
    p, outs, _keep = prepared()
    assert launch(p) == 0
    assert not any(bool(t.isnan().any()) for t in outs.values())


@pytest.mark.parametrize("field", ["residual_in", "residual_out", "ssm_state_in", "ssm_state_out", "norm_weight",
                                   "in_proj_weight", "conv_weight", "a", "gate_norm_weight", "out_proj_weight",
                                   "conv_state_in", "conv_state_out", "scratch"])
def test_the_launcher_refuses_a_missing_buffer_and_writes_nothing(field):
    """What the shape check guarantees, the launcher checks again: a missing required buffer is
    cudaErrorInvalidValue ("invalid argument") before anything is queued."""
    p, outs, _keep = prepared()
    setattr(p, field, 0)
    rc = launch(p)
    assert rc == INVALID_VALUE and error_string(rc) == "invalid argument", (rc, error_string(rc))
    for name, t in outs.items():
        assert bool(t.isnan().all()), f"{name} was written"


def test_the_launcher_refuses_a_batch_past_its_limit_and_takes_an_empty_one():
    """batch 65536 is cudaErrorInvalidValue (the op refuses it first, by name:
    check_mamba2_layer_step_cuda_limits); batch 0 queues nothing and succeeds."""
    p, outs, _keep = prepared()
    p.batch = 65536
    assert launch(p) == INVALID_VALUE
    p.batch = 0
    assert launch(p) == 0 and lib.mambac_cuda_mamba2_decode_layer_scratch_bytes(ctypes.byref(p)) == 0
    for name, t in outs.items():
        assert bool(t.isnan().all()), f"{name} was written"
