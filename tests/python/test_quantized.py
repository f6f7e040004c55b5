"""`mambac export --quantize int8|int4`: linear layers as ONNX Runtime's MatMulNBits.

Three things are checked separately:
- the quantizer: every packed weight read back with an independent numpy dequantizer (the layout
  ORT's contrib-op docs give) is within half a quantization step of the checkpoint's weight;
- the layout as ORT reads it: the quantized model and the same graph with each MatMulNBits
  replaced by a float MatMul of the numpy-dequantized weight give the same logits
  (accuracy_level 0, where ORT computes in float32);
- the model: logits near the float64 reference (a tier per bit width); the stateful export fed a
  prefill then one token at a time, states carried between steps, equal to the full-sequence
  logits of the same quantized model; `mambac generate` runs on it.
"""

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from safetensors.numpy import load_file

from mambac_testing import TESTDATA, load_reference, mambac, model_session
from ops_reference import worst_rel

FIXTURE = TESTDATA / "mamba-tiny-hf"
# Worst relative logit error against the float64 reference of the unquantized model, measured on
# the tiny fixture (int8 6.6e-3 / 1.4e-2 at accuracy_level 0 / 4; int4 0.11), with ~2x margin.
TIERS = {("int8", 0): 1.5e-2, ("int8", 4): 3e-2, ("int4", 0): 0.25, ("int4", 4): 0.25}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantized")
    out = {}
    for q in ["int8", "int4"]:
        for acc in [0, 4]:
            path = d / f"tiny-{q}-{acc}.onnx"
            mambac("export", FIXTURE, "-o", path, "-q", "--quantize", q, "--accuracy-level", acc)
            out[q, acc] = path
    path = d / "tiny-int8-stateful.onnx"
    mambac("export", FIXTURE, "-o", path, "-q", "--quantize", "int8", "--accuracy-level", 0, "--stateful")
    out["stateful"] = path
    path = d / "tiny-f16-int4.onnx"
    mambac("export", FIXTURE, "-o", path, "-q", "--quantize", "int4", "--dtype", "float16")
    out["f16"] = path
    return out


def dequantize(values, scales, bits, block, n, k):
    """MatMulNBits' reading of B [N, blocks, bytes] and scales [N * blocks], no zero points."""
    blocks = values.shape[1]
    if bits == 4:
        q = np.empty((n, blocks, block), np.int32)
        q[..., 0::2] = values & 0x0F
        q[..., 1::2] = values >> 4
    else:
        q = values.astype(np.int32)
    w = (q - (1 << (bits - 1))) * scales.reshape(n, blocks, 1).astype(np.float64)
    return w.reshape(n, blocks * block)[:, :k]


def nbits_nodes(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            yield node, attrs, inits[node.input[1]], inits[node.input[2]]


@pytest.mark.parametrize("q", ["int8", "int4"])
def test_every_linear_is_quantized_within_half_a_step(exported, q):
    model = onnx.load(str(exported[q, 4]))
    assert {o.domain for o in model.opset_import} >= {"com.microsoft", "mambac"}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mambac.quantize"] == f"{q} block 32 accuracy_level 4"
    assert not [n for n in model.graph.node if n.op_type == "MatMul"], "a linear layer was left in float"
    weights = load_file(str(FIXTURE / "model.safetensors"))
    seen = set()
    for node, attrs, values, scales in nbits_nodes(model):
        assert node.domain == "com.microsoft"
        bits, block, n, k = attrs["bits"], attrs["block_size"], attrs["N"], attrs["K"]
        assert (bits, block, attrs["accuracy_level"]) == ({"int8": 8, "int4": 4}[q], 32, 4)
        assert values.dtype == np.uint8 and values.shape == (n, -(-k // block), block * bits // 8)
        source = node.input[1].rsplit(".", 1)[0]  # "<tensor>.q8" -> "<tensor>"
        w = weights[source].astype(np.float64)
        assert w.shape == (n, k), source
        back = dequantize(values, scales, bits, block, n, k)
        step = np.repeat(scales.reshape(n, -1).astype(np.float64), block, axis=1)[:, :k]
        err = np.abs(back - w)
        assert (err <= step / 2 + 1e-7).all(), f"{source}: worst error {(err / step).max():.3f} steps"
        assert err.max() > 0, f"{source}: quantization should not be exact"
        seen.add(source)
    layers = 2
    want = {f"backbone.layers.{i}.mixer.{p}.weight" for i in range(layers) for p in ["in_proj", "x_proj", "dt_proj", "out_proj"]}
    assert seen == want | {"backbone.embeddings.weight"}, seen ^ (want | {"backbone.embeddings.weight"})


@pytest.mark.parametrize("q", ["int8", "int4"])
def test_ort_reads_the_layout_as_documented(exported, q, tmp_path):
    """Each MatMulNBits replaced by MatMul(x, dequantize(B)^T): same logits at accuracy_level 0."""
    model = onnx.load(str(exported[q, 0]))
    graph = model.graph
    nodes = list(nbits_nodes(model))
    assert len(nodes) == 9, "4 linears x 2 layers + lm_head"
    for node, attrs, values, scales in nodes:
        w = dequantize(values, scales, attrs["bits"], attrs["block_size"], attrs["N"], attrs["K"])
        name = node.input[1] + ".dequantized_T"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T.astype(np.float32)), name))
        new = helper.make_node("MatMul", [node.input[0], name], list(node.output), name=node.name + ".float")
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(idx, new)
    path = tmp_path / "dequantized.onnx"
    onnx.save(model, str(path))
    ref = load_reference()
    (quantized,) = model_session(exported[q, 0]).run(["logits"], {"input_ids": ref["input_ids"]})
    (dequantized,) = model_session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    err = worst_rel(quantized, dequantized)
    assert err <= 1e-5, f"{q}: MatMulNBits vs float MatMul of the dequantized weights: {err:.2e}"


@pytest.mark.parametrize("q,acc", sorted(TIERS))
def test_logits_near_reference(exported, q, acc):
    ref = load_reference()
    (logits,) = model_session(exported[q, acc]).run(["logits"], {"input_ids": ref["input_ids"]})
    err = worst_rel(logits, ref["logits"])
    assert err <= TIERS[q, acc], f"{q} accuracy_level {acc}: worst rel {err:.3e}"
    if q == "int8":
        assert (logits.argmax(-1) == ref["logits"].argmax(-1)).all()


def test_stateful_steps_equal_the_full_sequence(exported):
    """Prefill 5 tokens, then one token a step with the states fed back: every step's logits equal
    the full sequence's at that position (same quantized weights, float32 compute). Zeroed or
    mixed-up states would not: the steps' logits depend on the whole prefix."""
    ref = load_reference()
    ids = ref["input_ids"][:, :12]
    (full,) = model_session(exported["int8", 0]).run(["logits"], {"input_ids": ids})
    sess = model_session(exported["stateful"])
    states = {i.name: np.zeros([ids.shape[0]] + list(i.shape[1:]), np.float32) for i in sess.get_inputs() if i.name != "input_ids"}
    outs = [o.name for o in sess.get_outputs()]
    pos, worst, fresh_worst = 0, 0.0, 0.0
    for n in [5] + [1] * (ids.shape[1] - 5):
        res = dict(zip(outs, sess.run(outs, {"input_ids": ids[:, pos:pos + n], **states})))
        worst = max(worst, worst_rel(res["logits"], full[:, pos:pos + n]))
        if n == 1:  # the same token from zero states: what a lost state would give
            zero = {k: np.zeros_like(v) for k, v in states.items()}
            (fresh,) = sess.run(["logits"], {"input_ids": ids[:, pos:pos + 1], **zero})
            fresh_worst = max(fresh_worst, worst_rel(fresh, full[:, pos:pos + 1]))
        states = {k: res[k.replace("_state.", "_state_out.")] for k in states}
        pos += n
    assert worst <= 1e-5, f"stateful steps vs full sequence: {worst:.2e}"
    assert fresh_worst > 1e-2, f"the states should matter ({fresh_worst:.2e})"
    r = mambac("generate", exported["stateful"], "--prompt-ids", "17,900,3,44", "--max-new-tokens", 8, "--greedy", "--json")
    assert len(json.loads(r.stdout.strip().splitlines()[-1])["ids"]) == 8


def test_float16_export_with_int4_weights(exported):
    """Scales stored as float16: values are rounded against the stored scale (quant.rs), so the
    read-back error bound holds with the float16 scales the file holds."""
    model = onnx.load(str(exported["f16"]))
    weights = load_file(str(FIXTURE / "model.safetensors"))
    for node, attrs, values, scales in nbits_nodes(model):
        assert scales.dtype == np.float16
        n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
        w = weights[node.input[1].rsplit(".", 1)[0]].astype(np.float64)
        back = dequantize(values, scales, 4, block, n, k)
        step = np.repeat(scales.reshape(n, -1).astype(np.float64), block, axis=1)[:, :k]
        assert (np.abs(back - w) <= step / 2 + 1e-6).all(), node.name
    ref = load_reference()
    (logits,) = model_session(exported["f16"]).run(["logits"], {"input_ids": ref["input_ids"]})
    assert logits.dtype == np.float16
    err = worst_rel(logits, ref["logits"])
    assert err <= TIERS["int4", 4], f"float16 int4: {err:.3e}"


def test_bad_quantization_options_are_refused():
    r = mambac("export", FIXTURE, "-o", "/dev/null", "--quantize", "int4", "--quant-block", "24", check=False)
    assert r.returncode != 0 and "--quant-block: block size 24 must be a power of two of at least 16" in r.stderr
    r = mambac("export", FIXTURE, "-o", "/dev/null", "--quantize", "int8", "--accuracy-level", "7", check=False)
    assert r.returncode != 0 and "--accuracy-level 7 is not one of ONNX Runtime's levels 0 to 4" in r.stderr
    r = mambac("export", FIXTURE, "-o", "/dev/null", "--quantize", "int4", "--dtype", "bfloat16", check=False)
    assert r.returncode != 0 and "--quantize needs --dtype float32 or float16" in r.stderr
    r = mambac("export", FIXTURE, "-o", "/dev/null", "--quant-block", "64", check=False)
    assert r.returncode != 0 and "--quantize" in r.stderr
