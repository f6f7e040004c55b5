//! One `.safetensors` file: memory-mapped, header parsed by the `safetensors` crate, each
//! tensor recorded as a byte range of the map (never copied).
//!
//! The crate's own errors are terse, so the header is looked at first to tell a truncated file
//! from a corrupt one and to name a tensor whose dtype is unknown.

use std::path::Path;

use safetensors::tensor::Dtype as StDtype;
use safetensors::{SafeTensorError, SafeTensors};
use serde_json::Value;

use super::dtype::DType;
use super::error::CheckpointError;
use super::store::{map_file, RawTensor, Store, StoredDType};

/// The crate refuses headers larger than this (100 MB); anything larger is corruption, not
/// truncation.
const MAX_HEADER: u64 = 100_000_000;

fn dtype_of(d: StDtype) -> StoredDType {
    match d {
        StDtype::F32 => StoredDType::Known(DType::F32),
        StDtype::F16 => StoredDType::Known(DType::F16),
        StDtype::BF16 => StoredDType::Known(DType::BF16),
        other => StoredDType::Other(format!("{other:?}")),
    }
}

/// One header entry's shape and offsets, checked so that an error names the tensor (the
/// crate's own checks do not); returns where its data ends.
fn check_entry(name: &str, entry: &Value, dtype: StDtype) -> Result<u64, String> {
    let shape: Option<Vec<u64>> =
        entry.get("shape").and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_u64).collect());
    let Some(shape) = shape else {
        return Err(format!("tensor '{name}': shape must be a list of non-negative integers"));
    };
    let offsets: Option<Vec<u64>> =
        entry.get("data_offsets").and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_u64).collect());
    let (s, e) = match offsets.as_deref() {
        Some(&[s, e]) if s <= e => (s, e),
        _ => return Err(format!("tensor '{name}': data_offsets must be two non-negative integers [start, end]")),
    };
    let need = shape
        .iter()
        .try_fold(1u64, |a, &b| a.checked_mul(b))
        .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
        .map(|bits| bits.div_ceil(8));
    let Some(need) = need else {
        return Err(format!("tensor '{name}': shape {shape:?} is too large to address"));
    };
    if e - s != need {
        return Err(format!(
            "tensor '{name}': data_offsets [{s}, {e}] hold {} bytes, but shape {shape:?} of {dtype:?} needs {need}",
            e - s
        ));
    }
    Ok(e)
}

/// Reads `path` into `store`.
pub(crate) fn load(path: &Path, store: &mut Store) -> Result<(), CheckpointError> {
    let backing = map_file(path)?;
    let buf = backing.bytes();
    let corrupt = |detail: String| CheckpointError::CorruptSafetensors { path: path.to_path_buf(), detail };
    let truncated = |detail: String| CheckpointError::Truncated { path: path.to_path_buf(), detail };

    let len = buf.len() as u64;
    let Some(len_bytes) = buf.get(..8) else {
        return Err(truncated(format!("{len} bytes, less than the 8-byte header length")));
    };
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(len_bytes);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER {
        return Err(corrupt(format!("header length {n} is implausible (over {MAX_HEADER} bytes)")));
    }
    if 8 + n > len {
        return Err(truncated(format!("the header needs {n} bytes, the file has {} after the length", len - 8)));
    }
    // n <= MAX_HEADER and 8 + n <= len, so these fit in usize and in the buffer.
    let header = &buf[8..8 + n as usize];
    let json: Value = serde_json::from_slice(header).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| corrupt("the header is not a JSON object".into()))?;
    let mut data_end = 0u64;
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let Some(d) = entry.get("dtype") else {
            return Err(corrupt(format!("tensor '{name}' has no dtype")));
        };
        let Ok(dtype) = serde_json::from_value::<StDtype>(d.clone()) else {
            return Err(CheckpointError::UnsupportedDtype {
                name: name.clone(),
                path: path.to_path_buf(),
                dtype: d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string()),
            });
        };
        let end = check_entry(name, entry, dtype).map_err(corrupt)?;
        data_end = data_end.max(end);
    }
    let have = len - 8 - n;
    let (hlen, meta) = match SafeTensors::read_metadata(buf) {
        Ok(x) => x,
        Err(SafeTensorError::MetadataIncompleteBuffer) if data_end > have => {
            return Err(truncated(format!(
                "the header describes {data_end} bytes of tensor data, the file has {have}"
            )));
        }
        Err(SafeTensorError::MetadataIncompleteBuffer) => {
            return Err(corrupt(format!(
                "the header describes {data_end} bytes of tensor data, the file has {have} (extra bytes)"
            )));
        }
        Err(SafeTensorError::InvalidOffset(name)) => {
            return Err(corrupt(format!(
                "tensor '{name}': its data_offsets overlap another tensor's or leave a gap before it"
            )))
        }
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let base = 8 + hlen;
    let file = path.to_path_buf();
    let idx = store.add_backing(backing);
    for (name, info) in meta.tensors() {
        let (s, e) = info.data_offsets;
        store.insert(
            name,
            RawTensor {
                backing: idx,
                dtype: dtype_of(info.dtype),
                shape: info.shape.clone(),
                range: base + s..base + e,
                file: file.clone(),
            },
        )?;
    }
    store.files.push(file);
    Ok(())
}
