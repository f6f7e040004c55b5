"""`mambac conformance`: the op grid against float64 references, and its ONNX test vectors
(model.onnx + test_data_set_0/input_K.pb, output_K.pb) read back by onnx and run by
onnxruntime with the op library, as another runtime would."""

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mambac_testing import mambac, ops_lib
from ops_reference import DTYPES, session, run


def test_the_grid_passes_and_prints_a_row_a_case():
    r = mambac("conformance", "--threads", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rows = [line for line in r.stdout.splitlines() if line.endswith(" pass")]
    assert len(rows) == 93, r.stdout
    assert r.stdout.strip().endswith("93 cases, 93 pass, 0 fail")
    # Every op and dtype is in the grid, and a case with every option off.
    for what in ("SelectiveScan float16", "CausalConv1d bfloat16", "MambaLayerStep float32",
                 "Mamba2LayerStep bfloat16", "[2,65,36,16,3] none"):
        assert any(what in row for row in rows), what


@pytest.mark.parametrize("op", ["selective-scan", "causal-conv1d", "mamba-layer-step", "mamba2-layer-step"])
def test_vectors_load_and_reproduce_in_onnxruntime(tmp_path, op):
    r = mambac("conformance", "--ops", op, "--dtypes", "float32,float16", "--write-vectors", tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    cases = sorted(glob.glob(str(tmp_path / "*" / "model.onnx")))
    assert len(cases) == len([line for line in r.stdout.splitlines() if line.endswith(" pass")]) > 0
    for model_path in cases:
        model = onnx.load(model_path)
        onnx.checker.check_model(model)
        data = os.path.join(os.path.dirname(model_path), "test_data_set_0")
        feeds = {}
        for k, vi in enumerate(model.graph.input):
            t = onnx.load_tensor(os.path.join(data, f"input_{k}.pb"))
            assert t.name == vi.name
            feeds[t.name] = numpy_helper.to_array(t)
        expected = [numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f"output_{k}.pb")))
                    for k in range(len(model.graph.output))]
        got = run(session(model), feeds)
        t = "float16" if any(a.dtype == np.float16 for a in feeds.values()) else "float32"
        rtol, atol = DTYPES[t][2]
        for g, e, vi in zip(got, expected, model.graph.output):
            assert g.shape == e.shape, (model_path, vi.name)
            scale = max(1.0, float(np.abs(e.astype(np.float64)).max(initial=0.0)))
            np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol + 1e-3 * (t == "float16"),
                                       atol=atol * scale, err_msg=f"{model_path} {vi.name}")


def test_a_library_that_is_not_there_is_named_before_any_case(tmp_path):
    missing = tmp_path / "libnothing.so"
    r = mambac("conformance", "--ops", "causal-conv1d", "--dtypes", "float32", "--ops-lib", missing, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: --ops-lib {missing} is not a file", r.stderr
    assert r.stdout == ""


def test_a_library_that_is_not_an_op_library_fails_each_case_with_ort_s_reason(tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    r = mambac("conformance", "--ops", "causal-conv1d", "--dtypes", "float32", "--ops-lib", bogus, check=False)
    assert r.returncode == 1
    errors = [line for line in r.stdout.splitlines() if "CausalConv1d float32" in line]
    assert len(errors) == 11 and all(f"ERROR cannot register the op library {bogus}" in e for e in errors), r.stdout
    assert "error: 11 of 11 cases outside the tier or failed to run" in r.stderr


def test_an_unknown_op_is_refused_with_the_choices():
    r = mambac("conformance", "--ops", "scan", check=False)
    assert r.returncode == 2
    assert "invalid value 'scan' for '--ops <OPS>'" in r.stderr
    assert "[possible values: selective-scan, causal-conv1d, mamba-layer-step, mamba2-layer-step]" in r.stderr
