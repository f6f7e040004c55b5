"""`next_token`'s non-finite check on ONNX Runtime's CUDA EP: the check's nodes (ReduceSum, Sub,
IsNaN, Where) and the ArgMax run on the CUDA EP (none falls back to the CPU), a batch row whose
states are NaN picks -1 and every other row what the CPU EP picks (model and decode graph,
float32 and float16); and `mambac generate --ep cuda` (CUDA graph replays included) fails with
the runtime's error naming the prompt and batch row, as on the CPU
(tools/tests/generate_cli.rs has the CPU twin).

Skipped where onnxruntime has no CUDA EP. Run on the GPU machine with MAMBAC_OPS_LIB set to the
CUDA build of the library and ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mambac_testing import TESTDATA, mambac

if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime has no CUDA EP here", allow_module_level=True)

from test_mamba2_decode_graph_cuda import session  # noqa: E402  (ORT sessions, CUDA EP or CPU)
from test_next_token import random_feeds  # noqa: E402  (the CPU test's inputs)

CHECK_OPS = {"ReduceSum", "Sub", "IsNaN", "Where", "ArgMax"}
BATCH, POISONED = 4, 1


def feeds(sess, seqlen, seed):
    """The CPU test's seeded ids and states, batch row POISONED's states all NaN."""
    out = random_feeds(sess, BATCH, seqlen, seed)
    for name, v in out.items():
        if name != "input_ids":
            v[POISONED] = np.nan
    return out


@pytest.mark.parametrize("fixture", ["mamba-tiny-hf", "mamba2-tiny-hf"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_check_runs_on_cuda_and_marks_the_nan_row(tmp_path, fixture, dtype):
    model = tmp_path / "m.onnx"
    mambac("export", TESTDATA / fixture, "-o", model, "-q", "--stateful", "--decode-graph", "--dtype", dtype)
    for path, seqlen in [(model, 5), (model.with_suffix(".decode.onnx"), 1)]:
        cuda = session(path, True, tmp_path)
        f = feeds(cuda, seqlen, 3)
        got = cuda.run(["next_token"], f)[0]
        events = json.loads(Path(cuda.end_profiling()).read_text())
        placed = {(e["args"]["op_name"], e["args"].get("provider")) for e in events
                  if e.get("cat") == "Node" and (e.get("args") or {}).get("op_name") in CHECK_OPS}
        assert {op for op, _ in placed} == CHECK_OPS, placed
        assert all(p == "CUDAExecutionProvider" for _, p in placed), f"{path.name}: {placed}"
        cpu = session(path, False).run(["next_token"], f)[0]
        want_bad = np.zeros_like(cpu, dtype=bool)
        want_bad[POISONED] = True
        np.testing.assert_array_equal(got == -1, want_bad, err_msg=path.name)
        np.testing.assert_array_equal(cpu == -1, want_bad, err_msg=path.name)
        if dtype == "float32":
            np.testing.assert_array_equal(got, cpu, err_msg=path.name)


def test_generate_on_cuda_reports_the_sequence_with_nan_logits(tmp_path):
    """The untied synthetic checkpoint with the embedding row of prompt 2's first new token NaN:
    prefill is finite, prompt 2's first decode step is not."""
    from safetensors.numpy import load_file, save_file

    ckpt = tmp_path / "untied"
    mambac("synth", "--preset", "tiny", "--untied", "--seed", 5, ckpt)
    prompts = "17,900,3,44,1000,12,7;" + ",".join(str(i) for i in range(1, 21))
    clean = tmp_path / "clean.onnx"
    mambac("export", ckpt, "-o", clean, "-q", "--stateful", "--decode-graph")
    args = ("--prompt-ids", prompts, "--greedy", "--json", "--ep", "cuda")
    first = json.loads(mambac("generate", clean, *args, "--max-new-tokens", 1).stdout.strip().splitlines()[-1])
    poison = first["ids"][1][0]
    assert poison != first["ids"][0][0] and str(poison) not in prompts.replace(";", ",").split(","), poison
    weights = ckpt / "model.safetensors"
    tensors = {k: v.copy() for k, v in load_file(weights).items()}
    tensors["backbone.embeddings.weight"][poison] = np.nan
    save_file(tensors, weights)
    broken = tmp_path / "broken.onnx"
    mambac("export", ckpt, "-o", broken, "-q", "--stateful", "--decode-graph")
    out = mambac("generate", broken, *args, "--max-new-tokens", 4, check=False)
    assert out.returncode != 0 and "panicked" not in out.stderr, out.stderr
    assert out.stderr.endswith(
        "prompt 2, new token 2: the logits of batch row 1 are not finite (NaN or infinity) at position 0 of this "
        "step: the model produced no usable token\n"
    ), out.stderr
