//! `libmambac_ops.so`: docs/op-contract.md's fused ops (`SelectiveScan`, `CausalConv1d`, ONNX domain
//! `mambac`) for ONNX Runtime, loaded through the standard `RegisterCustomOps` entry point.
//!
//! Layers, outermost first:
//! * [`register`] — the one exported symbol; builds the op domain from [`ops::OPS`].
//! * [`ops`] — the table of every op the library registers, per execution provider and T.
//! * [`op_table`] — the `OrtCustomOp` tables ORT calls back into (names, types, optional I/O,
//!   kernel creation, compute and shape inference), every callback wrapped so no panic crosses
//!   into ORT.
//! * [`selective_scan`], [`causal_conv1d`], [`ssd_scan`] — per-op attributes and compute: read the inputs,
//!   call the C++ shape check, allocate outputs, run the C++ kernel over ORT's thread pool.
//!   [`slices`] carries their `<input>_offset` attributes (inputs read from a packed last axis).
//! * [`add_rms_norm`] — `AddRmsNorm`, the residual add and RMSNorm between two layers (a C++
//!   kernel like the scans').
//! * [`gated_rms_norm`] — `GatedRmsNorm`, Mamba-2's gated RMSNorm (a C++ kernel like the scans',
//!   z read in place from in_proj's output with `z_offset`).
//! * [`layer_step`] — `MambaLayerStep`, one layer's fused decode step (the decode graph's op):
//!   shape checks and a float32 CPU implementation in Rust; CUDA kernels in cpp/cuda.
//! * [`mamba2_layer_step`] — `Mamba2LayerStep`, the same for a Mamba-2 layer (CUDA kernels in
//!   cpp/cuda too). `layer_step_params` holds what the two fill their params with alike,
//!   `step_cpu` what their CPU kernels share.
//! * `cuda` (`--features cuda`) — `Cuda<K>`, op `K` on the CUDA execution provider.
//! * [`kernel_abi`] — the cxx bridge to C++ (`cpp/`): params structs, shape checks, kernels.
//!   The C++ knows nothing about ORT, so the TensorRT plugin can reuse it.
//!
//! Invariants: nothing unwinds across `extern` boundaries (panics become `OrtStatus` errors,
//! C++ exceptions become `Err` through cxx); the only exported symbol is `RegisterCustomOps`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod add_rms_norm;
pub mod attributes;
pub mod causal_conv1d;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod gated_rms_norm;
pub mod kernel_abi;
pub mod layer_step;
mod layer_step_params;
pub mod mamba2_layer_step;
pub mod op_table;
pub mod ops;
pub mod ort_api;
pub mod parallel;
pub mod register;
pub mod selective_scan;
pub mod slices;
pub mod ssd_scan;
mod step_cpu;
pub mod tensor;

pub use error::OpError;
pub use kernel_abi::ffi;
