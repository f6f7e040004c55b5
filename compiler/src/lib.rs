//! mambac-compiler: Mamba checkpoints → IR → fused ONNX.
//!
//! The whole flow is in [`pipeline`]: read → lower → validate → passes → validate → emit.
//!
//! - [`checkpoint`] reads Hugging Face (safetensors, sharded) and original state-spaces
//!   (`pytorch_model.bin`, through an allow-listed pickle reader) checkpoints.
//! - [`synth`] writes random-weight checkpoints with the standard Mamba shapes.

pub mod checkpoint;
pub mod synth;
