//! mambac-compiler: Mamba checkpoints → IR → fused ONNX.
//!
//! The whole flow is in [`pipeline`]: read → lower → validate → passes → validate → emit.
//!
//! - [`checkpoint`] reads Hugging Face (safetensors, sharded) and original state-spaces
//!   (`pytorch_model.bin`, through an allow-listed pickle reader) checkpoints.
//! - [`lower`] turns a checkpoint into an [`ir`] graph of unfused primitive ops.
//! - [`passes`] fuse them into `CausalConv1d` and `SelectiveScan` (one rule a file).
//! - [`interp`] evaluates any IR graph in float64 ([`reference`] holds the fused ops' equations).
//! - [`emit`] writes ONNX from a validated graph.
//! - [`atomic_file`] writes every output: whole or not at all, never over an input.
//! - [`synth`] writes random-weight checkpoints with the standard Mamba shapes.
//!
//! Invariants: the IR graph is a `StableDiGraph`, so node ids held by a pass survive removals;
//! edges are the only record of connectivity; every rewrite is followed by validation.

pub mod atomic_file;
pub mod checkpoint;
pub mod emit;
pub mod interp;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod pipeline;
pub mod reference;
pub mod synth;
