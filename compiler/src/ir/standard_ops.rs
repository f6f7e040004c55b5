//! The standard ONNX ops (opset 27) that `--ops standard` lowers the fused layers to: their
//! input slots and attribute names, written once for the IR, the rewrite rules and the emitter.
//! Each follows the op's schema in the `onnx` package (`onnx.defs.get_schema(name, 27)`).

/// The opset these ops need, and the ONNX IR version that opset ships with (onnx 1.22).
pub const OPSET: i64 = 27;
pub const IR_VERSION: i64 = 13;

/// `CausalConvWithState`: a depthwise causal conv, channels-first, with a carried window.
pub mod causal_conv_with_state {
    pub const OP: &str = "CausalConvWithState";
    pub const INPUT: usize = 0;
    pub const WEIGHT: usize = 1;
    pub const BIAS: usize = 2;
    pub const PAST_STATE: usize = 3;
    pub const INPUT_NAMES: [&str; 4] = ["input", "weight", "bias", "past_state"];
    pub const FIRST_OPTIONAL: usize = BIAS;
    /// String attribute: "silu", "swish" or "none".
    pub const ACTIVATION: &str = "activation";
}

/// `LinearAttention`: a linear-attention recurrence over heads packed into the last axis.
pub mod linear_attention {
    pub const OP: &str = "LinearAttention";
    pub const QUERY: usize = 0;
    pub const KEY: usize = 1;
    pub const VALUE: usize = 2;
    pub const PAST_STATE: usize = 3;
    /// Optional in the schema, required by the "gated" rule (the only one the IR uses).
    pub const DECAY: usize = 4;
    pub const INPUT_NAMES: [&str; 5] = ["query", "key", "value", "past_state", "decay"];
    pub const Q_NUM_HEADS: &str = "q_num_heads";
    pub const KV_NUM_HEADS: &str = "kv_num_heads";
    pub const UPDATE_RULE: &str = "update_rule";
    pub const GATED: &str = "gated";
    pub const SCALE: &str = "scale";
}
