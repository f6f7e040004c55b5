//! `pytorch_model.bin` as torch.save writes it (since torch 1.6): a zip holding
//! `<archive>/data.pkl` (the state dict, pickled, storages as persistent ids) and one entry
//! `<archive>/data/<key>` per storage. torch stores entries uncompressed and 64-byte aligned,
//! so a tensor is a slice of the memory-mapped zip; a compressed entry (rare: a re-zipped file)
//! is inflated once into its own buffer.
//!
//! Several tensors may view one storage (mamba_ssm's tied lm_head and embedding do): each gets
//! its own byte range of it.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

use super::error::CheckpointError;
use super::pickle::{self, TensorRef, Value};
use super::store::{map_file, Backing, RawTensor, Store, StoredDType};

/// Where one storage's bytes are: a backing of the store and a range in it.
#[derive(Clone)]
struct StorageBytes {
    backing: usize,
    start: usize,
    len: usize,
}

/// Reads `path` into `store`.
pub(crate) fn load(path: &Path, store: &mut Store) -> Result<(), CheckpointError> {
    let backing = map_file(path)?;
    let zip_err = |detail: String| CheckpointError::CorruptZip { path: path.to_path_buf(), detail };
    let format_err = |detail: String| CheckpointError::TorchFormat { path: path.to_path_buf(), detail };

    // Entries to read, found while the archive borrows the map.
    let mut pickle_bytes = Vec::new();
    let prefix;
    let mut entries: HashMap<String, (usize, CompressionMethod, u64, u64)> = HashMap::new();
    {
        let buf = backing.bytes();
        if buf.len() >= 2 && buf[0] == 0x80 {
            return Err(format_err(
                "this is a legacy (pre-1.6) torch.save file, not a zip; re-save it with a current torch".into(),
            ));
        }
        let mut zip = ZipArchive::new(Cursor::new(buf)).map_err(|e| zip_err(e.to_string()))?;
        let pkl_name = zip
            .file_names()
            .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .min_by_key(|n| n.len())
            .map(str::to_string)
            .ok_or_else(|| format_err("no data.pkl entry: not a torch.save archive".into()))?;
        prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();

        if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
            let mut s = String::new();
            f.read_to_string(&mut s).map_err(|e| zip_err(format!("byteorder: {e}")))?;
            if s.trim() != "little" {
                return Err(format_err(format!("byteorder '{}' is not supported (little-endian only)", s.trim())));
            }
        }
        {
            let mut f = zip.by_name(&pkl_name).map_err(|e| zip_err(format!("{pkl_name}: {e}")))?;
            f.read_to_end(&mut pickle_bytes).map_err(|e| zip_err(format!("{pkl_name}: {e}")))?;
        }
        let data_prefix = format!("{prefix}data/");
        for i in 0..zip.len() {
            let f = zip.by_index_raw(i).map_err(|e| zip_err(e.to_string()))?;
            if let Some(key) = f.name().strip_prefix(&data_prefix) {
                entries.insert(key.to_string(), (i, f.compression(), f.data_start(), f.compressed_size()));
            }
        }
    }

    let value =
        pickle::load(&pickle_bytes).map_err(|e| CheckpointError::Pickle { path: path.to_path_buf(), source: e })?;
    let Value::Dict(dict) = value else {
        return Err(format_err("data.pkl does not hold a state dict (a dict of tensors)".into()));
    };

    let zip_len = backing.bytes().len();
    let zip_idx = store.add_backing(backing);
    let mut storages: HashMap<String, StorageBytes> = HashMap::new();
    for (k, v) in dict.borrow().iter() {
        let Value::Str(name) = k else {
            return Err(format_err("state dict key is not a string".into()));
        };
        // Non-tensor entries (counters, nested metadata) are not weights.
        let Value::Tensor(t) = v else { continue };
        let key = &t.storage.key;
        let sb = match storages.get(key) {
            Some(sb) => sb.clone(),
            None => {
                let &(index, method, start, size) = entries.get(key).ok_or_else(|| {
                    format_err(format!("tensor '{name}' uses storage '{key}', which is not in the archive"))
                })?;
                let sb = if method == CompressionMethod::Stored {
                    let end = start.checked_add(size).filter(|&e| e <= zip_len as u64);
                    if end.is_none() {
                        return Err(CheckpointError::Truncated {
                            path: path.to_path_buf(),
                            detail: format!("storage '{key}' runs past the end of the file"),
                        });
                    }
                    StorageBytes { backing: zip_idx, start: start as usize, len: size as usize }
                } else {
                    let bytes =
                        inflate(store.backing(zip_idx), index).map_err(|e| zip_err(format!("storage '{key}': {e}")))?;
                    let len = bytes.len();
                    StorageBytes { backing: store.add_backing(Backing::Owned(bytes)), start: 0, len }
                };
                storages.insert(key.clone(), sb.clone());
                sb
            }
        };
        let range = tensor_range(name, t, &sb).map_err(format_err)?;
        store.insert(
            name.clone(),
            RawTensor {
                backing: sb.backing,
                dtype: StoredDType::Known(t.storage.dtype),
                shape: t.shape.clone(),
                range,
                file: path.to_path_buf(),
            },
        )?;
    }
    store.files.push(path.to_path_buf());
    Ok(())
}

/// Decompresses entry `index` of the zip in `buf`.
fn inflate(buf: &[u8], index: usize) -> Result<Vec<u8>, String> {
    let mut zip = ZipArchive::new(Cursor::new(buf)).map_err(|e| e.to_string())?;
    let mut f = zip.by_index(index).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
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
