//! The decode graph: a one-token-step model derived from a stateful export, with each layer one
//! `mambac.MambaLayerStep` node (custom-ops/src/layer_step.rs) instead of ~14 nodes.
//!
//! Why a second graph: a decode step of the general graph is bound by its node count on a GPU
//! (BENCHMARKS.md), and the fused step needs seqlen = 1, which the general graph (prefill,
//! decode and chunks alike) cannot assume. Why derived from the emitted model rather than lowered
//! again: the step node reads exactly the initializers the general graph already holds (same
//! names, types and layouts, e.g. `in_proj.weight.T`, the folded `A`), so the derived model
//! points at the same external-data file and offsets and no weight is written twice. The
//! embedding lookup and the final norm and lm_head are copied node for node.

use std::collections::HashSet;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, TensorProto, ValueInfoProto};

use super::proto::{attr_float, entry, node};
use super::CUSTOM_DOMAIN;
use crate::atomic_file::AtomicFile;

/// Node op type of the fused layer step.
pub const LAYER_STEP_OP: &str = "MambaLayerStep";

#[derive(Debug, thiserror::Error)]
pub enum DecodeGraphError {
    #[error("the decode graph needs a stateful export (--stateful): no input '{0}'")]
    NotStateful(String),
    #[error(
        "the decode graph needs a float export: '{0}' is quantized (MatMulNBits), which MambaLayerStep does not read"
    )]
    Quantized(String),
    #[error("the model has no initializer '{0}' that layer {1}'s step needs (not a mambac export of this version?)")]
    MissingWeight(String, usize),
    #[error("the model has no node of layer 0 (`backbone.layers.0.*`): not a mambac export")]
    NoLayers,
    #[error("the model's graph is empty")]
    Empty,
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot parse or serialise {path}: {source}")]
    Protobuf { path: PathBuf, source: protobuf::Error },
}

/// Where the decode graph of `model.onnx` goes: `model.decode.onnx` beside it (the same folder,
/// so the external-data paths it shares stay valid).
pub fn decode_graph_path(model: &Path) -> PathBuf {
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    model.with_file_name(format!("{stem}.decode.onnx"))
}

/// Where an initializer's bytes are: in the model file, or a range of an external-data file.
#[derive(Debug, Clone)]
pub enum InitializerData {
    Inline(Vec<u8>),
    External { path: PathBuf, offset: u64, length: u64 },
}

/// An initializer of a model file, without its data read.
#[derive(Debug, Clone)]
pub struct InitializerRef {
    pub name: String,
    /// ONNX `TensorProto.DataType` code (1 float, 10 float16, 16 bfloat16, ...).
    pub data_type: i32,
    pub dims: Vec<i64>,
    pub data: InitializerData,
}

/// The initializers of `model` (external-data paths resolved against its folder). Used to load
/// the weights that the stateful model and its decode graph share once, for both sessions.
pub fn initializers(model: &Path) -> Result<Vec<InitializerRef>, DecodeGraphError> {
    let bytes = std::fs::read(model).map_err(|source| DecodeGraphError::Io { path: model.to_path_buf(), source })?;
    let m = ModelProto::parse_from_bytes(&bytes)
        .map_err(|source| DecodeGraphError::Protobuf { path: model.to_path_buf(), source })?;
    let dir = model.parent().unwrap_or(Path::new("."));
    let g = m.graph.as_ref().ok_or(DecodeGraphError::Empty)?;
    let mut out = Vec::with_capacity(g.initializer.len());
    for t in &g.initializer {
        let data = if t.data_location.enum_value_or_default() == onnx_protobuf::tensor_proto::DataLocation::EXTERNAL {
            let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
            let location = get("location").unwrap_or_default();
            let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
            InitializerData::External {
                path: dir.join(location),
                offset: num("offset").unwrap_or(0),
                length: num("length").unwrap_or(0),
            }
        } else {
            InitializerData::Inline(t.raw_data.clone())
        };
        out.push(InitializerRef { name: t.name.clone(), data_type: t.data_type, dims: t.dims.clone(), data });
    }
    Ok(out)
}

/// Reads the stateful export at `model`, derives its decode graph and writes it to `out` (which
/// must be in `model`'s folder when the weights are external), whole or not at all.
pub fn write_decode_graph(model: &Path, out: &Path, eps: f64) -> Result<(), DecodeGraphError> {
    let io = |path: &Path, source| DecodeGraphError::Io { path: path.to_path_buf(), source };
    let pb = |path: &Path, source| DecodeGraphError::Protobuf { path: path.to_path_buf(), source };
    let mut r = BufReader::new(File::open(model).map_err(|e| io(model, e))?);
    let general = ModelProto::parse_from_reader(&mut r).map_err(|e| pb(model, e))?;
    let step = decode_graph(&general, eps)?;
    let mut w = AtomicFile::create(out).map_err(|e| io(out, e))?;
    step.write_to_writer(&mut w).map_err(|e| pb(out, e))?;
    w.commit().map_err(|e| io(out, e))
}

fn layer_prefix(i: usize) -> String {
    format!("backbone.layers.{i}.")
}

/// Number of layers of a stateful export: its `conv_state.{i}` inputs.
fn layer_count(g: &GraphProto) -> usize {
    (0..).take_while(|i| g.input.iter().any(|v| v.name == format!("conv_state.{i}"))).count()
}

/// `seqlen` dims fixed to 1: the decode graph takes one token a sequence.
fn one_token(mut v: ValueInfoProto) -> ValueInfoProto {
    if let Some(ty) = v.type_.as_mut() {
        if let Some(s) = ty.mut_tensor_type().shape.as_mut() {
            for d in s.dim.iter_mut() {
                if d.dim_param() == "seqlen" {
                    d.set_dim_value(1);
                }
            }
        }
    }
    v
}

/// The decode graph of `model` (a stateful, unquantized mambac export), whose initializers keep
/// `model`'s data locations: write it next to the model so relative external-data paths hold.
pub fn decode_graph(model: &ModelProto, eps: f64) -> Result<ModelProto, DecodeGraphError> {
    let g = model.graph.as_ref().ok_or(DecodeGraphError::Empty)?;
    if let Some(n) = g.node.iter().find(|n| n.op_type == "MatMulNBits") {
        return Err(DecodeGraphError::Quantized(n.name.clone()));
    }
    let layers = layer_count(g);
    if layers == 0 {
        return Err(DecodeGraphError::NotStateful("conv_state.0".into()));
    }
    for i in 0..layers {
        if !g.input.iter().any(|v| v.name == format!("ssm_state.{i}")) {
            return Err(DecodeGraphError::NotStateful(format!("ssm_state.{i}")));
        }
    }
    let in_layer = |n: &NodeProto| n.name.starts_with("backbone.layers.");
    let first = g.node.iter().position(|n| n.name.starts_with(&layer_prefix(0))).ok_or(DecodeGraphError::NoLayers)?;
    let last = g.node.iter().rposition(in_layer).ok_or(DecodeGraphError::NoLayers)?;
    // The residual stream entering layer 0: the first input of its first node (the norm).
    let mut stream = g.node[first].input[0].clone();
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();

    let mut out = GraphProto::new();
    out.name = format!("{}-decode", g.name);
    out.node.extend(g.node[..first].iter().filter(|n| !in_layer(n)).cloned());
    for i in 0..layers {
        let m = format!("backbone.layers.{i}.mixer");
        let need = |name: String| {
            if inits.contains(name.as_str()) {
                Ok(name)
            } else {
                Err(DecodeGraphError::MissingWeight(name, i))
            }
        };
        let optional = |name: String| if inits.contains(name.as_str()) { name } else { String::new() };
        let inputs = vec![
            format!("conv_state.{i}"),
            format!("ssm_state.{i}"),
            stream.clone(),
            need(format!("backbone.layers.{i}.norm.weight"))?,
            need(format!("{m}.in_proj.weight.T"))?,
            optional(format!("{m}.in_proj.bias")),
            need(format!("{m}.conv1d.weight"))?,
            optional(format!("{m}.conv1d.bias")),
            need(format!("{m}.x_proj.weight.T"))?,
            need(format!("{m}.dt_proj.weight.T"))?,
            optional(format!("{m}.dt_proj.bias")),
            need(format!("{m}.A"))?,
            optional(format!("{m}.D")),
            need(format!("{m}.out_proj.weight.T"))?,
            optional(format!("{m}.out_proj.bias")),
        ];
        // The general graph's name for the layer's output, so the copied tail reads it unchanged.
        let residual = format!("backbone.layers.{i}.residual");
        let outputs = vec![residual.clone(), format!("conv_state_out.{i}"), format!("ssm_state_out.{i}")];
        let mut n = node(LAYER_STEP_OP, CUSTOM_DOMAIN, &format!("backbone.layers.{i}.step"), inputs, outputs);
        n.attribute.push(attr_float("epsilon", eps as f32));
        out.node.push(n);
        stream = residual;
    }
    out.node.extend(g.node[last + 1..].iter().cloned());

    let used: HashSet<&str> = out.node.iter().flat_map(|n| n.input.iter().map(|s| s.as_str())).collect();
    out.initializer =
        g.initializer.iter().filter(|t| used.contains(t.name.as_str())).cloned().collect::<Vec<TensorProto>>();
    out.input = g.input.iter().cloned().map(one_token).collect();
    out.output = g.output.iter().cloned().map(one_token).collect();

    let mut m = model.clone();
    m.graph = Some(out).into();
    m.metadata_props.push(entry("mambac.graph", "decode-step"));
    Ok(m)
}
