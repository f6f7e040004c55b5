//! The `metadata_props` of a written model (`mambac.dtype`, `mambac.export_id`, ...), read back
//! by the runtime to explain what a model is when ONNX Runtime refuses it.

use std::path::Path;

use onnx_protobuf::{Message, ModelProto};

use super::decode_graph::DecodeGraphError;

/// Key of the export's element type (`float32`, `float16`, `bfloat16`).
pub const DTYPE_KEY: &str = "mambac.dtype";

/// The model's `metadata_props` in file order. Parses the whole file: meant for error paths.
pub fn read_metadata(model: &Path) -> Result<Vec<(String, String)>, DecodeGraphError> {
    let bytes = std::fs::read(model).map_err(|source| DecodeGraphError::Io { path: model.to_path_buf(), source })?;
    let m = ModelProto::parse_from_bytes(&bytes)
        .map_err(|source| DecodeGraphError::Protobuf { path: model.to_path_buf(), source })?;
    Ok(m.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect())
}

/// The value of `key` in the model's metadata, if the file can be read and holds it.
pub fn metadata_value(model: &Path, key: &str) -> Option<String> {
    read_metadata(model).ok()?.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}
