//! Placeholder (replaced by the torch.save zip reader).
use std::path::Path;
use super::error::CheckpointError;
use super::store::Store;
pub(crate) fn load(path: &Path, _store: &mut Store) -> Result<(), CheckpointError> {
    Err(CheckpointError::TorchFormat { path: path.to_path_buf(), detail: "pytorch_model.bin is not read yet".into() })
}
