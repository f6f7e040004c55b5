//! How a model is run, as plain values a caller fills in (the CLI converts its flags into these).

use std::path::PathBuf;

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ep {
    #[default]
    Cpu,
    Cuda,
}

/// Whether one-token steps run on the decode graph `<model stem>.decode.onnx` (`mambac export
/// --decode-graph`: one fused MambaLayerStep node a layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeGraphChoice {
    /// On the CUDA EP when the file exists, up to [`crate::decode_graph_max_batch`] sequences
    /// (8 for Mamba-1, 1 for Mamba-2).
    #[default]
    Auto,
    /// Required (an error when missing or unusable), on any EP, at any batch size.
    On,
    /// Never.
    Off,
}

/// How a session is opened: the op library, ORT's threads, the EP, and for stateful sessions
/// how one-token steps run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    pub ep: Ep,
    /// ONNX Runtime intra-op threads (None: ORT's choice, one per physical core).
    pub threads: Option<usize>,
    /// libmambac_ops.so (None: `MAMBAC_OPS_LIB`, else beside the executable, else the `mambac`
    /// Python package's in the executable's prefix; never the working directory).
    pub ops_lib: Option<PathBuf>,
    /// On the CUDA EP, capture one-token decode steps as CUDA graphs and replay them (removes the
    /// per-node launch cost). A model ORT cannot capture runs without, with a warning.
    pub cuda_graph: bool,
    /// Stateful sessions only: whether one-token steps run on the decode graph.
    pub decode_graph: DecodeGraphChoice,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            ep: Ep::Cpu,
            threads: None,
            ops_lib: None,
            cuda_graph: true,
            decode_graph: DecodeGraphChoice::Auto,
        }
    }
}
