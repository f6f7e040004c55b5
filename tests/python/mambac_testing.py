"""Shared helpers of the Python tests that drive the CLI and exported models: paths, the binary,
the op library, sessions and the fixtures' reference logits. The tolerance tiers and the error
metric are in ops_reference.py, their one home; the ops' float64 references in
python/mambac/reference.py (the Python package's), which ops_reference.py re-exports."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
MAMBA1_FIXTURES = ["mamba-tiny-hf", "mamba-tiny-ssm"]
# What `export` copies from the checkpoint folder beside the model (tools/src/cmd/model_files.rs).
SIDE_FILES = {"config.json", "generation_config.json", "tokenizer.json"}


def is_final_norm_helper(name):
    """A scalar of a plain final RMSNorm (`backbone.norm_f.two`, `.eps`, `.axes`): the decode
    graph's own, as the stateful graph's final norm is an AddRmsNorm (docs/op-contract.md)."""
    return name.startswith("backbone.norm_f.") and name != "backbone.norm_f.weight"


def export_files(folder):
    """The names in `folder` other than the side files an export copies: the models and data."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in SIDE_FILES)


def mambac_bin() -> Path:
    return Path(os.environ.get("MAMBAC_BIN", ROOT / "target" / "release" / "mambac"))


def ops_lib() -> Path:
    return Path(os.environ.get("MAMBAC_OPS_LIB", ROOT / "target" / "release" / "libmambac_ops.so"))


def model_session(model, threads=2):
    """A stock onnxruntime CPU session of an exported model with libmambac_ops.so registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def plain_session(model, threads=2):
    """Stock ORT on the CPU and nothing registered: a `--ops standard` model must stand alone."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def zero_states(sess, batch):
    """Zero conv and ssm states of a stateful model's session, in its input shapes and types."""
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    return {
        i.name: np.zeros([batch, *i.shape[1:]], types[i.type])
        for i in sess.get_inputs() if i.name != "input_ids"
    }


def mambac(*args, check=True):
    """Runs the mambac CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([str(mambac_bin()), *map(str, args)], capture_output=True, text=True, check=check)


def load_reference(fixture="mamba-tiny-hf"):
    from safetensors.numpy import load_file

    # mamba-tiny-ssm holds the same weights as mamba-tiny-hf and has no reference of its own.
    own = TESTDATA / fixture / "reference.safetensors"
    return load_file(str(own if own.is_file() else TESTDATA / "mamba-tiny-hf" / "reference.safetensors"))


# --- decode graphs (`mambac export --stateful --decode-graph`) ------------------------------------

def export_with_decode_graphs(folder, fixtures, external):
    """Stateful float32 and float16 exports of `fixtures` with their decode graphs, into `folder`;
    `external(fixture)` says which get external data. Returns {(fixture, dtype): model path}."""
    out = {}
    for fixture in fixtures:
        for dtype in ["float32", "float16"]:
            path = Path(folder) / f"{fixture}-{dtype}.onnx"
            mambac("export", TESTDATA / fixture, "-o", path, "-q", "--stateful", "--decode-graph", "--dtype", dtype,
                   "--external-data", "always" if external(fixture) else "never")
            out[fixture, dtype] = path
    return out


def decode_path(model):
    """The decode graph beside `model`."""
    return Path(model).with_name(Path(model).stem + ".decode.onnx")


def _step(sess, outs, feeds):
    return dict(zip(outs, sess.run(outs, feeds)))


def _next_states(states, res):
    return {s: res[s.replace("_state.", "_state_out.")] for s in states}


def prefill_then_decode(model, ids, k=5):
    """Prefills ids[:, :k] with the stateful `model`, then feeds the rest one token a step to its
    decode graph. Returns (logits of every position, the final states, the worst relative
    difference of a decode step from the stateful model's step on the same states, and the
    difference a lost state makes: the first step's logits from zero states)."""
    import numpy as np

    from ops_reference import worst_rel

    general, decode = model_session(model), model_session(decode_path(model))
    outs = [o.name for o in general.get_outputs()]
    assert outs == [o.name for o in decode.get_outputs()]
    states = zero_states(general, ids.shape[0])
    res = _step(general, outs, {"input_ids": ids[:, :k], **states})
    logits, states = [res["logits"]], _next_states(states, res)
    step_worst, fresh_worst = 0.0, 0.0
    for pos in range(k, ids.shape[1]):
        tok = ids[:, pos:pos + 1]
        got = _step(decode, outs, {"input_ids": tok, **states})
        want = _step(general, outs, {"input_ids": tok, **states})
        step_worst = max(step_worst, *(worst_rel(got[o], want[o]) for o in outs))
        if pos == k:
            (fresh,) = decode.run(["logits"], {"input_ids": tok, **{s: np.zeros_like(v) for s, v in states.items()}})
            fresh_worst = worst_rel(fresh, want["logits"])
        logits.append(got["logits"])
        states = _next_states(states, got)
    return np.concatenate(logits, axis=1), states, step_worst, fresh_worst


def float16_step_worst(model, vocab, batch=3, steps=4, seed=7):
    """A float16 export and its decode graph from the same states, `steps` random tokens of a
    batch: the worst relative difference of any output (logits and states) of one step."""
    import numpy as np

    from ops_reference import worst_rel

    general, decode = model_session(model), model_session(decode_path(model))
    outs = [o.name for o in general.get_outputs()]
    rng = np.random.default_rng(seed)
    states = zero_states(general, batch)
    states = _next_states(states, _step(general, outs, {"input_ids": rng.integers(0, vocab, (batch, 6)), **states}))
    worst = 0.0
    for _ in range(steps):
        tok = rng.integers(0, vocab, (batch, 1))
        got = _step(decode, outs, {"input_ids": tok, **states})
        want = _step(general, outs, {"input_ids": tok, **states})
        assert got["logits"].dtype == np.float16
        worst = max(worst, *(worst_rel(got[o], want[o]) for o in outs))
        states = _next_states(states, want)
    return worst


def groups2_variant(folder, **changes):
    """testdata/mamba2-groups2's weights under a config with `changes` (e.g. norm_before_gate),
    in `folder`/ckpt, and gen_mamba2_groups.py (its numpy forward). Returns (checkpoint folder,
    config, gen module)."""
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("gen", TESTDATA / "gen_mamba2_groups.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cfg = dict(gen.CFG, **changes)
    ckpt = Path(folder) / "ckpt"
    ckpt.mkdir()
    shutil.copy(TESTDATA / "mamba2-groups2" / "model.safetensors", ckpt)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt, cfg, gen
