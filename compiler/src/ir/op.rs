//! The closed op set of the IR. Each op has a typed config; ONNX names live in `emit`.

use super::consts::ConstTensor;
use super::standard_ops::{causal_conv_with_state as std_conv, linear_attention as std_la};
use super::types::ValueType;

/// GatedRmsNorm's slots (the fused op; the IR's primitive `Op::GatedRmsNorm` names its own).
pub use mambac_op_schema::gated_rms_norm as gated_norm_slots;
/// Input slots, names and attributes of the mambac ops: one home shared with the op library.
pub use mambac_op_schema::{
    add_rms_norm as norm_slots, causal_conv1d as conv_slots, mamba2_layer_step as step2_slots,
    mamba_layer_step as step_slots, selective_scan as scan_slots, ssd_scan as ssd_slots,
};

/// Inputs a fused op reads as a slice of a packed last axis (docs/op-contract.md "Sliced
/// inputs"), as (slot, offset) pairs in slot order: the op reads channels `[offset, offset +
/// count)` of that input's last axis, the count set by the op (SelectiveScan's z: dim, B and C:
/// dstate; CausalConv1d's x: dim). Emitted as the `<input>_offset` attributes; empty = every
/// input whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slices(pub Vec<(usize, usize)>);

impl Slices {
    /// The offset input `slot` is read from, if sliced.
    pub fn offset(&self, slot: usize) -> Option<usize> {
        self.0.iter().find(|(s, _)| *s == slot).map(|(_, o)| *o)
    }

    /// The same with input `slot` read from channel `offset` on.
    pub fn with(mut self, slot: usize, offset: usize) -> Self {
        self.0.retain(|(s, _)| *s != slot);
        self.0.push((slot, offset));
        self.0.sort_unstable();
        self
    }
}

/// CausalConv1d (docs/op-contract.md): depthwise causal conv over the sequence, optional bias, activation.
///
/// `y[b, t, d] = act(bias[d] + sum_k w[d, k] * x[b, t - (K-1) + k, d])`, with x before t = 0
/// taken from `initial_state` (or zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalConv1dConfig {
    pub silu: bool,
    /// Whether the node produces `final_state` (output 1).
    pub final_state: bool,
    /// `x` read from a packed last axis (`x_offset`); its dim is then `weight`'s.
    pub slices: Slices,
}

/// SelectiveScan (docs/op-contract.md):
///
/// ```text
/// dt_t = softplus(delta_t + delta_bias)      (no softplus when the flag is off)
/// h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
/// y_t  = <C_t, h_t> + D * u_t,   y_t *= silu(z_t)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectiveScanConfig {
    pub delta_softplus: bool,
    /// Whether the node produces `final_state` (output 1).
    pub final_state: bool,
    /// z, B and C read from a packed last axis (`z_offset`, `B_offset`, `C_offset`).
    pub slices: Slices,
}

/// SsdScan (docs/op-contract.md "SsdScan"): Mamba-2's state-space recurrence, one scalar decay
/// a head. Head h reads group g = h / (heads / ngroups) of B and C:
///
/// ```text
/// dt_t = clamp(softplus(dt_t + dt_bias), dt_min, dt_max)   (no softplus when the flag is off)
/// h_t  = exp(dt_t[h] * A[h]) * h_{t-1} + dt_t[h] * x_t[h, p] * B_t[g, n]     state [heads, P, N]
/// y_t[h, p] = sum_n C_t[g, n] * h_t[h, p, n] + D[h] * x_t[h, p]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SsdScanConfig {
    pub dt_softplus: bool,
    /// The clamp of dt (transformers' `time_step_limit`); (0, inf) changes no softplus output.
    pub dt_min: f64,
    pub dt_max: f64,
    /// Whether the node produces `final_state` (output 1).
    pub final_state: bool,
    /// x, dt, B and C read from a packed last axis (`x_offset`, `dt_offset`, `B_offset`,
    /// `C_offset`); x, B and C are then rank 3, their other dims in `dims`.
    pub slices: Slices,
    /// The `head_dim`, `ngroups` and `dstate` attributes (docs/op-contract.md "Sliced inputs").
    pub dims: SsdDims,
}

/// SsdScan's dims that a packed (rank-3) x, B or C does not carry; `None`: not set (the whole
/// input gives it). Set, each is that dim, whole inputs included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsdDims {
    pub head_dim: Option<usize>,
    pub ngroups: Option<usize>,
    pub dstate: Option<usize>,
}

impl SsdDims {
    /// In the op's attribute order (`ssd_slots::PACKED_DIMS`).
    pub fn as_array(&self) -> [Option<usize>; 3] {
        [self.head_dim, self.ngroups, self.dstate]
    }
}

/// Mamba-2's gated RMSNorm (mamba_ssm's `RMSNormGated`), over groups of `group_size` channels
/// of the last axis, inputs (x, z, weight):
///
/// ```text
/// norm_before_gate false: y = rmsnorm_groups(x * silu(z)) * weight
/// norm_before_gate true:  y = rmsnorm_groups(x) * weight * silu(z)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GatedRmsNormConfig {
    pub eps: f64,
    pub group_size: usize,
    pub norm_before_gate: bool,
}

/// AddRmsNorm (docs/op-contract.md "AddRmsNorm"): the residual add and the next RMSNorm between
/// two layers, inputs (x T, residual f32?, weight f32):
///
/// ```text
/// residual_out = residual + f32(x)         (f32(x) when residual is absent)
/// y            = T(residual_out / sqrt(mean(residual_out^2) + eps) * weight)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AddRmsNormConfig {
    pub eps: f64,
    /// Whether the node produces `residual_out` (output 1): the final norm's has no reader.
    pub residual_out: bool,
}

/// The fused op `mambac.GatedRmsNorm` (docs/op-contract.md "GatedRmsNorm"): `Op::GatedRmsNorm`
/// with y and z read in T (not cast to float32 first), weight float32, the output in T, computed
/// in float32 in between; z may be read from a packed last axis (`z_offset`). `--ops mambac`
/// exports only (pass `fuse_gated_norm_casts`).
#[derive(Debug, Clone, PartialEq)]
pub struct FusedGatedRmsNormConfig {
    pub norm: GatedRmsNormConfig,
    /// z read from a packed last axis (`z_offset`); its count is y's last dim.
    pub slices: Slices,
}

/// MambaLayerStep (docs/decode-graph.md): one Mamba layer for one token a sequence, the whole
/// block of `lower.rs` fused. `r` is the float32 residual stream, weights are stored `[in, out]`:
///
/// ```text
/// v = r / sqrt(mean(r^2) + eps) * norm_weight;  x, z = split(v @ in_proj_weight (+ in_proj_bias))
/// xc = silu(conv_bias + <conv_weight[d], [conv_state[d], x[d]]>)
/// dt, B, C = split(xc @ x_proj_weight);  dt = softplus(dt @ dt_proj_weight + dt_bias)
/// h' = exp(dt A) h + dt B xc;  y = (<C, h'> + D xc) * silu(z)
/// residual_out = r + y @ out_proj_weight (+ out_proj_bias)
/// ```
///
/// Outputs: residual_out f32 `[B, 1, H]`, conv_state_out T `[B, I, K-1]`, ssm_state_out f32
/// `[B, I, N]`.
/// ONNX's `CausalConvWithState` (opset 27): CausalConv1d's equation, channels-first.
///
/// `y[b, d, t] = act(bias[d] + sum_k w[d, 0, k] * x[b, d, t - (K-1) + k])`, x before t = 0 from
/// `past_state [B, d, K-1]` (or zeros); `present_state` is the last K-1 steps of that window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausalConvWithStateConfig {
    pub silu: bool,
}

/// ONNX's `LinearAttention` (opset 27), update rule "gated", as many query heads as key/value
/// heads. Per head, with `S [d_k, d_v]` (from `past_state` or zeros):
///
/// ```text
/// S_t = exp(g_t) * S_{t-1} + k_t ⊗ v_t      (g_t: the decay, in log space, per key row [d_k]
///                                            or one a head, by the decay input's shape)
/// o_t = scale * q_t^T S_t
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearAttentionConfig {
    pub heads: usize,
    pub scale: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MambaLayerStepConfig {
    pub eps: f64,
}

/// Mamba2LayerStep (docs/decode-graph.md "Mamba2LayerStep"): one Mamba-2 layer for one token a
/// sequence, the whole block of `lower/mamba2.rs` fused. `r` is the float32 residual stream,
/// weights are stored `[in, out]`, head h reads group g = h / (heads / ngroups):
///
/// ```text
/// v = r / sqrt(mean(r^2) + eps) * norm_weight;  z, xBC, dt = split(v @ in_proj_weight (+ bias))
/// xBC = silu(conv_bias + <conv_weight[c], [conv_state[c], xBC[c]]>);  x, B, C = split(xBC)
/// dt = clamp(softplus(dt + dt_bias), dt_min, dt_max)
/// h'[h, p] = exp(dt[h] A[h]) h[h, p] + dt[h] x[h, p] B[g];  y[h, p] = <C[g], h'[h, p]> + D[h] x[h, p]
/// y = rmsnorm_groups(y * silu(z)) * gate_norm_weight     (norm_before_gate: rmsnorm(y) w silu(z))
/// residual_out = r + y @ out_proj_weight (+ out_proj_bias)
/// ```
///
/// Outputs: residual_out f32 `[B, 1, H]`, conv_state_out T `[B, conv_dim, K-1]`, ssm_state_out
/// f32 `[B, heads, head_dim, N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mamba2LayerStepConfig {
    /// Both RMSNorms' epsilon.
    pub eps: f64,
    pub dt_min: f64,
    pub dt_max: f64,
    pub norm_before_gate: bool,
}

/// ONNX Runtime's `MatMulNBits` (com.microsoft): `x [..., K] @ W^T`, W `[N, K]` stored as
/// block-quantized values and scales ([`super::quant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatMulNBitsConfig {
    pub k: usize,
    pub n: usize,
    pub quant: super::quant::BlockQuant,
    /// ORT's `accuracy_level`: 0 computes in the input type; 4 quantizes x to int8 per block
    /// (ORT's fast CPU path).
    pub accuracy_level: i64,
}

#[derive(Debug, Clone)]
pub enum Op {
    /// A graph input, fed at run time.
    Input {
        name: String,
        ty: ValueType,
    },
    /// A weight: data from the checkpoint (lazy) or computed by a pass.
    Const(ConstTensor),
    /// `table.take(ids, axis)`: (table, ids) -> table's shape with `axis` replaced by ids' shape.
    Gather {
        axis: usize,
    },
    /// Permutes dims: output dim i = input dim perm[i].
    Transpose {
        perm: Vec<usize>,
    },
    /// RMSNorm over the last axis: `cast(x / sqrt(mean(x^2) + eps), weight.elem) * weight`,
    /// computed in x's element type (float32 for half exports, as Hugging Face does).
    RmsNorm {
        eps: f64,
    },
    /// Converts the element type.
    Cast {
        to: super::types::Elem,
    },
    /// (x [..., K], w [K, N]) -> [..., N]
    MatMul,
    /// (x [..., K], values [N, blocks, bytes] u8, scales [N * blocks]) -> [..., N]
    MatMulNBits(MatMulNBitsConfig),
    /// Numpy-broadcasting elementwise ops.
    Add,
    Mul,
    /// `x * sigmoid(x)`
    Silu,
    /// `ln(1 + e^x)`
    Softplus,
    Exp,
    Neg,
    /// ONNX's `Clip`: `min(max(x, min), max)`, a NaN staying NaN (`--ops standard`'s dt clamp).
    Clip {
        min: f64,
        max: f64,
    },
    /// Splits the last axis into parts of the given sizes (one output each).
    SplitLast {
        sizes: Vec<usize>,
    },
    /// Channels `[start, start + len)` of the last axis (ONNX `Slice`): the one part of a split
    /// whose other parts the fused ops read in place (passes/split_to_sliced_reads.rs).
    SliceLast {
        start: usize,
        len: usize,
    },
    /// Inserts a dim of size 1 at `axis`.
    Unsqueeze {
        axis: usize,
    },
    /// `[B, L, ...] -> [B, 1, ...]`: the last position of the sequence axis.
    LastPosition,
    /// ONNX's `ArgMax` over the last axis, that axis dropped, the first index on ties; int64
    /// out, float32 in (the exports' `next_token`: the greedy pick, made where the logits are).
    ArgMaxLast,
    /// `picks` (int64, `scores`' shape without its last axis) with -1 where that row of `scores`
    /// (float32, the last axis) holds a NaN or an infinity: the exports' `next_token` reports a
    /// pick made from non-finite logits instead of handing on ArgMax's arbitrary index. Emitted as
    /// `Where(IsNaN(s - s), -1, picks)` with `s = ReduceSum(scores)` (see the emitter for why).
    MinusOneWhereNonFinite,
    /// `[d0, .., d(keep-1), rest...] -> [d0, .., d(keep-1), tail...]`, the rest's size unchanged.
    Reshape {
        keep: usize,
        tail: Vec<usize>,
    },
    GatedRmsNorm(GatedRmsNormConfig),
    /// ONNX's `Expand`: x broadcast (numpy rules, both ways) with a shape of ones and `shape`.
    Expand {
        shape: Vec<usize>,
    },
    CausalConvWithState(CausalConvWithStateConfig),
    LinearAttention(LinearAttentionConfig),
    CausalConv1d(CausalConv1dConfig),
    SelectiveScan(SelectiveScanConfig),
    SsdScan(SsdScanConfig),
    AddRmsNorm(AddRmsNormConfig),
    FusedGatedRmsNorm(FusedGatedRmsNormConfig),
    MambaLayerStep(MambaLayerStepConfig),
    Mamba2LayerStep(Mamba2LayerStepConfig),
}

impl Op {
    /// Short name for listings and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Const(_) => "Const",
            Op::Gather { .. } => "Gather",
            Op::Transpose { .. } => "Transpose",
            Op::RmsNorm { .. } => "RmsNorm",
            Op::Cast { .. } => "Cast",
            Op::MatMul => "MatMul",
            Op::MatMulNBits(_) => "MatMulNBits",
            Op::Add => "Add",
            Op::Mul => "Mul",
            Op::Silu => "Silu",
            Op::Softplus => "Softplus",
            Op::Exp => "Exp",
            Op::Neg => "Neg",
            Op::Clip { .. } => "Clip",
            Op::SplitLast { .. } => "SplitLast",
            Op::SliceLast { .. } => "SliceLast",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::LastPosition => "LastPosition",
            Op::ArgMaxLast => "ArgMaxLast",
            Op::MinusOneWhereNonFinite => "MinusOneWhereNonFinite",
            Op::Reshape { .. } => "Reshape",
            Op::Expand { .. } => "Expand",
            Op::CausalConvWithState(_) => std_conv::OP,
            Op::LinearAttention(_) => std_la::OP,
            Op::GatedRmsNorm(_) => "GatedRmsNorm",
            Op::CausalConv1d(_) => conv_slots::OP.str,
            Op::SelectiveScan(_) => scan_slots::OP.str,
            Op::SsdScan(_) => ssd_slots::OP.str,
            Op::AddRmsNorm(_) => norm_slots::OP.str,
            // Not the ONNX op type: the IR's `GatedRmsNorm` is the float32 primitive.
            Op::FusedGatedRmsNorm(_) => "FusedGatedRmsNorm",
            Op::MambaLayerStep(_) => step_slots::OP.str,
            Op::Mamba2LayerStep(_) => step2_slots::OP.str,
        }
    }

    /// Names of the input slots, in order (optional slots included).
    pub fn input_names(&self) -> &'static [&'static str] {
        match self {
            Op::Input { .. } | Op::Const(_) => &[],
            Op::Gather { .. } => &["table", "ids"],
            Op::Transpose { .. }
            | Op::Silu
            | Op::Softplus
            | Op::Exp
            | Op::Neg
            | Op::Clip { .. }
            | Op::SplitLast { .. }
            | Op::SliceLast { .. }
            | Op::Unsqueeze { .. }
            | Op::LastPosition
            | Op::ArgMaxLast
            | Op::Reshape { .. }
            | Op::Expand { .. }
            | Op::Cast { .. } => &["x"],
            Op::CausalConvWithState(_) => &std_conv::INPUT_NAMES,
            Op::LinearAttention(_) => &std_la::INPUT_NAMES,
            Op::GatedRmsNorm(_) => &["x", "z", "weight"],
            Op::RmsNorm { .. } => &["x", "weight"],
            Op::MatMul => &["x", "w"],
            Op::MinusOneWhereNonFinite => &["scores", "picks"],
            Op::MatMulNBits(_) => &["x", "values", "scales"],
            Op::Add | Op::Mul => &["a", "b"],
            Op::CausalConv1d(_) => &conv_slots::INPUT_NAMES,
            Op::SelectiveScan(_) => &scan_slots::INPUT_NAMES,
            Op::SsdScan(_) => &ssd_slots::INPUT_NAMES,
            Op::AddRmsNorm(_) => &norm_slots::INPUT_NAMES,
            Op::FusedGatedRmsNorm(_) => &gated_norm_slots::INPUT_NAMES,
            Op::MambaLayerStep(_) => &step_slots::INPUT_NAMES,
            Op::Mamba2LayerStep(_) => &step2_slots::INPUT_NAMES,
        }
    }

    /// Which input slots may be left empty.
    pub fn input_is_optional(&self, slot: usize) -> bool {
        match self {
            Op::CausalConv1d(_) => slot >= conv_slots::FIRST_OPTIONAL,
            Op::SelectiveScan(_) => slot >= scan_slots::FIRST_OPTIONAL,
            Op::SsdScan(_) => slot >= ssd_slots::FIRST_OPTIONAL,
            Op::AddRmsNorm(_) => norm_slots::OPTIONAL.contains(&slot),
            Op::MambaLayerStep(_) => step_slots::OPTIONAL.contains(&slot),
            Op::Mamba2LayerStep(_) => step2_slots::OPTIONAL.contains(&slot),
            Op::CausalConvWithState(_) => slot >= std_conv::FIRST_OPTIONAL,
            Op::LinearAttention(_) => slot == std_la::PAST_STATE,
            _ => false,
        }
    }

    /// Number of outputs the node produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::SplitLast { sizes } => sizes.len(),
            Op::CausalConv1d(c) => 1 + c.final_state as usize,
            Op::SelectiveScan(c) => 1 + c.final_state as usize,
            Op::SsdScan(c) => 1 + c.final_state as usize,
            Op::AddRmsNorm(c) => 1 + c.residual_out as usize,
            Op::MambaLayerStep(_) | Op::Mamba2LayerStep(_) => 3,
            // Both are required outputs of the ONNX ops: a node always has its state output.
            Op::CausalConvWithState(_) | Op::LinearAttention(_) => 2,
            _ => 1,
        }
    }

    /// Whether this op is one of the fused custom ops of the `mambac` domain.
    pub fn is_fused_op(&self) -> bool {
        matches!(
            self,
            Op::CausalConv1d(_)
                | Op::SelectiveScan(_)
                | Op::SsdScan(_)
                | Op::AddRmsNorm(_)
                | Op::FusedGatedRmsNorm(_)
                | Op::MambaLayerStep(_)
                | Op::Mamba2LayerStep(_)
        )
    }
}
