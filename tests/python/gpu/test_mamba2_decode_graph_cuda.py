"""The Mamba-2 decode graph on a CUDA machine. `Mamba2LayerStep` has no CUDA kernel, so:

- in a plain ONNX Runtime session on the CUDA EP (libmambac_ops built with `--features cuda`),
  ORT places the step nodes on the CPU EP, and the decode graph gives the CPU session's logits
  and states (float32 tier, 1e-5 worst relative);
- `mambac generate --ep cuda` leaves the decode graph out with a warning and gives the CPU EP's
  greedy ids; `--decode-graph on --ep cuda` refuses it.

Skipped where onnxruntime has no CUDA EP (CI). Run on the GPU machine with MAMBAC_OPS_LIB set to
the CUDA build of the library and ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mambac_testing import TESTDATA, mambac, ops_lib
from ops_reference import worst_rel

if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime has no CUDA EP here", allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m2cuda") / "m.onnx"
    mambac("export", TESTDATA / "mamba2-groups2", "-o", path, "-q", "--stateful", "--decode-graph")
    return path


def session(path, cuda, profile_dir=None):
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_dir / "p")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), so, providers=providers)


def test_the_step_runs_on_the_cpu_ep_inside_a_cuda_session(model, tmp_path):
    decode = model.with_name("m.decode.onnx")
    cpu = session(decode, cuda=False)
    gpu = session(decode, cuda=True, profile_dir=tmp_path)
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 64, (2, 1))}
    for i in cpu.get_inputs()[1:]:
        feeds[i.name] = rng.standard_normal([2] + list(i.shape[1:])).astype(np.float32)
    outs = [o.name for o in cpu.get_outputs()]
    want = cpu.run(outs, feeds)
    got = gpu.run(outs, feeds)
    for name, g, w in zip(outs, got, want):
        assert worst_rel(g, w) <= 1e-5, name
    events = json.loads(Path(gpu.end_profiling()).read_text())
    providers = {e["args"].get("provider") for e in events
                 if e.get("cat") == "Node" and (e.get("args") or {}).get("op_name") == "Mamba2LayerStep"}
    assert providers == {"CPUExecutionProvider"}, providers


def test_generate_on_cuda_leaves_the_decode_graph_out(model):
    decode = model.with_name("m.decode.onnx")
    ids = {}
    for ep in ["cpu", "cuda"]:
        r = mambac("generate", model, "--prompt-ids", "5,17,30;9", "--max-new-tokens", 8, "--json", "--ep", ep)
        ids[ep] = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
        if ep == "cuda":
            assert f"warning: {decode} is not used: its Mamba2LayerStep nodes have no CUDA kernel" in r.stderr
    assert ids["cuda"] == ids["cpu"]
    r = mambac("generate", model, "--prompt-ids", "5", "--max-new-tokens", 1, "--ep", "cuda", "--decode-graph", "on",
               check=False)
    assert r.returncode == 1 and "cannot be used: its Mamba2LayerStep nodes have no CUDA kernel" in r.stderr
