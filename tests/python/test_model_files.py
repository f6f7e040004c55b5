"""What a deployment needs beside the model (issue 16 item 7): `export` copies the checkpoint's
config, generation config and tokenizer files next to the ONNX file; `generate` takes its EOS
ids and (for text prompts) its tokenizer from there; a Hugging Face model id resolves to the
local HF cache, and one not there is an error (mambac never downloads)."""

import json
import os
import shutil

import pytest

from mambac_testing import TESTDATA, mambac

TINY = TESTDATA / "mamba-tiny-hf"


def copy_tiny(dst, eos=None):
    shutil.copytree(TINY, dst)
    if eos is not None:
        gen = json.loads((dst / "generation_config.json").read_text())
        gen["eos_token_id"] = eos
        (dst / "generation_config.json").write_text(json.dumps(gen))
    return dst


def export(ckpt, out, *flags, env=None):
    return mambac("export", ckpt, "-o", out, "-q", "--stateful", "--logits", "last", *flags)


def sampled_ids(model, *flags):
    """Six seeded samples (the tiny model's greedy choice repeats one id)."""
    sampling = ["--temperature", "1.5", "--seed", "3"]
    r = mambac("generate", model, "--prompt-ids", "5,6,7", "--max-new-tokens", "6", "--json", *sampling, *flags)
    return json.loads(r.stdout.strip().splitlines()[-1])["ids"], r.stderr


def test_export_copies_the_side_files(tmp_path):
    out = tmp_path / "deploy" / "model.onnx"
    r = export(TINY, out)
    assert "copied config.json, generation_config.json, tokenizer.json beside " + str(out) + "\n" in r.stderr
    for name in ["config.json", "generation_config.json", "tokenizer.json"]:
        assert (out.parent / name).read_bytes() == (TINY / name).read_bytes()
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith("model.onnx")) == [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
    ]


def test_generate_stops_at_the_eos_beside_the_model(tmp_path):
    plain = tmp_path / "plain" / "model.onnx"
    export(TINY, plain)
    ids, _ = sampled_ids(plain, "--ignore-eos")
    assert len(ids) == 6 and len(set(ids)) == 6, ids  # each id ends the sequence at its place
    # A checkpoint whose EOS is the second token: generation ends there by default.
    ckpt = copy_tiny(tmp_path / "ckpt", eos=ids[1])
    model = tmp_path / "eos" / "model.onnx"
    export(ckpt, model)
    got, err = sampled_ids(model)
    assert got == ids[:2]
    assert err.endswith(
        f"stopped at EOS {ids[1]} (eos_token_id of {model.parent / 'generation_config.json'}; --ignore-eos to go on)\n"
    )
    assert sampled_ids(model, "--ignore-eos")[0] == ids
    # --stop-id replaces the config's EOS.
    assert sampled_ids(model, "--stop-id", str(ids[2]))[0] == ids[:3]
    # Without generation_config.json, config.json's eos_token_id.
    (model.parent / "generation_config.json").unlink()
    cfg = json.loads((model.parent / "config.json").read_text())
    cfg["eos_token_id"] = ids[3]
    (model.parent / "config.json").write_text(json.dumps(cfg))
    assert sampled_ids(model)[0] == ids[:4]


def test_generate_reads_the_tokenizer_beside_the_model(tmp_path):
    model = tmp_path / "m" / "model.onnx"
    export(TINY, model)
    args = ["--prompt", "Mamba is", "--max-new-tokens", "5", "--json", "--ignore-eos"]
    beside = mambac("generate", model, *args)
    given = mambac("generate", model, *args, "--tokenizer", TINY / "tokenizer.json")
    assert beside.stdout == given.stdout and len(beside.stdout.splitlines()) == 2
    (model.parent / "tokenizer.json").unlink()
    r = mambac("generate", model, *args, check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: --prompt needs a tokenizer: give --tokenizer, or put tokenizer.json beside {model} "
        "(mambac export copies the checkpoint's)\n"
    )


def hf_cache(root, repo="org/tiny", rev="0123abcd"):
    """A Hugging Face hub cache holding TINY as `repo` (files as symlinks into blobs/, as the
    hub library writes them)."""
    d = root / "hub" / f"models--{repo.replace('/', '--')}"
    snap = d / "snapshots" / rev
    snap.mkdir(parents=True)
    (d / "blobs").mkdir()
    for f in TINY.iterdir():
        blob = d / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    for k in ["HF_HUB_CACHE", "XDG_CACHE_HOME"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # so 'org/tiny' is not a folder here
    return home


def test_a_model_id_in_the_hf_cache_exports(tmp_path, hf_home):
    snap = hf_cache(hf_home)
    out = tmp_path / "out" / "model.onnx"
    r = mambac("export", "org/tiny", "-o", out, "-q")
    assert "copied config.json, generation_config.json, tokenizer.json beside" in r.stderr
    meta = mambac("inspect", "org/tiny").stdout.splitlines()[0]
    assert meta.startswith(f"# {snap} (HuggingFace)")


def test_a_model_id_not_in_the_cache_is_named(tmp_path, hf_home):
    r = mambac("export", "org/absent", "-o", tmp_path / "m.onnx", check=False)
    assert r.returncode == 1
    assert r.stderr == (
        f"error: 'org/absent' is not a folder, and not in the local Hugging Face cache (no "
        f"{hf_home / 'hub' / 'models--org--absent'}); mambac never downloads: fetch it first (e.g. "
        "`huggingface-cli download org/absent`) or give the checkpoint folder\n"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_hf_hub_cache_wins_over_hf_home(tmp_path, hf_home, monkeypatch):
    other = tmp_path / "elsewhere"
    hf_cache(other)
    monkeypatch.setenv("HF_HUB_CACHE", str(other / "hub"))
    mambac("export", "org/tiny", "-o", tmp_path / "m.onnx", "-q")
    assert (tmp_path / "tokenizer.json").is_file()
