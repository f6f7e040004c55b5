"""The Mamba-2 decode graph and its op on ONNX Runtime's CUDA EP. `Mamba2LayerStep` has a CUDA
kernel (cpp/cuda/mamba2_decode_layer.cu), so:

- in a plain ONNX Runtime session on the CUDA EP (libmambac_ops built with `--features cuda`),
  ORT places the step nodes on the CUDA EP, and the decode graph gives the CPU session's logits
  and states (float32: 1e-4 worst relative, the model-level tier);
- one node on the CUDA EP matches the float64 reference, and refuses bad shapes and a batch past
  the kernels' limit with the op's exact messages;
- `mambac generate --ep cuda` takes the decode graph (no warning), with `--decode-graph on` too,
  and gives the CPU EP's greedy ids.

Skipped where onnxruntime has no CUDA EP (CI). Run on the GPU machine with MAMBAC_OPS_LIB set to
the CUDA build of the library and ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mambac_testing import TESTDATA, decode_path, mambac, ops_lib
from ops_reference import MAMBA2_STEP_INPUTS, mamba2_layer_step_ref, mismatch, one_node_model, worst_rel

if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime has no CUDA EP here", allow_module_level=True)

from test_decode_graph_mamba2 import step_feeds  # noqa: E402  (the CPU op tests' inputs)

OUTPUTS = ["residual_out", "conv_state_out", "ssm_state_out"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m2cuda") / "m.onnx"
    mambac("export", TESTDATA / "mamba2-groups2", "-o", path, "-q", "--stateful", "--decode-graph")
    return path


def session(path_or_model, cuda, profile_dir=None):
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_dir / "p")
    # TF32 off: ORT's CUDA MatMul (the lm_head here) uses it by default, ~1e-3 off float32.
    cuda_ep = ("CUDAExecutionProvider", {"use_tf32": "0"})
    providers = [cuda_ep, "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    src = str(path_or_model) if isinstance(path_or_model, Path) else path_or_model.SerializeToString()
    return ort.InferenceSession(src, so, providers=providers)


def step_providers(sess):
    events = json.loads(Path(sess.end_profiling()).read_text())
    return {e["args"].get("provider") for e in events
            if e.get("cat") == "Node" and (e.get("args") or {}).get("op_name") == "Mamba2LayerStep"}


def test_the_step_runs_on_the_cuda_ep(model, tmp_path):
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
        # next_token (the argmax ids) may flip on a near tie; generate's ids below cover it.
        if np.issubdtype(g.dtype, np.floating):
            err = worst_rel(g, w)
            assert err <= 1e-4, f"{name}: worst rel {err:.3e}"
    assert step_providers(gpu) == {"CUDAExecutionProvider"}


def node(feeds, **attrs):
    slots = [n if n in feeds else "" for n in MAMBA2_STEP_INPUTS]
    return one_node_model("Mamba2LayerStep", slots, feeds, OUTPUTS, attrs), {n: feeds[n] for n in slots if n}


@pytest.mark.parametrize("nbg", [0, 1])
def test_one_node_on_the_cuda_ep_matches_float64(tmp_path, nbg):
    feeds = step_feeds(np.random.default_rng(7 + nbg), np.float32, 3, 64, 8, 8, 2, 16, 4)
    m, inputs = node(feeds, dt_min=0.01, dt_max=0.5, norm_before_gate=nbg)
    sess = session(m, cuda=True, profile_dir=tmp_path)
    got = sess.run(OUTPUTS, inputs)
    want = mamba2_layer_step_ref(feeds, 1e-5, 0.01, 0.5, bool(nbg))
    for o, w, what in zip(got, want, OUTPUTS):
        msg = mismatch(o, w, "float32", what, scaled_atol=True)
        assert msg is None, msg
    assert step_providers(sess) == {"CUDAExecutionProvider"}


def test_the_cuda_kernel_refuses_a_bad_shape_by_name():
    feeds = step_feeds(np.random.default_rng(1), np.float32, 2, 8, 4, 4, 2, 4, 4)
    feeds["A"] = feeds["A"][:3]
    m, inputs = node(feeds)
    with pytest.raises(Exception) as e:
        session(m, cuda=True).run(OUTPUTS, inputs)
    assert "Mamba2LayerStep: input 'A' has shape [3], expected [4] (heads from 'ssm_state')" in str(e.value)


def test_the_cuda_kernel_refuses_a_batch_past_its_limit_by_name():
    """The smallest layer (one head of one channel, dstate 1, width 2) at batch 65536: the CPU
    kernel runs it, the CUDA one refuses it with the limit's message."""
    feeds = step_feeds(np.random.default_rng(2), np.float32, 65536, 1, 1, 1, 1, 1, 2)
    m, inputs = node(feeds)
    session(m, cuda=False).run(OUTPUTS, inputs)
    with pytest.raises(Exception) as e:
        session(m, cuda=True).run(OUTPUTS, inputs)
    assert "Mamba2LayerStep: batch 65536 is more than the CUDA kernels take (65535)" in str(e.value)


def test_generate_on_cuda_takes_the_decode_graph(model):
    ids = {}
    for ep, choice in [("cpu", "off"), ("cuda", "auto"), ("cuda", "on"), ("cuda", "off")]:
        r = mambac("generate", model, "--prompt-ids", "5,17,30;9", "--max-new-tokens", 8, "--json", "--ep", ep,
                   "--decode-graph", choice)
        ids[ep, choice] = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
        assert str(decode_path(model)) not in r.stderr, r.stderr  # no warning naming it
    assert ids["cuda", "auto"] == ids["cuda", "on"] == ids["cuda", "off"] == ids["cpu", "off"], ids
    r = mambac("bench", model, "--ep", "cuda", "--decode-graph", "on", "--prompt-len", 4, "--decode-tokens", 4,
               "--reps", 1, "--warmup", 0, "--json")
    assert json.loads(r.stdout)["decode_graph"] is True
