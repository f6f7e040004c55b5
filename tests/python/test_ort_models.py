"""Exported fixture models in stock ONNX Runtime (pip) with libmambac_ops.so, and through
`mambac run`: logits within 1e-4 of the Hugging Face float64 reference."""

import os

import numpy as np
import onnxruntime as ort
import pytest
from safetensors.numpy import load_file, save_file

from mambac_testing import MAMBA1_FIXTURES, TESTDATA, load_reference, mambac, ops_lib, model_session
from ops_reference import worst_rel


session = model_session


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {}
    for fx in MAMBA1_FIXTURES:
        for dtype in ["float32", "float16"]:
            path = d / f"{fx}-{dtype}.onnx"
            mambac("export", TESTDATA / fx, "-o", path, "-q", "--dtype", dtype)
            out[fx, dtype] = path
    return out


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_stock_ort_float32(exported, fixture):
    ref = load_reference()
    (logits,) = session(exported[fixture, "float32"]).run(["logits"], {"input_ids": ref["input_ids"]})
    assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-4, f"{fixture}: worst rel {err:.3e}"


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_stock_ort_float16(exported, fixture):
    ref = load_reference()
    (logits,) = session(exported[fixture, "float16"]).run(["logits"], {"input_ids": ref["input_ids"]})
    assert logits.dtype == np.float16
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-2, f"{fixture} float16: worst rel {err:.3e}"


def test_unfused_export_runs_the_same(tmp_path):
    ref = load_reference()
    path = tmp_path / "unfused.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", path, "-q", "--no-fuse")
    (logits,) = session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    assert worst_rel(logits, ref["logits"]) <= 1e-4


def test_external_data_model_runs(tmp_path):
    ref = load_reference()
    path = tmp_path / "ext.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", path, "-q", "--external-data", "always")
    (logits,) = session(path).run(["logits"], {"input_ids": ref["input_ids"]})
    assert worst_rel(logits, ref["logits"]) <= 1e-4


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_mambac_run(exported, tmp_path, fixture):
    ref = load_reference()
    save_file({"input_ids": ref["input_ids"]}, str(tmp_path / "in.safetensors"))
    r = mambac("run", exported[fixture, "float32"], "--input", tmp_path / "in.safetensors", "-o", tmp_path / "out.safetensors",
               "--ops-lib", ops_lib(), "--threads", "2")
    out = load_file(str(tmp_path / "out.safetensors"))
    assert set(out) == {"logits", "next_token"}
    assert worst_rel(out["logits"], ref["logits"]) <= 1e-4
    np.testing.assert_array_equal(out["next_token"], np.argmax(out["logits"], axis=-1))


def test_mambac_run_stateful_writes_every_output(tmp_path):
    ref = load_reference()
    path = tmp_path / "s.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", path, "-q", "--stateful")
    feeds = {"input_ids": ref["input_ids"]}
    for i in range(2):
        feeds[f"conv_state.{i}"] = np.zeros((2, 128, 3), np.float32)
        feeds[f"ssm_state.{i}"] = np.zeros((2, 128, 16), np.float32)
    save_file(feeds, str(tmp_path / "in.safetensors"))
    mambac("run", path, "--input", tmp_path / "in.safetensors", "-o", tmp_path / "out.safetensors", "--ops-lib", ops_lib())
    out = load_file(str(tmp_path / "out.safetensors"))
    assert worst_rel(out["logits"], ref["logits"]) <= 1e-4
    for i in range(2):
        assert worst_rel(out[f"ssm_state_out.{i}"], ref[f"ssm_states.{i}"]) <= 1e-4
        assert worst_rel(out[f"conv_state_out.{i}"], ref[f"conv_states.{i}"][:, :, 1:]) <= 1e-4


def run_error(*args, env=None):
    import subprocess

    from mambac_testing import mambac_bin

    r = subprocess.run([str(mambac_bin()), *map(str, args)], capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert "panicked" not in r.stderr
    return r.stderr


def test_run_errors_name_the_problem(exported, tmp_path):
    ref = load_reference()
    model = exported["mamba-tiny-hf", "float32"]
    save_file({"input_ids": ref["input_ids"]}, str(tmp_path / "in.safetensors"))
    save_file({"tokens": ref["input_ids"]}, str(tmp_path / "wrong.safetensors"))
    out = tmp_path / "o.safetensors"
    assert "no tensor 'input_ids'" in run_error("run", model, "--input", tmp_path / "wrong.safetensors", "-o", out, "--ops-lib", ops_lib())
    assert "--ops-lib /nonexistent.so is not a file" in run_error("run", model, "--input", tmp_path / "in.safetensors", "-o", out, "--ops-lib", "/nonexistent.so")
    env = dict(os.environ, ORT_DYLIB_PATH="/nonexistent/libonnxruntime.so")
    assert "ORT_DYLIB_PATH is /nonexistent/libonnxruntime.so, which is not a file" in run_error(
        "run", model, "--input", tmp_path / "in.safetensors", "-o", out, "--ops-lib", ops_lib(), env=env)
    # Token ids outside the vocabulary: refused before ORT (whose Gather would wrap a negative id).
    save_file({"input_ids": np.full((1, 3), 5000, np.int64)}, str(tmp_path / "big.safetensors"))
    assert "token id 5000 at position [0, 0] is out of range" in run_error(
        "run", model, "--input", tmp_path / "big.safetensors", "-o", out, "--ops-lib", ops_lib())


def test_last_position_logits_in_ort(tmp_path):
    ref = load_reference()
    path = tmp_path / "last.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", path, "-q", "--stateful", "--logits", "last")
    feeds = {"input_ids": ref["input_ids"][:, :20]}
    for i in range(2):
        feeds[f"conv_state.{i}"] = np.zeros((2, 128, 3), np.float32)
        feeds[f"ssm_state.{i}"] = np.zeros((2, 128, 16), np.float32)
    out = session(path).run(None, feeds)
    assert out[0].shape == (2, 1, 1024)
    assert worst_rel(out[0], ref["logits"][:, 19:20]) <= 1e-4
