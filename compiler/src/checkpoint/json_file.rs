//! JSON files of a checkpoint folder (config.json, the shard index), read whole but only up to
//! a size no real one comes near, so a hostile file cannot make the reader allocate at will.

use std::io::Read;
use std::path::Path;

use super::error::CheckpointError;

/// The index of a sharded 400B-parameter model is a few hundred KiB.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Parses the JSON file at `path` (symlinks followed, as the Hugging Face cache needs).
pub fn read(path: &Path) -> Result<serde_json::Value, CheckpointError> {
    let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let len = file.metadata().map_err(|e| CheckpointError::io(path, e))?.len();
    let too_large =
        |size| CheckpointError::TooLarge { path: path.to_path_buf(), size, limit: MAX_JSON_BYTES, what: "a JSON file" };
    if len > MAX_JSON_BYTES {
        return Err(too_large(len));
    }
    let mut text = Vec::with_capacity(len as usize);
    // A file growing while it is read (or a FIFO) is still cut at the limit.
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut text).map_err(|e| CheckpointError::io(path, e))?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(too_large(text.len() as u64));
    }
    serde_json::from_slice(&text).map_err(|e| CheckpointError::Json { path: path.to_path_buf(), error: e })
}
