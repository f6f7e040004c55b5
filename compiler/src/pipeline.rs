//! The whole flow in one place: read → lower → validate → passes → validate → emit. An export
//! with a decode graph runs it twice (the stateful lowering and the decode lowering) and emits
//! both graphs in one pass over the weights.

use std::path::{Path, PathBuf};

use crate::atomic_file::{check_not_an_input, OutputIsInput};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::emit::decode_graph::decode_graph_path;
use crate::emit::external_data::previous_data_files;
use crate::emit::{emit_onnx_models, EmitError, EmitReport, EmitTarget, ExternalData};
use crate::ir::{scan_slots, ssd_slots, step2_slots, step_slots, validate, Elem, Graph, ValidationError};
use crate::lower::{lower, LowerOptions, OpSet};
use crate::passes::{run_passes, run_rules, PassError, PassReport, NORM_RULES, SLICE_RULES, STANDARD_RULES};

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
    #[error("the decode graph needs {0}")]
    DecodeGraph(&'static str),
    #[error("--ops standard has no standard-ONNX form of {op} (node '{node}'): export this model with --ops mambac")]
    NoStandardForm { op: &'static str, node: String },
    #[error("the decode graph folded {fused} of {layers} layers into {step} (a mambac bug): {unfused}")]
    DecodeLayers { fused: usize, layers: usize, step: &'static str, unfused: String },
}

pub struct Compiled {
    pub graph: Graph,
    pub passes: PassReport,
}

/// Lowers, validates and (optionally) fuses.
pub fn compile(ckpt: &Checkpoint, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    let mut graph = lower(ckpt, opts.lower);
    validate(&graph).map_err(CompileError::Lowering)?;
    let mut passes = if opts.fuse { run_passes(&mut graph, opts.max_rewrites)? } else { PassReport::default() };
    if opts.fuse && opts.lower.ops == OpSet::Mambac {
        let left = opts.max_rewrites.map(|m| m.saturating_sub(passes.rewrites.len()));
        passes.extend(run_rules(&mut graph, SLICE_RULES, left)?);
        let left = opts.max_rewrites.map(|m| m.saturating_sub(passes.rewrites.len()));
        passes.extend(run_rules(&mut graph, NORM_RULES, left)?);
    }
    if opts.lower.ops == OpSet::Standard {
        let left = opts.max_rewrites.map(|m| m.saturating_sub(passes.rewrites.len()));
        passes.extend(run_rules(&mut graph, STANDARD_RULES, left)?);
        // A bisecting run (--max-rewrites) stops early on purpose.
        if opts.max_rewrites.is_none() {
            standard_ops_only(&graph)?;
        }
    }
    validate(&graph).map_err(CompileError::Lowering)?;
    Ok(Compiled { graph, passes })
}

/// Refuses a graph that still holds a custom op after the standard rules: one they do not rewrite
/// would leave a `--ops standard` model that needs the op library after all.
pub fn standard_ops_only(graph: &Graph) -> Result<(), CompileError> {
    match graph.node_ids().into_iter().find(|&id| graph.op(id).is_fused_op()) {
        Some(id) => Err(CompileError::NoStandardForm { op: graph.op(id).kind(), node: graph.node(id).name.clone() }),
        None => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub compile: CompileOptions,
    pub external_data: ExternalData,
    /// Also write `<stem>.decode.onnx` beside the output: one token a sequence, each layer one
    /// `MambaLayerStep` (Mamba-2: `Mamba2LayerStep`), the same weights (docs/decode-graph.md). Needs a stateful, fused,
    /// unquantized export.
    pub decode_graph: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { compile: CompileOptions::default(), external_data: ExternalData::Auto, decode_graph: false }
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
    pub decode: Option<DecodeReport>,
}

/// The decode graph an export wrote.
pub struct DecodeReport {
    /// The op of its layers: `MambaLayerStep`, or `Mamba2LayerStep` for a Mamba-2 model.
    pub step_op: &'static str,
    pub emit: EmitReport,
    pub passes: PassReport,
    pub output: PathBuf,
}

/// The decode graph's compile options: the stateful lowering with seqlen fixed to 1.
pub fn decode_options(general: &CompileOptions) -> Result<CompileOptions, CompileError> {
    let lower = &general.lower;
    if !lower.stateful {
        return Err(CompileError::DecodeGraph("a stateful export (--stateful): it reads and writes the states"));
    }
    if lower.ops != OpSet::Mambac {
        return Err(CompileError::DecodeGraph("--ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"));
    }
    if lower.quant.is_some() {
        return Err(CompileError::DecodeGraph("float weights: MambaLayerStep does not read quantized ones"));
    }
    if !general.fuse || general.max_rewrites.is_some() {
        return Err(CompileError::DecodeGraph("the fusion passes, all of them: its layers are fused layers"));
    }
    Ok(CompileOptions { lower: LowerOptions { decode_step: true, ..*lower }, ..general.clone() })
}

/// Compiles the decode graph and checks every layer became one step.
pub fn compile_decode(ckpt: &Checkpoint, general: &CompileOptions) -> Result<Compiled, CompileError> {
    // The options first: what they refuse (--ops standard) is refused for every model.
    let compiled = compile(ckpt, &decode_options(general)?)?;
    let layers = ckpt.config.num_hidden_layers;
    // Mamba-2 layers fold into Mamba2LayerStep, Mamba-1 layers into MambaLayerStep.
    let (step, scan) =
        (layer_step_op(ckpt), if ckpt.config.mamba2.is_some() { ssd_slots::OP.str } else { scan_slots::OP.str });
    let fused = crate::lower::nodes_of_kind(&compiled.graph, step).len();
    if fused != layers {
        let unfused = crate::lower::nodes_of_kind(&compiled.graph, scan)
            .into_iter()
            .map(|n| compiled.graph.node(n).name.clone())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CompileError::DecodeLayers { fused, layers, step, unfused });
    }
    Ok(compiled)
}

/// The op a decode graph of `ckpt` has a layer: `Mamba2LayerStep` for Mamba-2, `MambaLayerStep`
/// for Mamba-1.
pub fn layer_step_op(ckpt: &Checkpoint) -> &'static str {
    if ckpt.config.mamba2.is_some() {
        step2_slots::OP.str
    } else {
        step_slots::OP.str
    }
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
    let decode_path = decode_graph_path(out);
    if opts.decode_graph {
        check_not_an_input(&decode_path, &ckpt.input_files())?;
    }
    let compiled = compile(ckpt, &opts.compile)?;
    let decode = if opts.decode_graph { Some(compile_decode(ckpt, &opts.compile)?) } else { None };
    let step_op = layer_step_op(ckpt);
    let vg = validate(&compiled.graph).map_err(CompileError::Lowering)?;
    let export_id = export_id();
    let metadata = metadata(ckpt, opts, &compiled.passes, &export_id);
    let previous_data = previous_data_files(out);
    let mut targets = vec![EmitTarget { graph: &vg, path: out, metadata: metadata.clone() }];
    let decode_vg = match &decode {
        Some(d) => Some(validate(&d.graph).map_err(CompileError::Lowering)?),
        None => None,
    };
    if let Some(dvg) = &decode_vg {
        // The same metadata, export id included: it ties the decode graph to this export.
        let mut metadata = metadata;
        metadata.push(("mambac.graph".into(), "decode-step".into()));
        targets.push(EmitTarget { graph: dvg, path: &decode_path, metadata });
    }
    let mut emitted = emit_onnx_models(&targets, ckpt, opts.external_data, &export_id, progress)?.into_iter();
    let emit = emitted.next().expect("one report a target");
    let decode = decode.zip(emitted.next()).map(|(d, emit)| DecodeReport {
        step_op,
        emit,
        passes: d.passes,
        output: decode_path,
    });
    Ok(ExportReport { emit, passes: compiled.passes, output: out.to_path_buf(), export_id, previous_data, decode })
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
        (crate::emit::metadata::DTYPE_KEY.into(), dtype.name().into()),
        ("mambac.stateful".into(), opts.compile.lower.stateful.to_string()),
        ("mambac.logits".into(), format!("{:?}", opts.compile.lower.logits).to_lowercase()),
        ("mambac.passes".into(), passes.rules_applied.join(",")),
        ("mambac.ops".into(), opts.compile.lower.ops.name().into()),
        (
            "mambac.quantize".into(),
            match opts.compile.lower.quant {
                None => "none".into(),
                Some(q) => format!("int{} block {} accuracy_level {}", q.quant.bits, q.quant.block, q.accuracy_level),
            },
        ),
    ]
}
