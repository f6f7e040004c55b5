"""`mambac export --stateful --decode-graph` and the op it uses, `mambac.MambaLayerStep`.

- For every fixture: prefill k tokens with the stateful model, then one token a step on the
  decode graph with the states fed back: every step's logits reproduce the full-sequence float64
  reference (1e-4 worst relative, the stateful tier), and equal the stateful model's own
  one-token step (float32: 1e-5; float16: its tier) on the same states, logits and states alike.
- The decode graph shares the stateful model's weights: same initializer names, and with
  external data the same file and offsets (no second copy is written).
- `mambac generate --decode-graph on` gives the ids `--decode-graph off` gives.
- The op's input checks: each broken input is refused with a message naming it.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mambac_testing import (MAMBA1_FIXTURES, TESTDATA, decode_path, export_with_decode_graphs, float16_step_worst,
                            is_final_norm_helper, load_reference, mambac, ops_lib, prefill_then_decode)
from ops_reference import mamba_layer_step_ref, worst_rel


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return export_with_decode_graphs(tmp_path_factory.mktemp("decode_graph"), MAMBA1_FIXTURES, lambda f: f.endswith("ssm"))


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_decode_steps_reproduce_the_reference(exports, fixture):
    ref = load_reference(fixture)
    logits, _, step_worst, fresh_worst = prefill_then_decode(exports[fixture, "float32"], ref["input_ids"])
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-4, f"{fixture}: decode-graph steps vs the float64 reference: {err:.3e}"
    assert step_worst <= 1e-5, f"{fixture}: decode graph vs stateful model, one step: {step_worst:.3e}"
    assert fresh_worst > 1e-2, f"the states should matter ({fresh_worst:.2e})"


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_float16_decode_graph_matches_the_stateful_model(exports, fixture):
    """Same roundings to float16 where the unfused graph stores float16, so both graphs agree to
    float16's tier (3e-3) over several steps of a batch of 3."""
    worst = float16_step_worst(exports[fixture, "float16"], 1000)
    assert worst <= 3e-3, f"{fixture} float16: {worst:.3e}"


def test_decode_graph_shares_the_weights(exports):
    for fixture in MAMBA1_FIXTURES:
        model = exports[fixture, "float32"]
        g = onnx.load(str(model), load_external_data=False)
        d = onnx.load(str(decode_path(model)), load_external_data=False)
        steps = [n for n in d.graph.node if n.op_type == "MambaLayerStep"]
        assert len(steps) == 2 and all(n.domain == "mambac" for n in steps)
        assert not any(n.op_type in ("CausalConv1d", "SelectiveScan", "MatMul") and "layers" in n.name for n in d.graph.node)
        gi = {t.name: t for t in g.graph.initializer}
        for t in d.graph.initializer:
            if is_final_norm_helper(t.name):
                continue
            assert t.name in gi, t.name
            assert t.data_location == gi[t.name].data_location
            assert list(t.external_data) == list(gi[t.name].external_data), t.name
        if fixture.endswith("ssm"):  # external: nothing but the graph in the decode file
            assert decode_path(model).stat().st_size < 100_000
            assert all(t.data_location == TensorProto.EXTERNAL for t in d.graph.initializer if t.name in gi and "weight" in t.name)


def test_generate_uses_the_decode_graph_and_gives_the_same_ids(exports):
    model = exports["mamba-tiny-hf", "float32"]
    ids = {}
    for choice in ["on", "off"]:
        r = mambac("generate", model, "--prompt-ids", "5,17,300;9", "--max-new-tokens", 10, "--temperature", "0.8",
                   "--seed", 4, "--json", "--decode-graph", choice)
        ids[choice] = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
    assert ids["on"] == ids["off"] and len(ids["on"]) == 2
    r = mambac("bench", model, "--decode-graph", "on", "--prompt-len", 4, "--decode-tokens", 4, "--reps", 1, "--warmup", 0, "--json")
    assert json.loads(r.stdout)["decode_graph"] is True
    r = mambac("bench", model, "--decode-graph", "on", "--batch", 8, "--prompt-len", 4, "--decode-tokens", 4, "--reps", 1, "--warmup", 0, "--json")
    assert json.loads(r.stdout)["decode_graph"] is True  # on: at any batch (auto stops at 4, CUDA EP only)
    r = mambac("bench", model, "--prompt-len", 4, "--decode-tokens", 4, "--reps", 1, "--warmup", 0, "--json")
    assert json.loads(r.stdout)["decode_graph"] is False  # auto on the CPU EP


def test_decode_graph_export_errors(tmp_path):
    fixture = TESTDATA / "mamba-tiny-hf"
    r = mambac("export", fixture, "-o", tmp_path / "m.onnx", "--decode-graph", check=False)
    assert r.returncode != 0 and "--stateful" in r.stderr
    r = mambac("export", fixture, "-o", tmp_path / "m.onnx", "--stateful", "--decode-graph", "--quantize", "int8", check=False)
    assert r.returncode != 0 and "cannot be used with" in r.stderr
    r = mambac("export", fixture, "-o", tmp_path / "m.onnx", "--stateful", "--decode-graph", "--no-fuse", check=False)
    assert r.returncode != 0 and "cannot be used with" in r.stderr
    mambac("export", fixture, "-o", tmp_path / "plain.onnx", "--stateful")
    r = mambac("generate", tmp_path / "plain.onnx", "--prompt-ids", "1", "--max-new-tokens", 1, "--decode-graph", "on", check=False)
    assert r.returncode != 0 and "plain.decode.onnx does not exist" in r.stderr
    # A decode graph belongs to the export it was derived from: an export without the flag
    # removes a stale one, and one copied from another export is refused.
    mambac("export", fixture, "-o", tmp_path / "a.onnx", "--stateful", "--decode-graph")
    r = mambac("export", fixture, "-o", tmp_path / "a.onnx", "--stateful")
    assert not (tmp_path / "a.decode.onnx").exists() and "removed" in r.stderr
    mambac("export", fixture, "-o", tmp_path / "b.onnx", "--stateful", "--decode-graph")
    (tmp_path / "b.decode.onnx").rename(tmp_path / "a.decode.onnx")
    r = mambac("generate", tmp_path / "a.onnx", "--prompt-ids", "1", "--max-new-tokens", 1, "--decode-graph", "on", check=False)
    assert r.returncode != 0 and "a.decode.onnx cannot be used: it was not derived from this export" in r.stderr


# --- the op's checks ------------------------------------------------------------------------
B, H, I, N, R, K = 2, 8, 16, 4, 2, 4
GOOD = {
    "conv_state": ([B, I, K - 1], TensorProto.FLOAT), "ssm_state": ([B, I, N], TensorProto.FLOAT),
    "residual": ([B, 1, H], TensorProto.FLOAT), "norm_weight": ([H], TensorProto.FLOAT),
    "in_proj_weight": ([H, 2 * I], TensorProto.FLOAT), "in_proj_bias": ([2 * I], TensorProto.FLOAT),
    "conv_weight": ([I, K], TensorProto.FLOAT), "conv_bias": ([I], TensorProto.FLOAT),
    "x_proj_weight": ([I, R + 2 * N], TensorProto.FLOAT), "dt_proj_weight": ([R, I], TensorProto.FLOAT),
    "dt_bias": ([I], TensorProto.FLOAT), "A": ([I, N], TensorProto.FLOAT), "D": ([I], TensorProto.FLOAT),
    "out_proj_weight": ([I, H], TensorProto.FLOAT), "out_proj_bias": ([H], TensorProto.FLOAT),
}
NP = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}


def run_step(spec, outputs=("residual_out", "conv_state_out", "ssm_state_out"), eps=1e-5, feeds=None):
    import onnxruntime as ort

    names = [n if n in spec else "" for n in GOOD]
    ins = [helper.make_tensor_value_info(n, t, s) for n, (s, t) in spec.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    node = helper.make_node("MambaLayerStep", names, list(outputs), domain="mambac", epsilon=eps)
    g = helper.make_graph([node], "step", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("mambac", 1)])
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    if feeds is None:
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal(s).astype(NP[t]) for n, (s, t) in spec.items()}
    return sess.run(None, feeds)


@pytest.mark.parametrize("width,optional", [(4, True), (4, False), (1, True), (2, False)])
def test_op_matches_the_contract_in_float64(width, optional):
    """The CPU kernel against docs/decode-graph.md's equations, biases and D on and off, width 1
    (no conv state) included; float32, so the float32 tier applies."""
    spec = {k: v for k, v in GOOD.items() if optional or k not in ("in_proj_bias", "conv_bias", "dt_bias", "D", "out_proj_bias")}
    spec["conv_state"] = ([B, I, width - 1], TensorProto.FLOAT)
    spec["conv_weight"] = ([I, width], TensorProto.FLOAT)
    rng = np.random.default_rng(width)
    feeds = {n: (0.5 * rng.standard_normal(s)).astype(np.float32) for n, (s, t) in spec.items()}
    feeds["A"] = -np.exp(rng.standard_normal(spec["A"][0])).astype(np.float32)
    got = run_step(spec, feeds=feeds)
    for g, want, what in zip(got, mamba_layer_step_ref(feeds), ["residual_out", "conv_state_out", "ssm_state_out"]):
        err = worst_rel(g, want) if want.size else 0.0
        assert g.shape == want.shape and err <= 1e-5, f"{what}: worst rel {err:.2e}"


def test_op_runs_on_good_inputs():
    res, conv, ssm = run_step(GOOD)
    assert res.shape == (B, 1, H) and conv.shape == (B, I, K - 1) and ssm.shape == (B, I, N)
    assert np.isfinite(res).all() and np.isfinite(ssm).all()


@pytest.mark.parametrize("name,shape,elem,message", [
    ("residual", [B, 2, H], TensorProto.FLOAT, "input 'residual' has shape [2, 2, 8], expected [2, 1, hidden] (one token a sequence; batch from 'conv_state')"),
    ("ssm_state", [B, I, N], TensorProto.FLOAT16, "input 'ssm_state' has element type float16, expected float32"),
    ("in_proj_weight", [H, I], TensorProto.FLOAT, "input 'in_proj_weight' has shape [8, 16], expected [8, 32] ([hidden, 2 * inner])"),
    ("x_proj_weight", [I, R + N], TensorProto.FLOAT, "input 'x_proj_weight' has shape [16, 6], expected [16, 10] ([inner, dt_rank + 2 * dstate] = [16, 2 + 2 * 4])"),
    ("A", [I, N + 1], TensorProto.FLOAT, "input 'A' has shape [16, 5], expected [16, 4] ([inner, dstate] from the states)"),
    ("D", [I + 1], TensorProto.FLOAT, "input 'D' has shape [17], expected [16] (inner from 'conv_state')"),
    ("conv_state", [B, I], TensorProto.FLOAT, "input 'conv_state' has shape [2, 16], expected [batch, inner, width - 1]"),
])
def test_op_names_the_broken_input(name, shape, elem, message):
    spec = dict(GOOD)
    spec[name] = (shape, elem)
    with pytest.raises(Exception) as e:
        run_step(spec)
    assert f"MambaLayerStep: {message}" in str(e.value)


def test_op_needs_its_state_outputs_and_a_positive_epsilon():
    with pytest.raises(Exception) as e:
        run_step(GOOD, outputs=("residual_out", "", "ssm_state_out"))
    assert "MambaLayerStep: outputs 'residual_out', 'conv_state_out' and 'ssm_state_out' are required" in str(e.value)
    with pytest.raises(Exception) as e:
        run_step(GOOD, eps=-1.0)
    assert "MambaLayerStep: attribute 'epsilon' is -1, expected a positive number" in str(e.value)
