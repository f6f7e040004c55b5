"""GatedRmsNorm's TensorRT plugin through the harness that plays TensorRT's part
(tests/python/trt_harness.py): shapes, types and formats (y's type for z and out, a float32
weight), z read at z_offset of a packed row, serialization, and the shared checks' messages word
for word. Enqueue on the device: tests/python/gpu/test_tensorrt_enqueue.py."""

import pytest

from trt_harness import require_built, run

GS = "field group_size i32 4\n"
INPUTS = "in float16 b,s,8\nin float16 b,s,8\nin float32 8\n"


@pytest.fixture(autouse=True)
def built():
    require_built()


def test_shapes_types_and_formats(tmp_path):
    out = run("op GatedRmsNorm\n" + GS + "create\n" + INPUTS + "shapes\ntypes\nformats\n", tmp_path)
    assert out[3:] == [
        "shapes rc=0 [b, s, 8]",
        "types: float16",
        # y, z and out follow input 0; the weight is float32 whatever T is.
        "pos 0: float32 float16 bfloat16",
        "pos 1: float16",
        "pos 2: float32",
        "pos 3: float16",
    ]


def test_z_read_from_a_packed_row(tmp_path):
    """Mamba-2's z: channels [0, 8) of in_proj's [b, s, 30] output; out keeps y's shape."""
    script = "op GatedRmsNorm\n" + GS + "field z_offset i32 0\ncreate\n"
    script += "in bfloat16 2,5,8\nin bfloat16 2,5,30\nin float32 8\nshapes\ntypes\nconfigure\n"
    out = run(script, tmp_path)
    assert out[3:] == ["shapes rc=0 [2, 5, 8]", "types: bfloat16", "configure rc=0 workspace=0 onShapeChange rc=0"]


@pytest.mark.parametrize(
    "fields,inputs,message",
    [
        (GS, "in float16 2,5,8\nin float16 2,4,8\nin float32 8\n",
         "GatedRmsNorm: input 'z' has shape [2, 4, 8], expected [2, 5, 8] (same as 'y')"),
        (GS, "in float16 2,5,8\nin float32 2,5,8\nin float32 8\n",
         "GatedRmsNorm: input 'z' has element type float32, expected float16 (same as 'y')"),
        (GS, "in float16 2,5,8\nin float16 2,5,8\nin float32 7\n",
         "GatedRmsNorm: input 'weight' has shape [7], expected [8] (d from 'y')"),
        (GS, "in float16 2,5,8\nin float16 2,5,8\nin float16 8\n",
         "GatedRmsNorm: input 'weight' has element type float16, expected float32"),
        ("field group_size i32 3\n", "in float16 2,5,8\nin float16 2,5,8\nin float32 8\n",
         "GatedRmsNorm: attribute 'group_size' is 3, expected a positive divisor of d = 8 (from input 'y')"),
        (GS + "field z_offset i32 25\n", "in float16 2,5,8\nin float16 2,5,30\nin float32 8\n",
         "GatedRmsNorm: attribute 'z_offset' = 25 reads channels [25, 33) of input 'z' of shape [2, 5, 30], "
         "whose last dim is 30"),
    ],
)
def test_shape_errors_are_the_ort_ops_messages(tmp_path, fields, inputs, message):
    out = run("op GatedRmsNorm\n" + fields + "create\n" + inputs + "configure\n", tmp_path)
    assert f"log error: {message}" in out, out
    assert out[-1].startswith("configure rc=-1"), out


@pytest.mark.parametrize(
    "field,message",
    [
        ("", "GatedRmsNorm: attribute 'group_size' is missing (channels a group: d / ngroups)"),
        ("field group_size i32 0\n", "GatedRmsNorm: attribute 'group_size' is 0, expected a positive number"),
        (GS + "field epsilon f32 0\n", "GatedRmsNorm: attribute 'epsilon' is 0, expected a positive number"),
        (GS + "field norm_before_gate i32 2\n", "GatedRmsNorm: attribute 'norm_before_gate' is 2, expected 0 or 1"),
        (GS + "field eps f32 0.1\n", "GatedRmsNorm: unknown attribute 'eps'"),
    ],
)
def test_bad_fields_are_refused_with_a_message(tmp_path, field, message):
    out = run(f"op GatedRmsNorm\n{field}create\n", tmp_path)
    assert f"log error: {message}" in out and out[-1] == "create null", out


@pytest.mark.parametrize(
    "fields,serialized",
    [
        (GS, "group_size=4 epsilon=1e-05 norm_before_gate=0"),
        (GS + "field epsilon f64 0.25\nfield norm_before_gate i32 1\nfield z_offset i32 16\n",
         "group_size=4 epsilon=0.25 norm_before_gate=1 z_offset=16"),
    ],
)
def test_serialization_round_trip_and_clone(tmp_path, fields, serialized):
    out = run(f"op GatedRmsNorm\n{fields}create\nserialize\nclone\n", tmp_path)
    assert out[2:] == ["create ok", f"serialized: {serialized}", f"deserialized: {serialized}",
                       "clone GatedRmsNorm 1 mambac", f"clone fields: {serialized}"]


def test_creator_name_version_namespace_and_fields(tmp_path):
    assert run("op GatedRmsNorm\n", tmp_path) == [
        "creator GatedRmsNorm version 1 namespace mambac",
        "field names: group_size=<5> epsilon=<1> norm_before_gate=<5> z_offset=<5> present_inputs=<5>",
    ]
