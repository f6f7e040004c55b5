//! The `mambac` ONNX ops as the graph sees them: domain, op types, input slots in order, their
//! names (those of docs/op-contract.md and docs/decode-graph.md), which slots are optional, and the
//! attribute names. The compiler emits nodes by these, the op library registers and reads them,
//! so the two cannot drift. (The C++ shape checks name the same inputs in their messages; the
//! Rust tests in `tests/shape_agreement.rs` hold both to agree.)
//!
//! No dependencies: the op library is a cdylib loaded into ONNX Runtime and must stay small.

#![no_std]

use core::ffi::CStr;

/// A name the graph holds, as Rust and as C (ORT's API takes NUL-terminated strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    pub str: &'static str,
    pub c: &'static CStr,
}

macro_rules! name {
    ($s:literal) => {
        Name {
            str: $s,
            c: match core::ffi::CStr::from_bytes_with_nul(concat!($s, "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => panic!("a name holds a NUL"),
            },
        }
    };
}

/// The ONNX domain of every mambac op.
pub const DOMAIN: Name = name!("mambac");
/// The opset version the exports import the domain at.
pub const DOMAIN_VERSION: i64 = 1;

/// The exported model's inputs and outputs (docs/op-contract.md, "The exported model's
/// interface"): `input_ids` int64 [batch, seqlen] in, `logits` out, and with `--stateful` per
/// layer i the inputs `{kind}.{i}` and outputs `{kind}_out.{i}` of each state kind.
pub mod graph {
    pub const INPUT_IDS: &str = "input_ids";
    pub const LOGITS: &str = "logits";
    /// int64 `[batch, positions]`: the most likely token at each position `logits` has (the
    /// first on ties), picked in the graph so a greedy decode loop copies ids, not logits.
    pub const NEXT_TOKEN: &str = "next_token";
    pub const CONV_STATE: &str = "conv_state";
    pub const SSM_STATE: &str = "ssm_state";
    /// Every state kind, in the order the graph lists a layer's states.
    pub const STATE_KINDS: [&str; 2] = [CONV_STATE, SSM_STATE];
    /// Appended to a state kind for the state a step hands on.
    pub const OUT_SUFFIX: &str = "_out";
}

/// The node attributes TensorRT's ONNX parser reads to find a plugin (docs/tensorrt.md). Every
/// export writes them; ONNX Runtime's ops ignore them.
pub mod tensorrt {
    use super::Name;
    pub const NAMESPACE_KEY: Name = name!("plugin_namespace");
    /// Ours: TensorRT-LLM already registers a `SelectiveScan` in namespace `tensorrt_llm`.
    pub const NAMESPACE: Name = name!("mambac");
    pub const VERSION_KEY: Name = name!("plugin_version");
    pub const VERSION: Name = name!("1");
    /// Int attribute: the bit mask of the input slots a node fills, written when an absent
    /// optional input comes before a present one (a plugin sees only the present inputs).
    pub const PRESENT_INPUTS: Name = name!("present_inputs");
}

/// CausalConv1d (docs/op-contract.md).
pub mod causal_conv1d {
    use super::Name;
    pub const OP: Name = name!("CausalConv1d");
    pub const X: usize = 0;
    pub const WEIGHT: usize = 1;
    pub const BIAS: usize = 2;
    pub const INITIAL_STATE: usize = 3;
    pub const INPUT_NAMES: [&str; 4] = ["x", "weight", "bias", "initial_state"];
    /// `bias` and `initial_state` may be left empty.
    pub const FIRST_OPTIONAL: usize = BIAS;
    /// String attribute: "silu" or "none".
    pub const ACTIVATION: Name = name!("activation");
    /// Int attribute: `x` is a packed `[batch, seqlen, row]` tensor and the op reads channels
    /// `[x_offset, x_offset + dim)` of each row, dim from `weight` (docs/op-contract.md "Sliced inputs").
    pub const X_OFFSET: Name = name!("x_offset");
    /// The inputs that may be read as a slice of a packed last axis, with their attributes.
    pub const SLICEABLE: [(usize, Name); 1] = [(X, X_OFFSET)];
}

/// SelectiveScan (docs/op-contract.md).
pub mod selective_scan {
    use super::Name;
    pub const OP: Name = name!("SelectiveScan");
    pub const U: usize = 0;
    pub const DELTA: usize = 1;
    pub const A: usize = 2;
    pub const B: usize = 3;
    pub const C: usize = 4;
    pub const D: usize = 5;
    pub const Z: usize = 6;
    pub const DELTA_BIAS: usize = 7;
    pub const INITIAL_STATE: usize = 8;
    pub const INPUT_NAMES: [&str; 9] = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"];
    /// `D` and every slot after it may be left empty.
    pub const FIRST_OPTIONAL: usize = D;
    /// Int attribute, 0 or 1.
    pub const DELTA_SOFTPLUS: Name = name!("delta_softplus");
    /// Int attributes: the input is read as channels `[offset, offset + count)` of its packed
    /// last axis (z: count = dim; B, C: count = dstate), docs/op-contract.md "Sliced inputs".
    pub const Z_OFFSET: Name = name!("z_offset");
    pub const B_OFFSET: Name = name!("B_offset");
    pub const C_OFFSET: Name = name!("C_offset");
    /// The inputs that may be read as a slice of a packed last axis, with their attributes.
    pub const SLICEABLE: [(usize, Name); 3] = [(B, B_OFFSET), (C, C_OFFSET), (Z, Z_OFFSET)];
}

/// SsdScan (docs/op-contract.md "SsdScan"): Mamba-2's scan, one scalar decay a head.
pub mod ssd_scan {
    use super::Name;
    pub const OP: Name = name!("SsdScan");
    pub const X: usize = 0;
    pub const DT: usize = 1;
    pub const A: usize = 2;
    pub const B: usize = 3;
    pub const C: usize = 4;
    pub const D: usize = 5;
    pub const DT_BIAS: usize = 6;
    pub const INITIAL_STATE: usize = 7;
    pub const INPUT_NAMES: [&str; 8] = ["x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state"];
    /// `D` and every slot after it may be left empty.
    pub const FIRST_OPTIONAL: usize = D;
    /// Int attribute, 0 or 1.
    pub const DT_SOFTPLUS: Name = name!("dt_softplus");
    /// Float attributes: the clamp of dt (transformers' `time_step_limit`).
    pub const DT_MIN: Name = name!("dt_min");
    pub const DT_MAX: Name = name!("dt_max");
    /// Int attribute: dt is read as channels `[dt_offset, dt_offset + heads)` of its packed last
    /// axis (docs/op-contract.md "Sliced inputs").
    pub const DT_OFFSET: Name = name!("dt_offset");
    /// Int attributes: x, B and C read packed, as rank-3 `[batch, seqlen, row]` tensors (the
    /// conv output of a Mamba-2 layer): x as channels `[x_offset, x_offset + heads * head_dim)`,
    /// B and C as `[o, o + ngroups * dstate)`.
    pub const X_OFFSET: Name = name!("x_offset");
    pub const B_OFFSET: Name = name!("B_offset");
    pub const C_OFFSET: Name = name!("C_offset");
    /// Int attributes: the dims a packed x, B or C does not carry (x's head_dim; B's and C's
    /// ngroups and dstate). When set they are those dims, whole inputs included.
    pub const HEAD_DIM: Name = name!("head_dim");
    pub const NGROUPS: Name = name!("ngroups");
    pub const DSTATE: Name = name!("dstate");
    /// The inputs that may be read as a slice of a packed last axis, with their attributes.
    pub const SLICEABLE: [(usize, Name); 4] = [(X, X_OFFSET), (DT, DT_OFFSET), (B, B_OFFSET), (C, C_OFFSET)];
    /// The dims a packed input leaves to attributes, in `SsdScanDims` order.
    pub const PACKED_DIMS: [Name; 3] = [HEAD_DIM, NGROUPS, DSTATE];
}

/// AddRmsNorm (docs/op-contract.md "AddRmsNorm"): the residual add and the next RMSNorm between
/// two layers, one kernel. `residual_out = residual + float32(x)` (float32(x) alone when
/// `residual` is absent), `y = T(residual_out / sqrt(mean(residual_out^2) + epsilon) * weight)`.
pub mod add_rms_norm {
    use super::Name;
    pub const OP: Name = name!("AddRmsNorm");
    pub const X: usize = 0;
    pub const RESIDUAL: usize = 1;
    pub const WEIGHT: usize = 2;
    pub const INPUT_NAMES: [&str; 3] = ["x", "residual", "weight"];
    /// `residual` may be left empty (the first layer: the stream starts at the embedding).
    pub const OPTIONAL: [usize; 1] = [RESIDUAL];
    /// Output 0 `y` (T), output 1 `residual_out` (float32, optional).
    pub const OUTPUT_NAMES: [&str; 2] = ["y", "residual_out"];
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub const EPSILON: Name = name!("epsilon");
    pub const DEFAULT_EPSILON: f32 = 1e-5;
}

/// GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): Mamba-2's gated RMSNorm over groups of
/// `group_size` channels, in float32, y and z read in T and the result written in T:
/// `norm_before_gate = 0`: `T(rms_g(y * silu(z)) * weight)`; `= 1`: `T(rms_g(y) * weight * silu(z))`.
pub mod gated_rms_norm {
    use super::Name;
    pub const OP: Name = name!("GatedRmsNorm");
    pub const Y: usize = 0;
    pub const Z: usize = 1;
    pub const WEIGHT: usize = 2;
    pub const INPUT_NAMES: [&str; 3] = ["y", "z", "weight"];
    /// Output 0, `out` (T, y's shape).
    pub const OUTPUT_NAMES: [&str; 1] = ["out"];
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub const EPSILON: Name = name!("epsilon");
    pub const DEFAULT_EPSILON: f32 = 1e-5;
    /// Int attribute, channels a group (d / ngroups); required.
    pub const GROUP_SIZE: Name = name!("group_size");
    /// Int attribute 0/1 (default 0): normalise y before gating it with silu(z).
    pub const NORM_BEFORE_GATE: Name = name!("norm_before_gate");
    /// Int attribute: `z` is a packed `[batch, seqlen, row]` tensor and the op reads channels
    /// `[z_offset, z_offset + d)` of each row, d from `y` (docs/op-contract.md "Sliced inputs").
    pub const Z_OFFSET: Name = name!("z_offset");
    /// The inputs that may be read as a slice of a packed last axis, with their attributes.
    pub const SLICEABLE: [(usize, Name); 1] = [(Z, Z_OFFSET)];
}

/// The slots of the inputs both layer steps read alike around their SSMs (the compiler's
/// `reference::StepFrame`): the conv state, the residual and its pre-norm, in_proj, the conv and
/// out_proj. Each op's `FRAME` finds them by name in its `INPUT_NAMES`, so the names stay the one
/// source of the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFrameSlots {
    pub conv_state: usize,
    pub residual: usize,
    pub norm_weight: usize,
    pub in_proj_weight: usize,
    pub in_proj_bias: usize,
    pub conv_weight: usize,
    pub conv_bias: usize,
    pub out_proj_weight: usize,
    pub out_proj_bias: usize,
}

impl StepFrameSlots {
    /// The slots of the frame's inputs in `names`. Used in a const, a name missing fails the build.
    pub const fn of(names: &[&str]) -> Self {
        StepFrameSlots {
            conv_state: slot_of(names, "conv_state"),
            residual: slot_of(names, "residual"),
            norm_weight: slot_of(names, "norm_weight"),
            in_proj_weight: slot_of(names, "in_proj_weight"),
            in_proj_bias: slot_of(names, "in_proj_bias"),
            conv_weight: slot_of(names, "conv_weight"),
            conv_bias: slot_of(names, "conv_bias"),
            out_proj_weight: slot_of(names, "out_proj_weight"),
            out_proj_bias: slot_of(names, "out_proj_bias"),
        }
    }
}

/// The index of `name` in `names` (a const fn: `==` on `str` is not one yet).
const fn slot_of(names: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < names.len() {
        let (a, b) = (names[i].as_bytes(), name.as_bytes());
        let mut same = a.len() == b.len();
        let mut k = 0;
        while same && k < a.len() {
            same = a[k] == b[k];
            k += 1;
        }
        if same {
            return i;
        }
        i += 1;
    }
    panic!("a layer step lacks an input of the step frame")
}

/// MambaLayerStep (docs/decode-graph.md): one layer's decode step, fused.
pub mod mamba_layer_step {
    use super::Name;
    pub const OP: Name = name!("MambaLayerStep");
    pub const CONV_STATE: usize = 0;
    pub const SSM_STATE: usize = 1;
    pub const RESIDUAL: usize = 2;
    pub const NORM_WEIGHT: usize = 3;
    pub const IN_PROJ_WEIGHT: usize = 4;
    pub const IN_PROJ_BIAS: usize = 5;
    pub const CONV_WEIGHT: usize = 6;
    pub const CONV_BIAS: usize = 7;
    pub const X_PROJ_WEIGHT: usize = 8;
    pub const DT_PROJ_WEIGHT: usize = 9;
    pub const DT_BIAS: usize = 10;
    pub const A: usize = 11;
    pub const D: usize = 12;
    pub const OUT_PROJ_WEIGHT: usize = 13;
    pub const OUT_PROJ_BIAS: usize = 14;
    pub const INPUT_NAMES: [&str; 15] = [
        "conv_state",
        "ssm_state",
        "residual",
        "norm_weight",
        "in_proj_weight",
        "in_proj_bias",
        "conv_weight",
        "conv_bias",
        "x_proj_weight",
        "dt_proj_weight",
        "dt_bias",
        "A",
        "D",
        "out_proj_weight",
        "out_proj_bias",
    ];
    pub const OPTIONAL: [usize; 5] = [IN_PROJ_BIAS, CONV_BIAS, DT_BIAS, D, OUT_PROJ_BIAS];
    pub const FRAME: super::StepFrameSlots = super::StepFrameSlots::of(&INPUT_NAMES);
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub const EPSILON: Name = name!("epsilon");
    pub const DEFAULT_EPSILON: f32 = 1e-5;
}

/// Mamba2LayerStep (docs/decode-graph.md "Mamba2LayerStep"): one Mamba-2 layer's decode step,
/// fused. The conv runs over x, B and C together (`conv_dim = inner + 2 * ngroups * dstate`
/// channels); ngroups comes from the shapes.
pub mod mamba2_layer_step {
    use super::Name;
    pub const OP: Name = name!("Mamba2LayerStep");
    pub const CONV_STATE: usize = 0;
    pub const SSM_STATE: usize = 1;
    pub const RESIDUAL: usize = 2;
    pub const NORM_WEIGHT: usize = 3;
    pub const IN_PROJ_WEIGHT: usize = 4;
    pub const IN_PROJ_BIAS: usize = 5;
    pub const CONV_WEIGHT: usize = 6;
    pub const CONV_BIAS: usize = 7;
    pub const DT_BIAS: usize = 8;
    pub const A: usize = 9;
    pub const D: usize = 10;
    pub const GATE_NORM_WEIGHT: usize = 11;
    pub const OUT_PROJ_WEIGHT: usize = 12;
    pub const OUT_PROJ_BIAS: usize = 13;
    pub const INPUT_NAMES: [&str; 14] = [
        "conv_state",
        "ssm_state",
        "residual",
        "norm_weight",
        "in_proj_weight",
        "in_proj_bias",
        "conv_weight",
        "conv_bias",
        "dt_bias",
        "A",
        "D",
        "gate_norm_weight",
        "out_proj_weight",
        "out_proj_bias",
    ];
    pub const OPTIONAL: [usize; 5] = [IN_PROJ_BIAS, CONV_BIAS, DT_BIAS, D, OUT_PROJ_BIAS];
    pub const FRAME: super::StepFrameSlots = super::StepFrameSlots::of(&INPUT_NAMES);
    /// Float attribute, the epsilon of both RMSNorms (the pre-norm and the gated norm).
    pub const EPSILON: Name = name!("epsilon");
    pub const DEFAULT_EPSILON: f32 = 1e-5;
    /// Float attributes: the clamp of dt (transformers' `time_step_limit`), as SsdScan's.
    pub const DT_MIN: Name = name!("dt_min");
    pub const DT_MAX: Name = name!("dt_max");
    /// Int attribute, 0 (default: normalise `y * silu(z)`) or 1 (normalise `y`, then gate).
    pub const NORM_BEFORE_GATE: Name = name!("norm_before_gate");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_names_are_the_str_names() {
        for n in [
            DOMAIN,
            causal_conv1d::OP,
            causal_conv1d::ACTIVATION,
            causal_conv1d::X_OFFSET,
            selective_scan::OP,
            selective_scan::DELTA_SOFTPLUS,
            selective_scan::Z_OFFSET,
            selective_scan::B_OFFSET,
            selective_scan::C_OFFSET,
            mamba_layer_step::OP,
            mamba_layer_step::EPSILON,
            ssd_scan::OP,
            ssd_scan::DT_SOFTPLUS,
            ssd_scan::DT_MIN,
            ssd_scan::DT_MAX,
            ssd_scan::DT_OFFSET,
            ssd_scan::X_OFFSET,
            ssd_scan::B_OFFSET,
            ssd_scan::C_OFFSET,
            ssd_scan::HEAD_DIM,
            ssd_scan::NGROUPS,
            ssd_scan::DSTATE,
            mamba2_layer_step::OP,
            mamba2_layer_step::EPSILON,
            mamba2_layer_step::DT_MIN,
            mamba2_layer_step::DT_MAX,
            mamba2_layer_step::NORM_BEFORE_GATE,
            add_rms_norm::OP,
            add_rms_norm::EPSILON,
        ] {
            assert_eq!(n.c.to_str(), Ok(n.str));
        }
    }

    #[test]
    fn slots_index_their_names() {
        use mamba_layer_step as m;
        assert_eq!(m::INPUT_NAMES[m::OUT_PROJ_BIAS], "out_proj_bias");
        assert_eq!(m::INPUT_NAMES[m::A], "A");
        assert_eq!(selective_scan::INPUT_NAMES[selective_scan::INITIAL_STATE], "initial_state");
        assert_eq!(causal_conv1d::INPUT_NAMES[causal_conv1d::INITIAL_STATE], "initial_state");
        // A slice attribute is its input's name + "_offset": the C++ checks' messages build it so.
        for (slot, attr) in selective_scan::SLICEABLE {
            assert_eq!(attr.str.strip_suffix("_offset"), Some(selective_scan::INPUT_NAMES[slot]));
        }
        for (slot, attr) in causal_conv1d::SLICEABLE {
            assert_eq!(attr.str.strip_suffix("_offset"), Some(causal_conv1d::INPUT_NAMES[slot]));
        }
        for (slot, attr) in ssd_scan::SLICEABLE {
            assert_eq!(attr.str.strip_suffix("_offset"), Some(ssd_scan::INPUT_NAMES[slot]));
        }
        use mamba2_layer_step as m2;
        assert_eq!(m2::INPUT_NAMES[m2::OUT_PROJ_BIAS], "out_proj_bias");
        assert_eq!(m2::INPUT_NAMES[m2::GATE_NORM_WEIGHT], "gate_norm_weight");
        assert_eq!(m2::INPUT_NAMES[m2::DT_BIAS], "dt_bias");
        use add_rms_norm as an;
        assert_eq!(an::INPUT_NAMES[an::RESIDUAL], "residual");
        assert_eq!(an::INPUT_NAMES[an::WEIGHT], "weight");
    }

    #[test]
    fn step_frames_are_the_named_slots() {
        use mamba2_layer_step as m2;
        use mamba_layer_step as m;
        let slots = |f: StepFrameSlots| {
            [
                f.conv_state,
                f.residual,
                f.norm_weight,
                f.in_proj_weight,
                f.in_proj_bias,
                f.conv_weight,
                f.conv_bias,
                f.out_proj_weight,
                f.out_proj_bias,
            ]
        };
        // The fields' own names, in the order of `slots`.
        let names = "conv_state residual norm_weight in_proj_weight in_proj_bias \
                     conv_weight conv_bias out_proj_weight out_proj_bias";
        assert!(slots(m::FRAME).iter().map(|&s| m::INPUT_NAMES[s]).eq(names.split_whitespace()));
        assert!(slots(m2::FRAME).iter().map(|&s| m2::INPUT_NAMES[s]).eq(names.split_whitespace()));
        assert_eq!((m::FRAME.residual, m2::FRAME.out_proj_bias), (m::RESIDUAL, m2::OUT_PROJ_BIAS));
    }

    #[test]
    fn gated_rms_norm_names() {
        use gated_rms_norm as g;
        for n in [g::OP, g::EPSILON, g::GROUP_SIZE, g::NORM_BEFORE_GATE, g::Z_OFFSET] {
            assert_eq!(n.c.to_str(), Ok(n.str));
        }
        assert_eq!(g::INPUT_NAMES[g::Z], "z");
        for (slot, attr) in g::SLICEABLE {
            assert_eq!(attr.str.strip_suffix("_offset"), Some(g::INPUT_NAMES[slot]));
        }
    }
}
