//! Emission. ONNX is the one back end; it takes a [`ValidatedGraph`](crate::ir::ValidatedGraph).

pub mod decode_graph;
pub mod external_data;
pub mod metadata;
mod onnx;
pub mod proto;

pub use self::onnx::{
    emit_onnx, emit_onnx_models, EmitError, EmitOptions, EmitReport, EmitTarget, ExternalData, CUSTOM_DOMAIN,
    LAYER_STEP_OP, OPSET,
};
