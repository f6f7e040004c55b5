"""The Mamba-2 decode graph (`mambac export --stateful --decode-graph` of a Mamba2ForCausalLM
checkpoint) and its op, `mambac.Mamba2LayerStep` (docs/decode-graph.md "Mamba2LayerStep").

- For both Mamba-2 fixtures: prefill k tokens with the stateful model, then one token a step on
  the decode graph with the states fed back: every step's logits reproduce the full-sequence
  float64 reference (1e-4 worst relative, the float32 model tier), the final states the
  reference's, and each step equals the stateful model's own one-token step on the same states
  (float32 1e-5; float16 within its 3e-3 tier over four steps of a batch of 3, and the float16
  decode steps within the float16 model tier, 1e-2, of the reference).
- `mambac generate --decode-graph on` gives the ids `--decode-graph off` gives, greedy and sampled.
- The op against ops_reference.mamba2_layer_step_ref (float64) over a seeded grid: heads,
  head_dim, 1 or 2 groups, state sizes, conv widths 1-4, optional inputs on and off, a clamping
  time_step_limit, norm_before_gate, float32 / float16 / bfloat16 at the op-level tiers.
- Every error path of the op, with its exact message.
"""

import json

import numpy as np
import onnx
import pytest

from mambac_testing import (TESTDATA, decode_path, export_with_decode_graphs, float16_step_worst, groups2_variant,
                            is_final_norm_helper, mambac, prefill_then_decode)
from ops_reference import (DTYPES, MAMBA2_STEP_INPUTS, mamba2_layer_step_ref, mismatch, run_op, worst_rel)

FIXTURES = ["mamba2-tiny-hf", "mamba2-groups2"]
OUTPUTS = ["residual_out", "conv_state_out", "ssm_state_out"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return export_with_decode_graphs(tmp_path_factory.mktemp("decode_graph_mamba2"), FIXTURES,
                                     lambda f: f.endswith("groups2"))


def reference(fixture):
    from safetensors.numpy import load_file

    return load_file(str(TESTDATA / fixture / "reference.safetensors"))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_decode_steps_reproduce_the_reference(exports, fixture):
    ref = reference(fixture)
    logits, states, step_worst, fresh_worst = prefill_then_decode(exports[fixture, "float32"], ref["input_ids"])
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-4, f"{fixture}: decode-graph steps vs the float64 reference: {err:.3e}"
    assert step_worst <= 1e-5, f"{fixture}: decode graph vs stateful model, one step: {step_worst:.3e}"
    assert fresh_worst > 1e-2, f"the states should matter ({fresh_worst:.2e})"
    for i in range(2):
        err = worst_rel(states[f"ssm_state.{i}"], ref[f"ssm_states.{i}"])
        assert err <= 1e-4, f"{fixture}: final ssm state {i}: {err:.3e}"
        err = worst_rel(states[f"conv_state.{i}"], ref[f"conv_states.{i}"][:, :, 1:])
        assert err <= 1e-4, f"{fixture}: final conv state {i}: {err:.3e}"


def test_norm_before_gate_decode_graph(tmp_path):
    """mamba_ssm's norm_before_gate true (norm(y) * w * silu(z)) on the groups2 weights: the
    decode graph's steps against gen_mamba2_groups.py's numpy forward with the same flag."""
    from safetensors.numpy import load_file

    ckpt, cfg, gen = groups2_variant(tmp_path, norm_before_gate=True)
    ids = reference("mamba2-groups2")["input_ids"]
    want, _ = gen.forward(load_file(str(ckpt / "model.safetensors")), ids, cfg)
    mambac("export", ckpt, "-o", tmp_path / "m.onnx", "-q", "--stateful", "--decode-graph")
    step = next(n for n in onnx.load(str(tmp_path / "m.decode.onnx")).graph.node if n.op_type == "Mamba2LayerStep")
    assert {a.name: a.i for a in step.attribute}["norm_before_gate"] == 1
    logits, _, step_worst, _ = prefill_then_decode(tmp_path / "m.onnx", ids, k=3)
    assert worst_rel(logits, want) <= 1e-4 and step_worst <= 1e-5


@pytest.mark.parametrize("fixture", FIXTURES)
def test_float16_decode_graph_matches_the_stateful_model(exports, fixture):
    """Same roundings to float16 where the unfused graph stores float16, so both graphs agree to
    float16's tier (3e-3) over several steps of a batch of 3."""
    vocab = 1024 if fixture == "mamba2-tiny-hf" else 64
    worst = float16_step_worst(exports[fixture, "float16"], vocab)
    assert worst <= 3e-3, f"{fixture} float16: {worst:.3e}"
    # And the float16 decode steps reproduce the float64 reference within the model tier (1e-2).
    ref = reference(fixture)
    logits, _, _, _ = prefill_then_decode(exports[fixture, "float16"], ref["input_ids"])
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-2, f"{fixture} float16: decode-graph steps vs the float64 reference: {err:.3e}"


def test_the_decode_graph_is_one_step_a_layer_on_the_shared_weights(exports):
    for fixture in FIXTURES:
        model = exports[fixture, "float32"]
        g = onnx.load(str(model), load_external_data=False)
        d = onnx.load(str(decode_path(model)), load_external_data=False)
        steps = [n for n in d.graph.node if n.op_type == "Mamba2LayerStep"]
        assert len(steps) == 2 and all(n.domain == "mambac" for n in steps)
        assert not any("layers" in n.name and n.op_type != "Mamba2LayerStep" for n in d.graph.node)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in steps[0].attribute}
        limit = (0.05, 0.5) if fixture == "mamba2-groups2" else (0.0, np.inf)
        assert (attrs["dt_min"], attrs["dt_max"]) == pytest.approx(limit)
        assert attrs["norm_before_gate"] == 0 and attrs["epsilon"] == pytest.approx(1e-5)
        gi = {t.name: t for t in g.graph.initializer}
        for t in d.graph.initializer:
            if is_final_norm_helper(t.name):
                continue
            assert t.name in gi, t.name
            assert list(t.external_data) == list(gi[t.name].external_data), t.name


@pytest.mark.parametrize("fixture", FIXTURES)
def test_generate_gives_the_same_ids_on_the_decode_graph(exports, fixture):
    model = exports[fixture, "float32"]
    for sampling in ([], ["--temperature", "0.8", "--seed", 4]):
        ids = {}
        for choice in ["on", "off"]:
            r = mambac("generate", model, "--prompt-ids", "5,17,30;9", "--max-new-tokens", 12, *sampling, "--json",
                       "--decode-graph", choice)
            ids[choice] = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
        assert ids["on"] == ids["off"] and len(ids["on"]) == 2 and len(ids["on"][0]) == 12, (sampling, ids)
    r = mambac("bench", model, "--decode-graph", "on", "--prompt-len", 4, "--decode-tokens", 4, "--reps", 1,
               "--warmup", 0, "--json")
    assert json.loads(r.stdout)["decode_graph"] is True


def test_the_cuda_ep_takes_a_mamba2_decode_graph(exports):
    """Mamba2LayerStep has a CUDA kernel: on the CUDA EP neither `on` nor `auto` refuses or
    leaves out the decode graph; both go on to open the sessions, which fails here only because
    this onnxruntime has no CUDA EP."""
    model = exports["mamba2-groups2", "float32"]
    for choice in (["--decode-graph", "on"], []):
        r = mambac("generate", model, "--prompt-ids", "1", "--max-new-tokens", 1, "--ep", "cuda", *choice, check=False)
        assert r.returncode == 1 and "the CUDA execution provider is not available" in r.stderr, (choice, r.stderr)
        assert str(decode_path(model)) not in r.stderr, (choice, r.stderr)


# --- the op ---------------------------------------------------------------------------------------

def step_feeds(rng, np_t, batch, hidden, heads, head_dim, ngroups, dstate, width, optional=True):
    """Seeded inputs of one step (never zeros), as the op receives them: weights scaled like a
    trained layer's, A = -exp(N(0, 1)), dt_bias ~ N(-1, 0.5) so softplus sees both signs."""
    inner = heads * head_dim
    conv_dim = inner + 2 * ngroups * dstate
    in_dim = inner + conv_dim + heads
    f32 = np.float32

    def normal(shape, scale=1.0, shift=0.0, dtype=np_t):
        return (shift + scale * rng.standard_normal(shape)).astype(dtype)

    feeds = {
        "conv_state": normal([batch, conv_dim, width - 1]),
        "ssm_state": normal([batch, heads, head_dim, dstate], dtype=f32),
        "residual": normal([batch, 1, hidden], dtype=f32),
        "norm_weight": normal([hidden], 0.1, 1.0, f32),
        "in_proj_weight": normal([hidden, in_dim], hidden ** -0.5),
        "in_proj_bias": normal([in_dim], 0.1),
        "conv_weight": normal([conv_dim, width], 0.5),
        "conv_bias": normal([conv_dim], 0.1),
        "dt_bias": normal([heads], 0.5, -1.0, f32),
        "A": -np.exp(rng.standard_normal([heads])).astype(f32),
        "D": normal([heads], dtype=f32),
        "gate_norm_weight": normal([inner], 0.1, 1.0, f32),
        "out_proj_weight": normal([inner, hidden], inner ** -0.5),
        "out_proj_bias": normal([hidden], 0.1),
    }
    if not optional:
        for k in ("in_proj_bias", "conv_bias", "dt_bias", "D", "out_proj_bias"):
            del feeds[k]
    return feeds


def run_step(feeds, outputs=OUTPUTS, **attrs):
    slots = [n if n in feeds else "" for n in MAMBA2_STEP_INPUTS]
    return run_op("Mamba2LayerStep", slots, feeds, list(outputs), attrs)


# (batch, hidden, heads, head_dim, ngroups, dstate, width, optional, dt_limit, norm_before_gate)
GRID = [
    (2, 16, 4, 8, 1, 8, 4, True, (0.0, np.inf), False),
    (3, 24, 4, 8, 2, 8, 4, True, (0.05, 0.5), False),
    (1, 32, 8, 16, 2, 16, 4, False, (0.0, np.inf), False),
    (2, 20, 6, 4, 3, 5, 3, True, (0.0, np.inf), True),
    (2, 12, 2, 8, 2, 4, 2, False, (0.1, 0.2), True),
    (3, 8, 3, 2, 1, 1, 1, True, (0.0, np.inf), False),
    (1, 40, 8, 8, 8, 16, 4, True, (0.001, 0.1), False),
]


@pytest.mark.parametrize("case", range(len(GRID)))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_op_matches_the_float64_reference(case, dtype):
    """Whole outputs within the op-level tier of the dtype (atol scaled by the output's largest
    value, as `mambac conformance` reads it); a clamping time_step_limit and norm_before_gate on
    in some cases; heads sharing groups (ngroups 2, 3) and one group a head (8)."""
    b, hid, heads, hd, g, n, k, optional, (lo, hi), nbg = GRID[case]
    np_t = DTYPES[dtype][0]
    rng = np.random.default_rng(100 + case)
    feeds = step_feeds(rng, np_t, b, hid, heads, hd, g, n, k, optional)
    attrs = {"dt_min": lo, "dt_max": hi, "norm_before_gate": int(nbg)}
    got = run_step(feeds, **attrs)
    want = mamba2_layer_step_ref(feeds, 1e-5, lo, hi, nbg)
    for o, w, what in zip(got, want, OUTPUTS):
        msg = mismatch(o, w, dtype, f"case {case} {what}", scaled_atol=True)
        assert msg is None, msg
    assert got[1].dtype == np.dtype(np_t) and got[0].dtype == np.float32 and got[2].dtype == np.float32
    # The states moved (a step that ignored them would still pass a loose check).
    assert worst_rel(got[2], feeds["ssm_state"]) > 1e-2


def test_op_clamps_dt_and_the_reference_sees_it():
    """dt_min above every softplus value: dt is the clamp everywhere, and a step with the clamp
    off differs (so the attribute is read)."""
    feeds = step_feeds(np.random.default_rng(5), np.float32, 2, 16, 4, 8, 2, 8, 4)
    clamped = run_step(feeds, dt_min=5.0, dt_max=5.0)
    free = run_step(feeds)
    want = mamba2_layer_step_ref(feeds, 1e-5, 5.0, 5.0)
    assert mismatch(clamped[2], want[2], "float32", "clamped ssm_state_out", scaled_atol=True) is None
    assert worst_rel(clamped[2], free[2]) > 1e-2


# The valid sizes of the error cases: batch 2, hidden 8, 4 heads of 4, 2 groups, dstate 4, width 4:
# inner 16, conv_dim 32, in_dim 52.
def good():
    return step_feeds(np.random.default_rng(0), np.float32, 2, 8, 4, 4, 2, 4, 4)


def test_op_runs_on_good_inputs():
    res, conv, ssm = run_step(good())
    assert res.shape == (2, 1, 8) and conv.shape == (2, 32, 3) and ssm.shape == (2, 4, 4, 4)


# Each input broken in turn, with the message naming it (the TensorRT plugin gives the same:
# tests/python/test_tensorrt_plugin.py).
BAD_INPUTS = [
    ("conv_state", [2, 32], np.float32,
     "input 'conv_state' has shape [2, 32], expected [batch, conv_dim, width - 1]"),
    ("conv_state", [2, 34, 3], np.float32,
     "input 'conv_state' has shape [2, 34, 3], expected [2, conv_dim, 3] with conv_dim = 16 + 2 * ngroups * 4 "
     "and ngroups dividing heads 4 (inner and dstate from 'ssm_state')"),
    ("conv_state", [2, 40, 3], np.float32,  # ngroups 3 does not divide 4 heads
     "input 'conv_state' has shape [2, 40, 3], expected [2, conv_dim, 3] with conv_dim = 16 + 2 * ngroups * 4 "
     "and ngroups dividing heads 4 (inner and dstate from 'ssm_state')"),
    ("ssm_state", [2, 4, 4, 4], np.float16, "input 'ssm_state' has element type float16, expected float32"),
    ("ssm_state", [3, 4, 4, 4], np.float32,
     "input 'ssm_state' has shape [3, 4, 4, 4], expected [2, heads, head_dim, dstate] (batch from 'conv_state')"),
    ("ssm_state", [2, 4, 4, 0], np.float32,
     "input 'ssm_state' has shape [2, 4, 4, 0], expected [2, heads, head_dim, dstate] with heads, head_dim and "
     "dstate >= 1"),
    ("residual", [2, 2, 8], np.float32,
     "input 'residual' has shape [2, 2, 8], expected [2, 1, hidden] (one token a sequence; batch from 'conv_state')"),
    ("residual", [2, 1, 0], np.float32, "input 'residual' has shape [2, 1, 0], expected [2, 1, hidden] with hidden >= 1"),
    ("norm_weight", [9], np.float32, "input 'norm_weight' has shape [9], expected [8] (hidden from 'residual')"),
    ("in_proj_weight", [8, 48], np.float32,
     "input 'in_proj_weight' has shape [8, 48], expected [8, 52] (inner + conv_dim + heads = 16 + 32 + 4)"),
    ("in_proj_weight", [8, 52], np.float16,
     "input 'in_proj_weight' has element type float16, expected float32 (same as 'conv_state')"),
    ("in_proj_bias", [48], np.float32,
     "input 'in_proj_bias' has shape [48], expected [52] (inner + conv_dim + heads = 16 + 32 + 4)"),
    ("conv_weight", [32, 3], np.float32,
     "input 'conv_weight' has shape [32, 3], expected [32, 4] ([conv_dim, width] from 'conv_state')"),
    ("conv_bias", [16], np.float32, "input 'conv_bias' has shape [16], expected [32] (conv_dim from 'conv_state')"),
    ("dt_bias", [4], np.float16, "input 'dt_bias' has element type float16, expected float32"),
    ("A", [16], np.float32, "input 'A' has shape [16], expected [4] (heads from 'ssm_state')"),
    ("D", [5], np.float32, "input 'D' has shape [5], expected [4] (heads from 'ssm_state')"),
    ("gate_norm_weight", [8], np.float32,
     "input 'gate_norm_weight' has shape [8], expected [16] (inner = heads * head_dim from 'ssm_state')"),
    ("out_proj_weight", [8, 16], np.float32,
     "input 'out_proj_weight' has shape [8, 16], expected [16, 8] ([inner, hidden])"),
    ("out_proj_bias", [16], np.float32, "input 'out_proj_bias' has shape [16], expected [8] (hidden from 'residual')"),
]


@pytest.mark.parametrize("name,shape,dtype,message", BAD_INPUTS)
def test_op_names_the_broken_input(name, shape, dtype, message):
    feeds = good()
    feeds[name] = np.ones(shape, dtype)
    with pytest.raises(Exception) as e:
        run_step(feeds)
    assert f"Mamba2LayerStep: {message}" in str(e.value)


def test_op_needs_its_required_inputs_and_outputs():
    for name in ("A", "gate_norm_weight", "in_proj_weight"):
        feeds = good()
        del feeds[name]
        with pytest.raises(Exception) as e:
            run_step(feeds)
        assert f"Mamba2LayerStep: required input '{name}' is missing" in str(e.value)
    with pytest.raises(Exception) as e:
        run_step(good(), outputs=("residual_out", "", "ssm_state_out"))
    assert "Mamba2LayerStep: outputs 'residual_out', 'conv_state_out' and 'ssm_state_out' are required" in str(e.value)


BAD_ATTRIBUTES = [
    ({"epsilon": -1.0}, "attribute 'epsilon' is -1, expected a positive number"),
    ({"epsilon": 0.0}, "attribute 'epsilon' is 0, expected a positive number"),
    ({"norm_before_gate": 2}, "attribute 'norm_before_gate' is 2, expected 0 or 1"),
    ({"dt_min": float("inf")}, "attribute 'dt_min' is inf, expected a number below +inf"),
    ({"dt_min": 0.5, "dt_max": 0.25}, "attribute 'dt_max' is 0.25, expected at least dt_min (0.5)"),
]


@pytest.mark.parametrize("attrs,message", BAD_ATTRIBUTES)
def test_op_names_the_bad_attribute(attrs, message):
    with pytest.raises(Exception) as e:
        run_step(good(), **attrs)
    assert f"Mamba2LayerStep: {message}" in str(e.value)


def test_op_with_an_empty_batch_gives_empty_outputs():
    feeds = step_feeds(np.random.default_rng(1), np.float32, 0, 8, 4, 4, 2, 4, 4)
    res, conv, ssm = run_step(feeds)
    assert res.shape == (0, 1, 8) and conv.shape == (0, 32, 3) and ssm.shape == (0, 4, 4, 4)
