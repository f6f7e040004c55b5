"""MambaLayerStep's fused CUDA decode layer against ops_reference.mamba_layer_step_ref (float64):
the 2.8b and 130m layer shapes, odd sizes (a scalar x_proj path, width 1 and 2, dstate past 32,
dt_rank past 256), batches across the kernel's batch chunks, every optional input on and off,
float32 / float16 / bfloat16, outputs and scratch NaN-poisoned. Checked: the layer's
contribution (residual_out - residual), conv_state_out and ssm_state_out, tier atol relative
to the tensor's scale."""

import pytest

pytest.importorskip("cuda_harness", reason="needs torch and a CUDA device")
from cuda_harness import error_string, run_chained, run_step, step_inputs, step_params, to_host  # noqa: E402
from ops_reference import mamba_layer_step_ref, mismatch  # noqa: E402

EPS = 1e-5
ALL_T = ("float32", "float16", "bfloat16")
# (batch, hidden, inner, dstate, dt_rank, width, options, dtypes)
CASES = [
    (1, 2560, 5120, 16, 160, 4, {}, ALL_T),  # the 2.8b layer
    (8, 2560, 5120, 16, 160, 4, {}, ("float16",)),
    (5, 768, 1536, 16, 48, 4, {"proj_bias": True}, ALL_T),  # 130m, a partial batch chunk
    (11, 64, 128, 16, 4, 4, {}, ALL_T),  # two batch chunks
    (3, 40, 80, 8, 5, 3, {"proj_bias": True}, ALL_T),  # x_proj has 21 outputs (scalar path)
    (2, 24, 48, 4, 2, 2, {"conv_bias": False, "dt_bias": False, "D": False}, ALL_T),
    (1, 72, 136, 32, 9, 4, {"proj_bias": True, "conv_bias": False}, ALL_T),
    (2, 16, 40, 16, 3, 1, {}, ALL_T),  # width 1: no conv state
    (2, 64, 96, 64, 300, 4, {"proj_bias": True}, ALL_T),  # dstate > 32, dt_rank > 256
    # The tensor-core GEMVs (16-bit weights from batch 4): one and two n-tiles, partial ones,
    # several batch chunks, column counts that leave a block's 128 outputs partly empty.
    (16, 2560, 5120, 16, 160, 4, {}, ("float16", "bfloat16")),
    (64, 2560, 5120, 16, 160, 4, {"proj_bias": True}, ("float16",)),
    (13, 768, 1536, 16, 48, 4, {"proj_bias": True}, ("float16", "bfloat16")),
    (37, 200, 328, 16, 12, 4, {"conv_bias": False}, ("float16", "bfloat16")),
]
# Forced GEMV kernels for the 16-bit dtypes: the tensor-core one at every batch, and the FMA one;
# the FMA one with its next pass's loads issued after this pass's FMAs (not ahead).
FORCED = [(0, 0, 0, 1), (0, 0, 0, -1), (0, 0, 0, -1, 0, -1)]


def case_id(c):
    b, h, i, n, rk, k, opts, _ = c
    return f"B{b}-H{h}-I{i}-N{n}-R{rk}-K{k}-" + (",".join(f"{key}={int(v)}" for key, v in opts.items()) or "default")


def step_failures(x, o, dtype, what=""):
    """What of the step's outputs `o` differs from the float64 step on inputs `x` beyond the tier."""
    res_ref, conv_ref, ssm_ref = mamba_layer_step_ref({k: to_host(v) for k, v in x.items()}, EPS)
    residual = to_host(x["residual"])
    fails = [
        # The layer's contribution, not residual_out itself: the residual would hide its error.
        mismatch(to_host(o["residual"]) - residual, res_ref - residual, dtype, f"{what}residual_out - residual",
                 scaled_atol=True),
        mismatch(to_host(o["conv_state"]), conv_ref, dtype, f"{what}conv_state_out", scaled_atol=True),
        mismatch(to_host(o["ssm_state"]), ssm_ref, dtype, f"{what}ssm_state_out", scaled_atol=True),
    ]
    return [f for f in fails if f]


def check_step(x, dtype, tuning=None):
    rc, o = run_step(x, dtype, EPS, tuning=tuning)
    assert rc == 0, f"{error_string(rc)} ({rc})"
    fails = step_failures(x, o, dtype)
    assert not fails, "\n".join(fails)


PARAMS = [pytest.param(c, t, id=f"{case_id(c)}-{t}") for c in CASES for t in c[7]]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_layer_step_matches_float64(case, dtype):
    batch, hidden, inner, dstate, rank, width, opts, _ = case
    x = step_inputs(batch, hidden, inner, dstate, rank, width, dtype, opts, seed=hidden + inner + batch)
    check_step(x, dtype)


@pytest.mark.parametrize("tuning", FORCED, ids=["tensor-cores", "fma", "fma-in-turn"])
@pytest.mark.parametrize("batch,hidden,inner,dtype", [(1, 2560, 5120, "float16"), (3, 200, 328, "bfloat16"),
                                                      (8, 768, 1536, "bfloat16"), (9, 64, 136, "float16")])
def test_layer_step_gemv_kernels_agree_with_float64(batch, hidden, inner, dtype, tuning):
    """Each GEMV kernel forced where the default would pick the other one."""
    x = step_inputs(batch, hidden, inner, 16, 12, 4, dtype, {"proj_bias": True}, seed=7 * batch + inner)
    check_step(x, dtype, tuning)


@pytest.mark.parametrize("dependent", [0, -1], ids=["dependent-launches", "stream-order"])
@pytest.mark.parametrize("batch,hidden,inner,dtype", [(1, 2560, 5120, "float16"), (8, 256, 512, "bfloat16"),
                                                      (3, 200, 328, "float32"), (16, 768, 1536, "float16")])
def test_layers_chained_on_one_stream_match_float64(batch, hidden, inner, dtype, dependent):
    """Four layers queued back to back with no synchronisation in between, sharing one NaN-poisoned
    scratch buffer (ORT may hand each layer the same block), each reading the residual_out of the
    one before, as in a decode graph. With dependent launches (common.cuh) a kernel may start
    before the one before it has ended; one touching a buffer before its wait would show here.
    Each layer is checked against float64 on the residual it actually read."""
    layers = [step_inputs(batch, hidden, inner, 16, 12, 4, dtype, {"proj_bias": True}, seed=31 * i + batch)
              for i in range(4)]
    rcs, outs = run_chained("decode_layer", layers, lambda x, o: step_params(x, o, dtype, EPS), dependent)
    assert rcs == [0] * len(layers), [error_string(rc) for rc in rcs]
    fails = [f for i, (x, o) in enumerate(zip(layers, outs)) for f in step_failures(x, o, dtype, f"layer {i}: ")]
    assert not fails, "\n".join(fails)
