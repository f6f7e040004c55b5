//! Opening ONNX Runtime sessions of mambac exports: the op library registered, the EP set up,
//! CUDA graph capture where asked for (and dropped, with a warning, where ORT refuses it), and
//! weights shared between sessions.

use std::path::{Path, PathBuf};

use ort::session::builder::SessionBuilder;
use ort::session::Session;

use crate::environment::{find_ops_lib, init_ort};
use crate::error::{Error, Result, Warning};
use crate::options::{DecodeGraphChoice, Ep, SessionOptions};
use crate::ort_search::find_ort_library;
use crate::shared_weights::SharedWeights;

/// A session of `model` as `opts` says (no CUDA graph capture: for single runs).
pub fn open_session(model: &Path, opts: &SessionOptions) -> Result<Session> {
    open_session_with(model, opts, false, &SharedWeights::default())
}

/// A session for generation: on the CUDA EP with graph capture on when `opts.cuda_graph` (ORT
/// then captures one-token decode steps as CUDA graphs and replays them, which removes the
/// per-node launch cost). Returns whether capture is on: a model ORT cannot capture (a node
/// outside the CUDA EP) is opened again without it, and `warn` is told why.
pub(crate) fn open_generation_session(
    model: &Path,
    opts: &SessionOptions,
    shared: &SharedWeights,
    warn: &mut dyn FnMut(Warning),
) -> Result<(Session, bool)> {
    if opts.ep != Ep::Cuda || !opts.cuda_graph {
        return Ok((open_session_with(model, opts, false, shared)?, false));
    }
    match open_session_with(model, opts, true, shared) {
        Ok(s) => Ok((s, true)),
        // Anything else (a missing file, no memory) is the caller's error.
        Err(cause @ Error::GraphCaptureRefused { .. }) => {
            warn(Warning::CudaGraphOff { model: model.to_path_buf(), cause });
            Ok((open_session_with(model, opts, false, shared)?, false))
        }
        Err(e) => Err(e),
    }
}

/// The decode graph to open beside `model`, if `opts.decode_graph` asks for one. Both layer ops
/// (MambaLayerStep, Mamba2LayerStep) have CUDA kernels, so the choice does not depend on which.
pub(crate) fn decode_graph_for(model: &Path, opts: &SessionOptions) -> Result<Option<PathBuf>> {
    let path = mambac_compiler::emit::decode_graph::decode_graph_path(model);
    let path = match opts.decode_graph {
        DecodeGraphChoice::Off => return Ok(None),
        DecodeGraphChoice::Auto if opts.ep == Ep::Cuda && path.is_file() => path,
        DecodeGraphChoice::Auto => return Ok(None),
        DecodeGraphChoice::On if path.is_file() => path,
        DecodeGraphChoice::On => return Err(Error::DecodeGraphMissing(path)),
    };
    Ok(Some(path))
}

fn open_session_with(model: &Path, opts: &SessionOptions, cuda_graph: bool, shared: &SharedWeights) -> Result<Session> {
    // One session at a time in this process: ONNX Runtime adds a custom op library's domain to
    // ONNX's process-wide schema map unlocked, so two threads registering `mambac` at once can
    // fail ("Trying to add a domain to DomainToVersion map, but the domain is already exist").
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let env = init_ort()?;
    if !model.is_file() {
        return Err(Error::ModelNotFound(model.to_path_buf()));
    }
    // A standard-ONNX model (`export --ops standard`) needs no op library: when none was asked
    // for (--ops-lib, MAMBAC_OPS_LIB) and none is found (find_ops_lib), the session opens
    // without one, and a model that does use mambac's ops fails to load with the lookup's
    // message beside ONNX Runtime's.
    let (ops, missing) = match find_ops_lib(opts.ops_lib.as_deref()) {
        Ok(p) => (Some(p), None),
        Err(e) if opts.ops_lib.is_none() && std::env::var_os("MAMBAC_OPS_LIB").is_none() => (None, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    let mut b = Session::builder(env).map_err(Error::ort("cannot create an ONNX Runtime session builder"))?;
    if let Some(n) = opts.threads {
        b = b.with_intra_threads(n).map_err(|e| Error::ort(format!("--threads {n}"))(e.into()))?;
    }
    b = with_ep(b, opts.ep, cuda_graph)?;
    if let Some(ops) = &ops {
        b = b
            .with_operator_library(ops)
            .map_err(|e| Error::ort(format!("cannot register the op library {}", ops.display()))(e.into()))?;
    }
    shared.add_to(&b)?;
    b.commit_from_file(model).map_err(|source| {
        // ORT says only in words that it refuses capture when a node is left outside the CUDA EP
        // ("...cannot use the graph capture feature..."): its words are read here, once, and the
        // decision is made on the variant.
        if cuda_graph && source.message().to_lowercase().contains("graph") {
            Error::GraphCaptureRefused { model: model.to_path_buf(), source }
        } else if let Some(missing) = &missing {
            Error::Ort { what: format!("cannot load {} ({missing})", model.display()), source }
        } else if opts.ep == Ep::Cpu && is_bfloat16_export(model) {
            Error::Bfloat16OnCpu { model: model.to_path_buf(), source }
        } else {
            Error::Ort { what: format!("cannot load {}", model.display()), source }
        }
    })
}

/// `b` with `ep` (and, on the CUDA EP, graph capture as `cuda_graph` says). Every session of one
/// [`crate::StatefulSession`] takes the CUDA EP's default device, 0, where its state buffers are.
pub(crate) fn with_ep(b: SessionBuilder, ep: Ep, cuda_graph: bool) -> Result<SessionBuilder> {
    if ep != Ep::Cuda {
        return Ok(b);
    }
    use ort::ep::ExecutionProvider;
    let cuda = ort::ep::CUDA::default().with_cuda_graph(cuda_graph);
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(Error::CudaUnavailable { ort_lib: find_ort_library()? });
    }
    b.with_execution_providers([cuda.build().error_on_failure()])
        .map_err(|e| Error::ort("cannot enable the CUDA execution provider")(e.into()))
}

/// Whether `model` is a mambac export in bfloat16 (its `mambac.dtype` metadata). Read only once
/// ORT has refused the model: ORT's CPU EP has no bfloat16 MatMul kernel, so such a model never
/// loads there, and the user is told why and what to use instead.
fn is_bfloat16_export(model: &Path) -> bool {
    use mambac_compiler::emit::metadata::{metadata_value, DTYPE_KEY};
    metadata_value(model, DTYPE_KEY).as_deref() == Some("bfloat16")
}
