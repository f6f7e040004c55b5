//! Float64 reference implementations of the fused ops, written straight from docs/op-contract.md's
//! equations. The IR interpreter uses them, and so do the op library's tests.

mod add_rms_norm;
mod causal_conv1d;
mod layer_step;
mod linear_attention;
mod mamba2_layer_step;
mod selective_scan;
mod ssd_scan;
mod step_frame;

pub use add_rms_norm::{add_rms_norm, rms_norm};
pub use causal_conv1d::{causal_conv1d, CausalConv1dInputs};
pub use layer_step::{layer_step, LayerStepInputs};
pub use linear_attention::{linear_attention, LinearAttentionInputs};
pub use mamba2_layer_step::{mamba2_layer_step, Mamba2LayerStepInputs};
pub use selective_scan::{selective_scan, SelectiveScanInputs};
pub use ssd_scan::{gated_rms_norm, ssd_dt, ssd_scan, SsdScanInputs};
pub use step_frame::StepFrame;

/// `ln(1 + e^x)`, with torch's threshold: x itself above 20 (docs/op-contract.md).
pub fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// ONNX Clip's `min(max(x, min), max)` (max wins if min > max); a NaN stays NaN (neither
/// comparison holds), as SsdScan's dt clamp keeps it.
pub fn clamp(x: f64, min: f64, max: f64) -> f64 {
    let x = if x < min { min } else { x };
    if x > max {
        max
    } else {
        x
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}
