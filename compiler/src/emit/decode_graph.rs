//! The decode graph's files: where it goes beside its model, and the initializers a written
//! model holds (the runtime loads the weights the two models share once, for both sessions).
//!
//! The graph itself comes out of the pipeline (`pipeline::export` with `decode_graph`): the
//! decode lowering, `fuse_layer_step`, validation, and emission together with the stateful graph
//! (docs/decode-graph.md).

use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto};

#[derive(Debug, thiserror::Error)]
pub enum DecodeGraphError {
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

/// The op type of the decode graph's fused layers (`MambaLayerStep`, `Mamba2LayerStep`): its
/// first node of the `mambac` domain, None if it has none. Parses the whole file.
pub fn layer_step_op(model: &Path) -> Result<Option<String>, DecodeGraphError> {
    let bytes = std::fs::read(model).map_err(|source| DecodeGraphError::Io { path: model.to_path_buf(), source })?;
    let m = ModelProto::parse_from_bytes(&bytes)
        .map_err(|source| DecodeGraphError::Protobuf { path: model.to_path_buf(), source })?;
    let g = m.graph.as_ref().ok_or(DecodeGraphError::Empty)?;
    Ok(g.node.iter().find(|n| n.domain == mambac_op_schema::DOMAIN.str).map(|n| n.op_type.clone()))
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
