"""`mambac export` end to end, checked without our C++ kernels: the ONNX passes the checker, uses
the fused ops and no Loop/Scan, and onnx's reference evaluator (with docs/op-contract.md's ops in numpy)
reproduces the fixtures' reference logits."""

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from mambac_testing import MAMBA1_FIXTURES, TESTDATA, export_files, load_reference, mambac
from ops_reference import add_rms_norm_ref, causal_conv1d_ref, selective_scan_ref, sliced, worst_rel


class SelectiveScan(OpRun):
    op_domain = "mambac"

    # plugin_namespace, plugin_version, present_inputs: TensorRT's lookup keys (docs/tensorrt.md).
    # *_offset: inputs read from a packed last axis (docs/op-contract.md "Sliced inputs").
    def _run(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None, delta_softplus=1,
             plugin_namespace=None, plugin_version=None, present_inputs=None, z_offset=None, B_offset=None,
             C_offset=None):
        B, C = sliced(B, B_offset, A.shape[1], "B_offset"), sliced(C, C_offset, A.shape[1], "C_offset")
        z = sliced(z, z_offset, u.shape[2], "z_offset")
        y, h = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus))
        return (y.astype(u.dtype), h.astype(np.float32))


class CausalConv1d(OpRun):
    op_domain = "mambac"

    def _run(self, x, weight, bias=None, initial_state=None, activation="silu", plugin_namespace=None,
             plugin_version=None, present_inputs=None, x_offset=None):
        x = sliced(x, x_offset, weight.shape[0], "x_offset")
        act = activation.decode() if isinstance(activation, bytes) else activation
        y, state = causal_conv1d_ref(x, weight, bias, initial_state, silu=act == "silu")
        return (y.astype(x.dtype), state.astype(x.dtype))


class AddRmsNorm(OpRun):
    op_domain = "mambac"

    def _run(self, x, residual=None, weight=None, epsilon=1e-5, plugin_namespace=None, plugin_version=None,
             present_inputs=None):
        y, s = add_rms_norm_ref(x, residual, weight, epsilon)
        return (y.astype(x.dtype), s.astype(np.float32))


def evaluate(model_path, feeds):
    sess = ReferenceEvaluator(str(model_path), new_ops=[SelectiveScan, CausalConv1d, AddRmsNorm])
    names = [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]
    return dict(zip(names, sess.run(None, feeds)))


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
@pytest.mark.parametrize("fuse", [True, False])
def test_export_matches_reference(tmp_path, fixture, fuse):
    out = tmp_path / "model.onnx"
    mambac("export", TESTDATA / fixture, "-o", out, "-q", *([] if fuse else ["--no-fuse"]))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Loop" not in ops and "Scan" not in ops
    assert ops.count("SelectiveScan") == 2 and ops.count("CausalConv1d") == 2
    if fuse:
        # Everything the fused ops absorb is gone from the graph, and the splits of in_proj's and
        # x_proj's outputs too: the ops read them in place; dt_proj reads a Slice of dt_rank columns.
        assert "Softplus" not in ops and "Sigmoid" not in ops and "Exp" not in ops
        assert ops.count("Split") == 0 and ops.count("Slice") == 2, ops
        # The second layer's residual add and norm, and the final ones, are AddRmsNorm nodes; a
        # float32 export's first norm (no cast to fold) stays the standard-op pattern.
        # (Its one Add is that norm's epsilon: no residual add is left.)
        assert ops.count("AddRmsNorm") == 2 and ops.count("Pow") == 1 and ops.count("Add") == 1, ops
    else:
        assert ops.count("Split") == 4 and ops.count("Slice") == 0, ops
    assert [i.name for i in model.graph.input] == ["input_ids"]
    assert [o.name for o in model.graph.output] == ["logits", "next_token"]
    ref = load_reference()
    logits = evaluate(out, {"input_ids": ref["input_ids"]})["logits"]
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-4, f"{fixture}: worst rel {err:.3e}"


def test_tied_embedding_is_stored_once(tmp_path):
    out = tmp_path / "model.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q")
    model = onnx.load(str(out))
    big = [t for t in model.graph.initializer if 1024 in t.dims]
    assert len(big) == 1, [t.name for t in big]


def test_metadata_props(tmp_path):
    out = tmp_path / "model.onnx"
    mambac("export", TESTDATA / "mamba-tiny-ssm", "-o", out, "-q")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["mambac.source"].endswith("mamba-tiny-ssm")
    assert meta["mambac.source_layout"] == "StateSpaces"
    assert '"hidden_size":64' in meta["mambac.config"].replace(" ", "")
    assert meta["mambac.passes"].split(",") == [
        "fold_const_unary", "fuse_conv_bias", "fuse_conv_silu", "fuse_scan_softplus",
        "fuse_scan_delta_bias", "fuse_scan_d_skip", "fuse_scan_gate", "split_to_sliced_reads",
        "fuse_add_rms_norm",
    ]


def test_float16_export_of_float32_checkpoint(tmp_path):
    out = tmp_path / "model16.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", "--dtype", "float16")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    scan = next(n for n in model.graph.node if n.op_type == "SelectiveScan")
    inits = {t.name: t for t in model.graph.initializer}
    # A, D and delta_bias stay float32 (docs/op-contract.md); the weights are float16.
    for k in (2, 5, 7):
        assert inits[scan.input[k]].data_type == onnx.TensorProto.FLOAT
    assert inits[scan.input[2]].data_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    ref = load_reference()
    logits = evaluate(out, {"input_ids": ref["input_ids"]})["logits"]
    assert logits.dtype == np.float16
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-2, f"float16 export: worst rel {err:.3e}"


def test_forced_external_data_round_trips(tmp_path):
    out = tmp_path / "ext.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", "--external-data", "always")
    model = onnx.load(str(out), load_external_data=False)
    export_id = {p.key: p.value for p in model.metadata_props}["mambac.export_id"]
    # The data file carries the export id, so no later export writes into the file this model reads.
    data = tmp_path / f"ext.onnx.{export_id}.data"
    assert data.exists() and data.stat().st_size > 400_000
    assert export_files(tmp_path) == ["ext.onnx", data.name]
    assert out.stat().st_size < 100_000, "weights left inline"
    ext = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert ext, "no initializer is external"
    for t in ext:
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == data.name and int(info["offset"]) % 4096 == 0
    onnx.checker.check_model(str(out), full_check=True)
    ref = load_reference()
    logits = evaluate(out, {"input_ids": ref["input_ids"]})["logits"]
    assert worst_rel(logits, ref["logits"]) <= 1e-4


def test_stateful_export_interface(tmp_path):
    out = tmp_path / "stateful.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", "--stateful")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == {"input_ids", "conv_state.0", "ssm_state.0", "conv_state.1", "ssm_state.1"}
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    assert dims(inputs["conv_state.0"]) == ["batch", 128, 3]
    assert dims(inputs["ssm_state.1"]) == ["batch", 128, 16]
    assert inputs["ssm_state.0"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    outputs = [o.name for o in model.graph.output]
    assert outputs[:2] == ["logits", "next_token"]
    assert set(outputs[2:]) == {"conv_state_out.0", "ssm_state_out.0", "conv_state_out.1", "ssm_state_out.1"}


def test_export_error_names_the_problem(tmp_path):
    r = mambac("export", tmp_path / "nowhere", "-o", tmp_path / "x.onnx", check=False)
    assert r.returncode != 0
    assert "nowhere" in r.stderr and "panicked" not in r.stderr


def test_bfloat16_export_types(tmp_path):
    """bfloat16 exports target GPUs (ORT's CPU EP has no bfloat16 MatMul); here: the checker
    passes, weights are bfloat16, the scan's A/D/delta_bias float32, logits bfloat16."""
    out = tmp_path / "model_bf16.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", "--dtype", "bfloat16")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: t for t in model.graph.initializer}
    scan = next(n for n in model.graph.node if n.op_type == "SelectiveScan")
    assert [inits[scan.input[k]].data_type for k in (2, 5, 7)] == [onnx.TensorProto.FLOAT] * 3
    assert inits["backbone.layers.0.mixer.in_proj.weight.T"].data_type == onnx.TensorProto.BFLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16
    # RMSNorm stays float32 up to and including its weight (one type for ORT's fused
    # SimplifiedLayerNormalization, which has no mixed float32/bfloat16 CUDA kernel).
    for name in ["backbone.norm_f.weight", "backbone.layers.0.norm.weight"]:
        assert inits[name].data_type == onnx.TensorProto.FLOAT, name
    # The final norm is an AddRmsNorm (float32 stream and weight in, T out) feeding the lm_head.
    norm = next(n for n in model.graph.node if n.op_type == "AddRmsNorm" and "backbone.norm_f.weight" in n.input)
    lm_head = next(n for n in model.graph.node if n.name == "lm_head")
    assert norm.output[0] in lm_head.input
    # Values survive the conversion: bfloat16 of the float32 checkpoint, bit for bit.
    from safetensors.numpy import load_file

    w = load_file(str(TESTDATA / "mamba-tiny-hf" / "model.safetensors"))["backbone.layers.0.mixer.in_proj.weight"].T
    raw = np.frombuffer(inits["backbone.layers.0.mixer.in_proj.weight.T"].raw_data, dtype=np.uint16).reshape(w.shape)
    as_f32 = (raw.astype(np.uint32) << 16).view(np.float32)
    assert np.abs(as_f32 - w).max() <= np.abs(w).max() * 2**-8
