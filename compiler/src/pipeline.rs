//! The whole flow in one place: read → lower → validate → passes → validate → emit.

use std::path::{Path, PathBuf};

use crate::atomic_file::{check_not_an_input, OutputIsInput};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::emit::external_data::previous_data_files;
use crate::emit::{emit_onnx, EmitError, EmitOptions, EmitReport, ExternalData};
use crate::ir::{validate, Elem, Graph, ValidationError};
use crate::lower::{lower, LowerOptions};
use crate::passes::{run_passes, PassError, PassReport};

#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub lower: LowerOptions,
    /// Run the fusion passes (off: the unfused primitive graph, for inspection and testing).
    pub fuse: bool,
    /// Stop after this many rewrites (bisecting a bad rewrite).
    pub max_rewrites: Option<usize>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { lower: LowerOptions::default(), fuse: true, max_rewrites: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the lowered graph is invalid (a mambac bug): {0}")]
    Lowering(ValidationError),
    #[error("a pass broke the graph (a mambac bug; bisect with --max-rewrites): {0}")]
    Pass(#[from] PassError),
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error(transparent)]
    OutputIsInput(#[from] OutputIsInput),
}

pub struct Compiled {
    pub graph: Graph,
    pub passes: PassReport,
}

/// Lowers, validates and (optionally) fuses.
pub fn compile(ckpt: &Checkpoint, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    let mut graph = lower(ckpt, opts.lower);
    validate(&graph).map_err(CompileError::Lowering)?;
    let passes = if opts.fuse { run_passes(&mut graph, opts.max_rewrites)? } else { PassReport::default() };
    validate(&graph).map_err(CompileError::Lowering)?;
    Ok(Compiled { graph, passes })
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub compile: CompileOptions,
    pub external_data: ExternalData,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { compile: CompileOptions::default(), external_data: ExternalData::Auto }
    }
}

pub struct ExportReport {
    pub emit: EmitReport,
    pub passes: PassReport,
    pub output: PathBuf,
    /// The `mambac.export_id` written into the model (and its data file's name).
    pub export_id: String,
    /// Data files of earlier exports to the same path, which the new model no longer reads:
    /// [`ExportReport::remove_previous_data`] deletes them once nothing else needs them (a decode
    /// graph of the earlier export reads them until it is replaced).
    pub previous_data: Vec<PathBuf>,
}

impl ExportReport {
    /// Deletes [`ExportReport::previous_data`]; returns the files removed.
    pub fn remove_previous_data(&self) -> std::io::Result<Vec<PathBuf>> {
        for p in &self.previous_data {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(self.previous_data.clone())
    }
}

/// `mambac export`: checkpoint folder → ONNX file. The model (and its external-data file) are
/// written whole or not at all (a failure leaves an earlier export at `out` as it was); an `out`
/// that is one of the checkpoint's files is refused.
pub fn export(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &ExportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport, CompileError> {
    check_not_an_input(out, &ckpt.input_files())?;
    let compiled = compile(ckpt, &opts.compile)?;
    let vg = validate(&compiled.graph).map_err(CompileError::Lowering)?;
    let export_id = export_id();
    let metadata = metadata(ckpt, opts, &compiled.passes, &export_id);
    let previous_data = previous_data_files(out);
    let emit_opts = EmitOptions { external_data: opts.external_data, metadata, export_id: export_id.clone() };
    let emit = emit_onnx(&vg, ckpt, &emit_opts, out, progress)?;
    Ok(ExportReport { emit, passes: compiled.passes, output: out.to_path_buf(), export_id, previous_data })
}

/// A value no two exports share: the time in nanoseconds and the process id.
fn export_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

fn metadata(ckpt: &Checkpoint, opts: &ExportOptions, passes: &PassReport, export_id: &str) -> Vec<(String, String)> {
    let dtype: Elem = opts.compile.lower.dtype;
    vec![
        ("mambac.version".into(), env!("CARGO_PKG_VERSION").into()),
        // Ties a decode graph (which copies this metadata) to the export it was derived from.
        ("mambac.export_id".into(), export_id.into()),
        ("mambac.source".into(), ckpt.dir.display().to_string()),
        ("mambac.source_layout".into(), format!("{:?}", ckpt.layout)),
        ("mambac.config".into(), ckpt.config.to_hf_json().to_string()),
        ("mambac.dtype".into(), dtype.name().into()),
        ("mambac.stateful".into(), opts.compile.lower.stateful.to_string()),
        ("mambac.logits".into(), format!("{:?}", opts.compile.lower.logits).to_lowercase()),
        ("mambac.passes".into(), passes.rules_applied.join(",")),
        (
            "mambac.quantize".into(),
            match opts.compile.lower.quant {
                None => "none".into(),
                Some(q) => format!("int{} block {} accuracy_level {}", q.quant.bits, q.quant.block, q.accuracy_level),
            },
        ),
    ]
}
