//! Errors of the checkpoint readers and writers. Every variant names the file or the tensor it
//! is about, so a user can tell which file of a folder to look at.

use std::path::PathBuf;

use super::pickle::PickleError;
use super::zip_entry::EntryError;

/// Formats a shape as `[a, b, c]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint folder {} does not exist", .dir.display())]
    MissingDir { dir: PathBuf },

    #[error("no config.json in {}", .dir.display())]
    MissingConfig { dir: PathBuf },

    #[error(
        "no weights in {}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin",
        .dir.display()
    )]
    MissingWeights { dir: PathBuf },

    // The cause is a field named `error`, not `source`: the message already holds it, and an
    // anyhow `{:#}` chain would print a `source` a second time.
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },

    #[error("{}: invalid JSON: {error}", .path.display())]
    Json { path: PathBuf, error: serde_json::Error },

    #[error("{}: {message}", .path.display())]
    Config { path: PathBuf, message: String },

    #[error("{} is truncated: {detail}", .path.display())]
    Truncated { path: PathBuf, detail: String },

    #[error("{} has a corrupt safetensors header: {detail}", .path.display())]
    CorruptSafetensors { path: PathBuf, detail: String },

    #[error("{}: {detail}", .path.display())]
    Index { path: PathBuf, detail: String },

    #[error("{} names shard {shard}, which does not exist", .path.display())]
    MissingShard { path: PathBuf, shard: String },

    #[error("{} is not a readable torch zip archive: {detail}", .path.display())]
    CorruptZip { path: PathBuf, detail: String },

    #[error("{}: {error}", .path.display())]
    Pickle { path: PathBuf, error: PickleError },

    #[error("{}: {error}", .path.display())]
    ZipEntry { path: PathBuf, error: EntryError },

    #[error("{} is {size} bytes, more than the {} MiB {what} may have", .path.display(), .limit >> 20)]
    TooLarge { path: PathBuf, size: u64, limit: u64, what: &'static str },

    #[error(
        "{} gives {key} {config_layers}, but {} has {weight_layers} layers (backbone.layers.N tensors)",
        .config.display(),
        .path.display()
    )]
    LayerCount { config: PathBuf, key: &'static str, config_layers: usize, path: PathBuf, weight_layers: usize },

    #[error("{}: {detail}", .path.display())]
    TorchFormat { path: PathBuf, detail: String },

    #[error("missing tensor '{name}' in {}", .path.display())]
    MissingTensor { name: String, path: PathBuf },

    #[error(
        "tensor '{name}' has shape {}, expected {} from config.json",
        fmt_shape(.actual),
        fmt_shape(.expected)
    )]
    ShapeMismatch { name: String, path: PathBuf, actual: Vec<usize>, expected: Vec<usize> },

    #[error(
        "tensor '{name}' in {} has dtype {dtype}; mambac reads float32, float16 and bfloat16",
        .path.display()
    )]
    UnsupportedDtype { name: String, path: PathBuf, dtype: String },

    #[error("tensor '{name}' in {} has {actual} bytes, but shape {} of {dtype} needs {expected}", .path.display(), fmt_shape(.shape))]
    ByteLength { name: String, path: PathBuf, shape: Vec<usize>, dtype: String, expected: usize, actual: usize },

    #[error("tensor '{name}' is stored twice: in {} and in {}", .path.display(), .other.display())]
    DuplicateTensor { name: String, path: PathBuf, other: PathBuf },

    #[error("synthetic checkpoint: {message}")]
    Synth { message: String },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), error }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CheckpointError::Config { path: path.into(), message: message.into() }
    }
}
