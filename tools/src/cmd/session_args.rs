//! The flags that say how a command runs a model, converted into the runtime's
//! [`mambac_runtime::SessionOptions`].

use std::path::PathBuf;

use mambac_runtime::{DecodeGraphChoice, Ep, SessionOptions};

use super::limits::{self, ranged};

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EpArg {
    Cpu,
    Cuda,
}

/// How a command runs a model: the op library, ORT's intra-op threads and the execution
/// provider (one set of flags shared by run, generate and bench).
#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    /// libmambac_ops.so (default: MAMBAC_OPS_LIB, else beside the mambac executable, else the
    /// mambac Python package's in the executable's prefix; never the working directory).
    #[arg(long)]
    pub ops_lib: Option<PathBuf>,
    /// ONNX Runtime intra-op threads, at most 1024 (default: ONNX Runtime's choice, one per
    /// physical core).
    #[arg(long, value_parser = ranged(1, limits::MAX_THREADS))]
    pub threads: Option<usize>,
    /// ONNX Runtime execution provider: cpu, or cuda (needs onnxruntime-gpu and a CUDA build of
    /// the op library).
    #[arg(long, value_enum, default_value = "cpu")]
    pub ep: EpArg,
}

/// How the commands that decode (`generate`, `bench`) run one-token steps.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GraphArgs {
    /// On --ep cuda, run every decode step through ORT's normal path instead of replaying a
    /// captured CUDA graph.
    #[arg(long)]
    pub no_cuda_graph: bool,
    /// Run one-token steps on the decode graph `<model stem>.decode.onnx` (`mambac export
    /// --decode-graph`: one fused MambaLayerStep or Mamba2LayerStep node a layer): auto = on the
    /// CUDA EP when the file exists, at the batch sizes where it is faster (up to 8 sequences for
    /// Mamba-1, 1 for Mamba-2, as measured on an H200); on = required, any EP, every batch;
    /// off = never.
    #[arg(long, value_enum, default_value = "auto")]
    pub decode_graph: DecodeGraphArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DecodeGraphArg {
    #[default]
    Auto,
    On,
    Off,
}

impl SessionArgs {
    /// The options for a single run (`mambac run`).
    pub fn options(&self) -> SessionOptions {
        SessionOptions {
            ep: match self.ep {
                EpArg::Cpu => Ep::Cpu,
                EpArg::Cuda => Ep::Cuda,
            },
            threads: self.threads,
            ops_lib: self.ops_lib.clone(),
            ..SessionOptions::default()
        }
    }

    /// The options for generation (`generate`, `bench`).
    pub fn with_graph(&self, graph: &GraphArgs) -> SessionOptions {
        SessionOptions {
            cuda_graph: !graph.no_cuda_graph,
            decode_graph: match graph.decode_graph {
                DecodeGraphArg::Auto => DecodeGraphChoice::Auto,
                DecodeGraphArg::On => DecodeGraphChoice::On,
                DecodeGraphArg::Off => DecodeGraphChoice::Off,
            },
            ..self.options()
        }
    }
}
