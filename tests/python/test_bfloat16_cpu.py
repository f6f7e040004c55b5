"""bfloat16 exports on the CPU: ONNX Runtime's CPU EP has no bfloat16 MatMul kernel (1.32), so
`run`, `generate` and `bench` refuse such a model on `--ep cpu` saying why and what to use, and
`export` says where the model runs. The export itself stays a bfloat16 model, for the CUDA EP.
(Casting around each MatMul would load, since MatMul is the only op without a bfloat16 CPU
kernel, but ORT's constant folding would turn the weights' casts into float32 copies: a float32 model's memory and
speed plus casts, and slower CUDA runs; a float32 export is the better CPU model.)"""

import json

import numpy as np
import onnx
import pytest
from safetensors.numpy import save_file

from mambac_testing import TESTDATA, mambac

WHY = (
    "{m} is a bfloat16 export, which ONNX Runtime's CPU execution provider cannot run (it has no "
    "bfloat16 MatMul kernel): export with --dtype float32 to run on the CPU, or run this model with --ep cuda: "
    "Could not find an implementation for MatMul(13) node with name 'backbone.layers.0.mixer.in_proj'"
)


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16")
    model = d / "model.onnx"
    r = mambac("export", TESTDATA / "mamba-tiny-hf", "-o", model, "-q", "--stateful", "--dtype", "bfloat16")
    assert (
        "note: bfloat16 models run on ONNX Runtime's CUDA EP; its CPU EP has no bfloat16 MatMul kernel "
        "(export with --dtype float32 for the CPU)\n"
    ) in r.stderr
    return model


def test_export_is_bfloat16_throughout(bf16):
    m = onnx.load(str(bf16))
    assert {p.key: p.value for p in m.metadata_props}["mambac.dtype"] == "bfloat16"
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16


def test_generate_refuses_on_the_cpu_saying_why(bf16):
    r = mambac("generate", bf16, "--prompt-ids", "1,2,3", "--max-new-tokens", "2", check=False)
    assert r.returncode == 1
    assert r.stderr == f"error: {bf16} cannot generate: {WHY.format(m=bf16)}\n"


def test_bench_refuses_on_the_cpu_saying_why(bf16):
    args = ["--batch", "1", "--prompt-len", "4", "--decode-tokens", "2", "--reps", "1", "--warmup", "0"]
    r = mambac("bench", bf16, *args, check=False)
    assert r.returncode == 1
    assert r.stderr == f"error: {bf16} cannot be benchmarked: {WHY.format(m=bf16)}\n"


def test_run_refuses_on_the_cpu_saying_why(bf16, tmp_path):
    save_file({"input_ids": np.array([[1, 2, 3]], dtype=np.int64)}, str(tmp_path / "in.safetensors"))
    r = mambac("run", bf16, "--input", tmp_path / "in.safetensors", "-o", tmp_path / "out.safetensors", check=False)
    assert r.returncode == 1
    assert r.stderr == f"error: {WHY.format(m=bf16)}\n"
    assert not (tmp_path / "out.safetensors").exists()


def test_float16_is_not_refused(tmp_path):
    """The message is for bfloat16 alone: a float16 export runs on the CPU EP."""
    model = tmp_path / "model.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", model, "-q", "--stateful", "--dtype", "float16")
    r = mambac("generate", model, "--prompt-ids", "1,2,3", "--max-new-tokens", "2", "--json")
    assert len(json.loads(r.stdout.strip().splitlines()[-1])["ids"]) == 2
