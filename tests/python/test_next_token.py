"""The exports' `next_token` output: the greedy pick made in the graph (ArgMax over float32
logits, the first index on ties), so a decode loop copies `batch` ids off the device instead of
`batch` x vocab logits. Checked here with stock ORT on the CPU EP, whole tensors against numpy's
argmax of the same run's logits; and `mambac generate --greedy` / `bench` on an export whose
`next_token` was removed (an export from before it existed), or its non-finite check (an export from
before that), give the same ids as with both. A row of NaN or infinite logits picks -1: the
runtime reports it (tools/runtime/tests/non_finite_logits.rs) instead of generating from it.

Float16 on the CPU EP: ORT computes the lm_head in float32 there and rounds to float16 for the
`logits` output, and it drops the round trip float32 -> float16 -> float32 in front of ArgMax,
so `next_token` sees the unrounded values: where two rounded logits tie it may pick the later
one (seen: tokens 99 and 956 of mamba2-tiny-hf both 2.4394531). So float16 picks are checked as
"a largest logit", float32 ones as exactly numpy's argmax."""

import json

import numpy as np
import onnx
import pytest

from mambac_testing import TESTDATA, mambac, model_session

FIXTURES = ["mamba-tiny-hf", "mamba2-tiny-hf", "mamba2-groups2"]
NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def export(tmp_path, fixture, *flags):
    out = tmp_path / f"{fixture}{'-'.join(flags)}.onnx"
    mambac("export", TESTDATA / fixture, "-o", out, "-q", *flags)
    return out


def random_feeds(sess, batch, seqlen, seed):
    """Seeded ids and (for stateful exports) states: logits that differ between positions."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "input_ids":
            vocab = sess.get_outputs()[0].shape[2]
            feeds[i.name] = rng.integers(0, vocab, size=(batch, seqlen), dtype=np.int64)
        else:
            feeds[i.name] = (0.5 * rng.standard_normal([batch, *i.shape[1:]])).astype(NP_TYPES[i.type])
    return feeds


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("flags", [("--stateful", "--logits", "last"), ("--stateful",), ()])
def test_next_token_is_the_argmax_of_the_logits(tmp_path, fixture, dtype, flags):
    model = export(tmp_path, fixture, "--dtype", dtype, *flags)
    sess = model_session(model)
    outs = {o.name: o for o in sess.get_outputs()}
    assert outs["next_token"].type == "tensor(int64)"
    assert [o.name for o in sess.get_outputs()][:2] == ["logits", "next_token"]
    names = [o.name for o in sess.get_outputs()]
    for batch, seqlen, seed in [(1, 1, 0), (3, 7, 1), (2, 19, 2)]:
        res = dict(zip(names, sess.run(None, random_feeds(sess, batch, seqlen, seed))))
        logits, got = res["logits"], res["next_token"]
        positions = 1 if "last" in flags else seqlen
        assert got.shape == (batch, positions) and got.dtype == np.int64
        want = np.argmax(logits.astype(np.float32), axis=-1)
        what = f"{fixture} {dtype} {flags} b{batch} l{seqlen}"
        if dtype == "float32":
            np.testing.assert_array_equal(got, want, err_msg=what)
        else:
            picked = np.take_along_axis(logits, got[..., None], axis=-1)[..., 0]
            np.testing.assert_array_equal(picked, logits.max(axis=-1), err_msg=what)
            assert np.mean(got == want) >= 0.9, f"{what}: ties should be rare"


def test_decode_graph_has_next_token_too(tmp_path):
    model = export(tmp_path, "mamba-tiny-hf", "--stateful", "--logits", "last", "--decode-graph")
    decode = model_session(model.with_suffix(".decode.onnx"))
    names = [o.name for o in decode.get_outputs()]
    res = dict(zip(names, decode.run(None, random_feeds(decode, 4, 1, 3))))
    np.testing.assert_array_equal(res["next_token"], np.argmax(res["logits"], axis=-1))


@pytest.mark.parametrize("fixture", ["mamba-tiny-hf", "mamba2-tiny-hf"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_next_token_is_minus_one_exactly_on_rows_of_non_finite_logits(tmp_path, fixture, dtype):
    """Batch row 1's states are NaN (its logits all NaN); in float32, row 2's are huge, so that
    its logits overflow to infinities (or NaN: what matters is that the pick says so whenever a
    logit is not finite). Every other row picks numpy's argmax. float16's row 2 stays ordinary:
    its `logits` output is rounded from the float32 values the pick reads (module docstring),
    so an overflow would show in one and not the other."""
    model = export(tmp_path, fixture, "--dtype", dtype, "--stateful")
    sess = model_session(model)
    names = [o.name for o in sess.get_outputs()]
    feeds = random_feeds(sess, 4, 3, 5)
    for k, v in feeds.items():
        if k != "input_ids":
            v[1] = np.nan
            if dtype == "float32":
                v[2] *= 1e30
    res = dict(zip(names, sess.run(None, feeds)))
    logits, got = res["logits"].astype(np.float32), res["next_token"]
    bad = ~np.isfinite(logits).all(axis=-1)
    assert bad[1].all() and not bad[0].any() and not bad[3].any(), bad
    if dtype == "float32":
        assert bad[2].any(), "the huge states should overflow some logits"
    want = np.where(bad, -1, np.argmax(np.where(bad[..., None], 0, logits), axis=-1))
    if dtype == "float32":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_array_equal(got == -1, bad)
        ok = ~bad
        picked = np.take_along_axis(logits, np.where(ok, got, 0)[..., None], axis=-1)[..., 0]
        np.testing.assert_array_equal(picked[ok], logits.max(axis=-1)[ok])


def the_check_nodes(g):
    """The nodes of `next_token`'s non-finite check (ReduceSum, Sub, IsNaN, Where)."""
    pick = {"next_token.to_float", "next_token.argmax"}
    return [n for n in g.node if n.name == "next_token" or n.name.startswith("next_token.") and n.name not in pick]


def without_next_token(model, out):
    """The export as it was before `next_token`: the output, its ArgMax and its non-finite check
    (and the Cast in front of them, in 16-bit exports) removed."""
    m = onnx.load(str(model))
    g = m.graph
    keep = [o for o in g.output if o.name != "next_token"]
    del g.output[:]
    g.output.extend(keep)
    nodes = [n for n in g.node if not n.name.startswith("next_token")]
    assert {"ArgMax", "Where"} <= {n.op_type for n in g.node} - {n.op_type for n in nodes}
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(out))
    return out


def without_non_finite_check(model, out):
    """The export as it was between `next_token` and its non-finite check: ArgMax's output is
    `next_token` itself."""
    m = onnx.load(str(model))
    g = m.graph
    check = the_check_nodes(g)
    assert sorted(n.op_type for n in check) == ["IsNaN", "ReduceSum", "Sub", "Where"], check
    nodes = [n for n in g.node if n not in check]
    (argmax,) = [n for n in nodes if n.op_type == "ArgMax"]
    argmax.output[0] = "next_token"
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("fixture", ["mamba-tiny-hf", "mamba2-tiny-hf"])
@pytest.mark.parametrize("decode_graph", [False, True])
def test_generate_picks_the_same_tokens_with_and_without_next_token(tmp_path, fixture, decode_graph):
    flags = ("--stateful", "--logits", "last") + (("--decode-graph",) if decode_graph else ())
    # float32: no rounding between the logits and the graph's pick (see the module's docstring).
    model = export(tmp_path, fixture, *flags)
    old = without_next_token(model, tmp_path / "old.onnx")
    unchecked = without_non_finite_check(model, tmp_path / "unchecked.onnx")
    if decode_graph:
        without_next_token(model.with_suffix(".decode.onnx"), tmp_path / "old.decode.onnx")
        without_non_finite_check(model.with_suffix(".decode.onnx"), tmp_path / "unchecked.decode.onnx")
    assert "next_token" not in [o.name for o in model_session(old).get_outputs()]
    assert "Where" not in [n.op_type for n in onnx.load(str(unchecked)).graph.node]
    args = ("--prompt-ids", "17,900,3,44,1000;500,2;7", "--max-new-tokens", 12, "--greedy", "--json")
    new_ids = json.loads(mambac("generate", model, *args).stdout.strip().splitlines()[-1])
    old_ids = json.loads(mambac("generate", old, *args).stdout.strip().splitlines()[-1])
    unchecked_ids = json.loads(mambac("generate", unchecked, *args).stdout.strip().splitlines()[-1])
    assert new_ids == old_ids == unchecked_ids
    assert all(len(ids) == 12 for ids in new_ids["ids"])
    # bench takes the same path (it prints its table; it must run on every export).
    for m in (model, old, unchecked):
        mambac("bench", m, "--batch", 3, "--prompt-len", 5, "--decode-tokens", 4, "--reps", 1, "--warmup", 0)
