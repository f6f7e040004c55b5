"""The TensorRT plugin library (libmambac_trt.so) on the CPU, through the harness that plays
TensorRT's part (trt_harness.py): creators and fields, output shapes through the expression
builder, types, formats, the shared shape checks' exact messages, attribute errors, the input-slot
map, serialization round trips, clone, and the exported symbols. No GPU: enqueue is
tests/python/gpu/test_tensorrt_enqueue.py."""

import subprocess

import numpy as np
import pytest

import test_decode_graph_mamba2 as mamba2
from ops_reference import MAMBA2_STEP_INPUTS, one_node_model, session
from test_ops_errors import ERRORS
from test_ops_ssd import SSD_BAD, good_feeds
from test_ops_ssd import SSD_INPUTS as SSD_SLOTS
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
    out = run("op SelectiveScan\nop CausalConv1d\nop MambaLayerStep\nop SsdScan\nop Mamba2LayerStep\n", tmp_path)
    assert out == [
        "creator SelectiveScan version 1 namespace mambac",
        "field names: delta_softplus=<5> B_offset=<5> C_offset=<5> z_offset=<5> present_inputs=<5>",
        "creator CausalConv1d version 1 namespace mambac",
        "field names: activation=<6> x_offset=<5> present_inputs=<5>",
        "creator MambaLayerStep version 1 namespace mambac",
        "field names: epsilon=<1> present_inputs=<5>",
        "creator SsdScan version 1 namespace mambac",
        ("field names: dt_softplus=<5> dt_min=<1> dt_max=<1> dt_offset=<5> x_offset=<5> B_offset=<5> C_offset=<5> "
         "head_dim=<5> ngroups=<5> dstate=<5> present_inputs=<5>"),
        "creator Mamba2LayerStep version 1 namespace mambac",
        "field names: epsilon=<1> dt_min=<1> dt_max=<1> norm_before_gate=<5> present_inputs=<5>",
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
        # Rust's f32 Display, as the ORT op shows the value: no exponent.
        ("MambaLayerStep", "epsilon f32 -1e-20",
         "MambaLayerStep: attribute 'epsilon' is -0.00000000000000000001, expected a positive number"),
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
        # Slice offsets (docs/op-contract.md "Sliced inputs"): only those set are serialized.
        ("SelectiveScan", "field z_offset i32 48\nfield B_offset i64 8\n", "delta_softplus=1 B_offset=8 z_offset=48"),
        ("CausalConv1d", "field x_offset i32 0\n", 'activation="silu" x_offset=0'),
        ("SsdScan", "field dt_offset i32 5\n", "dt_softplus=1 dt_min=0 dt_max=inf dt_offset=5"),
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


# SsdScan: x [b, s, heads 8, head_dim 4], dt, A, B and C with 2 groups of 16 states, D, dt_bias,
# initial_state.
SSD_INPUTS = """in float16 b,s,8,4
in float16 b,s,8
in float32 8
in float16 b,s,2,16
in float16 b,s,2,16
in float32 8
in float32 8
in float32 b,8,4,16
"""


def test_ssd_scan_shapes_types_and_formats(tmp_path):
    out = run("op SsdScan\ncreate\n" + SSD_INPUTS + "shapes\ntypes\nformats\n", tmp_path)
    assert out[3:] == [
        "shapes rc=0 [b, s, 8, 4] [b, 8, 4, 16]",
        "types: float16 float32",
        # T positions follow input 0; A, D, dt_bias, the states are float32 whatever T is.
        "pos 0: float32 float16 bfloat16",
        "pos 1: float16",
        "pos 2: float32",
        "pos 3: float16",
        "pos 4: float16",
        "pos 5: float32",
        "pos 6: float32",
        "pos 7: float32",
        "pos 8: float16",
        "pos 9: float32",
    ]


def test_ssd_scan_bfloat16_with_the_required_inputs_only(tmp_path):
    script = "op SsdScan\ncreate\nin bfloat16 2,40,6,3\nin bfloat16 2,40,6\nin float32 6\n"
    script += "in bfloat16 2,40,3,5\nin bfloat16 2,40,3,5\nshapes\ntypes\nconfigure\n"
    out = run(script, tmp_path)
    assert out[3:5] == ["shapes rc=0 [2, 40, 6, 3] [2, 6, 3, 5]", "types: bfloat16 float32"]
    assert out[5].startswith("configure rc=0 workspace=") and out[5].endswith(" onShapeChange rc=0"), out


def test_ssd_scan_wrong_ranks_fail_cleanly_with_symbolic_shapes(tmp_path):
    script = "op SsdScan\ncreate\nin float16 b,s,32\nin float16 b,s,8\nin float32 8\n"
    script += "in float16 b,s,2,16\nin float16 b,s,2,16\nshapes\n"
    script += "op SsdScan\ncreate\nin float16 b,s,8,4\nin float16 b,s,8\nin float32 8\n"
    script += "in float16 b,s,32\nin float16 b,s,32\nshapes\n"
    out = run(script, tmp_path)
    assert errors(out) == ["SsdScan: input slot 0 has 3 dims, expected 4", "SsdScan: input slot 3 has 3 dims, expected 4"]
    assert [l for l in out if l.startswith("shapes")] == ["shapes rc=-1", "shapes rc=-1"]


def harness_inputs(feeds, slots):
    """`in` lines for the present slots of a feed dict (float32 / float16 arrays)."""
    return "".join(f"in {feeds[n].dtype} {','.join(map(str, feeds[n].shape))}\n" for n in slots if n)


# The ORT op's shape errors (test_ops_ssd.py), whole: the one its test matches by prefix gets its
# end. TensorRT has no float64 tensor to pass, so the float64 case has no twin here.
SSD_BAD_CASES = [(name, changes, message + (" divisible by ngroups" if name == "B_batch" else ""))
                 for name, (changes, message) in SSD_BAD.items() if name != "B_type"]


@pytest.mark.parametrize("name,changes,message", SSD_BAD_CASES, ids=[c[0] for c in SSD_BAD_CASES])
def test_ssd_scan_shape_errors_are_the_ort_ops_messages(tmp_path, name, changes, message):
    bad = dict(good_feeds(), **changes)
    out = run("op SsdScan\ncreate\n" + harness_inputs(bad, SSD_SLOTS) + "configure_raw\n", tmp_path)
    # configurePlugin, onShapeChange and enqueue each refuse, with the message, before any launch.
    assert errors(out) == [message] * 3
    assert out[-1] == "configure rc=-1 onShapeChange rc=-1 enqueue rc=-1"


def test_ssd_scan_cuda_dstate_limit(tmp_path):
    def script(n):
        return f"op SsdScan\ncreate\nin float32 1,40,4,8\nin float32 1,40,4\nin float32 4\nin float32 1,40,1,{n}\n" \
               f"in float32 1,40,1,{n}\nconfigure\n"

    out = run(script(512) + script(513), tmp_path)
    # configurePlugin, getWorkspaceSize and onShapeChange each refuse 513 with the ORT op's message.
    assert errors(out) == ["SsdScan: input 'B' has dstate 513, more than the CUDA kernel takes (512)"] * 3
    configured = [l for l in out if l.startswith("configure")]
    assert configured[0].startswith("configure rc=0 workspace=") and configured[0].endswith(" onShapeChange rc=0")
    assert configured[1] == "configure rc=-1 workspace=0 onShapeChange rc=-1"


# (TensorRT field, the same attribute on the ORT node, the message both give).
SSD_BAD_FIELDS = [
    ("dt_softplus i32 2", dict(dt_softplus=2), "SsdScan: attribute 'dt_softplus' is 2, expected 0 or 1"),
    ("dt_softplus f32 1", dict(dt_softplus=1.0), "SsdScan: attribute 'dt_softplus' must be an int"),
    ("dt_min str x", dict(dt_min="x"), "SsdScan: attribute 'dt_min' must be a float"),
    ("dt_max i32 1", dict(dt_max=1), "SsdScan: attribute 'dt_max' must be a float"),
    ("dt_min f32 nan", dict(dt_min=float("nan")), "SsdScan: attribute 'dt_min' is NaN, expected a number below +inf"),
    ("dt_min f32 inf", dict(dt_min=float("inf")), "SsdScan: attribute 'dt_min' is inf, expected a number below +inf"),
    ("dt_max f32 nan", dict(dt_max=float("nan")), "SsdScan: attribute 'dt_max' is NaN, expected at least dt_min (0)"),
    ("dt_min f32 0.5\nfield dt_max f32 0.1", dict(dt_min=0.5, dt_max=0.1),
     "SsdScan: attribute 'dt_max' is 0.1, expected at least dt_min (0.5)"),
    # Field order does not matter: the pair is checked once both are read.
    ("dt_max f32 1e-21\nfield dt_min f32 1e-20", dict(dt_min=1e-20, dt_max=1e-21),
     "SsdScan: attribute 'dt_max' is 0.000000000000000000001, expected at least dt_min (0.00000000000000000001)"),
    ("dt_max f32 -inf", dict(dt_max=float("-inf")), "SsdScan: attribute 'dt_max' is -inf, expected at least dt_min (0)"),
    ("time_step_limit f32 1", None, "SsdScan: unknown attribute 'time_step_limit'"),
    # Range-checked at createPlugin: getOutputShapes would hand TensorRT these as dims.
    ("head_dim i32 0", None, "SsdScan: attribute 'head_dim' is 0, expected 1 to 2^31 - 1"),
    ("ngroups i32 -2", None, "SsdScan: attribute 'ngroups' is -2, expected 1 to 2^31 - 1"),
    ("dstate i32 0", None, "SsdScan: attribute 'dstate' is 0, expected 1 to 2^31 - 1"),
    ("present_inputs i32 256", None,
     "SsdScan: field 'present_inputs' is 256, expected a bit mask of the 8 input slots with slot 0 set"),
]


@pytest.mark.parametrize("field,attrs,message", SSD_BAD_FIELDS, ids=[c[2].split(": ")[1] for c in SSD_BAD_FIELDS])
def test_ssd_scan_bad_fields_give_the_ort_ops_messages(tmp_path, field, attrs, message):
    out = run(f"op SsdScan\nfield {field}\ncreate\n", tmp_path)
    assert errors(out) == [message]
    assert out[-1] == "create null"
    if attrs is not None:  # the ONNX Runtime op, on a node with the same attributes
        with pytest.raises(ERRORS) as e:
            session(one_node_model("SsdScan", SSD_SLOTS, good_feeds(), ["y"], attrs))
        assert message in str(e.value), str(e.value)


def test_ssd_scan_fields_that_are_accepted(tmp_path):
    # A -inf floor, an equal pair, int64 and float64 fields: each read, as the ORT op reads them.
    script = "op SsdScan\nfield dt_min f32 -inf\ncreate\nserialize\n"
    script += "op SsdScan\nfield dt_min f64 0.25\nfield dt_max f64 0.25\nfield dt_softplus i64 0\ncreate\nserialize\n"
    out = run(script, tmp_path)
    assert errors(out) == []
    assert "serialized: dt_softplus=1 dt_min=-inf dt_max=inf" in out
    assert "serialized: dt_softplus=0 dt_min=0.25 dt_max=0.25" in out


# D absent, dt_bias and initial_state present: the parser passes 7 inputs and the mask maps them.
SSD_MASK = 0b11011111


def test_ssd_scan_with_a_gap_in_its_inputs(tmp_path):
    inputs = "".join(l + "\n" for i, l in enumerate(concrete(SSD_INPUTS, b=2, s=5).splitlines()) if i != 5)  # no D
    script = f"op SsdScan\nfield present_inputs i32 {SSD_MASK}\ncreate\n" + inputs + "shapes\nconfigure\n"
    # Without the mask the same 7 inputs fill slots 0-6: dt_bias lands on D's slot, the state on
    # dt_bias's, and the check names the slot it finds wrong.
    script += "op SsdScan\ncreate\n" + inputs + "configure\n"
    out = run(script, tmp_path)
    assert out[3] == "shapes rc=0 [2, 5, 8, 4] [2, 8, 4, 16]"
    assert out[4].startswith("configure rc=0 workspace=0 onShapeChange rc=0"), out
    assert errors(out) == [
        "SsdScan: input 'dt_bias' has shape [2, 8, 4, 16], expected [8] (heads from 'x')"] * 3
    assert out[-1] == "configure rc=-1 workspace=0 onShapeChange rc=-1"


def test_ssd_scan_input_count_must_match_the_slot_map(tmp_path):
    script = f"op SsdScan\nfield present_inputs i32 {SSD_MASK}\ncreate\n" + concrete(SSD_INPUTS, b=2, s=5) + "shapes\n"
    script += "op SsdScan\ncreate\n" + concrete(SSD_INPUTS, b=2, s=5) + "in float32 8\nshapes\n"
    out = run(script, tmp_path)
    assert errors(out) == [
        f"SsdScan: 8 inputs given, field 'present_inputs' = {SSD_MASK} names 7",
        "SsdScan: 9 inputs given, expected 1 to 8",
    ]


@pytest.mark.parametrize(
    "fields,serialized",
    [
        ("", "dt_softplus=1 dt_min=0 dt_max=inf"),
        ("field dt_softplus i32 0\nfield dt_min f32 0.001\nfield dt_max f32 0.1\n", "dt_softplus=0 dt_min=0.001 dt_max=0.1"),
        (f"field present_inputs i32 {SSD_MASK}\nfield dt_max f32 2\n",
         f"dt_softplus=1 dt_min=0 dt_max=2 present_inputs={SSD_MASK}"),
        ("field x_offset i32 0\nfield B_offset i32 32\nfield C_offset i32 64\nfield head_dim i32 4\n"
         "field ngroups i32 2\nfield dstate i32 16\n",
         "dt_softplus=1 dt_min=0 dt_max=inf x_offset=0 B_offset=32 C_offset=64 head_dim=4 ngroups=2 dstate=16"),
    ],
)
def test_ssd_scan_serialization_round_trip_and_clone(tmp_path, fields, serialized):
    out = run(f"op SsdScan\n{fields}create\nserialize\nclone\n", tmp_path)
    assert out[2:] == [
        "create ok",
        f"serialized: {serialized}",
        f"deserialized: {serialized}",
        "clone SsdScan 1 mambac",
        f"clone fields: {serialized}",
    ]


# A mamba2-sized head set (32 heads of 64 x 128 states, one group): the chunk states outweigh the
# chunk-local matrices, so seqlen 512 (4 chunks of 128) wants more scratch than 513 to 768 (3 of 256).
def ssd_profile_script(seqlen, lo=None, hi=None, t="float16"):
    bounds = lambda *d: "" if lo is None else f" {','.join(map(str, (1, lo) + d))}:{','.join(map(str, (1, hi) + d))}"  # noqa: E731
    return (f"op SsdScan\ncreate\nin {t} 1,{seqlen},32,64{bounds(32, 64)}\nin {t} 1,{seqlen},32{bounds(32)}\n"
            f"in float32 32\nin {t} 1,{seqlen},1,128{bounds(1, 128)}\nin {t} 1,{seqlen},1,128{bounds(1, 128)}\nconfigure\n")


def workspaces(out):
    return [int(l.split("workspace=")[1].split()[0]) for l in out if l.startswith("configure rc=0")]


def test_ssd_scan_workspace_covers_every_seqlen_of_the_profile(tmp_path):
    lengths = range(1, 601)
    each = workspaces(run("".join(ssd_profile_script(L) for L in lengths), tmp_path))
    assert len(each) == len(lengths)
    by_len = dict(zip(lengths, each))
    # The step kernel below kSsdChunkedMinSeqlen (33) needs none; the chunked path some.
    assert by_len[32] == 0 and by_len[33] > 0
    assert by_len[512] > by_len[600]  # why the bound is not simply the max shape's
    profiles = [(1, 600, 600), (1, 600, 40), (513, 600, 600), (1, 32, 32), (100, 130, 110)]
    script = "".join(ssd_profile_script(opt, lo, hi) for lo, hi, opt in profiles)
    got = workspaces(run(script, tmp_path))
    assert got == [max(by_len[L] for L in range(lo, hi + 1)) for lo, hi, _ in profiles]
    assert got[0] == by_len[512] and got[2] == by_len[600] and got[3] == 0


# Mamba2LayerStep at test_decode_graph_mamba2.py's error sizes: batch 2, hidden 8, 4 heads of 4,
# 2 groups, dstate 4, width 4 (inner 16, conv_dim 32, in_dim 52).
def mamba2_script(feeds, fields=""):
    mask = sum(1 << k for k, n in enumerate(MAMBA2_STEP_INPUTS) if n in feeds)
    return (f"op Mamba2LayerStep\nfield present_inputs i32 {mask}\n{fields}create\n"
            + harness_inputs(feeds, [n for n in MAMBA2_STEP_INPUTS if n in feeds]))


def test_mamba2_layer_step_shapes_types_formats_and_workspace(tmp_path):
    feeds = mamba2.good()
    for k in ("in_proj_bias", "conv_bias", "out_proj_bias"):  # as Mamba-2 checkpoints have them
        del feeds[k]
    symbolic = mamba2_script(feeds).replace("in float32 2,", "in float32 b,").replace("in float32 2,", "in float32 b,")
    script = symbolic + "shapes\ntypes\n" + mamba2_script(feeds).replace("in float32", "in float16", 1) + "formats\n"
    script += mamba2_script(feeds) + "configure\n"
    out = run(script, tmp_path)
    assert errors(out) == []
    assert "shapes rc=0 [b, 1, 8] [b, 32, 3] [b, 4, 4, 4]" in out and "types: float32 float32 float32" in out
    # conv_state (pos 0) sets T; the states, residual, norm weights, dt_bias, A and D are float32.
    assert [l for l in out if l.startswith("pos ")] == [
        "pos 0: float32 float16 bfloat16",
        "pos 1: float32",   # ssm_state
        "pos 2: float32",   # residual
        "pos 3: float32",   # norm_weight
        "pos 4: float16",   # in_proj_weight
        "pos 5: float16",   # conv_weight
        "pos 6: float32",   # dt_bias
        "pos 7: float32",   # A
        "pos 8: float32",   # D
        "pos 9: float32",   # gate_norm_weight
        "pos 10: float16",  # out_proj_weight
        "pos 11: float32",  # residual_out
        "pos 12: float16",  # conv_state_out
        "pos 13: float32",  # ssm_state_out
    ]
    configured = out[-1]
    assert configured.startswith("configure rc=0 workspace=") and configured.endswith(" onShapeChange rc=0"), out
    assert int(configured.split("workspace=")[1].split()[0]) > 0


# The ORT op's messages (test_decode_graph_mamba2.py), whole.
MAMBA2_BAD_INPUTS = mamba2.BAD_INPUTS


@pytest.mark.parametrize("name,shape,dtype,message", MAMBA2_BAD_INPUTS,
                         ids=[f"{c[0]}-{'x'.join(map(str, c[1]))}-{np.dtype(c[2])}" for c in MAMBA2_BAD_INPUTS])
def test_mamba2_layer_step_shape_errors_are_the_ort_ops_messages(tmp_path, name, shape, dtype, message):
    feeds = mamba2.good()
    feeds[name] = np.ones(shape, dtype)
    out = run(mamba2_script(feeds) + "configure_raw\n", tmp_path)
    assert errors(out) == [f"Mamba2LayerStep: {message}"] * 3
    assert out[-1] == "configure rc=-1 onShapeChange rc=-1 enqueue rc=-1"


def test_mamba2_layer_step_cuda_batch_limit(tmp_path):
    def script(batch):
        feeds = mamba2.step_feeds(np.random.default_rng(0), np.float32, 1, 8, 4, 4, 2, 4, 4)
        return mamba2_script(feeds).replace("in float32 1,", f"in float32 {batch},") + "configure\n"

    out = run(script(65535) + script(65536), tmp_path)
    assert errors(out) == ["Mamba2LayerStep: batch 65536 is more than the CUDA kernels take (65535)"] * 3
    configured = [l for l in out if l.startswith("configure")]
    assert configured[0].startswith("configure rc=0 workspace=") and configured[0].endswith(" onShapeChange rc=0")
    assert configured[1] == "configure rc=-1 workspace=0 onShapeChange rc=-1"


def attr_field(name, value):
    kind = "i32" if isinstance(value, int) else "f32"
    return f"field {name} {kind} {value}\n"


MAMBA2_BAD_FIELDS = [(attrs, f"Mamba2LayerStep: {message}") for attrs, message in mamba2.BAD_ATTRIBUTES] + [
    ({"epsilon": float("nan")}, "Mamba2LayerStep: attribute 'epsilon' is NaN, expected a positive number"),
    ({"dt_max": float("nan")}, "Mamba2LayerStep: attribute 'dt_max' is NaN, expected at least dt_min (0)"),
    ({"norm_before_gate": 1.0}, "Mamba2LayerStep: attribute 'norm_before_gate' must be an int"),
    ({"epsilon": 1}, "Mamba2LayerStep: attribute 'epsilon' must be a float"),
]


@pytest.mark.parametrize("attrs,message", MAMBA2_BAD_FIELDS, ids=[m.split(": ")[1] for _, m in MAMBA2_BAD_FIELDS])
def test_mamba2_layer_step_bad_fields_give_the_ort_ops_messages(tmp_path, attrs, message):
    out = run("op Mamba2LayerStep\n" + "".join(attr_field(k, v) for k, v in attrs.items()) + "create\n", tmp_path)
    assert errors(out) == [message]
    assert out[-1] == "create null"
    with pytest.raises(ERRORS) as e:  # the ONNX Runtime op, on a node with the same attributes
        mamba2.run_step(mamba2.good(), **attrs)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "fields,serialized",
    [
        ("", "epsilon=1e-05 dt_min=0 dt_max=inf norm_before_gate=0"),
        ("field epsilon f32 0.001\nfield dt_min f32 0.01\nfield dt_max f32 0.5\nfield norm_before_gate i32 1\n"
         "field present_inputs i32 8031\n",
         "epsilon=0.001 dt_min=0.01 dt_max=0.5 norm_before_gate=1 present_inputs=8031"),
    ],
)
def test_mamba2_layer_step_serialization_round_trip_and_clone(tmp_path, fields, serialized):
    out = run(f"op Mamba2LayerStep\n{fields}create\nserialize\nclone\n", tmp_path)
    assert out[2:] == [
        "create ok",
        f"serialized: {serialized}",
        f"deserialized: {serialized}",
        "clone Mamba2LayerStep 1 mambac",
        f"clone fields: {serialized}",
    ]


def test_a_sliced_conv_takes_its_dim_from_the_weight(tmp_path):
    """x_offset: x is a packed [batch, seqlen, row]; y and the state have the weight's dim."""
    script = "op CausalConv1d\nfield x_offset i32 8\ncreate\nin float16 b,s,20\nin float16 8,4\nshapes\n"
    script += "op CausalConv1d\nfield x_offset i32 8\ncreate\nin float16 2,5,20\nin float16 8,4\nconfigure\n"
    out = run(script, tmp_path)
    assert out[3] == "shapes rc=0 [b, s, 8] [b, 8, 3]"
    assert out[-1].startswith("configure rc=0"), out


PACKED_SSD_FIELDS = ("field x_offset i32 0\nfield B_offset i32 32\nfield C_offset i32 64\nfield head_dim i32 4\n"
                     "field ngroups i32 2\nfield dstate i32 16\n")
PACKED_SSD_INPUTS = "in float16 {x}\nin float16 {b},{s},8\nin float32 8\nin float16 {x}\nin float16 {x}\n"


def test_a_packed_ssd_scan_takes_heads_from_a_and_dims_from_fields(tmp_path):
    """x, B and C one packed [batch, seqlen, row] (Mamba-2's conv output): y and the state take
    heads from A, head_dim and dstate from the fields."""
    script = f"op SsdScan\n{PACKED_SSD_FIELDS}create\n" + PACKED_SSD_INPUTS.format(x="b,s,96", b="b", s="s")
    script += "shapes\n"
    script += f"op SsdScan\n{PACKED_SSD_FIELDS}create\n" + PACKED_SSD_INPUTS.format(x="2,5,96", b=2, s=5)
    script += "configure\n"
    out = run(script, tmp_path)
    assert out[3] == "shapes rc=0 [b, s, 8, 4] [b, 8, 4, 16]", out
    assert out[-1].startswith("configure rc=0"), out


def test_a_packed_ssd_scan_without_its_dim_fields_is_refused(tmp_path):
    """x packed, B and C whole: head_dim has no other source (reported before the ranks)."""
    script = "op SsdScan\nfield x_offset i32 0\ncreate\n" + SSD_INPUTS.replace("b,s,8,4", "b,s,96")
    out = run(script + "shapes\n", tmp_path)
    assert errors(out) == ["SsdScan: attribute 'x_offset' needs attribute 'head_dim': input 'x' read packed as "
                           "[batch, seqlen, row] has no head_dim axis"], out


@pytest.mark.parametrize(
    "op,fields,inputs,message",
    [
        ("SsdScan", "C_offset i32 65\nfield x_offset i32 0\nfield B_offset i32 32\nfield head_dim i32 4\n"
         "field ngroups i32 2\nfield dstate i32 16",
         PACKED_SSD_INPUTS.format(x="2,5,96", b=2, s=5),
         "SsdScan: attribute 'C_offset' = 65 reads channels [65, 97) of input 'C' of shape [2, 5, 96], "
         "whose last dim is 96"),
        ("CausalConv1d", "x_offset i32 15", "in float16 2,5,20\nin float16 8,4\n",
         "CausalConv1d: attribute 'x_offset' = 15 reads channels [15, 23) of input 'x' of shape [2, 5, 20], "
         "whose last dim is 20"),
        ("CausalConv1d", "x_offset i32 -1", "in float16 2,5,20\nin float16 8,4\n",
         "CausalConv1d: attribute 'x_offset' is -1, expected >= 0"),
        ("SelectiveScan", "C_offset i32 1", concrete(SCAN_INPUTS, b=2, s=5),
         "SelectiveScan: attribute 'C_offset' = 1 reads channels [1, 17) of input 'C' of shape [2, 5, 2, 16], "
         "whose last dim is 16"),
        ("SsdScan", "dt_offset i32 1", concrete(SSD_INPUTS, b=2, s=5),
         "SsdScan: attribute 'dt_offset' = 1 reads channels [1, 9) of input 'dt' of shape [2, 5, 8], "
         "whose last dim is 8"),
    ],
)
def test_slice_offsets_are_checked_as_the_ort_op_checks_them(tmp_path, op, fields, inputs, message):
    out = run(f"op {op}\nfield {fields}\ncreate\n" + inputs + "configure_raw\n", tmp_path)
    assert errors(out) == [message] * 3
    assert out[-1] == "configure rc=-1 onShapeChange rc=-1 enqueue rc=-1"
