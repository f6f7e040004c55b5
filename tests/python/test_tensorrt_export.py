"""What an export writes for TensorRT's ONNX parser (docs/tensorrt.md), and that ONNX Runtime's
custom ops still take such a model: every mambac node carries plugin_namespace "mambac" and
plugin_version "1", and a node with an absent optional input before a present one carries
present_inputs, the bit mask of the slots it fills (MambaLayerStep without in_proj_bias)."""

import numpy as np
import onnx
import pytest

from mambac_testing import TESTDATA, mambac, model_session


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path = tmp_path_factory.mktemp("trt_export") / "model.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", path, "-q", "--stateful", "--decode-graph")
    return path


def mambac_nodes(path):
    nodes = [n for n in onnx.load(str(path)).graph.node if n.domain == "mambac"]
    assert nodes
    return nodes


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("which", ["model.onnx", "model.decode.onnx"])
def test_every_mambac_node_names_its_plugin(export, which):
    for node in mambac_nodes(export.with_name(which)):
        a = attrs(node)
        assert a["plugin_namespace"] == b"mambac" and a["plugin_version"] == b"1", node.name
        present = [bool(name) for name in node.input]
        if False in present:
            # Only a gap before a present input needs the mask; trailing absences are implied.
            assert a["present_inputs"] == sum(1 << k for k, p in enumerate(present) if p), node.name
        else:
            assert "present_inputs" not in a, node.name


def test_the_decode_graph_has_a_gap_and_its_mask(export):
    steps = [n for n in mambac_nodes(export.with_name("model.decode.onnx")) if n.op_type == "MambaLayerStep"]
    assert steps and all(attrs(n)["present_inputs"] == (1 << 15) - 1 - (1 << 5) - (1 << 14) for n in steps)


@pytest.mark.parametrize("which", ["model.onnx", "model.decode.onnx"])
def test_onnx_runtime_runs_the_model_with_the_extra_attributes(export, which):
    sess = model_session(export.with_name(which))
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.array([[3]], np.int64)
        else:
            rng = np.random.default_rng(0)
            feeds[i.name] = rng.standard_normal([1] + list(i.shape[1:])).astype(np.float32)
    logits = sess.run(["logits"], feeds)[0]
    assert logits.shape[:2] == (1, 1) and np.isfinite(logits).all()
