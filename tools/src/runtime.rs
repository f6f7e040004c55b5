//! Finding and starting ONNX Runtime (loaded at run time) and the mambac op library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::Session;

pub const OPS_LIB_NAME: &str = "libmambac_ops.so";

pub use crate::ort_search::find_ort_library;

/// Loads ONNX Runtime once per process.
pub fn init_ort() -> Result<&'static ort::environment::Environment> {
    // ort keeps only a weak reference to the environment: it lives here for the process.
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_ort_library().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&lib).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?;
        builder.with_name("mambac").build().map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!(e.clone()))
}

/// An `OrtStatus` from a raw ORT C API call as a `Result` (the status is released).
pub fn status_result(status: ort::sys::OrtStatusPtr) -> Result<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from ORT, read then released once.
    let msg = unsafe {
        let m = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        m
    };
    bail!("{msg}")
}

/// The op library: `--ops-lib`, else `MAMBAC_OPS_LIB`, else beside the mambac executable.
pub fn find_ops_lib(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--ops-lib {} is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MAMBAC_OPS_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("MAMBAC_OPS_LIB is {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the mambac executable")?;
    let beside = exe.with_file_name(OPS_LIB_NAME);
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "the mambac op library was not found: pass --ops-lib PATH or set MAMBAC_OPS_LIB \
         (looked for {} beside the executable; `cargo build --release` builds it)",
        beside.display()
    )
}

/// Which execution provider runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ep {
    Cpu,
    Cuda,
}

/// How a command runs a model: the op library, ORT's intra-op threads and the execution
/// provider (one set of flags shared by run, generate and bench).
#[derive(Debug, Clone, clap::Args)]
pub struct SessionOptions {
    /// libmambac_ops.so (default: MAMBAC_OPS_LIB, else beside the mambac executable; never the
    /// working directory).
    #[arg(long)]
    pub ops_lib: Option<PathBuf>,
    /// ONNX Runtime intra-op threads, at most 1024 (default: ONNX Runtime's choice, one per
    /// physical core).
    #[arg(long, value_parser = crate::cmd::limits::ranged(1, crate::cmd::limits::MAX_THREADS))]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub ep: Ep,
}

pub fn open_session(model: &Path, opts: &SessionOptions) -> Result<Session> {
    open_session_with(model, opts, false, &Initializers::default())
}

/// Initializers given to a session instead of the model's own (ORT's `AddInitializer`): values
/// on the session's device are used as they are, so sessions given the same values share them.
pub type Initializers = crate::generation::shared_weights::SharedWeights;

/// A session for `generate` / `bench`: on the CUDA EP with graph capture on unless `--no-cuda-graph`
/// (ORT then captures one-token decode steps as CUDA graphs and replays them, which removes the
/// per-node launch cost). Returns whether capture is on: a model ORT cannot capture (a node
/// outside the CUDA EP) is opened again without it, with a warning.
pub fn open_generation_session(
    model: &Path,
    opts: &SessionOptions,
    graph: &GraphOptions,
    shared: &Initializers,
) -> Result<(Session, bool)> {
    if opts.ep != Ep::Cuda || graph.no_cuda_graph {
        return Ok((open_session_with(model, opts, false, shared)?, false));
    }
    match open_session_with(model, opts, true, shared) {
        Ok(s) => Ok((s, true)),
        // ORT refuses capture when a node is left outside the CUDA EP ("...cannot use the graph
        // capture feature..."); anything else (a missing file, no memory) is the caller's error.
        Err(e) if format!("{e:#}").to_lowercase().contains("graph") => {
            eprintln!("warning: CUDA graph capture is off for {}: {e:#}", model.display());
            Ok((open_session_with(model, opts, false, shared)?, false))
        }
        Err(e) => Err(e),
    }
}

/// How the commands that decode (`generate`, `bench`) run one-token steps.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GraphOptions {
    /// On --ep cuda, run every decode step through ORT's normal path instead of replaying a
    /// captured CUDA graph.
    #[arg(long)]
    pub no_cuda_graph: bool,
    /// Run one-token steps on the decode graph `<model stem>.decode.onnx` (`mambac export
    /// --decode-graph`: one fused MambaLayerStep node a layer): auto = on the CUDA EP when the
    /// file exists; on = required, any EP; off = never.
    #[arg(long, value_enum, default_value = "auto")]
    pub decode_graph: DecodeGraphChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DecodeGraphChoice {
    #[default]
    Auto,
    On,
    Off,
}

/// The decode graph to open beside `model`, if `graph.decode_graph` asks for one.
pub fn decode_graph_for(model: &Path, opts: &SessionOptions, graph: &GraphOptions) -> Result<Option<PathBuf>> {
    let path = mambac_compiler::emit::decode_graph::decode_graph_path(model);
    match graph.decode_graph {
        DecodeGraphChoice::Off => Ok(None),
        DecodeGraphChoice::Auto => Ok((opts.ep == Ep::Cuda && path.is_file()).then_some(path)),
        DecodeGraphChoice::On if path.is_file() => Ok(Some(path)),
        DecodeGraphChoice::On => bail!(
            "--decode-graph on: {} does not exist (export it with `mambac export --stateful --decode-graph`)",
            path.display()
        ),
    }
}

fn open_session_with(model: &Path, opts: &SessionOptions, cuda_graph: bool, shared: &Initializers) -> Result<Session> {
    let env = init_ort()?;
    if !model.is_file() {
        bail!("model {} does not exist", model.display());
    }
    let ops = find_ops_lib(opts.ops_lib.as_deref())?;
    let mut b = Session::builder(env).map_err(|e| anyhow!("cannot create an ONNX Runtime session builder: {e}"))?;
    if let Some(n) = opts.threads {
        b = b.with_intra_threads(n).map_err(|e| anyhow!("--threads {n}: {e}"))?;
    }
    if opts.ep == Ep::Cuda {
        use ort::ep::ExecutionProvider;
        let cuda = ort::ep::CUDA::default().with_cuda_graph(cuda_graph);
        if !ort::ep::CUDA::is_available().unwrap_or(false) {
            bail!(
                "the CUDA execution provider is not available in {} (install onnxruntime-gpu)",
                find_ort_library()?.display()
            );
        }
        b = b
            .with_execution_providers([cuda.build().error_on_failure()])
            .map_err(|e| anyhow!("cannot enable the CUDA execution provider: {e}"))?;
    }
    b = b.with_operator_library(&ops).map_err(|e| anyhow!("cannot register the op library {}: {e}", ops.display()))?;
    shared.add_to(&b)?;
    b.commit_from_file(model).map_err(|e| anyhow!("cannot load {}: {e}", model.display()))
}
