"""The mambac CLI as a user meets it: inspect output, and clear errors (non-zero exit, the file or
tensor named, no panic) for bad checkpoints."""

import json
import shutil

import pytest

from mambac_testing import TESTDATA, mambac


def test_inspect_fused_lists_fused_ops_with_types():
    r = mambac("inspect", TESTDATA / "mamba-tiny-hf")
    assert "mambac.SelectiveScan(delta_softplus=1)" in r.stdout
    assert "mambac.CausalConv1d(activation=silu)" in r.stdout
    assert "float32[batch, seqlen, 128]" in r.stdout
    assert "fuse_scan_gate/1" in r.stdout
    assert "Softplus(" not in r.stdout


def test_inspect_unfused_shows_primitives():
    r = mambac("inspect", TESTDATA / "mamba-tiny-hf", "--no-fuse")
    assert "Softplus(" in r.stdout and "mambac.SelectiveScan(delta_softplus=0)" in r.stdout
    assert "mambac.CausalConv1d(activation=none)" in r.stdout


def test_inspect_dot_is_graphviz():
    r = mambac("inspect", TESTDATA / "mamba-tiny-ssm", "--dot")
    assert r.stdout.startswith("digraph mamba {") and r.stdout.rstrip().endswith("}")
    assert "mambac.SelectiveScan" in r.stdout and "->" in r.stdout


def test_inspect_max_rewrites_stops_early():
    r = mambac("inspect", TESTDATA / "mamba-tiny-hf", "--max-rewrites", "3")
    assert "rewrites: 3" in r.stdout


def copy_fixture(tmp_path, name="mamba-tiny-hf"):
    dst = tmp_path / name
    shutil.copytree(TESTDATA / name, dst)
    return dst


def export_error(ckpt, tmp_path):
    r = mambac("export", ckpt, "-o", tmp_path / "x.onnx", check=False)
    assert r.returncode != 0, r.stderr
    assert "panicked" not in r.stderr and "RUST_BACKTRACE" not in r.stderr
    return r.stderr


def test_missing_config(tmp_path):
    ckpt = copy_fixture(tmp_path)
    (ckpt / "config.json").unlink()
    assert "config.json" in export_error(ckpt, tmp_path)


def test_truncated_weights(tmp_path):
    ckpt = copy_fixture(tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "model.safetensors" in export_error(ckpt, tmp_path)


def test_shape_contradicting_config(tmp_path):
    ckpt = copy_fixture(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["state_size"] = 8
    (ckpt / "config.json").write_text(json.dumps(cfg))
    err = export_error(ckpt, tmp_path)
    assert "A_log" in err and "[128, 16]" in err and "[128, 8]" in err


def test_corrupt_pickle(tmp_path):
    ckpt = copy_fixture(tmp_path, "mamba-tiny-ssm")
    (ckpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    assert "pytorch_model.bin" in export_error(ckpt, tmp_path)


def test_unwritable_output(tmp_path):
    r = mambac("export", TESTDATA / "mamba-tiny-hf", "-o", tmp_path / "no" / "such" / "dir" / "x.onnx", "-q", check=False)
    assert r.returncode != 0 and "x.onnx" in r.stderr and "panicked" not in r.stderr
