"""The TensorRT plugin library (libmambac_trt.so) on the CPU, through the harness that plays
TensorRT's part (trt_harness.py): creators and fields, output shapes through the expression
builder, types, formats, the shared shape checks' exact messages, attribute errors, the input-slot
map, serialization round trips, clone, and the exported symbols. No GPU: enqueue is
tests/python/gpu/test_tensorrt_enqueue.py."""

import subprocess

import pytest

from trt_harness import require_built, run, trt_lib

pytestmark = pytest.mark.usefixtures("built")


@pytest.fixture
def built():
    require_built()


SCAN_INPUTS = """in float16 b,s,8
in float16 b,s,8
in float32 8,16
in float16 b,s,2,16
in float16 b,s,2,16
in float32 8
in float16 b,s,8
in float32 8
in float32 b,8,16
"""


def concrete(inputs: str, **dims) -> str:
    for name, value in dims.items():
        inputs = inputs.replace(name, str(value))
    return inputs


def errors(lines):
    return [l.removeprefix("log error: ") for l in lines if l.startswith("log error: ")]


def test_exports_only_the_entry_points():
    out = subprocess.run(["nm", "-D", "--defined-only", str(trt_lib())], capture_output=True, text=True, check=True).stdout
    symbols = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert symbols == ["getCreators", "setLoggerFinder"], symbols


def test_needs_no_tensorrt_or_cuda_library():
    out = subprocess.run(["readelf", "-d", str(trt_lib())], capture_output=True, text=True, check=True).stdout
    needed = sorted(l.split("[")[1].rstrip("]") for l in out.splitlines() if "(NEEDED)" in l)
    assert not [n for n in needed if "nvinfer" in n or "cuda" in n], needed


def test_creators_name_version_namespace_and_fields(tmp_path):
    out = run("op SelectiveScan\nop CausalConv1d\nop MambaLayerStep\n", tmp_path)
    assert out == [
        "creator SelectiveScan version 1 namespace mambac",
        "field names: delta_softplus=<5> present_inputs=<5>",
        "creator CausalConv1d version 1 namespace mambac",
        "field names: activation=<6> present_inputs=<5>",
        "creator MambaLayerStep version 1 namespace mambac",
        "field names: epsilon=<1> present_inputs=<5>",
    ]


def test_selective_scan_shapes_types_and_formats(tmp_path):
    out = run("op SelectiveScan\ncreate\n" + SCAN_INPUTS + "shapes\ntypes\nformats\n", tmp_path)
    assert out[3:] == [
        "shapes rc=0 [b, s, 8] [b, 8, 16]",
        "types: float16 float32",
        # T positions follow input 0; A, D, delta_bias, the states are float32 whatever T is.
        "pos 0: float32 float16 bfloat16",
        "pos 1: float16",
        "pos 2: float32",
        "pos 3: float16",
        "pos 4: float16",
        "pos 5: float32",
        "pos 6: float16",
        "pos 7: float32",
        "pos 8: float32",
        "pos 9: float16",
        "pos 10: float32",
    ]


def test_causal_conv1d_final_state_shape_is_width_minus_one(tmp_path):
    script = "op CausalConv1d\ncreate\nin bfloat16 b,s,8\nin bfloat16 8,w\nshapes\ntypes\n"
    script += "op CausalConv1d\ncreate\nin float32 2,5,8\nin float32 8,4\nin float32 8\nin float32 2,8,3\nshapes\n"
    out = run(script, tmp_path)
    assert out[3:5] == ["shapes rc=0 [b, s, 8] [b, 8, (w - 1)]", "types: bfloat16 bfloat16"]
    assert out[8:] == ["shapes rc=0 [2, 5, 8] [2, 8, 3]"]


LAYER_INPUTS = """in float16 b,8,3
in float32 b,8,4
in float32 b,1,6
in float32 6
in float16 6,16
in float16 8,4
in float16 8
in float16 8,10
in float16 2,8
in float32 8
in float32 8,4
in float32 8
in float16 8,6
"""
# in_proj_bias (slot 5) and out_proj_bias (slot 14) absent, as Mamba checkpoints have them.
LAYER_MASK = (1 << 15) - 1 - (1 << 5) - (1 << 14)


def test_layer_step_with_a_gap_in_its_inputs(tmp_path):
    script = f"op MambaLayerStep\nfield present_inputs i32 {LAYER_MASK}\nfield epsilon f32 1e-6\ncreate\n"
    script += LAYER_INPUTS + "shapes\ntypes\n" + "op MambaLayerStep\n"
    script += f"field present_inputs i32 {LAYER_MASK}\ncreate\n" + concrete(LAYER_INPUTS, b=2) + "configure\n"
    out = run(script, tmp_path)
    assert out[3:5] == ["shapes rc=0 [b, 1, 6] [b, 8, 3] [b, 8, 4]", "types: float32 float16 float32"]
    assert out[8].startswith("configure rc=0 workspace=") and out[8].endswith(" onShapeChange rc=0"), out
    assert int(out[8].split("workspace=")[1].split()[0]) > 0


@pytest.mark.parametrize(
    "change,message",
    [
        # The shared checks' messages, word for word as the ORT op gives them.
        (("in float16 2,5,2,16\n", "in float16 2,5,3,16\n"),
         "SelectiveScan: input 'B' has shape [2, 5, 3, 16], expected [2, 5, ngroups, 16] with dim 8 divisible by ngroups"),
        (("in float32 8,16\n", "in float16 8,16\n"),
         "SelectiveScan: input 'A' has element type float16, expected float32"),
        (("in float32 2,8,16\n", "in float32 2,8,15\n"),
         "SelectiveScan: input 'initial_state' has shape [2, 8, 15], expected [2, 8, 16] ([batch, dim, dstate] from 'u' and 'A')"),
    ],
)
def test_selective_scan_shape_errors_give_the_shared_messages(tmp_path, change, message):
    inputs = concrete(SCAN_INPUTS, b=2, s=5)
    old, new = change
    assert old in inputs
    inputs = inputs.replace(old, new, 1)
    out = run("op SelectiveScan\ncreate\n" + inputs + "configure_raw\n", tmp_path)
    # configurePlugin, onShapeChange and enqueue each refuse, with the message, before any launch.
    assert errors(out) == [message] * 3
    assert out[-1] == "configure rc=-1 onShapeChange rc=-1 enqueue rc=-1"


def test_symbolic_shapes_with_a_wrong_rank_fail_cleanly(tmp_path):
    out = run("op SelectiveScan\ncreate\nin float16 b,8\nin float16 b,8\nin float32 8,16\nin float16 b,1,16\nin float16 b,1,16\nshapes\n", tmp_path)
    assert errors(out) == ["SelectiveScan: input slot 0 has 2 dims, expected 3"]
    assert out[-1] == "shapes rc=-1"


@pytest.mark.parametrize(
    "op,field,message",
    [
        ("SelectiveScan", "delta_softplus i32 2", "SelectiveScan: attribute 'delta_softplus' is 2, expected 0 or 1"),
        ("SelectiveScan", "delta_softplus f32 1", "SelectiveScan: attribute 'delta_softplus' must be an int"),
        ("SelectiveScan", "softplus i32 1", "SelectiveScan: unknown attribute 'softplus'"),
        ("CausalConv1d", "activation str relu", 'CausalConv1d: attribute \'activation\' is "relu", expected "silu" or "none"'),
        ("CausalConv1d", "activation i32 1", "CausalConv1d: attribute 'activation' must be a string"),
        ("MambaLayerStep", "epsilon f32 -1", "MambaLayerStep: attribute 'epsilon' is -1, expected a positive number"),
        ("MambaLayerStep", "epsilon i32 1", "MambaLayerStep: attribute 'epsilon' must be a float"),
        ("MambaLayerStep", "present_inputs i32 2",
         "MambaLayerStep: field 'present_inputs' is 2, expected a bit mask of the 15 input slots with slot 0 set"),
    ],
)
def test_bad_fields_are_refused_with_a_message(tmp_path, op, field, message):
    out = run(f"op {op}\nfield {field}\ncreate\n", tmp_path)
    assert errors(out) == [message]
    assert out[-1] == "create null"


def test_input_count_must_match_the_slot_map(tmp_path):
    script = f"op MambaLayerStep\nfield present_inputs i32 {LAYER_MASK}\ncreate\n" + concrete(LAYER_INPUTS, b=2)
    script += "in float16 6\nshapes\n"
    script += "op SelectiveScan\ncreate\n" + concrete(SCAN_INPUTS, b=1, s=1) + "in float32 1\nshapes\n"
    out = run(script, tmp_path)
    assert errors(out) == [
        f"MambaLayerStep: 14 inputs given, field 'present_inputs' = {LAYER_MASK} names 13",
        "SelectiveScan: 10 inputs given, expected 1 to 9",
    ]


def test_int64_and_float64_fields_are_read_too(tmp_path):
    out = run("op SelectiveScan\nfield delta_softplus i64 0\ncreate\nserialize\n"
              "op MambaLayerStep\nfield epsilon f64 0.25\ncreate\nserialize\n", tmp_path)
    assert "serialized: delta_softplus=0" in out
    assert "serialized: epsilon=0.25" in out


@pytest.mark.parametrize(
    "op,fields,serialized",
    [
        ("SelectiveScan", "field delta_softplus i32 0\n", "delta_softplus=0"),
        ("SelectiveScan", "", "delta_softplus=1"),
        ("CausalConv1d", "field activation str none\n", 'activation="none"'),
        ("CausalConv1d", "", 'activation="silu"'),
        ("MambaLayerStep", f"field epsilon f32 0.001\nfield present_inputs i32 {LAYER_MASK}\n",
         f"epsilon=0.001 present_inputs={LAYER_MASK}"),
    ],
)
def test_serialization_round_trip_and_clone(tmp_path, op, fields, serialized):
    out = run(f"op {op}\n{fields}create\nserialize\nclone\n", tmp_path)
    assert out[2:] == [
        "create ok",
        f"serialized: {serialized}",
        f"deserialized: {serialized}",
        f"clone {op} 1 mambac",
        f"clone fields: {serialized}",
    ]
