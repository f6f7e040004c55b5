"""AddRmsNorm's TensorRT plugin through the harness that plays TensorRT's part
(tests/python/trt_harness.py): shapes, types and formats (x's type, float32 residual, weight and
residual_out), the first layer's node without a residual (present_inputs), serialization, and the
shared checks' messages word for word. Enqueue on the device: tests/python/gpu/test_tensorrt_enqueue.py."""

import pytest

from trt_harness import require_built, run

INPUTS = "in float16 b,s,8\nin float32 b,s,8\nin float32 8\n"


@pytest.fixture(autouse=True)
def built():
    require_built()


def test_shapes_types_and_formats(tmp_path):
    out = run("op AddRmsNorm\ncreate\n" + INPUTS + "shapes\ntypes\nformats\n", tmp_path)
    assert out[3:] == [
        "shapes rc=0 [b, s, 8] [b, s, 8]",
        "types: float16 float32",
        # x and y follow input 0; the stream, the weight and residual_out are float32 whatever T is.
        "pos 0: float32 float16 bfloat16",
        "pos 1: float32",
        "pos 2: float32",
        "pos 3: float16",
        "pos 4: float32",
    ]


def test_first_layer_without_a_residual(tmp_path):
    script = "op AddRmsNorm\nfield present_inputs i32 5\ncreate\nin bfloat16 2,5,8\nin float32 8\nshapes\ntypes\nconfigure\n"
    out = run(script, tmp_path)
    assert out[3:] == ["shapes rc=0 [2, 5, 8] [2, 5, 8]", "types: bfloat16 float32",
                       "configure rc=0 workspace=0 onShapeChange rc=0"]


@pytest.mark.parametrize(
    "inputs,message",
    [
        ("in float16 2,5,8\nin float32 2,4,8\nin float32 8\n",
         "AddRmsNorm: input 'residual' has shape [2, 4, 8], expected [2, 5, 8] (same as 'x')"),
        ("in float16 2,5,8\nin float16 2,5,8\nin float32 8\n",
         "AddRmsNorm: input 'residual' has element type float16, expected float32"),
        ("in float16 2,5,8\nin float32 2,5,8\nin float32 7\n",
         "AddRmsNorm: input 'weight' has shape [7], expected [8] (hidden from 'x')"),
        ("in float16 2,5,8\nin float32 2,5,8\nin float16 8\n",
         "AddRmsNorm: input 'weight' has element type float16, expected float32"),
    ],
)
def test_shape_errors_are_the_ort_ops_messages(tmp_path, inputs, message):
    out = run("op AddRmsNorm\ncreate\n" + inputs + "configure\n", tmp_path)
    assert f"log error: {message}" in out, out
    assert out[-1].startswith("configure rc=-1"), out


def test_symbolic_x_of_the_wrong_rank_fails_cleanly(tmp_path):
    out = run("op AddRmsNorm\ncreate\nin float16 b,8\nin float32 8\nshapes\n", tmp_path)
    assert "log error: AddRmsNorm: input slot 0 has 2 dims, expected 3" in out, out


@pytest.mark.parametrize(
    "field,message",
    [
        ("epsilon f32 0", "AddRmsNorm: attribute 'epsilon' is 0, expected a positive number"),
        ("epsilon f32 -1", "AddRmsNorm: attribute 'epsilon' is -1, expected a positive number"),
        ("eps f32 0.1", "AddRmsNorm: unknown attribute 'eps'"),
    ],
)
def test_bad_fields_are_refused_with_a_message(tmp_path, field, message):
    out = run(f"op AddRmsNorm\nfield {field}\ncreate\n", tmp_path)
    assert f"log error: {message}" in out and out[-1] == "create null", out


@pytest.mark.parametrize(
    "fields,serialized",
    [("", "epsilon=1e-05"), ("field epsilon f64 0.25\nfield present_inputs i32 5\n", "epsilon=0.25 present_inputs=5")],
)
def test_serialization_round_trip_and_clone(tmp_path, fields, serialized):
    out = run(f"op AddRmsNorm\n{fields}create\nserialize\nclone\n", tmp_path)
    assert out[2:] == ["create ok", f"serialized: {serialized}", f"deserialized: {serialized}",
                       "clone AddRmsNorm 1 mambac", f"clone fields: {serialized}"]
