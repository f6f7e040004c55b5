"""Exported Mamba-2 fixtures (testdata/mamba2-tiny-hf: transformers' reference; mamba2-groups2:
numpy float64, 2 groups) in stock ONNX Runtime with libmambac_ops.so: logits against the float64
references within the model-level tiers (float32 1e-4, float16 1e-2, bfloat16 5e-2 worst
relative), stateful exports' final states, and chunked prefill through the states.

bfloat16: ORT's CPU EP has no bfloat16 MatMul, so that export runs in onnx's ReferenceEvaluator
with the mambac ops executed by ONNX Runtime and libmambac_ops.so (the kernels under test);
the standard ops run in the evaluator in bfloat16 (ml_dtypes).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from safetensors.numpy import load_file

from mambac_testing import TESTDATA, groups2_variant, mambac, model_session
from ops_reference import (ADD_NORM_INPUTS, BF16, CONV_INPUTS, GATED_NORM_INPUTS, SSD_INPUTS, from_ort, run_op,
                           worst_rel)

MAMBA2_FIXTURES = ["mamba2-tiny-hf", "mamba2-groups2"]
TIERS = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def reference(fixture):
    return load_file(str(TESTDATA / fixture / "reference.safetensors"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("mamba2")
    out = {}
    for fx in MAMBA2_FIXTURES:
        for dtype in TIERS:
            for stateful in (False, True):
                path = d / f"{fx}-{dtype}-{int(stateful)}.onnx"
                mambac("export", TESTDATA / fx, "-o", path, "-q", "--dtype", dtype, *(["--stateful"] if stateful else []))
                out[fx, dtype, stateful] = path
    return out


def ort_run(path, feeds):
    sess = model_session(path)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run_with_ort_values(names, {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()})
    return dict(zip(names, (from_ort(v) for v in values)))


def zero_states(path, batch):
    """Zero conv/ssm states with the model's own shapes and types."""
    feeds = {}
    for i in onnx.load(str(path)).graph.input:
        if i.name == "input_ids":
            continue
        dims = [batch if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim]
        np_type = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        feeds[i.name] = np.zeros(dims, np_type)
    return feeds


@pytest.mark.parametrize("fixture", MAMBA2_FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_logits_in_stock_ort(exported, fixture, dtype):
    ref = reference(fixture)
    logits = ort_run(exported[fixture, dtype, False], {"input_ids": ref["input_ids"]})["logits"]
    assert logits.dtype == np.dtype(dtype) and logits.shape == ref["logits"].shape
    err = worst_rel(logits, ref["logits"])
    assert err <= TIERS[dtype], f"{fixture} {dtype}: worst rel {err:.3e}"


def test_the_graph_uses_the_fused_ops(exported):
    nodes = onnx.load(str(exported["mamba2-groups2", "float32", False])).graph.node
    kinds = [n.op_type for n in nodes if n.domain == "mambac"]
    assert kinds.count("SsdScan") == 2 and kinds.count("CausalConv1d") == 2
    # The gated norm is one op a layer (docs/decisions.md "Mamba-2's gated norm as one op"), not
    # the standard chain, and it reads z from in_proj's output in place.
    assert kinds.count("GatedRmsNorm") == 2
    assert "Sigmoid" not in {n.op_type for n in nodes}
    # Nothing of the standard chain (Pow, ReduceMean, Sqrt, ... named after the mixer's norm) is left.
    assert [n.op_type for n in nodes if ".mixer.norm" in n.name] == ["GatedRmsNorm"] * 2
    norm = next(n for n in nodes if n.op_type == "GatedRmsNorm")
    nattrs = {a.name: onnx.helper.get_attribute_value(a) for a in norm.attribute}
    assert nattrs["z_offset"] == 0 and nattrs["norm_before_gate"] == 0 and nattrs["group_size"] > 0
    scan = next(n for n in nodes if n.op_type == "SsdScan")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in scan.attribute}
    assert attrs["dt_softplus"] == 1
    assert attrs["dt_min"] == pytest.approx(0.05) and attrs["dt_max"] == pytest.approx(0.5)
    # The scan reads x, B and C from the conv output in place (docs/op-contract.md "Sliced
    # inputs"): heads 4 x head_dim 16 = I = 64, 2 groups x dstate 8; dt from in_proj's output at
    # I + conv_dim = 64 + 96. No Split or Slice is left: the gated norm reads z at 0.
    assert {k: attrs[k] for k in ("x_offset", "B_offset", "C_offset", "dt_offset")} == {
        "x_offset": 0, "B_offset": 64, "C_offset": 80, "dt_offset": 160}
    assert (attrs["head_dim"], attrs["ngroups"], attrs["dstate"]) == (16, 2, 8)
    conv = next(n for n in nodes if n.op_type == "CausalConv1d")
    assert scan.input[0] == scan.input[3] == scan.input[4] == conv.output[0]
    ops = [n.op_type for n in nodes]
    assert ops.count("Split") == 0 and ops.count("Slice") == 0, ops
    assert norm.input[1] == conv.input[0], "z and xBC: both read from in_proj's output"


@pytest.mark.parametrize("fixture", MAMBA2_FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stateful_final_states(exported, fixture, dtype):
    ref = reference(fixture)
    path = exported[fixture, dtype, True]
    feeds = {"input_ids": ref["input_ids"], **zero_states(path, ref["input_ids"].shape[0])}
    out = ort_run(path, feeds)
    assert worst_rel(out["logits"], ref["logits"]) <= TIERS[dtype]
    for i in range(2):
        assert out[f"ssm_state_out.{i}"].dtype == np.float32
        err = worst_rel(out[f"ssm_state_out.{i}"], ref[f"ssm_states.{i}"])
        assert err <= TIERS[dtype], f"{fixture} {dtype} ssm state {i}: {err:.3e}"
        err = worst_rel(out[f"conv_state_out.{i}"], ref[f"conv_states.{i}"][:, :, 1:])
        assert err <= TIERS[dtype], f"{fixture} {dtype} conv state {i}: {err:.3e}"


@pytest.mark.parametrize("fixture", MAMBA2_FIXTURES)
def test_chunked_prefill_matches_one_shot(exported, fixture):
    """Uneven chunks, one token among them, carrying the states: every position's logits equal
    the one-shot reference."""
    ref = reference(fixture)
    path = exported[fixture, "float32", True]
    ids = ref["input_ids"]
    states = zero_states(path, ids.shape[0])
    for a, b in zip([0, 1, 2, 7, 8], [1, 2, 7, 8, ids.shape[1]]):
        out = ort_run(path, {"input_ids": ids[:, a:b], **states})
        err = worst_rel(out["logits"], ref["logits"][:, a:b])
        assert err <= 1e-4, f"{fixture} chunk {a}:{b}: {err:.3e}"
        states = {k.replace("_out", ""): v for k, v in out.items() if k not in ("logits", "next_token")}


class _OrtOp(OpRun):
    """A mambac op run by ONNX Runtime with libmambac_ops.so, inside the reference evaluator."""

    op_domain = "mambac"
    slots: list = []
    outputs = ["y", "final_state"]

    def _run(self, *inputs, **attrs):
        feeds = {n: v for n, v in zip(self.slots, inputs) if v is not None and n}
        slots = [n if n in feeds else "" for n in self.slots]
        given = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items() if v is not None}
        # As many outputs as the node has (the final norm's AddRmsNorm has no residual_out).
        outputs = self.outputs[: len(self.onnx_node.output)]
        return tuple(run_op(self.op_type, slots, feeds, outputs, given))


class SsdScan(_OrtOp):
    slots = SSD_INPUTS

    # *_offset: dt read from in_proj's packed output, x, B and C from the conv's, the dims they
    # do not carry as attributes (docs/op-contract.md "Sliced inputs").
    def _run(self, *inputs, dt_softplus=None, dt_min=None, dt_max=None, dt_offset=None, x_offset=None,
             B_offset=None, C_offset=None, head_dim=None, ngroups=None, dstate=None):
        return super()._run(*inputs, dt_softplus=dt_softplus, dt_min=dt_min, dt_max=dt_max, dt_offset=dt_offset,
                            x_offset=x_offset, B_offset=B_offset, C_offset=C_offset, head_dim=head_dim,
                            ngroups=ngroups, dstate=dstate)


class AddRmsNorm(_OrtOp):
    slots = ADD_NORM_INPUTS
    outputs = ["y", "residual_out"]

    def _run(self, *inputs, epsilon=None, plugin_namespace=None, plugin_version=None, present_inputs=None):
        return super()._run(*inputs, epsilon=epsilon)


class CausalConv1d(_OrtOp):
    slots = CONV_INPUTS

    # The TensorRT keys every export writes (docs/tensorrt.md) are the plugin's business: ORT's
    # op ignores them, and so does this stand-in.
    def _run(self, *inputs, activation=None, plugin_namespace=None, plugin_version=None, present_inputs=None,
             x_offset=None):
        return super()._run(*inputs, activation=activation, x_offset=x_offset)


class GatedRmsNorm(OpRun):
    """mambac.GatedRmsNorm run by ONNX Runtime with libmambac_ops.so (one output, `out`)."""

    op_domain = "mambac"

    def _run(self, y, z, weight, epsilon=None, group_size=None, norm_before_gate=None, z_offset=None,
             plugin_namespace=None, plugin_version=None, present_inputs=None):
        attrs = {"epsilon": epsilon, "group_size": group_size, "norm_before_gate": norm_before_gate,
                 "z_offset": z_offset}
        given = {k: v for k, v in attrs.items() if v is not None}
        feeds = dict(zip(GATED_NORM_INPUTS, (y, z, weight)))
        return tuple(run_op("GatedRmsNorm", GATED_NORM_INPUTS, feeds, ["out"], given))


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes is not installed")
@pytest.mark.parametrize("fixture", MAMBA2_FIXTURES)
def test_bfloat16_logits(exported, fixture):
    ref = reference(fixture)
    sess = ReferenceEvaluator(str(exported[fixture, "bfloat16", False]), new_ops=[SsdScan, CausalConv1d, AddRmsNorm,
                                                                                GatedRmsNorm])
    (logits,) = sess.run(["logits"], {"input_ids": ref["input_ids"]})
    err = worst_rel(np.asarray(logits).astype(np.float64), ref["logits"])
    assert err <= TIERS["bfloat16"], f"{fixture} bfloat16: worst rel {err:.3e}"


def test_norm_before_gate_variant(tmp_path):
    """mamba_ssm's norm_before_gate true (norm(y) * w * silu(z)) on the groups2 weights, against
    gen_mamba2_groups.py's numpy forward with the same flag."""
    ckpt, cfg, gen = groups2_variant(tmp_path, norm_before_gate=True)
    ref = reference("mamba2-groups2")
    weights = load_file(str(ckpt / "model.safetensors"))
    want, _ = gen.forward(weights, ref["input_ids"], cfg)
    mambac("export", ckpt, "-o", tmp_path / "m.onnx", "-q")
    logits = ort_run(tmp_path / "m.onnx", {"input_ids": ref["input_ids"]})["logits"]
    assert worst_rel(logits, want) <= 1e-4
    # The flag matters: the default order gives other logits.
    assert worst_rel(ref["logits"], want) > 1e-2


@pytest.mark.parametrize("fixture", MAMBA2_FIXTURES)
def test_generate_greedy_matches_one_shot_argmax(exported, fixture):
    """`mambac generate` on a Mamba-2 stateful export (prompts of different lengths, states
    stacked into one decode batch): each new id is the argmax of the one-shot logits of the
    prompt plus the ids before it."""
    import json

    from mambac_testing import ops_lib

    path = exported[fixture, "float32", True]
    prompts = [[5, 6, 7], [9]]
    r = mambac("generate", path, "--prompt-ids", ";".join(",".join(map(str, p)) for p in prompts),
               "--max-new-tokens", "6", "--greedy", "--json", "--ops-lib", ops_lib())
    ids = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
    assert len(ids) == 2
    for prompt, new in zip(prompts, ids):
        assert len(new) == 6
        seq = np.array([prompt + new], np.int64)
        logits = ort_run(path, {"input_ids": seq, **zero_states(path, 1)})["logits"][0]
        want = [int(np.argmax(logits[len(prompt) - 1 + k])) for k in range(len(new))]
        assert new == want, f"{fixture} prompt {prompt}: generated {new}, one-shot argmax {want}"
