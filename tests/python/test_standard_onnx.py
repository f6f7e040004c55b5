"""`mambac export --ops standard`: Mamba-1 in standard ONNX only (opset 27's CausalConvWithState and
LinearAttention), run by stock ONNX Runtime with NO custom op library registered: logits within
the op contract's model tiers of the Hugging Face float64 reference, stateful chunks equal to one
pass, the same state interface as the custom-op export, and the refusals it documents
(docs/standard-onnx.md)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mambac_testing import MAMBA1_FIXTURES, TESTDATA, load_reference, mambac, model_session
from ops_reference import worst_rel

# docs/op-contract.md's model-level tiers (worst relative error of the logits).
MODEL_TIER = {"float32": 1e-4, "float16": 1e-2}


def plain_session(path):
    """Stock ORT on the CPU, two threads, and nothing registered: the model must stand alone."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export(tmp_path, fixture="mamba-tiny-hf", *args, name="model.onnx"):
    out = tmp_path / name
    mambac("export", TESTDATA / fixture, "-o", out, "-q", "--ops", "standard", *args)
    return out


def check_standard_model(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 27)]
    ops = [n.op_type for n in model.graph.node]
    assert all(n.domain == "" for n in model.graph.node)
    assert "Loop" not in ops and "Scan" not in ops
    assert ops.count("LinearAttention") == 2 and ops.count("CausalConvWithState") == 2
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["mambac.ops"] == "standard"
    return model


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fuse", [True, False])
def test_standard_export_matches_reference(tmp_path, fixture, dtype, fuse):
    path = export(tmp_path, fixture, "--dtype", dtype, *([] if fuse else ["--no-fuse"]))
    check_standard_model(path)
    ref = load_reference()
    (logits,) = plain_session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    assert logits.dtype == np.dtype(dtype) and logits.shape == ref["logits"].shape
    err = worst_rel(logits, ref["logits"])
    assert err <= MODEL_TIER[dtype], f"{fixture} {dtype} fuse={fuse}: worst rel {err:.3e}"


def zero_states(sess, batch):
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    return {
        i.name: np.zeros([batch, *i.shape[1:]], types[i.type])
        for i in sess.get_inputs() if i.name != "input_ids"
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stateful_chunks_equal_one_pass(tmp_path, dtype):
    path = export(tmp_path, "mamba-tiny-hf", "--stateful", "--dtype", dtype)
    check_standard_model(path)
    ref = load_reference()
    ids = ref["input_ids"]
    sess = plain_session(path)
    names = [o.name for o in sess.get_outputs()]
    one = dict(zip(names, sess.run(None, {"input_ids": ids, **zero_states(sess, ids.shape[0])})))
    tier = MODEL_TIER[dtype]
    assert worst_rel(one["logits"], ref["logits"]) <= tier
    for i in range(2):
        assert worst_rel(one[f"ssm_state_out.{i}"], ref[f"ssm_states.{i}"]) <= tier
        assert worst_rel(one[f"conv_state_out.{i}"], ref[f"conv_states.{i}"][:, :, 1:]) <= tier
    # A prompt, one-token decode steps, then the rest: the states carry everything.
    states = zero_states(sess, ids.shape[0])
    bounds = [0, 7, 8, 9, 20, ids.shape[1]]
    chunks = []
    for a, b in zip(bounds, bounds[1:]):
        out = dict(zip(names, sess.run(None, {"input_ids": ids[:, a:b], **states})))
        chunks.append(out["logits"])
        states = {k: out[k.replace("_state.", "_state_out.")] for k in states}
    # Float32 chunking changes only the summation order; float16 rounds the conv state to T.
    same = 1e-5 if dtype == "float32" else 5e-3
    assert worst_rel(np.concatenate(chunks, axis=1), one["logits"]) <= same
    for k, v in states.items():
        assert worst_rel(v, one[k.replace("_state.", "_state_out.")]) <= same, k


def test_stateful_interface_is_the_custom_ops_one(tmp_path):
    standard = plain_session(export(tmp_path, "mamba-tiny-hf", "--stateful", "--dtype", "float16"))
    custom_path = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", custom_path, "-q", "--stateful", "--dtype", "float16")
    custom = model_session(custom_path)
    sig = lambda vs: [(v.name, v.type, v.shape) for v in vs]  # noqa: E731
    assert sig(standard.get_inputs()) == sig(custom.get_inputs())
    assert sig(standard.get_outputs()) == sig(custom.get_outputs())


def test_generate_gives_the_custom_ops_ids(tmp_path):
    custom = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", custom, "-q", "--stateful", "--logits", "last")
    standard = export(tmp_path, "mamba-tiny-hf", "--stateful", "--logits", "last", name="standard.onnx")
    args = ["--prompt-ids", "5,17,300;9", "--max-new-tokens", "12", "--greedy", "--json", "--threads", "2"]
    ids = [json.loads(mambac("generate", m, *args).stdout.strip().splitlines()[-1]) for m in (custom, standard)]
    assert ids[0] == ids[1]


def test_quantized_standard_export_runs_without_the_library(tmp_path):
    ref = load_reference()
    path = export(tmp_path, "mamba-tiny-hf", "--quantize", "int8")
    model = onnx.load(str(path))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 27), ("com.microsoft", 1)}
    assert not {n.op_type for n in model.graph.node} & {"SelectiveScan", "CausalConv1d"}
    custom = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", custom, "-q", "--quantize", "int8")
    (got,) = plain_session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    (want,) = model_session(custom).run(["logits"], {"input_ids": ref["input_ids"]})
    # The same MatMulNBits on the same weights: only the scan's and conv's float32 sums differ.
    assert worst_rel(got, want) <= 1e-4


@pytest.mark.parametrize("fixture, args, message", [
    ("mamba-tiny-hf", ["--stateful", "--decode-graph"],
     "the decode graph needs --ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"),
    ("mamba-tiny-hf", ["--dtype", "bfloat16"],
     "--ops standard needs --dtype float32 or float16 (ONNX Runtime's CPU LinearAttention has no bfloat16 kernel)"),
    ("mamba2-tiny-hf", [],
     "--ops standard has no standard-ONNX form of SsdScan (node 'backbone.layers.0.mixer.ssd_scan'): "
     "export this model with --ops mambac"),
])
def test_refusals_name_the_argument(tmp_path, fixture, args, message):
    out = tmp_path / "model.onnx"
    r = mambac("export", TESTDATA / fixture, "-o", out, "-q", "--ops", "standard", *args, check=False)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert "panicked" not in r.stderr
    assert not out.exists()


def test_mambac_generate_needs_no_library_for_a_standard_model(tmp_path):
    """A mambac binary with no op library beside it (and none named): the standard model runs; a
    custom-op model fails with the lookup's message beside ORT's."""
    import os
    import shutil
    import subprocess

    from mambac_testing import mambac_bin

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(mambac_bin(), bin_dir / "mambac")
    recorded = mambac_bin().with_name("mambac-ort.path")  # how the copy finds ORT without ORT_DYLIB_PATH
    if recorded.is_file():
        shutil.copy(recorded, bin_dir / recorded.name)
    env = {k: v for k, v in os.environ.items() if k != "MAMBAC_OPS_LIB"}
    standard = export(tmp_path, "mamba-tiny-hf", "--stateful", "--logits", "last", name="standard.onnx")
    custom = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", custom, "-q", "--stateful", "--logits", "last")
    args = ["--prompt-ids", "5,17", "--max-new-tokens", "4", "--json"]
    run = lambda m: subprocess.run([str(bin_dir / "mambac"), "generate", str(m), *args],  # noqa: E731
                                   capture_output=True, text=True, env=env)
    ok = run(standard)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["ids"]
    bad = run(custom)
    assert bad.returncode == 1 and "panicked" not in bad.stderr
    assert (f"cannot load {custom} (the mambac op library was not found: pass --ops-lib PATH or set MAMBAC_OPS_LIB "
            f"(looked for {bin_dir / 'libmambac_ops.so'} beside the executable, and for "
            f"{tmp_path}/lib/python3*/site-packages/mambac/libmambac_ops.so; `cargo build --release` builds it, "
            "`pip install .` installs it))") in bad.stderr, bad.stderr
