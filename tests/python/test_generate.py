"""Generation with stock ONNX Runtime (pip) and libmambac_ops.so, independently of the Rust
session code: a stateful export prefilled with k tokens then decoded one token at a time, and fed
in uneven chunks, reproduces the full-sequence float64 reference logits (1e-4 worst relative);
`mambac generate --greedy --json` equals the greedy continuation obtained by re-running the
whole sequence through the stateless export (no states involved at all)."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from mambac_testing import MAMBA1_FIXTURES, TESTDATA, load_reference, mambac, ops_lib, model_session
from ops_reference import worst_rel


session = model_session


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    out = {}
    for fx in MAMBA1_FIXTURES:
        out[fx, "stateful"] = d / f"{fx}-stateful.onnx"
        mambac("export", TESTDATA / fx, "-o", out[fx, "stateful"], "-q", "--stateful")
        out[fx, "plain"] = d / f"{fx}.onnx"
        mambac("export", TESTDATA / fx, "-o", out[fx, "plain"], "-q")
    return out


def zero_states(sess, batch):
    """Zero states for every state input, shapes and dtypes read from the model."""
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    return {
        i.name: np.zeros([batch] + i.shape[1:], dtype=types[i.type])
        for i in sess.get_inputs()
        if i.name != "input_ids"
    }


def run_chunks(sess, ids, bounds):
    """Feeds ids[:, a:b] for consecutive bounds, carrying the states; returns all logits."""
    states = zero_states(sess, ids.shape[0])
    names = [o.name for o in sess.get_outputs()]
    logits = []
    for a, b in zip(bounds, bounds[1:]):
        outs = dict(zip(names, sess.run(None, {"input_ids": ids[:, a:b], **states})))
        logits.append(outs["logits"])
        states = {k: outs[k.replace("_state.", "_state_out.")] for k in states}
    return np.concatenate(logits, axis=1)


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
@pytest.mark.parametrize("k", [1, 12])
def test_prefill_then_decode(models, fixture, k):
    ref = load_reference()
    ids = ref["input_ids"]
    sess = session(models[fixture, "stateful"])
    logits = run_chunks(sess, ids, [0] + list(range(k, ids.shape[1] + 1)))
    err = worst_rel(logits, ref["logits"])
    assert err <= 1e-4, f"{fixture}: prefill {k} then decode: worst rel {err:.3e}"


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
@pytest.mark.parametrize("bounds", [[0, 5, 6, 7, 19, 20, 37], [0, 2, 17, 18, 36, 37]])
def test_uneven_chunks(models, fixture, bounds):
    ref = load_reference()
    sess = session(models[fixture, "stateful"])
    err = worst_rel(run_chunks(sess, ref["input_ids"], bounds), ref["logits"])
    assert err <= 1e-4, f"{fixture}: chunks {bounds}: worst rel {err:.3e}"


@pytest.mark.parametrize("fixture", MAMBA1_FIXTURES)
def test_generate_greedy_equals_whole_sequence_argmax(models, fixture):
    plain = session(models[fixture, "plain"])
    prompts = [[17, 900, 3, 44, 1000, 12, 7], [500, 2]]
    want = []
    for p in prompts:
        seq = list(p)
        for _ in range(6):
            logits = plain.run(None, {"input_ids": np.array([seq], dtype=np.int64)})[0]
            seq.append(int(np.argmax(logits[0, -1])))
        want.append(seq[len(p):])
    arg = ";".join(",".join(map(str, p)) for p in prompts)
    out = mambac("generate", models[fixture, "stateful"], "--prompt-ids", arg, "--max-new-tokens", 6, "--greedy", "--json").stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"ids": want}
