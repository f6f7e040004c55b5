"""The mambac CLI as a user meets it: inspect output, and clear errors (non-zero exit, the file or
tensor named, no panic) for bad checkpoints."""

import json
import shutil

import onnx
import pytest

from mambac_testing import TESTDATA, export_files, mambac


def test_inspect_fused_lists_fused_ops_with_types():
    r = mambac("inspect", TESTDATA / "mamba-tiny-hf")
    # The ops read their parts of in_proj's (x, z) and x_proj's (B, C) outputs in place.
    assert "mambac.SelectiveScan(delta_softplus=1, B_offset=4, C_offset=20, z_offset=128)" in r.stdout
    assert "mambac.CausalConv1d(activation=silu, x_offset=0)" in r.stdout
    assert "SliceLast([0, 4))" in r.stdout and "SplitLast" not in r.stdout
    assert "float32[batch, seqlen, 128]" in r.stdout
    assert "fuse_scan_gate/1" in r.stdout and "split_to_sliced_reads/3" in r.stdout
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
    # A missing folder is made (below); one under a regular file cannot be.
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "dir" / "x.onnx"
    r = mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", check=False)
    assert r.returncode == 1
    assert r.stderr == f"error: cannot make the folder {out.parent}: Not a directory (os error 20)\n"


def test_export_makes_the_output_folder(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q")
    assert out.is_file()


@pytest.mark.parametrize(
    "fixture, file", [("mamba-tiny-hf", "model.safetensors"), ("mamba-tiny-hf", "config.json"), ("mamba-tiny-ssm", "pytorch_model.bin")]
)
def test_a_checkpoint_file_names_its_folder(tmp_path, fixture, file):
    out = tmp_path / "m.onnx"
    mambac("export", TESTDATA / fixture / file, "-o", out, "-q")
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["mambac.source"] == str(TESTDATA / fixture)


def test_a_file_that_is_not_a_checkpoint_file_is_refused(tmp_path):
    r = mambac("export", TESTDATA / "mamba-tiny-hf" / "reference.json", "-o", tmp_path / "m.onnx", check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: {TESTDATA / 'mamba-tiny-hf' / 'reference.json'} is a file, not a checkpoint: give the folder holding "
        "config.json and the weights (or its config.json, model.safetensors or pytorch_model.bin)\n"
    )


def test_an_inline_re_export_removes_the_external_data(tmp_path):
    out = tmp_path / "m.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q", "--external-data", "always")
    (tmp_path / "m.onnx.data").write_bytes(b"an export of before export ids")
    assert len(list(tmp_path.glob("m.onnx.*.data"))) == 1
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q")
    assert export_files(tmp_path) == ["m.onnx"]


def test_synth_presets_are_a_value_list(tmp_path):
    r = mambac("synth", "--preset", "huge", tmp_path / "s", check=False)
    assert r.returncode == 2
    assert "invalid value 'huge' for '--preset <PRESET>'\n  [possible values: tiny, 130m, 370m, 790m, 1.4b, 2.8b]" in r.stderr
    mambac("synth", "--preset", "MAMBA-TINY", tmp_path / "s")
    assert json.loads((tmp_path / "s" / "config.json").read_text())["hidden_size"] == 64


# Token ids and input checks (issue 11, family 6): `run` and `generate` share one id check, which
# names the input, the position and the value; `run` checks each input's type and shape too.


@pytest.fixture(scope="module")
def run_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_run")
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", d / "m.onnx", "-q")
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", d / "s.onnx", "-q", "--stateful")
    return d


def run_with(d, tmp_path, tensors, model="m.onnx"):
    from safetensors.numpy import save_file

    from mambac_testing import ops_lib

    inp = tmp_path / "in.safetensors"
    save_file(tensors, str(inp))
    r = mambac("run", d / model, "--input", inp, "-o", tmp_path / "o.safetensors", "--ops-lib", ops_lib(), check=False)
    assert "panicked" not in r.stderr
    return inp, r


def seeded_ids(shape, seed=11):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 1024, shape, dtype=np.int64)


@pytest.mark.parametrize("bad, where", [(-1, (0, 3)), (1024, (1, 0)), (-(2**63), (1, 4)), (2**40, (0, 0))])
def test_run_rejects_token_ids_outside_the_vocabulary(run_models, tmp_path, bad, where):
    ids = seeded_ids((2, 5))
    ids[where] = bad
    inp, r = run_with(run_models, tmp_path, {"input_ids": ids})
    assert r.returncode == 1
    assert r.stderr == (
        f"error: input 'input_ids' of {inp}: token id {bad} at position [{where[0]}, {where[1]}] is out of range: "
        "the model's vocabulary has 1024 entries (ids 0..=1023)\n"
    )
    assert not (tmp_path / "o.safetensors").exists()


def test_run_accepts_every_id_of_the_vocabulary(run_models, tmp_path):
    ids = seeded_ids((1, 6))
    ids[0, 0], ids[0, 5] = 0, 1023
    _, r = run_with(run_models, tmp_path, {"input_ids": ids})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o.safetensors").is_file()


def test_generate_rejects_negative_and_too_large_ids(run_models):
    r = mambac("generate", run_models / "s.onnx", "--prompt-ids", "5,-1", "--max-new-tokens", 1, check=False)
    assert r.returncode == 1 and r.stderr == "error: --prompt-ids: prompt 1: token id -1 is negative\n"
    r = mambac("generate", run_models / "s.onnx", "--prompt-ids", "5,6;7,8,1024", "--max-new-tokens", 1, check=False)
    assert r.returncode == 1
    assert r.stderr == (
        "error: prompt 2: token id 1024 at position 2 is out of range: "
        "the model's vocabulary has 1024 entries (ids 0..=1023)\n"
    )


def test_run_checks_each_inputs_type_and_shape(run_models, tmp_path):
    import numpy as np

    rng = np.random.default_rng(5)
    cases = [
        ({"input_ids": seeded_ids((2, 5)).astype(np.int32)}, "m.onnx", "input 'input_ids': {inp} holds int32 [2, 5]; the model takes int64 [batch, seqlen]"),
        ({"input_ids": seeded_ids((10,))}, "m.onnx", "input 'input_ids': {inp} holds int64 [10]; the model takes int64 [batch, seqlen]"),
        ({"input_ids": rng.standard_normal((2, 5)).astype(np.float32)}, "m.onnx", "input 'input_ids': {inp} holds float32 [2, 5]; the model takes int64 [batch, seqlen]"),
    ]
    # A stateful model's state with the wrong width: the message names the state input.
    states = {}
    for i in range(2):
        states[f"conv_state.{i}"] = rng.standard_normal((1, 128, 3)).astype(np.float32)
        states[f"ssm_state.{i}"] = rng.standard_normal((1, 128, 16)).astype(np.float32)
    states["ssm_state.1"] = rng.standard_normal((1, 128, 8)).astype(np.float32)
    cases.append(({"input_ids": seeded_ids((1, 4)), **states}, "s.onnx", "input 'ssm_state.1': {inp} holds float32 [1, 128, 8]; the model takes float32 [batch, 128, 16]"))
    for tensors, model, want in cases:
        inp, r = run_with(run_models, tmp_path, tensors, model)
        assert r.returncode == 1
        assert r.stderr == "error: " + want.format(inp=inp) + "\n"
