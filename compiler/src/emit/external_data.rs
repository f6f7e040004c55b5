//! ONNX external data: initializers stored in a side file (`location`, `offset`, `length`), as
//! models over protobuf's 2 GB limit must be. Offsets are page-aligned so ORT can memory-map.
//!
//! The side file's name carries the export id (`model.onnx.<id>.data`), so a new export never
//! writes into the file an earlier `model.onnx` reads: the new data file appears first, then the
//! model that points at it replaces the old one in one rename, and the old data file is removed
//! only after that (see [`previous_data_files`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use onnx_protobuf::{tensor_proto::DataLocation, TensorProto};

use super::proto::entry;
use crate::atomic_file::AtomicFile;

const ALIGN: u64 = 4096;

pub struct ExternalDataWriter {
    location: String,
    out: AtomicFile,
    offset: u64,
}

/// The data file's name for `model_path` and an export id: `<model file name>.<id>.data`.
pub fn data_file_name(model_path: &Path, export_id: &str) -> String {
    let file_name =
        model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    if export_id.is_empty() {
        format!("{file_name}.data")
    } else {
        format!("{file_name}.{export_id}.data")
    }
}

/// Data files beside `model_path` that an export of it wrote: `<name>.data` (before export ids)
/// and `<name>.<id>.data` with an id as [`crate::pipeline`] makes them (`<hex>-<hex>`).
pub fn previous_data_files(model_path: &Path) -> Vec<PathBuf> {
    let Some(name) = model_path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return vec![] };
    let dir = match model_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let is_id = |s: &str| {
        let mut parts = s.split('-');
        let hex = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit()));
        hex(parts.next()) && hex(parts.next()) && parts.next().is_none()
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = n.strip_prefix(&name).and_then(|r| r.strip_suffix(".data")) else { return false };
            rest.is_empty() || rest.strip_prefix('.').is_some_and(is_id)
        })
        .map(|e| dir.join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// The external-data files `model` reads (resolved against its folder), without their data.
pub fn external_data_files(model: &Path) -> Result<Vec<PathBuf>, String> {
    use onnx_protobuf::{Message, ModelProto};
    let bytes = std::fs::read(model).map_err(|e| format!("cannot read {}: {e}", model.display()))?;
    let m =
        ModelProto::parse_from_bytes(&bytes).map_err(|e| format!("{} is not an ONNX model: {e}", model.display()))?;
    let dir = model.parent().unwrap_or(Path::new(""));
    let mut out: Vec<PathBuf> = m
        .graph
        .iter()
        .flat_map(|g| g.initializer.iter())
        .filter(|t| t.data_location.enum_value_or_default() == DataLocation::EXTERNAL)
        .filter_map(|t| t.external_data.iter().find(|e| e.key == "location").map(|e| dir.join(&e.value)))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

impl ExternalDataWriter {
    /// Starts `<model file name>.<export_id>.data` beside the model (visible on `finish`).
    pub fn create(model_path: &Path, export_id: &str) -> std::io::Result<ExternalDataWriter> {
        let location = data_file_name(model_path, export_id);
        let out = AtomicFile::create(&model_path.with_file_name(&location))?;
        Ok(ExternalDataWriter { location, out, offset: 0 })
    }

    pub fn path(&self) -> &Path {
        self.out.target()
    }

    /// Appends `raw` and points `t` at it.
    pub fn store(&mut self, t: &mut TensorProto, raw: &[u8]) -> std::io::Result<()> {
        let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
        if pad > 0 {
            self.out.write_all(&vec![0u8; pad as usize])?;
            self.offset += pad;
        }
        self.out.write_all(raw)?;
        t.data_location = DataLocation::EXTERNAL.into();
        t.external_data = vec![
            entry("location", &self.location),
            entry("offset", &self.offset.to_string()),
            entry("length", &raw.len().to_string()),
        ];
        t.raw_data.clear();
        self.offset += raw.len() as u64;
        Ok(())
    }

    /// Syncs the file and gives it its name; returns its length.
    pub fn finish(self) -> std::io::Result<u64> {
        self.out.commit()?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_data_files_are_this_models_only() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "m.onnx",
            "m.onnx.data",
            "m.onnx.18af3c-2b.data",
            "m.onnx.notanid.data",
            "m.onnx.1-2-3.data",
            "mm.onnx.data",
            "other.onnx.18af3c-2b.data",
            "m.onnx.18af3c-2b.data.tmp",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let got: Vec<String> = previous_data_files(&d.path().join("m.onnx"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["m.onnx.18af3c-2b.data", "m.onnx.data"]);
    }
}
