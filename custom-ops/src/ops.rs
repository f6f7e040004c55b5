//! Every op the library registers: one row per (op, execution provider), each row one table per
//! T in [`FLOAT_TYPES`]. The CUDA rows exist only with the `cuda` feature. Static: ORT keeps
//! pointers to the tables for the life of the process.

use crate::add_rms_norm::AddRmsNorm;
use crate::causal_conv1d::CausalConv1d;
#[cfg(feature = "cuda")]
use crate::cuda::Cuda;
use crate::gated_rms_norm::GatedRmsNorm;
use crate::layer_step::MambaLayerStep;
use crate::mamba2_layer_step::Mamba2LayerStep;
use crate::op_table::{op_def, Kernel, OpDef, FLOAT_TYPES};
use crate::selective_scan::SelectiveScan;
use crate::ssd_scan::SsdScan;

pub static OPS: &[[OpDef; FLOAT_TYPES.len()]] = &[
    per_type::<SelectiveScan>(),
    per_type::<CausalConv1d>(),
    per_type::<MambaLayerStep>(),
    per_type::<SsdScan>(),
    per_type::<Mamba2LayerStep>(),
    per_type::<AddRmsNorm>(),
    per_type::<GatedRmsNorm>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<SelectiveScan>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<CausalConv1d>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<MambaLayerStep>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<SsdScan>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<Mamba2LayerStep>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<AddRmsNorm>>(),
    #[cfg(feature = "cuda")]
    per_type::<Cuda<GatedRmsNorm>>(),
];

/// The tables of `K`, one per T.
const fn per_type<K: Kernel>() -> [OpDef; FLOAT_TYPES.len()] {
    [op_def::<K>(FLOAT_TYPES[0]), op_def::<K>(FLOAT_TYPES[1]), op_def::<K>(FLOAT_TYPES[2])]
}
