//! `pytorch_model.bin` as torch.save writes it (since torch 1.6): a zip holding
//! `<archive>/data.pkl` (the state dict, pickled, storages as persistent ids) and one entry
//! `<archive>/data/<key>` per storage. torch stores entries uncompressed and 64-byte aligned,
//! so a tensor is a slice of the memory-mapped zip; a compressed entry (rare: a re-zipped file)
//! is inflated once into its own buffer.
//!
//! Several tensors may view one storage (mamba_ssm's tied lm_head and embedding do): each gets
//! its own byte range of it.

use std::collections::HashMap;
use std::path::Path;

use super::error::CheckpointError;
use super::pickle::{self, TensorRef, Value};
use super::store::{map_file, Backing, Deferred, RawTensor, Store, StoredDType};
use super::zip_entry::{self, Entry, EntryError};

/// data.pkl of a state dict is about 150 bytes per tensor; 16 MiB is a hundred thousand
/// tensors, and bounds what the pickle machine may build.
pub const MAX_PICKLE_BYTES: u64 = 16 << 20;

/// Where one storage's bytes are: a backing of the store and a range in it.
#[derive(Clone)]
struct StorageBytes {
    backing: usize,
    start: usize,
    len: usize,
}

pub(crate) fn entry_error(path: &Path, e: EntryError) -> CheckpointError {
    match e {
        EntryError::Zip(detail) => CheckpointError::CorruptZip { path: path.to_path_buf(), detail },
        EntryError::PastEnd { .. } => CheckpointError::Truncated { path: path.to_path_buf(), detail: e.to_string() },
        e => CheckpointError::ZipEntry { path: path.to_path_buf(), error: e },
    }
}

/// Reads `path` into `store`. Tensor bytes are not read yet: each storage's entry is checked
/// against the size its record implies, and its CRC check (and, when deflated, its
/// inflation) is left to [`Store::finish_reads`], after the tensors were checked against
/// config.json.
pub(crate) fn load(path: &Path, store: &mut Store) -> Result<(), CheckpointError> {
    let backing = map_file(path)?;
    let entry_err = |e: EntryError| entry_error(path, e);
    let format_err = |detail: String| CheckpointError::TorchFormat { path: path.to_path_buf(), detail };

    let buf = backing.bytes();
    if buf.len() >= 2 && buf[0] == 0x80 {
        return Err(format_err(
            "this is a legacy (pre-1.6) torch.save file, not a zip; re-save it with a current torch".into(),
        ));
    }
    let dir = zip_entry::directory(buf).map_err(entry_err)?;
    let pkl = dir
        .iter()
        .filter(|e| e.name.ends_with("data.pkl") && e.name.matches('/').count() <= 1)
        .min_by_key(|e| e.name.len())
        .ok_or_else(|| format_err("no data.pkl entry: not a torch.save archive".into()))?;
    let prefix = pkl.name[..pkl.name.len() - "data.pkl".len()].to_string();

    if let Some(bo) = dir.iter().find(|e| e.name == format!("{prefix}byteorder")) {
        bo.check_limit(1 << 20, "a byteorder record").map_err(entry_err)?;
        let bytes = bo.read(buf).map_err(entry_err)?;
        let s = String::from_utf8_lossy(&bytes);
        if s.trim() != "little" {
            return Err(format_err(format!("byteorder '{}' is not supported (little-endian only)", s.trim())));
        }
    }
    pkl.check_limit(MAX_PICKLE_BYTES, "a pickle").map_err(entry_err)?;
    let pickle_bytes = pkl.read(buf).map_err(entry_err)?;
    let data_prefix = format!("{prefix}data/");
    let entries: HashMap<&str, &Entry> =
        dir.iter().filter_map(|e| Some((e.name.strip_prefix(&data_prefix)?, e))).collect();

    let value =
        pickle::load(&pickle_bytes).map_err(|e| CheckpointError::Pickle { path: path.to_path_buf(), error: e })?;
    let Value::Dict(dict) = &value else {
        return Err(format_err("data.pkl does not hold a state dict (a dict of tensors)".into()));
    };

    let zip_len = buf.len();
    let mut deferred = Vec::new();
    let mut tensors = Vec::new();
    let mut storages: HashMap<String, StorageBytes> = HashMap::new();
    let mut next_backing = store.backing_count() + 1;
    for (k, v) in dict.borrow().iter() {
        let Value::Str(name) = k else {
            return Err(format_err("state dict key is not a string".into()));
        };
        // Non-tensor entries (counters, nested metadata) are not weights.
        let Value::Tensor(t) = v else { continue };
        let key = &t.storage.key;
        let entry = *entries
            .get(key.as_str())
            .ok_or_else(|| format_err(format!("tensor '{name}' uses storage '{key}', which is not in the archive")))?;
        // torch writes a storage as exactly numel elements: any other size is damage, found
        // before a byte of it is read.
        let elem = t.storage.dtype.size() as u64;
        let need = (t.storage.numel as u64).checked_mul(elem);
        if need != Some(entry.size) {
            return Err(CheckpointError::ZipEntry {
                path: path.to_path_buf(),
                error: EntryError::StorageSize {
                    name: entry.name.clone(),
                    size: entry.size,
                    key: key.clone(),
                    numel: t.storage.numel,
                    dtype: t.storage.dtype.name().to_string(),
                },
            });
        }
        let raw = entry.raw_range(zip_len).map_err(entry_err)?;
        let sb = match storages.get(key) {
            Some(sb) => sb.clone(),
            None => {
                let sb = if entry.is_deflated() {
                    let sb = StorageBytes { backing: next_backing, start: 0, len: entry.size as usize };
                    next_backing += 1;
                    deferred.push((sb.backing, entry.clone()));
                    sb
                } else {
                    deferred.push((usize::MAX, entry.clone()));
                    StorageBytes { backing: usize::MAX, start: raw.start, len: raw.len() }
                };
                storages.insert(key.clone(), sb.clone());
                sb
            }
        };
        let range = tensor_range(name, t, &sb).map_err(format_err)?;
        tensors.push((
            name.to_string(),
            RawTensor {
                backing: sb.backing,
                dtype: StoredDType::Known(t.storage.dtype),
                shape: t.shape.clone(),
                range,
                file: path.to_path_buf(),
            },
        ));
    }
    drop(value);

    // Backings in the order the indices above were handed out: the map, then one placeholder
    // per deflated storage.
    let zip_idx = store.add_backing(backing);
    for (b, entry) in deferred {
        let backing = if b == usize::MAX {
            zip_idx
        } else {
            let got = store.add_backing(Backing::Owned(Vec::new()));
            debug_assert_eq!(got, b);
            got
        };
        store.deferred.push(Deferred { backing, source: zip_idx, entry, file: path.to_path_buf() });
    }
    for (name, mut t) in tensors {
        if t.backing == usize::MAX {
            t.backing = zip_idx;
        }
        store.insert(name, t)?;
    }
    store.files.push(path.to_path_buf());
    Ok(())
}

/// The bytes of `t` within its storage: it must be contiguous (row-major) and inside it.
fn tensor_range(name: &str, t: &TensorRef, sb: &StorageBytes) -> Result<std::ops::Range<usize>, String> {
    let elem = t.storage.dtype.size();
    let mut want = 1usize;
    for (d, (&size, &stride)) in t.shape.iter().zip(&t.stride).enumerate().rev() {
        // A dimension of size 1 may carry any stride without changing the layout.
        if size != 1 && stride != want {
            return Err(format!(
                "tensor '{name}' is not contiguous (shape {:?}, stride {:?}, dim {d}); save it with .contiguous()",
                t.shape, t.stride
            ));
        }
        want = want.saturating_mul(size);
    }
    let numel: usize = t.shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or("tensor size overflows")?;
    let end_elem = t.offset.checked_add(numel).ok_or("tensor offset overflows")?;
    if end_elem > t.storage.numel || end_elem.saturating_mul(elem) > sb.len {
        return Err(format!(
            "tensor '{name}' (offset {}, {} elements) reaches past the end of storage '{}' ({} elements, {} bytes)",
            t.offset, numel, t.storage.key, t.storage.numel, sb.len
        ));
    }
    Ok(sb.start + t.offset * elem..sb.start + end_elem * elem)
}
