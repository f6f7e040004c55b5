"""Every export is visible to ONNX's shape tools: `onnx.shape_inference.infer_shapes` on the file as
written (the exporter's value_info) and ONNX Runtime's `symbolic_shape_infer` (which drops
value_info and needs tools/python/mambac_onnx_shapes.py's schemas) complete, and every value's
type and shape agree with what ONNX Runtime computes (all intermediate values made outputs)."""

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, defs, shape_inference

from mambac_testing import ROOT, TESTDATA, mambac, model_session

sys.path.insert(0, str(ROOT / "tools" / "python"))
import mambac_onnx_shapes  # noqa: E402



VARIANTS = {
    "float32": [],
    "float16": ["--dtype", "float16"],
    "bfloat16": ["--dtype", "bfloat16"],
    "stateful": ["--stateful"],
    "stateful-float16-last": ["--stateful", "--dtype", "float16", "--logits", "last"],
    "decode-graph": ["--stateful", "--decode-graph"],
    "int8": ["--quantize", "int8"],
    "int4-stateful": ["--quantize", "int4", "--stateful"],
    "no-fuse": ["--no-fuse"],
    "logits-last": ["--logits", "last"],
    "mamba2": ["--stateful"],
    "mamba2-float16": ["--dtype", "float16"],
    "mamba2-decode-graph": ["--stateful", "--decode-graph"],
}
# The checkpoint each variant exports (default: the Mamba-1 fixture).
FIXTURE = {"mamba2": "mamba2-tiny-hf", "mamba2-float16": "mamba2-tiny-hf", "mamba2-decode-graph": "mamba2-tiny-hf"}
BATCH, SEQLEN = 2, 5


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    out = {}
    for name, flags in VARIANTS.items():
        path = d / f"{name}.onnx"
        mambac("export", TESTDATA / FIXTURE.get(name, "mamba-tiny-hf"), "-o", path, "-q", *flags)
        out[name] = path
        if "--decode-graph" in flags:
            out[name + ".decode"] = d / f"{name}.decode.onnx"
    return out


@pytest.fixture
def schemas():
    """The mambac schemas registered for one test, then removed (they are process-wide)."""
    mambac_onnx_shapes.register()
    yield
    for name in mambac_onnx_shapes._OPS:
        defs.deregister_schema(name, mambac_onnx_shapes.VERSION, mambac_onnx_shapes.DOMAIN)


def node_values(model):
    return [o for n in model.graph.node for o in n.output if o]


def types_of(model):
    """name -> (elem type, dims as ints or symbol names) of every typed value and graph output."""
    out = {}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.elem_type == TensorProto.UNDEFINED or not t.HasField("shape"):
            continue
        out[vi.name] = (t.elem_type, [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim])
    return out


def feeds_for(model, rng):
    feeds = {}
    sizes = {"batch": BATCH, "seqlen": SEQLEN}
    for i in model.graph.input:
        t = i.type.tensor_type
        dims = [sizes[d.dim_param] if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
        if t.elem_type == TensorProto.INT64:
            feeds[i.name] = rng.integers(0, 1024, size=dims, dtype=np.int64)
        else:
            dtype = np.float16 if t.elem_type == TensorProto.FLOAT16 else np.float32
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def ort_types(path, tmp_path):
    """name -> (elem type, shape) of every node output, from an ONNX Runtime run of the model
    with every value made a graph output."""
    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    for name in node_values(m):
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    m.graph.ClearField("value_info")  # ORT must find the types itself, not read ours
    all_out = tmp_path / path.name
    onnx.save(m, str(all_out))
    if (path.parent / f"{path.name}.data").exists():
        pytest.fail("unexpected external data")
    sess = model_session(all_out)
    rng = np.random.default_rng(16)
    feeds = feeds_for(m, rng)
    names = [o.name for o in sess.get_outputs()]
    codes = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}
    codes[np.dtype(np.int64)] = TensorProto.INT64
    codes[np.dtype(np.bool_)] = TensorProto.BOOL  # next_token's non-finite check
    return {n: (codes[v.dtype], list(v.shape)) for n, v in zip(names, sess.run(names, feeds))}


def resolve(dims):
    sizes = {"batch": BATCH, "seqlen": SEQLEN}
    return [sizes.get(d, d) if isinstance(d, str) else d for d in dims]


def check_against(types, expected, what):
    """Every value of `expected` is typed in `types` with the same element type and shape (once
    batch and seqlen are given their run-time sizes)."""
    for name, (elem, shape) in expected.items():
        assert name in types, f"{what}: '{name}' has no type"
        got_elem, got_dims = types[name]
        assert all(isinstance(d, int) or d in ("batch", "seqlen") for d in got_dims), (
            f"{what}: '{name}' has dims {got_dims}, not the graph's symbols"
        )
        assert (got_elem, resolve(got_dims)) == (elem, shape), f"{what}: '{name}'"


def expected_types(exports, name, tmp_path):
    """What ORT computes for the export `name`. bfloat16 exports do not load on ORT's CPU EP
    (no bfloat16 MatMul kernel): theirs is the float16 export's, element types swapped, since
    the two graphs differ only in T."""
    if name != "bfloat16":
        return ort_types(exports[name], tmp_path)
    f16 = ort_types(exports["float16"], tmp_path)
    swap = {TensorProto.FLOAT16: TensorProto.BFLOAT16}
    return {n: (swap.get(e, e), s) for n, (e, s) in f16.items()}


EXPORTS = list(VARIANTS) + ["decode-graph.decode", "mamba2-decode-graph.decode"]


@pytest.mark.parametrize("name", EXPORTS)
def test_onnx_infer_shapes_types_every_value_as_ort_runs_it(exports, name, tmp_path):
    m = onnx.load(str(exports[name]))
    # The exporter's value_info alone: no schema of the mambac ops is registered here.
    assert not defs.has("SelectiveScan", 1, "mambac")
    inferred = shape_inference.infer_shapes(m, strict_mode=True)
    assert len(node_values(m)) >= 10  # the check below covers something
    check_against(types_of(inferred), expected_types(exports, name, tmp_path), f"{name} infer_shapes")


@pytest.mark.parametrize("name", EXPORTS)
def test_symbolic_shape_infer_completes_with_the_schemas(exports, name, tmp_path, schemas):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    m = onnx.load(str(exports[name]))
    out = SymbolicShapeInference.infer_shapes(m)
    check_against(types_of(out), expected_types(exports, name, tmp_path), f"{name} symbolic_shape_infer")


def test_symbolic_shape_infer_stops_at_the_ops_without_the_schemas(exports, tmp_path, monkeypatch):
    """Why the schemas exist: ORT's tool drops value_info and stops at the first mambac op."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    monkeypatch.chdir(tmp_path)  # it saves what it got to sym_shape_infer_temp.onnx in the cwd
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        SymbolicShapeInference.infer_shapes(onnx.load(str(exports["float32"])))


def test_the_command_writes_a_model_with_every_shape(exports, tmp_path):
    import subprocess

    out = tmp_path / "shaped.onnx"
    r = subprocess.run(
        [sys.executable, ROOT / "tools" / "python" / "mambac_onnx_shapes.py", exports["stateful"], "-o", out],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    m = onnx.load(str(out))
    typed = types_of(m)
    assert all(v in typed for v in node_values(m))
    assert typed["conv_state_out.0"] == (TensorProto.FLOAT, ["batch", 128, 3])
    assert typed["ssm_state_out.0"] == (TensorProto.FLOAT, ["batch", 128, 16])
    assert r.stdout.startswith(f"wrote {out} (")
