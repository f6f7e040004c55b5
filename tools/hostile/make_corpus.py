#!/usr/bin/env python3
"""Writes the hostile-input corpus of issue 11 into DIR: small malformed checkpoints, pickles,
zips, config files, ONNX models, token-id files and argument bombs, plus DIR/cases.json, which
lists for each case the mambac command line (relative to DIR, which is the working directory
it runs in), the exit status it must give (1: an error, 2: a usage error), a phrase its message
must hold, and the family of the issue it belongs to. Nothing large is written: the largest file
is the 3 GiB deflate bomb's ~3 MB of compressed zeros.

tests/python/test_hostile_corpus.py runs every case under a 4 GiB address-space limit and a 30 s
timeout.

Usage: make_corpus.py DIR   (needs numpy and onnx; deterministic: seeded)
"""

import json
import os
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
HF = TESTDATA / "mamba-tiny-hf"
SSM = TESTDATA / "mamba-tiny-ssm"
BIG = 1 << 62
RNG = np.random.default_rng(11)

cases = []


def case(name, family, args, exit, key, **extra):
    """One case: `mambac ARGS` run in DIR must exit with `exit` and print `key` (a phrase, or a
    list of phrases of which one must appear) on stderr."""
    assert all(c["name"] != name for c in cases), name
    c = {"name": name, "family": family, "args": [str(a) for a in args], "exit": exit, "key": key}
    c.update(extra)
    cases.append(c)


# --- safetensors (issue family 7: the reader held up; kept so it stays that way) ---------------


def st_bytes(header, data=b""):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_family(d):
    good = (HF / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    data = good[8 + n :]
    name = next(k for k in header if k != "__metadata__")

    def variant(tag, blob, key="model.safetensors"):
        ck = d / "st" / tag
        ck.mkdir(parents=True)
        shutil.copy(HF / "config.json", ck / "config.json")
        (ck / "model.safetensors").write_bytes(blob)
        case(f"st-{tag}", "safetensors", ["export", ck.relative_to(d), "-o", f"out/st-{tag}.onnx", "-q"], 1, key)

    def with_entry(**kv):
        h = json.loads(json.dumps(header))
        h[name].update(kv)
        return st_bytes(h, data)

    variant("empty-file", b"")
    variant("short-length", b"\x10\x00\x00")
    variant("length-past-end", struct.pack("<Q", 1 << 40) + b"{}")
    variant("length-2e63", struct.pack("<Q", (1 << 63) + 5) + b"{}")
    variant("length-zero", struct.pack("<Q", 0) + data)
    variant("not-json", st_bytes(b"{not json at all" + b" " * 64, data))
    variant("json-array", st_bytes(b"[1, 2, 3]", data))
    variant("bad-utf8", st_bytes(b'{"\xff\xfe": 1}', data))
    variant("deep-json", st_bytes(b"[" * 100_000 + b"]" * 100_000, data))
    variant("offsets-past-data", with_entry(data_offsets=[0, len(data) + 4096]))
    variant("offsets-reversed", with_entry(data_offsets=[64, 0]))
    variant("offsets-huge", with_entry(data_offsets=[BIG, BIG + 4]))
    variant("offsets-negative", with_entry(data_offsets=[-4, 0]))
    variant("shape-huge", with_entry(shape=[BIG, BIG]))
    variant("shape-negative", with_entry(shape=[-1, 64]))
    variant("shape-mismatch", with_entry(shape=[3, 3]))
    variant("shape-string", with_entry(shape=["64", 64]))
    variant("dtype-unknown", with_entry(dtype="F128"))
    variant("truncated-data", st_bytes(header, data[: len(data) // 2]))
    h = {k: v for k, v in header.items() if k != name}
    variant("missing-tensor", st_bytes(h, data))
    h = json.loads(json.dumps(header))
    h["backbone.layers.99.mixer.D"] = dict(header[name])
    variant("extra-tensor", st_bytes(h, data))
    variant("random-bytes", RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())


# --- config.json (family 4: checked against sane bounds before anything is sized by it) --------


def config_family(d):
    base = json.loads((HF / "config.json").read_text())

    def variant(tag, text, key="config.json", src=HF, ckpt_file="model.safetensors"):
        ck = d / "config" / tag
        ck.mkdir(parents=True)
        os.symlink(src.resolve() / ckpt_file, ck / ckpt_file)
        (ck / "config.json").write_text(text)
        case(f"config-{tag}", "config", ["export", ck.relative_to(d), "-o", f"out/config-{tag}.onnx", "-q"], 1, key)

    def with_value(key, value):
        c = dict(base)
        c[key] = value
        return json.dumps(c)

    variant("empty", "")
    variant("array", "[]")
    variant("nan-token", with_value("hidden_size", 64).replace('"hidden_size": 64', '"hidden_size": NaN'))
    variant("deep-nesting", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    variant("layers-1e9", with_value("num_hidden_layers", 1_000_000_000), "key 'num_hidden_layers' must be at most 65536, got 1000000000")
    variant("layers-1e9-float", with_value("num_hidden_layers", 1e9), "key 'num_hidden_layers' must be a positive integer, got 1000000000.0")
    variant("layers-2e62", with_value("num_hidden_layers", BIG), f"key 'num_hidden_layers' must be at most 65536, got {BIG}")
    # Checked against the weights' shapes, before anything is sized by them.
    variant("hidden-2e40", with_value("hidden_size", 1 << 40), "key 'hidden_size' must be at most 1048576, got 1099511627776")
    variant("hidden-negative", with_value("hidden_size", -64), "hidden_size")
    variant("hidden-string", with_value("hidden_size", "64"), "hidden_size")
    variant("hidden-fraction", with_value("hidden_size", 64.5), "hidden_size")
    variant("hidden-null", with_value("hidden_size", None), "hidden_size")
    variant("vocab-zero", with_value("vocab_size", 0), "vocab_size")
    variant("vocab-2e62", with_value("vocab_size", BIG), f"key 'vocab_size' must be at most 1048576, got {BIG}")
    variant("state-2e40", with_value("state_size", 1 << 40), "key 'state_size' must be at most 1048576, got 1099511627776")
    variant("conv-kernel-zero", with_value("conv_kernel", 0), "conv_kernel")
    variant("conv-kernel-huge", with_value("conv_kernel", 1 << 40), "key 'conv_kernel' must be at most 1048576, got 1099511627776")
    variant("dt-rank-2e40", with_value("time_step_rank", 1 << 40), "key 'time_step_rank' must be at most 1048576, got 1099511627776")
    variant("intermediate-mismatch", with_value("intermediate_size", 96), "expected [96, 16] from config.json")
    variant("epsilon-string", with_value("layer_norm_epsilon", "tiny"), "layer_norm_epsilon")
    ssm = json.loads((SSM / "config.json").read_text())
    for tag, key, value, phrase in [
        ("n-layer-1e9", "n_layer", 1_000_000_000, "key 'n_layer' must be at most 65536, got 1000000000"),
        ("d-model-negative", "d_model", -1, "d_model"),
    ]:
        c = dict(ssm)
        c[key] = value
        variant(f"ssm-{tag}", json.dumps(c), phrase, src=SSM, ckpt_file="pytorch_model.bin")


# --- pickles and zips (family 3: the resource limits CPython's unpickler has) ------------------

PROTO = b"\x80\x02"


def torch_zip(path, pkl=None, entries=None, method=zipfile.ZIP_STORED):
    """A copy of the fixture's pytorch_model.bin with data.pkl and/or entries replaced."""
    src = zipfile.ZipFile(SSM / "pytorch_model.bin")
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            blob = src.read(info)
            short = info.filename.split("/", 1)[1]
            if short == "data.pkl" and pkl is not None:
                blob = pkl
            if entries and short in entries:
                blob = entries[short]
            out.writestr(zipfile.ZipInfo(info.filename), blob, compress_type=method)
    return src


def pickle_family(d):
    def variant(tag, blob=None, key="pytorch_model.bin", writer=None, **extra):
        ck = d / "pickle" / tag
        ck.mkdir(parents=True)
        shutil.copy(SSM / "config.json", ck / "config.json")
        if writer:
            writer(ck / "pytorch_model.bin")
        else:
            torch_zip(ck / "pytorch_model.bin", pkl=blob)
        case(f"pickle-{tag}", "pickle", ["export", ck.relative_to(d), "-o", f"out/pickle-{tag}.onnx", "-q"], 1, key, **extra)

    variant("empty", b"")
    variant("no-stop", PROTO + b"}")
    variant("unknown-opcode", PROTO + b"\xff.")
    variant("stack-underflow", PROTO + b"0.")
    variant("memo-missing", PROTO + b"h\x07.")
    variant("binunicode-past-end", PROTO + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"abc.")
    variant("long4-huge", PROTO + b"\x8b" + struct.pack("<i", 0x7FFFFFF0) + b"\x01.")
    variant("frame-huge", b"\x80\x04\x95" + struct.pack("<Q", BIG) + b"}.")
    variant("global-os-system", b"cos\nsystem\n(S'touch PWNED-pickle'\ntR.", "os.system", absent_after=["PWNED-pickle"])
    variant("stack-global-eval", PROTO + b"\x8c\x08builtins\x8c\x04eval\x93(\x8c\x01" + b"1tR.", "builtins.eval")
    variant("inst-opcode", b"(ios\nsystem\nS'touch PWNED-inst'\n.", "pickle", absent_after=["PWNED-inst"])
    variant("dict-not-state-dict", PROTO + b"]q\x00.", "pytorch_model.bin")
    # Families of the issue: deep nesting, a memoised string fetched many times, a huge dict.
    depth = 1_000_000
    variant("deep-nesting", PROTO + b"]" * depth + b"a" * (depth - 1) + b".", "data.pkl does not hold a state dict (a dict of tensors)")
    s = b"x" * (1 << 20)
    memo = PROTO + b"]q\x00" + b"X" + struct.pack("<I", len(s)) + s + b"q\x01" + b"(" + b"h\x01" * 8000 + b"e."
    variant("memo-bomb", memo, "APPEND(S) on a str")
    n = 400_000
    items = b"".join(b"X" + struct.pack("<I", len(k)) + k + b"N" for k in (b"k%d" % i for i in range(n)))
    variant("huge-dict", PROTO + b"}(" + items + b"u.", "missing tensor 'backbone.embeddings.weight'")

    # Zip containers.
    def bad_crc(p):
        torch_zip(p)
        raw = bytearray(p.read_bytes())
        src = zipfile.ZipFile(SSM / "pytorch_model.bin")
        info = next(i for i in src.infolist() if i.filename.endswith("data/0"))
        z = zipfile.ZipFile(p)
        info = z.getinfo(info.filename)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw[start + 100] ^= 0x04  # one flipped bit in a tensor's values
        p.write_bytes(bytes(raw))

    variant("zip-bad-crc", writer=bad_crc, key="zip entry 'pytorch_model/data/0' fails its CRC-32 check")

    def declared_huge(p):
        torch_zip(p)
        raw = bytearray(p.read_bytes())
        z = zipfile.ZipFile(p)
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
        # The local header's and the central directory's sizes both say 3 GiB.
        struct.pack_into("<II", raw, info.header_offset + 18, 3 << 30, 3 << 30)
        pos = 0
        while True:
            pos = raw.find(b"PK\x01\x02", pos)
            if pos < 0:
                break
            (nlen,) = struct.unpack_from("<H", raw, pos + 28)
            if raw[pos + 46 : pos + 46 + nlen].endswith(b"data/0"):
                struct.pack_into("<II", raw, pos + 20, 3 << 30, 3 << 30)
            pos += 4
        p.write_bytes(bytes(raw))

    variant("zip-declared-3gib", writer=declared_huge, key="pytorch_model.bin")

    def deflate_bomb(p):
        # 3 GiB of zeros deflated: each 1 MiB piece compresses to the same bytes after a full
        # flush, so the stream is one piece repeated (~3 MB in all), written in seconds.
        piece = bytes(1 << 20)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = c.compress(piece) + c.flush(zlib.Z_FULL_FLUSH)
        again = c.compress(piece) + c.flush(zlib.Z_FULL_FLUSH)
        n = 3 * 1024
        body = first + again * (n - 1) + c.flush()
        crc = 0
        for _ in range(n):
            crc = zlib.crc32(piece, crc)
        # Swap data/0 for the bomb by hand: zipfile cannot write a precompressed entry.
        entries = []
        with zipfile.ZipFile(SSM / "pytorch_model.bin") as z:
            for info in z.infolist():
                entries.append((info.filename, z.read(info)))
        raw = bytearray()
        central = bytearray()
        for fname, blob in entries:
            fn = fname.encode()
            if fname.endswith("data/0"):
                method, comp, size, c32 = 8, body, 3 << 30, crc
            else:
                method, comp, size, c32 = 0, blob, len(blob), zlib.crc32(blob)
            off = len(raw)
            raw += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, c32, len(comp), size, len(fn), 0)
            raw += fn + comp
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, c32, len(comp), size, len(fn), 0, 0, 0, 0, 0, off)
            central += fn
        cd_off = len(raw)
        raw += central
        raw += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), cd_off, 0)
        p.write_bytes(bytes(raw))

    # Refused from the sizes, not after inflating 3 GiB (which today ends in "out of memory").
    variant("zip-deflate-bomb-3gib", writer=deflate_bomb, key="zip entry 'pytorch_model/data/0' holds 3221225472 bytes, but storage '0' is 65536 elements of float32", max_s=3)

    def truncated(p):
        torch_zip(p)
        raw = p.read_bytes()
        p.write_bytes(raw[: len(raw) // 2])

    variant("zip-truncated", writer=truncated)

    def no_pickle(p):
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/data/0", b"\0" * 16)

    variant("zip-no-data-pkl", writer=no_pickle, key="data.pkl")

    def method_99(p):
        torch_zip(p)
        raw = bytearray(p.read_bytes())
        pos = 0
        while (pos := raw.find(b"PK\x03\x04", pos)) >= 0:
            struct.pack_into("<H", raw, pos + 8, 99)
            pos += 4
        pos = 0
        while (pos := raw.find(b"PK\x01\x02", pos)) >= 0:
            struct.pack_into("<H", raw, pos + 10, 99)
            pos += 4
        p.write_bytes(bytes(raw))

    variant("zip-method-99", writer=method_99)

    def not_a_zip(p):
        p.write_bytes(RNG.integers(0, 256, 2048, dtype=np.uint8).tobytes())

    variant("zip-random-bytes", writer=not_a_zip)


# --- ONNX models (family 4: the signature generate and bench read) -----------------------------


def onnx_model(path, states, logits_shape=("batch", "seqlen", 64), extra_inputs=(), logits_name="logits",
               ids_type=None, state_type=None):
    """A model with mambac's stateful interface: each state output is its input passed through
    (or reduced to a scalar when declared rank 0), logits are the ids broadcast to the declared
    vocabulary. `states`: (kind, layer, input shape, output shape)."""
    import onnx
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT if state_type is None else state_type
    ids_t = TensorProto.INT64 if ids_type is None else ids_type
    nodes, inputs, outputs, inits = [], [], [], []
    inputs.append(helper.make_tensor_value_info("input_ids", ids_t, ["batch", "seqlen"]))
    for kind, layer, in_shape, out_shape in states:
        i, o = f"{kind}.{layer}", f"{kind}_out.{layer}"
        if in_shape is not None:
            inputs.append(helper.make_tensor_value_info(i, f32, list(in_shape)))
        src = i if in_shape is not None else "conv_state.0"
        if out_shape is not None:
            if len(out_shape) == 0:
                nodes.append(helper.make_node("ReduceSum", [src], [o], keepdims=0))
            else:
                nodes.append(helper.make_node("Identity", [src], [o]))
            outputs.append(helper.make_tensor_value_info(o, f32, list(out_shape)))
    for name, ty, shape in extra_inputs:
        inputs.append(helper.make_tensor_value_info(name, ty, shape))
    vocab = logits_shape[-1] if logits_shape and isinstance(logits_shape[-1], int) else 64
    inits.append(helper.make_tensor("vocab", TensorProto.INT64, [1], [vocab]))
    nodes += [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "axis2"], ["ids_3"]),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Concat", ["ids_shape", "vocab"], ["logits_shape"], axis=0),
        helper.make_node("Expand", ["ids_3", "logits_shape"], [logits_name]),
    ]
    inits.append(helper.make_tensor("axis2", TensorProto.INT64, [1], [2]))
    outputs.insert(0, helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, list(logits_shape)))
    g = helper.make_graph(nodes, "hostile", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def layer_states(layers=1, conv=(16, 3), ssm=(16, 4)):
    out = []
    for i in range(layers):
        out.append(("conv_state", i, ("batch", *conv), ("batch", *conv)))
        out.append(("ssm_state", i, ("batch", *ssm), ("batch", *ssm)))
    return out


def onnx_family(d):
    from onnx import TensorProto

    m = d / "onnx"
    m.mkdir()
    gen = ["generate", None, "--prompt-ids", "1,2,3", "--max-new-tokens", "2"]

    def variant(tag, key, cmd=None, **model_kw):
        path = m / f"{tag}.onnx"
        onnx_model(path, **model_kw)
        args = [a if a is not None else path.relative_to(d) for a in (cmd or gen)]
        case(f"onnx-{tag}", "onnx-signature", args, 1, key)

    st = layer_states(2)
    rank0_out = [s if s[:2] != ("ssm_state", 1) else ("ssm_state", 1, s[2], ()) for s in st]
    variant("rank0-state-output", "state output 'ssm_state_out.1' has rank 0", states=rank0_out)
    variant("rank0-state-input", "state input 'conv_state.0' has rank 0",
            states=[("conv_state", 0, (), ()), ("ssm_state", 0, ("batch", 16, 4), ("batch", 16, 4))])
    variant("symbolic-state-dims", "state input 'conv_state.0' has shape [-1, -1, -1]",
            states=[("conv_state", 0, ("batch", "c", "w"), ("batch", "c", "w")), st[1]])
    variant("output-without-input", "state output 'conv_state_out.2' but no input 'conv_state.2'",
            states=st + [("conv_state", 2, None, ("batch", 16, 3))])
    variant("input-without-output", "state input 'ssm_state.1' but no output 'ssm_state_out.1'",
            states=st[:3] + [("ssm_state", 1, ("batch", 16, 4), None)])
    variant("unpaired-inputs", "do not come in conv/ssm pairs", states=st[:3])
    variant("no-logits", "no output 'logits'", states=st, logits_name="scores")
    variant("no-states", "no state inputs", states=[])
    variant("extra-input", "input 'attention_mask' that generation cannot feed", states=st,
            extra_inputs=[("attention_mask", TensorProto.INT64, ["batch", "seqlen"])])
    variant("ids-float", "input 'input_ids' must be int64", states=st, ids_type=TensorProto.FLOAT)
    variant("logits-rank2", "output 'logits' must be [batch, seqlen, vocab]", states=st, logits_shape=("batch", 64))
    variant("state-int32", "state input 'conv_state.0' has element type", states=st, state_type=TensorProto.INT32)
    # Memory: states of 4 GiB a sequence (2 copies: the CPU EP's two buffer sets; the zeros are
    # written into one of them; reset adds a one-token step's few bytes), and a batch or prompt
    # too large to hold.
    variant("states-4gib", "the states of 1 sequence (1 layer) and a one-token step's token ids and logits need 8.0 GiB of memory, more than the", states=[("conv_state", 0, ("batch", 65536, 16384), ("batch", 65536, 16384)),
                                                               ("ssm_state", 0, ("batch", 16, 4), ("batch", 16, 4))])
    variant("bench-batch-memory", "--batch 65536 --prompt-len 128: the prefill step needs", states=layer_states(4, (1024, 3), (1024, 16)),
            cmd=["bench", None, "--batch", "65536", "--reps", "1", "--warmup", "0"])
    variant("bench-prompt-memory", "--batch 4096 --prompt-len 1048576: the prefill step needs", states=st,
            logits_shape=("batch", "seqlen", 50280), cmd=["bench", None, "--batch", "4096", "--prompt-len", "1048576", "--reps", "1"])
    variant("generate-many-prompts", "400 prompts decoded as one batch: their states need", states=layer_states(1, (1024, 1024), (16, 4)),
            cmd=["generate", None, "--prompt-ids", ";".join(["1"] * 400)])
    # Token ids (family 6): checked against the vocabulary in generate and run.
    ok = m / "ok.onnx"
    onnx_model(ok, states=st, logits_shape=("batch", "seqlen", 1024))
    okr = ok.relative_to(d)
    case("ids-generate-negative", "token-ids", ["generate", okr, "--prompt-ids", "1,-1,2"], 1, "token id -1 is negative")
    case("ids-generate-vocab", "token-ids", ["generate", okr, "--prompt-ids", "1,1024"], 1, "token id 1024 at position 1 is out of range")
    case("ids-generate-huge", "token-ids", ["generate", okr, "--prompt-ids", "99999999999999999999999"], 1, "is not a token id")
    case("ids-generate-empty", "token-ids", ["generate", okr, "--prompt-ids", "1;;2"], 1, "is not a token id")
    from safetensors.numpy import save_file

    stateless = m / "stateless.onnx"
    onnx_model(stateless, states=[], logits_shape=("batch", "seqlen", 1024))
    for tag, ids in [("negative", [[3, -1, 2]]), ("vocab", [[3, 1024]]), ("int64-min", [[np.iinfo(np.int64).min]])]:
        f = m / f"ids-{tag}.safetensors"
        save_file({"input_ids": np.array(ids, dtype=np.int64)}, str(f))
        key = "token id"
        case(f"ids-run-{tag}", "token-ids", ["run", stateless.relative_to(d), "--input", f.relative_to(d), "-o", f"out/ids-run-{tag}.safetensors"],
             1, key)
    # Malformed ONNX files.
    (m / "garbage.onnx").write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    case("onnx-garbage", "onnx-signature", ["generate", "onnx/garbage.onnx", "--prompt-ids", "1"], 1, "cannot load")
    (m / "empty.onnx").write_bytes(b"")
    case("onnx-empty", "onnx-signature", ["generate", "onnx/empty.onnx", "--prompt-ids", "1"], 1, "onnx/empty.onnx")
    case("onnx-missing", "onnx-signature", ["generate", "onnx/missing.onnx", "--prompt-ids", "1"], 1, "does not exist")
    return okr


# --- argument bombs (family 4) -----------------------------------------------------------------


def argument_family(d, model):
    m = str(model)
    big = str(BIG)
    b40 = str(1 << 40)

    def bomb(name, args, key, exit=2):
        case(f"arg-{name}", "arguments", args, exit, key)

    bomb("bench-batch", ["bench", m, "--batch", b40], "--batch <BATCH>': 1099511627776 is not in 1..=65536")
    bomb("bench-prompt-len", ["bench", m, "--prompt-len", big], "--prompt-len <PROMPT_LEN>'")
    bomb("bench-decode-tokens", ["bench", m, "--decode-tokens", big], "--decode-tokens <DECODE_TOKENS>'")
    bomb("bench-warmup", ["bench", m, "--warmup", big], "--warmup <WARMUP>'")
    bomb("bench-reps", ["bench", m, "--reps", big], "--reps <REPS>'")
    bomb("bench-reps-zero", ["bench", m, "--reps", "0"], "0 is not in 1..=10000")
    bomb("bench-batch-negative", ["bench", m, "--batch=-1"], "invalid value '-1' for '--batch <BATCH>'")
    bomb("bench-threads", ["bench", m, "--threads", b40], "--threads <THREADS>'")
    bomb("bench-threads-zero", ["bench", m, "--threads", "0"], "0 is not in 1..=1024")
    bomb("generate-max-new", ["generate", m, "--prompt-ids", "1", "--max-new-tokens", big], "--max-new-tokens <MAX_NEW_TOKENS>'")
    bomb("generate-prefill-chunk", ["generate", m, "--prompt-ids", "1", "--prefill-chunk", big], "--prefill-chunk <PREFILL_CHUNK>'")
    bomb("generate-prefill-chunk-zero", ["generate", m, "--prompt-ids", "1", "--prefill-chunk", "0"], "--prefill-chunk <PREFILL_CHUNK>'")
    bomb("generate-threads", ["generate", m, "--prompt-ids", "1", "--threads", "1025"], "1025 is not in 1..=1024")
    case("arg-generate-temperature-nan", "arguments", ["generate", m, "--prompt-ids", "1", "--temperature", "NaN"], 1, "--temperature must be a positive number")
    bomb("run-threads", ["run", m, "--input", "x", "-o", "out/x", "--threads", big], "--threads <THREADS>'")
    hf = d / "hf"
    shutil.copytree(HF, hf)
    bomb("export-quant-block", ["export", "hf", "-o", "out/q.onnx", "--quantize", "int4", "--quant-block", big], "--quant-block <QUANT_BLOCK>'")
    case("arg-export-quant-block-row", "arguments", ["export", "hf", "-o", "out/q.onnx", "-q", "--quantize", "int8", "--quant-block", "65536"], 1,
         "the widest quantized weight, 'backbone.layers.0.mixer.out_proj.weight', has rows of 128 values")
    case("arg-export-quant-block-odd", "arguments", ["export", "hf", "-o", "out/q.onnx", "-q", "--quantize", "int8", "--quant-block", "24"], 1,
         "--quant-block: block size 24 must be a power of two")
    for flag in ["--layers", "--hidden", "--vocab", "--d-state", "--conv-kernel", "--dt-rank", "--shards"]:
        bomb(f"synth{flag}", ["synth", "--preset", "tiny", flag, b40, "out/synth"], f"'{flag} <")
    bomb("synth-layers-1e12", ["synth", "--preset", "tiny", "--layers", "1e12", "out/synth"], "--layers <LAYERS>'")
    case("arg-synth-total-bytes", "arguments", ["synth", "--preset", "tiny", "--hidden", "65536", "--layers", "1024", "out/synth"], 1,
         "more than synth writes (at most 68719476736 bytes, 64 GiB)")
    case("arg-synth-dt-rank", "arguments", ["synth", "--preset", "tiny", "--dt-rank", "65536", "--hidden", "65536", "--layers", "1", "--vocab", "1", "out/synth"], 1,
         "more than synth writes")


# --- outputs over inputs, symlinks, and where ONNX Runtime comes from (families 1 and 2) -------


def output_family(d, model):
    ck = d / "victim"
    shutil.copytree(HF, ck)
    case("out-over-checkpoint", "outputs", ["export", "victim", "-o", "victim/model.safetensors", "-q"], 1, "victim/model.safetensors")
    case("out-over-config", "outputs", ["export", "victim", "-o", "victim/config.json", "-q"], 1, "victim/config.json")
    os.symlink("victim/model.safetensors", d / "link-to-weights.onnx")
    case("out-symlink-to-checkpoint", "outputs", ["export", "victim", "-o", "link-to-weights.onnx", "-q"], 1, "link-to-weights.onnx")
    from safetensors.numpy import save_file

    inp = d / "run-input.safetensors"
    save_file({"input_ids": np.array([[1, 2, 3]], dtype=np.int64)}, str(inp))
    stateless = "onnx/stateless.onnx"
    case("out-run-over-input", "outputs", ["run", stateless, "--input", "run-input.safetensors", "-o", "run-input.safetensors"], 1,
         "run-input.safetensors")
    case("out-run-over-model", "outputs", ["run", stateless, "--input", "run-input.safetensors", "-o", stateless], 1, stateless)
    (d / "out" / "a-directory.onnx").mkdir(parents=True)
    case("out-is-directory", "outputs", ["export", "victim", "-o", "out/a-directory.onnx", "-q"], 1, "out/a-directory.onnx")
    # A missing output folder is made; one under a regular file cannot be.
    case(
        "out-parent-is-a-file",
        "outputs",
        ["export", "victim", "-o", "victim/config.json/dir/m.onnx", "-q"],
        1,
        "cannot make the folder victim/config.json/dir: Not a directory",
    )
    # A folder holding .venv/bin/python: mambac must not run it (nor load what it prints).
    evil = d / "evil-cwd"
    (evil / ".venv" / "bin").mkdir(parents=True)
    py = evil / ".venv" / "bin" / "python"
    py.write_text("#!/bin/sh\ntouch \"$(dirname \"$0\")/../../PWNED-venv\"\necho \"$(dirname \"$0\")\"\n")
    py.chmod(0o755)
    shutil.copy(inp, evil / "in.safetensors")
    (evil / "model.onnx").write_bytes(b"not an onnx model")
    case("ort-from-cwd", "ort-search", ["run", "model.onnx", "--input", "in.safetensors", "-o", "out.safetensors"], 1,
         ["ONNX Runtime not found", "cannot load model.onnx"], cwd="evil-cwd", env_unset=["ORT_DYLIB_PATH"],
         absent_after=["evil-cwd/PWNED-venv"])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = Path(sys.argv[1]).resolve()
    if d.exists() and any(d.iterdir()):
        sys.exit(f"{d} is not empty")
    d.mkdir(parents=True, exist_ok=True)
    (d / "out").mkdir()
    safetensors_family(d)
    config_family(d)
    pickle_family(d)
    model = onnx_family(d)
    argument_family(d, model)
    output_family(d, model)
    (d / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} cases in {d / 'cases.json'}")


if __name__ == "__main__":
    main()
