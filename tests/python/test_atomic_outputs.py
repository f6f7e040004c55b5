"""Outputs are written whole or not at all, and never over an input (issue 11, family 2).

A write that fails part way (here: `ulimit -f`, RLIMIT_FSIZE) leaves the earlier export (model,
external data, decode graph) byte-identical and loadable, and no temporary file behind. The
external-data file is named after the export id, so a new export never writes into the file an
earlier model reads; the earlier data file is removed once the new model is in place. An output
that is (or links to) an input is refused with a message naming both."""

import re
import resource
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from safetensors.numpy import load_file, save_file

from mambac_testing import TESTDATA, export_files, mambac, mambac_bin, model_session, ops_lib

CKPT = TESTDATA / "mamba-tiny-hf"


def limited(limit_bytes, *args):
    """mambac with files limited to `limit_bytes` (RLIMIT_FSIZE, what `ulimit -f` sets)."""

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([str(mambac_bin()), *map(str, args)], capture_output=True, text=True, preexec_fn=cap)


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def export_id(model):
    m = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}["mambac.export_id"]


def locations(model):
    m = onnx.load(str(model), load_external_data=False)
    return {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}


def logits(model, ids):
    return model_session(model).run(["logits"], {"input_ids": ids})[0]


IDS = np.random.default_rng(7).integers(0, 1024, (1, 6), dtype=np.int64)


@pytest.mark.parametrize("external", ["always", "never"])
def test_a_failed_export_keeps_the_earlier_one(tmp_path, external):
    out = tmp_path / "model.onnx"
    mambac("export", CKPT, "-o", out, "-q", "--external-data", external)
    before = snapshot(tmp_path)
    want = logits(out, IDS)
    # 100 kB: the weights (about 520 kB) cannot be written, in the data file or inline.
    r = limited(100_000, "export", CKPT, "-o", out, "-q", "--external-data", external)
    assert r.returncode == 1, r.stderr
    # The file that could not be written is named: the data file, or the model when inline.
    failed = r"model\.onnx\.[0-9a-f]+-[0-9a-f]+\.data" if external == "always" else r"model\.onnx"
    assert re.match(
        rf"error: cannot export {re.escape(str(CKPT))}: cannot write {re.escape(str(tmp_path))}/{failed}: "
        r"File too large \(os error 27\)\n\Z",
        r.stderr,
    ), r.stderr
    assert snapshot(tmp_path) == before, "the earlier export changed or a temporary file was left"
    np.testing.assert_array_equal(logits(out, IDS), want)


def test_data_file_carries_the_export_id_and_the_old_one_goes(tmp_path):
    out = tmp_path / "model.onnx"
    mambac("export", CKPT, "-o", out, "-q", "--external-data", "always")
    first = export_id(out)
    assert locations(out) == {f"model.onnx.{first}.data"}
    mambac("export", CKPT, "-o", out, "-q", "--external-data", "always")
    second = export_id(out)
    assert second != first
    assert export_files(tmp_path) == ["model.onnx", f"model.onnx.{second}.data"]
    assert locations(out) == {f"model.onnx.{second}.data"}
    # Back to inline weights: the data file of the earlier export goes too.
    mambac("export", CKPT, "-o", out, "-q", "--external-data", "never")
    assert export_files(tmp_path) == ["model.onnx"]
    model_session(out)


def test_decode_graph_export_is_atomic_too(tmp_path):
    out = tmp_path / "model.onnx"
    args = ["export", CKPT, "-o", out, "-q", "--external-data", "always", "--stateful", "--decode-graph"]
    mambac(*args)
    first = export_id(out)
    decode = tmp_path / "model.decode.onnx"
    assert locations(decode) == locations(out) == {f"model.onnx.{first}.data"}
    before = snapshot(tmp_path)
    r = limited(100_000, *args)
    assert r.returncode == 1 and "File too large" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before
    mambac(*args)
    second = export_id(out)
    assert export_files(tmp_path) == ["model.decode.onnx", "model.onnx", f"model.onnx.{second}.data"]
    assert locations(decode) == {f"model.onnx.{second}.data"}
    model_session(decode)


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json"])
def test_export_over_the_checkpoint_is_refused(tmp_path, victim):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(CKPT, ckpt)
    before = snapshot(ckpt)
    target = ckpt / victim
    r = mambac("export", ckpt, "-o", target, "-q", check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: cannot export {ckpt}: refusing to write {target}: it is the input {target}; choose another output\n"
    )
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    r = mambac("export", ckpt, "-o", link, "-q", check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: cannot export {ckpt}: refusing to write {link}: it is the input {target} (through a symlink); "
        "choose another output\n"
    )
    hard = tmp_path / "hard.onnx"
    hard.hardlink_to(target)
    r = mambac("export", ckpt, "-o", hard, "-q", check=False)
    assert "(a hard link to it)" in r.stderr and r.returncode == 1, r.stderr
    assert snapshot(ckpt) == before
    assert export_files(tmp_path) == ["ckpt", "hard.onnx", "link.onnx"]


def test_decode_graph_over_the_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(CKPT, ckpt)
    before = snapshot(ckpt)
    (tmp_path / "m.decode.onnx").symlink_to(ckpt / "model.safetensors")
    r = mambac("export", ckpt, "-o", tmp_path / "m.onnx", "-q", "--stateful", "--decode-graph", check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: cannot export {ckpt}: refusing to write {tmp_path / 'm.decode.onnx'}: it is the input "
        f"{ckpt / 'model.safetensors'} (through a symlink); choose another output\n"
    )
    assert snapshot(ckpt) == before
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def external_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("run_model")
    out = d / "m.onnx"
    mambac("export", CKPT, "-o", out, "-q", "--external-data", "always")
    save_file({"input_ids": IDS}, str(d / "in.safetensors"))
    return out, d / "in.safetensors"


def test_run_over_its_inputs_is_refused(external_model):
    model, inp = external_model
    d = model.parent
    before = snapshot(d)
    data = d / f"m.onnx.{export_id(model)}.data"
    for victim in [inp, model, data]:
        r = mambac("run", model, "--input", inp, "-o", victim, "--ops-lib", ops_lib(), check=False)
        assert r.returncode == 1
        assert r.stderr == f"error: refusing to write {victim}: it is the input {victim}; choose another output\n"
    link = d / "link.safetensors"
    link.symlink_to(inp)
    r = mambac("run", model, "--input", inp, "-o", link, "--ops-lib", ops_lib(), check=False)
    assert r.stderr == f"error: refusing to write {link}: it is the input {inp} (through a symlink); choose another output\n"
    link.unlink()
    assert snapshot(d) == before


def test_run_output_is_atomic(external_model, tmp_path):
    model, inp = external_model
    out = tmp_path / "o.safetensors"
    mambac("run", model, "--input", inp, "-o", out, "--ops-lib", ops_lib())
    before = snapshot(tmp_path)
    np.testing.assert_allclose(load_file(str(out))["logits"], logits(model, IDS), rtol=1e-5, atol=1e-6)
    # The logits (6 x 1024 float32) are 24 kB; 4 kB is too little.
    r = limited(4096, "run", model, "--input", inp, "-o", out, "--ops-lib", ops_lib())
    assert r.returncode == 1 and f"cannot write {out}: File too large" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def test_synth_is_atomic(tmp_path):
    out = tmp_path / "ckpt"
    mambac("synth", "--preset", "tiny", "--seed", "3", out)
    before = snapshot(out)
    r = limited(50_000, "synth", "--preset", "tiny", "--seed", "4", out)
    assert r.returncode == 1 and "File too large" in r.stderr, r.stderr
    assert snapshot(out) == before
