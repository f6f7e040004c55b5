//! ONNX external data: initializers stored in a side file (`location`, `offset`, `length`), as
//! models over protobuf's 2 GB limit must be. Offsets are page-aligned so ORT can memory-map.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use onnx_protobuf::{tensor_proto::DataLocation, TensorProto};

use super::proto::entry;

const ALIGN: u64 = 4096;

pub struct ExternalDataWriter {
    path: PathBuf,
    location: String,
    out: BufWriter<File>,
    offset: u64,
}

impl ExternalDataWriter {
    /// Creates `<model file name>.data` beside the model.
    pub fn create(model_path: &Path) -> std::io::Result<ExternalDataWriter> {
        let file_name =
            model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
        let location = format!("{file_name}.data");
        let path = model_path.with_file_name(&location);
        let out = BufWriter::with_capacity(1 << 22, File::create(&path)?);
        Ok(ExternalDataWriter { path, location, out, offset: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    pub fn finish(mut self) -> std::io::Result<u64> {
        self.out.flush()?;
        let len = self.out.stream_position()?;
        Ok(len)
    }
}
