//! Sharded Hugging Face checkpoints: `model.safetensors.index.json` maps each tensor name to one
//! of the `model-0000N-of-0000M.safetensors` files beside it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::error::CheckpointError;
use super::json_file;
use super::safetensors_store;
use super::store::Store;

/// Reads the index at `index` and every shard it names into `store`.
pub(crate) fn load(index: &Path, store: &mut Store) -> Result<(), CheckpointError> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let json = json_file::read(index)?;
    let bad = |detail: String| CheckpointError::Index { path: index.to_path_buf(), detail };
    let map = json.get("weight_map").and_then(Value::as_object).ok_or_else(|| bad("no 'weight_map' object".into()))?;

    let mut shards = BTreeSet::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("weight_map['{name}'] is not a file name")))?;
        // The index may only point at files beside it, never elsewhere on disk.
        if file.is_empty() || file.contains('/') || file.contains('\\') || file == "." || file == ".." {
            return Err(bad(format!("weight_map['{name}'] = '{file}' is not a plain file name")));
        }
        shards.insert(file.to_string());
    }
    for shard in &shards {
        let p = dir.join(shard);
        if !p.is_file() {
            return Err(CheckpointError::MissingShard { path: index.to_path_buf(), shard: shard.clone() });
        }
        safetensors_store::load(&p, store)?;
    }
    // The index is what users trust when they look for a tensor: it must agree with the shards.
    for (name, file) in map {
        let file = file.as_str().unwrap_or_default();
        match store.tensors.get(name) {
            Some(t) if t.file.file_name().and_then(|f| f.to_str()) == Some(file) => {}
            Some(t) => return Err(bad(format!("maps '{name}' to {file}, but it is in {}", t.file.display()))),
            None => return Err(bad(format!("maps '{name}' to {file}, which does not contain it"))),
        }
    }
    Ok(())
}
