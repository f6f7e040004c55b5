//! Writes the original state-spaces layout: mamba_ssm's config.json and a `pytorch_model.bin`
//! that torch.load reads (zip of a protocol-2 pickle plus one stored, 64-byte-aligned entry per
//! storage). For tied models, lm_head.weight is written as a second tensor over the embedding's
//! storage, as mamba_ssm's own files have it. Tensors are generated whole: small models only.

use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::{tensor_bytes, SynthOptions};
use crate::atomic_file::{write_atomic, AtomicFile};
use crate::checkpoint::{shapes, CheckpointError, DType, MambaConfig, CONFIG_FILE, TORCH_FILE};

/// Archive folder name inside the zip; torch uses the file's stem.
const ARCHIVE: &str = "pytorch_model";

/// Writes config.json (state-spaces keys) and pytorch_model.bin into `out_dir`.
/// Returns the config, with canonical names; `opts.shards` is ignored.
pub fn write_state_spaces_checkpoint(opts: &SynthOptions, out_dir: &Path) -> Result<MambaConfig, CheckpointError> {
    let config = opts.config()?;
    std::fs::create_dir_all(out_dir).map_err(|e| CheckpointError::io(out_dir, e))?;
    let cfg_path = out_dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config.to_state_spaces_json())
        .map_err(|e| CheckpointError::Json { path: cfg_path.clone(), error: e })?;
    let config_text = text;

    let mut tensors = shapes::expected_tensors(&config);
    let mut stored: Vec<(String, Vec<usize>, usize)> = Vec::new(); // (stored name, shape, storage key)
    let mut storages: Vec<Vec<u8>> = Vec::new();
    for (name, shape) in tensors.drain(..) {
        storages.push(tensor_bytes(opts, &name)?);
        let stored_name = if name == shapes::EMBEDDING { "backbone.embedding.weight".to_string() } else { name };
        stored.push((stored_name, shape, storages.len() - 1));
    }
    if config.tie_word_embeddings {
        stored.push((shapes::LM_HEAD.to_string(), vec![config.vocab_size, config.hidden_size], 0));
    }
    let pickle = state_dict_pickle(&stored, opts.dtype, &storages);

    let path = out_dir.join(TORCH_FILE);
    let zerr = |e: zip::result::ZipError| CheckpointError::CorruptZip { path: path.clone(), detail: e.to_string() };
    let ierr = |e: std::io::Error| CheckpointError::io(&path, e);
    let mut z = ZipWriter::new(AtomicFile::create(&path).map_err(ierr)?);
    let stored_opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let aligned = stored_opts.with_alignment(64).large_file(false);
    z.start_file(format!("{ARCHIVE}/data.pkl"), stored_opts).map_err(zerr)?;
    z.write_all(&pickle).map_err(ierr)?;
    z.start_file(format!("{ARCHIVE}/byteorder"), stored_opts).map_err(zerr)?;
    z.write_all(b"little").map_err(ierr)?;
    for (key, bytes) in storages.iter().enumerate() {
        z.start_file(format!("{ARCHIVE}/data/{key}"), aligned).map_err(zerr)?;
        z.write_all(bytes).map_err(ierr)?;
    }
    z.start_file(format!("{ARCHIVE}/version"), stored_opts).map_err(zerr)?;
    z.write_all(b"3\n").map_err(ierr)?;
    z.finish().map_err(zerr)?.commit().map_err(ierr)?;
    // Written last: a folder is a checkpoint once it has a config.
    write_atomic(&cfg_path, |f| f.write_all(config_text.as_bytes())).map_err(|e| CheckpointError::io(&cfg_path, e))?;
    Ok(config)
}

/// Protocol-2 pickle bytes for building blocks of a state dict.
pub(crate) struct PickleWriter {
    pub out: Vec<u8>,
}

impl PickleWriter {
    pub(crate) fn new() -> Self {
        PickleWriter { out: vec![0x80, 2] }
    }
    pub(crate) fn op(&mut self, b: u8) {
        self.out.push(b);
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn int(&mut self, v: usize) {
        // BININT is signed 32-bit; a larger value would need LONG1 (not needed below 2^31).
        self.out.push(b'J');
        self.out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    pub(crate) fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    pub(crate) fn tuple(&mut self, vals: &[usize]) {
        self.op(b'(');
        for &v in vals {
            self.int(v);
        }
        self.op(b't');
    }
}

fn storage_class(d: DType) -> &'static str {
    match d {
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
    }
}

/// `{name: _rebuild_tensor_v2(storage, 0, shape, contiguous stride, False, OrderedDict())}`.
fn state_dict_pickle(stored: &[(String, Vec<usize>, usize)], dtype: DType, storages: &[Vec<u8>]) -> Vec<u8> {
    let mut p = PickleWriter::new();
    p.op(b'}');
    p.op(b'(');
    for (name, shape, key) in stored {
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // Persistent id: ('storage', torch.XStorage, key, 'cpu', numel).
        p.op(b'(');
        p.str("storage");
        p.global("torch", storage_class(dtype));
        p.str(&key.to_string());
        p.str("cpu");
        p.int(storages[*key].len() / dtype.size());
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.tuple(shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        p.tuple(&stride);
        p.op(0x89);
        p.global("collections", "OrderedDict");
        p.op(b')');
        p.op(b'R');
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    p.op(b'.');
    p.out
}
