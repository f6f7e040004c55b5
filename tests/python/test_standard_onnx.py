"""`mambac export --ops standard`: Mamba-1 and Mamba-2 in standard ONNX only (opset 27's
CausalConvWithState and LinearAttention), run by stock ONNX Runtime with NO custom op library
registered: logits within the op contract's model tiers of the float64 references (Hugging Face's;
mamba2-groups2's numpy one: 2 groups, a clamping dt limit), final states, stateful chunks equal to
one pass, the same state interface and generated ids as the custom-op export, and the refusals it
documents (docs/standard-onnx.md)."""

import json

import numpy as np
import onnx
import pytest

from mambac_testing import (MAMBA1_FIXTURES, TESTDATA, load_reference, mambac, model_session, plain_session,
                            zero_states)
from ops_reference import worst_rel

# docs/op-contract.md's model-level tiers (worst relative error of the logits).
MODEL_TIER = {"float32": 1e-4, "float16": 1e-2}
MAMBA2_FIXTURES = ["mamba2-tiny-hf", "mamba2-groups2"]
# One fixture a kind of model the stateful tests cover: Mamba-1, Mamba-2, Mamba-2 with 2 groups.
STATEFUL_FIXTURES = ["mamba-tiny-hf", *MAMBA2_FIXTURES]


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


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES + MAMBA2_FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fuse", [True, False])
def test_standard_export_matches_reference(tmp_path, fixture, dtype, fuse):
    path = export(tmp_path, fixture, "--dtype", dtype, *([] if fuse else ["--no-fuse"]))
    check_standard_model(path)
    ref = load_reference(fixture)
    (logits,) = plain_session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    assert logits.dtype == np.dtype(dtype) and logits.shape == ref["logits"].shape
    err = worst_rel(logits, ref["logits"])
    assert err <= MODEL_TIER[dtype], f"{fixture} {dtype} fuse={fuse}: worst rel {err:.3e}"


@pytest.mark.parametrize("fixture", STATEFUL_FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stateful_chunks_equal_one_pass(tmp_path, fixture, dtype):
    path = export(tmp_path, fixture, "--stateful", "--dtype", dtype)
    check_standard_model(path)
    ref = load_reference(fixture)
    ids = ref["input_ids"]
    sess = plain_session(path)
    names = [o.name for o in sess.get_outputs()]
    one = dict(zip(names, sess.run(None, {"input_ids": ids, **zero_states(sess, ids.shape[0])})))
    tier = MODEL_TIER[dtype]
    assert worst_rel(one["logits"], ref["logits"]) <= tier
    for i in range(2):
        assert one[f"ssm_state_out.{i}"].dtype == np.float32
        assert worst_rel(one[f"ssm_state_out.{i}"], ref[f"ssm_states.{i}"]) <= tier
        assert worst_rel(one[f"conv_state_out.{i}"], ref[f"conv_states.{i}"][:, :, 1:]) <= tier
    # A first token alone, a prompt, one-token decode steps, then the rest: the states carry
    # everything.
    states = zero_states(sess, ids.shape[0])
    bounds = [b for b in [0, 1, 7, 8, 9, 20] if b < ids.shape[1]] + [ids.shape[1]]
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


@pytest.mark.parametrize("fixture", STATEFUL_FIXTURES)
def test_stateful_interface_is_the_custom_ops_one(tmp_path, fixture):
    standard = plain_session(export(tmp_path, fixture, "--stateful", "--dtype", "float16"))
    custom_path = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / fixture, "-o", custom_path, "-q", "--stateful", "--dtype", "float16")
    custom = model_session(custom_path)
    sig = lambda vs: [(v.name, v.type, v.shape) for v in vs]  # noqa: E731
    assert sig(standard.get_inputs()) == sig(custom.get_inputs())
    assert sig(standard.get_outputs()) == sig(custom.get_outputs())


@pytest.mark.parametrize("fixture, prompts", [
    ("mamba-tiny-hf", "5,17,300;9"),
    ("mamba2-tiny-hf", "5,17,300;9"),
    ("mamba2-groups2", "5,17,60;9"),  # a vocabulary of 64
])
def test_generate_gives_the_custom_ops_ids(tmp_path, fixture, prompts):
    custom = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / fixture, "-o", custom, "-q", "--stateful", "--logits", "last")
    standard = export(tmp_path, fixture, "--stateful", "--logits", "last", name="standard.onnx")
    args = ["--prompt-ids", prompts, "--max-new-tokens", "12", "--greedy", "--json", "--threads", "2"]
    ids = [json.loads(mambac("generate", m, *args).stdout.strip().splitlines()[-1]) for m in (custom, standard)]
    assert ids[0] == ids[1]


def test_mamba2_graph(tmp_path):
    """Each attention head is a Mamba-2 head (one decay a head, d_v = head_dim); the dt limit is a
    Clip where it changes softplus's output (groups2's (0.05, 0.5)), and absent where it cannot
    (tiny-hf's (0, inf))."""
    for fixture, heads, clip in [("mamba2-tiny-hf", 8, None), ("mamba2-groups2", 4, (0.05, 0.5))]:
        model = check_standard_model(export(tmp_path, fixture, name=f"{fixture}.onnx"))
        last_dim = {v.name: v.type.tensor_type.shape.dim[-1].dim_value for v in model.graph.value_info}
        attention = [n for n in model.graph.node if n.op_type == "LinearAttention"]
        for n in attention:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs["q_num_heads"] == attrs["kv_num_heads"] == heads
            assert attrs["update_rule"] == b"gated" and attrs["scale"] == 1.0
            assert last_dim[n.input[4]] == heads  # the decay: [batch, seqlen, heads]
            assert last_dim[n.input[2]] == heads * 16  # the value: head_dim 16 a head
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        clips = [n for n in model.graph.node if n.op_type == "Clip"]
        if clip is None:
            assert not clips
        else:
            assert len(clips) == 2
            for n in clips:
                assert (float(inits[n.input[1]]), float(inits[n.input[2]])) == pytest.approx(clip)


@pytest.mark.parametrize("limit", [(0.05, None), (0.0, 0.3)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mamba2_dt_limit_on_one_side(tmp_path, limit, dtype):
    """mamba2-groups2's weights with a dt limit of a floor only (an infinite Clip bound) or a
    ceiling only, against gen_mamba2_groups.py's numpy float64 forward with the same limit."""
    import importlib.util
    import shutil

    from safetensors.numpy import load_file

    spec = importlib.util.spec_from_file_location("gen", TESTDATA / "gen_mamba2_groups.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    lo, hi = limit
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(TESTDATA / "mamba2-groups2" / "model.safetensors", ckpt)
    written = [lo, {"__float__": "Infinity"} if hi is None else hi]
    (ckpt / "config.json").write_text(json.dumps(dict(gen.CFG, time_step_limit=written)))
    ids = load_reference("mamba2-groups2")["input_ids"]
    cfg = dict(gen.CFG, time_step_limit=[lo, np.inf if hi is None else hi])
    want, _ = gen.forward(load_file(str(ckpt / "model.safetensors")), ids, cfg)
    path = tmp_path / "m.onnx"
    mambac("export", ckpt, "-o", path, "-q", "--ops", "standard", "--dtype", dtype)
    # A floor above 0 or a finite ceiling changes softplus's output: both need the Clip.
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Clip") == 2
    (logits,) = plain_session(path).run(["logits"], {"input_ids": ids})
    assert worst_rel(logits, want) <= MODEL_TIER[dtype]
    # The limit matters: the fixture's (0.05, 0.5) gives other logits.
    assert worst_rel(load_reference("mamba2-groups2")["logits"], want) > 0.1


@pytest.mark.parametrize("fixture", ["mamba-tiny-hf", "mamba2-tiny-hf"])
def test_quantized_standard_export_runs_without_the_library(tmp_path, fixture):
    ref = load_reference(fixture)
    path = export(tmp_path, fixture, "--quantize", "int8")
    model = onnx.load(str(path))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 27), ("com.microsoft", 1)}
    assert not {n.op_type for n in model.graph.node} & {"SelectiveScan", "SsdScan", "CausalConv1d"}
    custom = tmp_path / "custom.onnx"
    mambac("export", TESTDATA / fixture, "-o", custom, "-q", "--quantize", "int8")
    (got,) = plain_session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    (want,) = model_session(custom).run(["logits"], {"input_ids": ref["input_ids"]})
    # The same MatMulNBits on the same weights: only the scan's and conv's float32 sums differ.
    assert worst_rel(got, want) <= 1e-4


@pytest.mark.parametrize("fixture, args, message", [
    ("mamba-tiny-hf", ["--stateful", "--decode-graph"],
     "the decode graph needs --ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"),
    ("mamba-tiny-hf", ["--dtype", "bfloat16"],
     "--ops standard needs --dtype float32 or float16 (ONNX Runtime's CPU LinearAttention has no bfloat16 kernel)"),
    ("mamba2-tiny-hf", ["--stateful", "--decode-graph"],
     "the decode graph needs --ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"),
    ("mamba2-groups2", ["--dtype", "bfloat16"],
     "--ops standard needs --dtype float32 or float16 (ONNX Runtime's CPU LinearAttention has no bfloat16 kernel)"),
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
