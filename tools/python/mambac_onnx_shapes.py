"""The `mambac` ops' output types and shapes for ONNX's Python tools.

Exported models carry a `value_info` for every value, so `onnx.shape_inference.infer_shapes`
types them as they are. ONNX Runtime's `symbolic_shape_infer.py` (and the transformer optimizer
and TensorRT EP flows built on it) drops a model's `value_info` and re-infers node by node
through ONNX's op schemas, which know nothing of the `mambac` domain: it stops at the first
`CausalConv1d`. `register()` gives ONNX a schema for each op whose inference writes the outputs'
types and shapes (the rules of docs/op-contract.md and docs/decode-graph.md; the inputs' checks
stay the library's, at run time). After it, both tools complete with the graph's own symbolic
dims (`batch`, `seqlen`).

    import mambac_onnx_shapes
    mambac_onnx_shapes.register()
    # then onnx.shape_inference.infer_shapes(model) or SymbolicShapeInference.infer_shapes(model)

As a command: `python tools/python/mambac_onnx_shapes.py MODEL.onnx -o OUT.onnx` runs ONNX
Runtime's symbolic shape inference with the schemas registered (`--auto-merge` passes its
`auto_merge`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, defs

# The layer steps' input names have their Python home in the mambac package's references.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from mambac.reference import LAYER_STEP_INPUTS, MAMBA2_STEP_INPUTS  # noqa: E402

DOMAIN = "mambac"
VERSION = 1
# The element types an input or output may have: its own type variable each, since inputs of
# one node differ (float16 activations beside a float32 A); which type each slot takes is the
# library's to check, at run time.
_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]


def _dims(type_proto):
    """The dims of a tensor type as `TensorShapeProto.Dimension` messages."""
    return list(type_proto.tensor_type.shape.dim)


def _set(ctx, index, elem_type, dims):
    """Output `index` gets `elem_type` and `dims` (Dimension messages or ints)."""
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    shape = out.tensor_type.shape
    shape.SetInParent()
    for d in dims:
        new = shape.dim.add()
        if isinstance(d, int):
            new.dim_value = d
        else:
            new.CopyFrom(d)
    ctx.set_output_type(index, out)


def _input(ctx, index):
    """Input `index`'s type, or None when absent or not yet typed."""
    if index >= ctx.get_num_inputs():
        return None
    t = ctx.get_input_type(index)
    if t is None or not t.HasField("tensor_type"):
        return None
    return t


def _width_minus_one(weight):
    """`width - 1` from a `[dim, width]` weight, or a fresh unknown dim when width is symbolic."""
    d = _dims(weight)[1]
    if d.HasField("dim_value"):
        return d.dim_value - 1
    return onnx.TensorShapeProto.Dimension()


def _y_and_final_state(ctx, sizes_slot, state_elem, last_dim):
    """Both sequence ops: `y` is input 0's type, its last dim `sizes`' first; `final_state` is
    `[batch, dim, last_dim(sizes)]` of `state_elem` (None: input 0's type), with `sizes` the
    `[dim, n]` input `sizes_slot`. dim comes from `sizes`, never from input 0, which may be a
    slice of a packed last axis (CausalConv1d's `x_offset`, docs/op-contract.md "Sliced inputs")."""
    x, sizes = _input(ctx, 0), _input(ctx, sizes_slot)
    if x is None:
        return
    if sizes is None or len(_dims(x)) != 3 or len(_dims(sizes)) != 2:
        _set(ctx, 0, x.tensor_type.elem_type, _dims(x))
        return
    batch, seqlen, _ = _dims(x)
    dim = _dims(sizes)[0]
    _set(ctx, 0, x.tensor_type.elem_type, [batch, seqlen, dim])
    if ctx.get_num_outputs() > 1:
        _set(ctx, 1, state_elem or x.tensor_type.elem_type, [batch, dim, last_dim(sizes)])


def _infer_causal_conv1d(ctx):
    # final_state: the last width - 1 inputs, of T.
    _y_and_final_state(ctx, 1, None, _width_minus_one)


def _infer_selective_scan(ctx):
    # final_state: [batch, dim, dstate] float32, dstate from A [dim, dstate].
    _y_and_final_state(ctx, 2, TensorProto.FLOAT, lambda a: _dims(a)[1])


def _infer_ssd_scan(ctx):
    # y: [batch, seqlen, heads, head_dim] of T; final_state: [batch, heads, head_dim, dstate]
    # float32. A whole x [batch, seqlen, heads, head_dim] gives heads and head_dim, a packed one
    # [batch, seqlen, row] (x_offset) takes heads from A and head_dim from its attribute; dstate
    # from the attribute, else from a whole B [batch, seqlen, ngroups, dstate]
    # (docs/op-contract.md "Sliced inputs").
    x, a, b = _input(ctx, 0), _input(ctx, 2), _input(ctx, 3)
    if x is None:
        return
    attrs = {n: at.i for n in ("head_dim", "dstate") if (at := ctx.get_attribute(n)) is not None}
    dims = _dims(x)
    if len(dims) == 4:
        batch, seqlen, heads, head_dim = dims
    elif len(dims) == 3 and a is not None and len(_dims(a)) == 1 and "head_dim" in attrs:
        batch, seqlen, _ = dims
        heads, head_dim = _dims(a)[0], attrs["head_dim"]
    else:
        return  # compute reports it
    _set(ctx, 0, x.tensor_type.elem_type, [batch, seqlen, heads, head_dim])
    if ctx.get_num_outputs() < 2:
        return
    if "dstate" in attrs:
        dstate = attrs["dstate"]
    elif b is not None and len(_dims(b)) == 4:
        dstate = _dims(b)[3]
    else:
        return
    _set(ctx, 1, TensorProto.FLOAT, [batch, heads, head_dim, dstate])


def _infer_layer_step(ctx):
    conv_state, ssm_state, residual = _input(ctx, 0), _input(ctx, 1), _input(ctx, 2)
    if residual is not None and conv_state is not None and len(_dims(residual)) == 3:
        _set(ctx, 0, TensorProto.FLOAT, [_dims(conv_state)[0], 1, _dims(residual)[2]])
    if conv_state is not None:
        _set(ctx, 1, conv_state.tensor_type.elem_type, _dims(conv_state))
    if ssm_state is not None:
        _set(ctx, 2, TensorProto.FLOAT, _dims(ssm_state))


def _infer_mamba2_layer_step(ctx):
    # MambaLayerStep's rule: residual_out [batch, 1, hidden] float32, conv_state_out and
    # ssm_state_out the states' own types and shapes (Mamba-2's ssm state is rank 4).
    _infer_layer_step(ctx)


def _infer_add_rms_norm(ctx):
    # y: x's type and shape; residual_out: x's shape, float32.
    x = _input(ctx, 0)
    if x is None:
        return
    _set(ctx, 0, x.tensor_type.elem_type, _dims(x))
    if ctx.get_num_outputs() > 1:
        _set(ctx, 1, TensorProto.FLOAT, _dims(x))


def _infer_gated_rms_norm(ctx):
    # out: y's type and shape (z may be a wider slice source, weight float32).
    y = _input(ctx, 0)
    if y is not None:
        _set(ctx, 0, y.tensor_type.elem_type, _dims(y))


def _params(prefix, names, optional):
    """Formal parameters, each with its own type variable `<prefix><index>`."""
    opt = defs.OpSchema.FormalParameterOption
    return [
        defs.OpSchema.FormalParameter(n, f"{prefix}{i}", param_option=opt.Optional if i in optional else opt.Single)
        for i, n in enumerate(names)
    ]


# TensorRT's keys, on every mambac node (op-schema/src/lib.rs `tensorrt`; docs/tensorrt.md).
_TENSORRT_ATTRS = [
    ("plugin_namespace", defs.OpSchema.AttrType.STRING),
    ("plugin_version", defs.OpSchema.AttrType.STRING),
    ("present_inputs", defs.OpSchema.AttrType.INT),
]

# name: (inputs, optional inputs, outputs, optional outputs, attributes, inference)
_OPS = {
    "CausalConv1d": (
        ["x", "weight", "bias", "initial_state"],
        {2, 3},
        ["y", "final_state"],
        {1},
        [("activation", defs.OpSchema.AttrType.STRING), ("x_offset", defs.OpSchema.AttrType.INT)],
        _infer_causal_conv1d,
    ),
    "SelectiveScan": (
        ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"],
        {5, 6, 7, 8},
        ["y", "final_state"],
        {1},
        [
            ("delta_softplus", defs.OpSchema.AttrType.INT),
            ("z_offset", defs.OpSchema.AttrType.INT),
            ("B_offset", defs.OpSchema.AttrType.INT),
            ("C_offset", defs.OpSchema.AttrType.INT),
        ],
        _infer_selective_scan,
    ),
    "SsdScan": (
        ["x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state"],
        {5, 6, 7},
        ["y", "final_state"],
        {1},
        [
            ("dt_softplus", defs.OpSchema.AttrType.INT),
            ("dt_min", defs.OpSchema.AttrType.FLOAT),
            ("dt_max", defs.OpSchema.AttrType.FLOAT),
            ("dt_offset", defs.OpSchema.AttrType.INT),
            ("x_offset", defs.OpSchema.AttrType.INT),
            ("B_offset", defs.OpSchema.AttrType.INT),
            ("C_offset", defs.OpSchema.AttrType.INT),
            ("head_dim", defs.OpSchema.AttrType.INT),
            ("ngroups", defs.OpSchema.AttrType.INT),
            ("dstate", defs.OpSchema.AttrType.INT),
        ],
        _infer_ssd_scan,
    ),
    "MambaLayerStep": (
        LAYER_STEP_INPUTS,
        {5, 7, 10, 12, 14},  # in_proj_bias, conv_bias, dt_bias, D, out_proj_bias
        ["residual_out", "conv_state_out", "ssm_state_out"],
        set(),
        [("epsilon", defs.OpSchema.AttrType.FLOAT)],
        _infer_layer_step,
    ),
    "Mamba2LayerStep": (
        MAMBA2_STEP_INPUTS,
        {5, 7, 8, 10, 13},  # in_proj_bias, conv_bias, dt_bias, D, out_proj_bias
        ["residual_out", "conv_state_out", "ssm_state_out"],
        set(),
        [
            ("epsilon", defs.OpSchema.AttrType.FLOAT),
            ("dt_min", defs.OpSchema.AttrType.FLOAT),
            ("dt_max", defs.OpSchema.AttrType.FLOAT),
            ("norm_before_gate", defs.OpSchema.AttrType.INT),
        ],
        _infer_mamba2_layer_step,
    ),
    "AddRmsNorm": (
        ["x", "residual", "weight"],
        {1},
        ["y", "residual_out"],
        {1},
        [("epsilon", defs.OpSchema.AttrType.FLOAT)],
        _infer_add_rms_norm,
    ),
    "GatedRmsNorm": (
        ["y", "z", "weight"],
        set(),
        ["out"],
        set(),
        [
            ("epsilon", defs.OpSchema.AttrType.FLOAT),
            ("group_size", defs.OpSchema.AttrType.INT),
            ("norm_before_gate", defs.OpSchema.AttrType.INT),
            ("z_offset", defs.OpSchema.AttrType.INT),
        ],
        _infer_gated_rms_norm,
    ),
}


# Each op's input names in slot order: the Python side's one home of them (tests/python imports
# it; op-schema/src/lib.rs is the Rust side's).
OP_INPUTS = {name: list(spec[0]) for name, spec in _OPS.items()}


def register() -> None:
    """Registers the `mambac` ops' schemas with ONNX in this process (once; later calls do nothing)."""
    for name, (inputs, opt_in, outputs, opt_out, attrs, infer) in _OPS.items():
        if defs.has(name, VERSION, DOMAIN):
            continue
        schema = defs.OpSchema(
            name,
            DOMAIN,
            VERSION,
            inputs=_params("I", inputs, opt_in),
            outputs=_params("O", outputs, opt_out),
            type_constraints=[(f"I{i}", _TYPES, "see docs/op-contract.md") for i in range(len(inputs))]
            + [(f"O{i}", _TYPES, "see docs/op-contract.md") for i in range(len(outputs))],
            attributes=[
                defs.OpSchema.Attribute(a, t, "see docs/op-contract.md", required=False)
                for a, t in attrs + _TENSORRT_ATTRS
            ],
        )
        schema.set_type_and_shape_inference_function(infer)
        defs.register_schema(schema)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="ONNX Runtime's symbolic shape inference over a mambac export, with the mambac "
        "ops' shapes registered."
    )
    p.add_argument("model", help="the exported .onnx file")
    p.add_argument("-o", "--output", required=True, help="where to write the model with every shape")
    p.add_argument("--auto-merge", action="store_true", help="symbolic_shape_infer's auto_merge")
    a = p.parse_args(argv)
    register()
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(a.model)
    out = SymbolicShapeInference.infer_shapes(model, auto_merge=a.auto_merge)
    onnx.save(out, a.output)
    print(f"wrote {a.output} ({len(out.graph.value_info)} values typed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
