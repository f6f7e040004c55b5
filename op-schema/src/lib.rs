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

/// An op's input slots in graph order, each `SLOT = "name"` once: a `usize` const a slot (its
/// index) and `INPUT_NAMES`, the names by index, so a slot and its name cannot drift apart.
macro_rules! inputs {
    ($($slot:ident = $name:literal),+ $(,)?) => {
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum InputSlot {
            $($slot),+
        }
        $(pub const $slot: usize = InputSlot::$slot as usize;)+
        pub const INPUT_NAMES: [&str; [$($name),+].len()] = [$($name),+];
    };
}

/// Float attribute of every op with an RMSNorm, its epsilon; each such op's module re-exports it.
pub const EPSILON: Name = name!("epsilon");
/// The epsilon of a node that does not set the attribute.
pub const DEFAULT_EPSILON: f32 = 1e-5;

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
    inputs! { X = "x", WEIGHT = "weight", BIAS = "bias", INITIAL_STATE = "initial_state" }
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
    // The required inputs, then the optional ones.
    inputs! {
        U = "u", DELTA = "delta", A = "A", B = "B", C = "C",
        D = "D", Z = "z", DELTA_BIAS = "delta_bias", INITIAL_STATE = "initial_state",
    }
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
    // The required inputs, then the optional ones.
    inputs! {
        X = "x", DT = "dt", A = "A", B = "B", C = "C",
        D = "D", DT_BIAS = "dt_bias", INITIAL_STATE = "initial_state",
    }
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
    inputs! { X = "x", RESIDUAL = "residual", WEIGHT = "weight" }
    /// `residual` may be left empty (the first layer: the stream starts at the embedding).
    pub const OPTIONAL: [usize; 1] = [RESIDUAL];
    /// Output 0 `y` (T), output 1 `residual_out` (float32, optional).
    pub const OUTPUT_NAMES: [&str; 2] = ["y", "residual_out"];
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub use super::{DEFAULT_EPSILON, EPSILON};
}

/// GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): Mamba-2's gated RMSNorm over groups of
/// `group_size` channels, in float32, y and z read in T and the result written in T:
/// `norm_before_gate = 0`: `T(rms_g(y * silu(z)) * weight)`; `= 1`: `T(rms_g(y) * weight * silu(z))`.
pub mod gated_rms_norm {
    use super::Name;
    pub const OP: Name = name!("GatedRmsNorm");
    inputs! { Y = "y", Z = "z", WEIGHT = "weight" }
    /// Output 0, `out` (T, y's shape).
    pub const OUTPUT_NAMES: [&str; 1] = ["out"];
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub use super::{DEFAULT_EPSILON, EPSILON};
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
    // One line a stage: state and stream, pre-norm and in_proj, conv, x_proj/dt_proj and the
    // scan, out_proj.
    inputs! {
        CONV_STATE = "conv_state", SSM_STATE = "ssm_state", RESIDUAL = "residual",
        NORM_WEIGHT = "norm_weight", IN_PROJ_WEIGHT = "in_proj_weight", IN_PROJ_BIAS = "in_proj_bias",
        CONV_WEIGHT = "conv_weight", CONV_BIAS = "conv_bias",
        X_PROJ_WEIGHT = "x_proj_weight", DT_PROJ_WEIGHT = "dt_proj_weight", DT_BIAS = "dt_bias", A = "A", D = "D",
        OUT_PROJ_WEIGHT = "out_proj_weight", OUT_PROJ_BIAS = "out_proj_bias",
    }
    pub const OPTIONAL: [usize; 5] = [IN_PROJ_BIAS, CONV_BIAS, DT_BIAS, D, OUT_PROJ_BIAS];
    pub const FRAME: super::StepFrameSlots = super::StepFrameSlots::of(&INPUT_NAMES);
    /// Float attribute, the RMSNorm's epsilon (default 1e-5).
    pub use super::{DEFAULT_EPSILON, EPSILON};
}

/// Mamba2LayerStep (docs/decode-graph.md "Mamba2LayerStep"): one Mamba-2 layer's decode step,
/// fused. The conv runs over x, B and C together (`conv_dim = inner + 2 * ngroups * dstate`
/// channels); ngroups comes from the shapes.
pub mod mamba2_layer_step {
    use super::Name;
    pub const OP: Name = name!("Mamba2LayerStep");
    // One line a stage, as MambaLayerStep's; the scan's line has no x_proj/dt_proj (dt comes
    // out of in_proj) and the gated norm's weight before out_proj.
    inputs! {
        CONV_STATE = "conv_state", SSM_STATE = "ssm_state", RESIDUAL = "residual",
        NORM_WEIGHT = "norm_weight", IN_PROJ_WEIGHT = "in_proj_weight", IN_PROJ_BIAS = "in_proj_bias",
        CONV_WEIGHT = "conv_weight", CONV_BIAS = "conv_bias",
        DT_BIAS = "dt_bias", A = "A", D = "D", GATE_NORM_WEIGHT = "gate_norm_weight",
        OUT_PROJ_WEIGHT = "out_proj_weight", OUT_PROJ_BIAS = "out_proj_bias",
    }
    pub const OPTIONAL: [usize; 5] = [IN_PROJ_BIAS, CONV_BIAS, DT_BIAS, D, OUT_PROJ_BIAS];
    pub const FRAME: super::StepFrameSlots = super::StepFrameSlots::of(&INPUT_NAMES);
    /// Int attribute, 0 (default: normalise `y * silu(z)`) or 1 (normalise `y`, then gate), the
    /// gated norm's own.
    pub use super::gated_rms_norm::NORM_BEFORE_GATE;
    /// Float attributes: the clamp of dt (transformers' `time_step_limit`), SsdScan's own.
    pub use super::ssd_scan::{DT_MAX, DT_MIN};
    /// Float attribute, the epsilon of both RMSNorms (the pre-norm and the gated norm).
    pub use super::{DEFAULT_EPSILON, EPSILON};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_names_are_the_str_names() {
        for n in [
            DOMAIN,
            EPSILON,
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
    fn inputs_number_the_slots_from_0() {
        use mamba2_layer_step as m2;
        use mamba_layer_step as m;
        assert_eq!((m::CONV_STATE, m::X_PROJ_WEIGHT, m::OUT_PROJ_BIAS, m::INPUT_NAMES.len()), (0, 8, 14, 15));
        assert_eq!((m2::CONV_STATE, m2::DT_BIAS, m2::OUT_PROJ_BIAS, m2::INPUT_NAMES.len()), (0, 8, 13, 14));
        assert_eq!((selective_scan::D, selective_scan::INITIAL_STATE, selective_scan::INPUT_NAMES.len()), (5, 8, 9));
        assert_eq!((ssd_scan::D, ssd_scan::INITIAL_STATE, ssd_scan::INPUT_NAMES.len()), (5, 7, 8));
        assert_eq!((causal_conv1d::BIAS, causal_conv1d::INPUT_NAMES.len()), (2, 4));
        assert_eq!((add_rms_norm::WEIGHT, gated_rms_norm::WEIGHT), (2, 2));
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
