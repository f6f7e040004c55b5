//! Checkpoint readers: Hugging Face folders (`model.safetensors` or shards with
//! `model.safetensors.index.json`) and original state-spaces folders (`pytorch_model.bin`, a
//! torch.save zip read through an allow-listed pickle reader that never executes anything).
//!
//! [`Checkpoint::open`] checks everything up front: after it succeeds, every tensor the config
//! implies exists with the right shape and a supported dtype, so later stages can call
//! [`Checkpoint::tensor`] without re-validating. Tensor bytes are borrowed from memory maps of
//! the weight files; a checkpoint is never held in memory twice.
//!
//! Names are canonical (Hugging Face): state-spaces' `backbone.embedding.weight` is found as
//! `backbone.embeddings.weight`, and `lm_head.weight` of a tied model is the embedding.

mod config;
mod config_mamba2;
mod dtype;
mod error;
mod json_file;
pub mod pickle;
mod safetensors_store;
pub mod shapes;
mod sharded;
mod store;
mod torch_zip;
mod zip_entry;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

pub use config::{Layout, Mamba2Params, MambaConfig};
pub use dtype::DType;
pub use error::CheckpointError;
pub use json_file::{read as read_json, MAX_JSON_BYTES};
pub use pickle::PickleError;
pub use torch_zip::MAX_PICKLE_BYTES;
pub use zip_entry::EntryError;

use store::{RawTensor, Store, StoredDType};

/// File names, as Hugging Face and mamba_ssm write them.
pub const CONFIG_FILE: &str = "config.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const TORCH_FILE: &str = "pytorch_model.bin";

/// An open checkpoint folder.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub layout: Layout,
    pub config: MambaConfig,
    store: Store,
    /// What "missing tensor ... in X" names: the weights file, or the index of a sharded one.
    weights_source: PathBuf,
}

/// One tensor's bytes, little-endian and row-major, borrowed from the file's map when possible.
pub struct TensorView<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.dtype.decode_f32(&self.bytes)
    }

    pub fn to_f64(&self) -> Vec<f64> {
        self.to_f32().into_iter().map(f64::from).collect()
    }
}

impl std::fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens a folder, detects the layout, parses config.json, memory-maps the weights and
    /// checks every tensor the model needs exists with the shape the config implies.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::MissingDir { dir: dir.to_path_buf() });
        }
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(CheckpointError::MissingConfig { dir: dir.to_path_buf() });
        }
        let json = json_file::read(&config_path)?;
        let (config, layout) = MambaConfig::from_json(&json, &config_path)?;

        // The weight format is found by file, not by layout: an HF config with a
        // pytorch_model.bin (older transformers) reads as well.
        let mut store = Store::default();
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SAFETENSORS_FILE);
        let torch = dir.join(TORCH_FILE);
        let weights_source = if index.is_file() {
            sharded::load(&index, &mut store)?;
            index
        } else if single.is_file() {
            safetensors_store::load(&single, &mut store)?;
            single
        } else if torch.is_file() {
            torch_zip::load(&torch, &mut store)?;
            torch
        } else {
            return Err(CheckpointError::MissingWeights { dir: dir.to_path_buf() });
        };

        let mut ck = Checkpoint { dir: dir.to_path_buf(), layout, config, store, weights_source };
        ck.check_all()?;
        // Only now, with every tensor's size known to follow from config.json, are zip entries
        // CRC-checked and inflated.
        ck.store.finish_reads()?;
        Ok(ck)
    }

    /// Every needed tensor present, with the config's shape and a readable dtype. The layer
    /// count is compared with the weights before anything is sized by it.
    fn check_all(&self) -> Result<(), CheckpointError> {
        let c = &self.config;
        self.check_one(shapes::EMBEDDING, &[c.vocab_size, c.hidden_size])?;
        self.check_layer_count()?;
        for (name, shape) in shapes::expected_tensors(&self.config) {
            self.check_one(&name, &shape)?;
        }
        // A tied model's file may still store lm_head (state-spaces files do): check it too.
        if self.config.tie_word_embeddings && self.raw(shapes::LM_HEAD).is_some() {
            let shape = vec![self.config.vocab_size, self.config.hidden_size];
            self.check_one(shapes::LM_HEAD, &shape)?;
        }
        Ok(())
    }

    fn check_one(&self, name: &str, expected: &[usize]) -> Result<(), CheckpointError> {
        let raw = self.raw(name).ok_or_else(|| CheckpointError::MissingTensor {
            name: name.to_string(),
            path: self.weights_source.clone(),
        })?;
        let dtype = known_dtype(name, raw)?;
        if raw.shape != expected {
            return Err(CheckpointError::ShapeMismatch {
                name: name.to_string(),
                path: raw.file.clone(),
                actual: raw.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let need = raw.shape.iter().product::<usize>() * dtype.size();
        // The range was checked against its backing (or, for a zip entry not read yet, against
        // the size the entry declares).
        let have = raw.range.len();
        if need != have {
            return Err(CheckpointError::ByteLength {
                name: name.to_string(),
                path: raw.file.clone(),
                shape: raw.shape.clone(),
                dtype: dtype.name().to_string(),
                expected: need,
                actual: have,
            });
        }
        Ok(())
    }

    /// `num_hidden_layers` (`n_layer`) must be the number of layers the weights hold: one more
    /// than the highest N of a `backbone.layers.N.` tensor.
    fn check_layer_count(&self) -> Result<(), CheckpointError> {
        let layers_in_weights = self
            .store
            .tensors
            .keys()
            .filter_map(|n| n.strip_prefix("backbone.layers.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m.saturating_add(1));
        if layers_in_weights != self.config.num_hidden_layers {
            return Err(CheckpointError::LayerCount {
                config: self.dir.join(CONFIG_FILE),
                key: match self.layout {
                    Layout::HuggingFace => "num_hidden_layers",
                    Layout::StateSpaces => "n_layer",
                },
                config_layers: self.config.num_hidden_layers,
                path: self.weights_source.clone(),
                weight_layers: layers_in_weights,
            });
        }
        Ok(())
    }

    /// The stored tensor behind a canonical name, trying the layout's aliases.
    fn raw(&self, canonical: &str) -> Option<&RawTensor> {
        shapes::stored_names(canonical).iter().find_map(|n| self.store.tensors.get(n))
    }

    /// A tensor by canonical (Hugging Face) name; see the module docs for aliases and ties.
    /// `conv1d.weight` is returned as stored, `[I, 1, K]`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, CheckpointError> {
        let raw = match self.raw(name) {
            Some(r) => r,
            None if name == shapes::LM_HEAD && self.config.tie_word_embeddings => {
                self.raw(shapes::EMBEDDING).ok_or_else(|| CheckpointError::MissingTensor {
                    name: shapes::EMBEDDING.to_string(),
                    path: self.weights_source.clone(),
                })?
            }
            None => {
                return Err(CheckpointError::MissingTensor {
                    name: name.to_string(),
                    path: self.weights_source.clone(),
                })
            }
        };
        let dtype = known_dtype(name, raw)?;
        Ok(TensorView {
            name: name.to_string(),
            dtype,
            shape: raw.shape.clone(),
            bytes: Cow::Borrowed(self.store.bytes(raw)),
        })
    }

    /// Whether `tensor(name)` would succeed (lm_head of a tied model counts as present).
    /// Hints that `name` has been consumed: its memory-mapped pages are released (see
    /// `Store::release`). Reading it again still works.
    pub fn release_tensor(&self, name: &str) {
        let raw = self.raw(name).or_else(|| (name == shapes::LM_HEAD).then(|| self.raw(shapes::EMBEDDING)).flatten());
        if let Some(raw) = raw {
            self.store.release(raw);
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.raw(name).is_some() || (name == shapes::LM_HEAD && self.config.tie_word_embeddings)
    }

    /// The files the weights came from (the shards of a sharded checkpoint, not the index).
    pub fn weight_files(&self) -> Vec<PathBuf> {
        self.store.files.clone()
    }

    /// Every file the checkpoint was read from: config.json, the weights (and a shard index).
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.dir.join(CONFIG_FILE), self.weights_source.clone()];
        v.extend(self.store.files.iter().cloned());
        v
    }

    /// The dtype of the embedding, which is the checkpoint's dtype in every file we know of.
    pub fn dtype(&self) -> DType {
        match self.raw(shapes::EMBEDDING).map(|r| &r.dtype) {
            Some(StoredDType::Known(d)) => *d,
            // open() checked the embedding, so this is unreachable for an open checkpoint.
            _ => DType::F32,
        }
    }

    /// Stored names of every tensor in the weight files (not canonicalised), sorted.
    pub fn stored_tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.store.tensors.keys().cloned().collect();
        v.sort();
        v
    }
}

/// The stored dtype of a tensor the model needs: one mambac reads, else an error naming it.
fn known_dtype(name: &str, raw: &RawTensor) -> Result<DType, CheckpointError> {
    match &raw.dtype {
        StoredDType::Known(d) => Ok(*d),
        StoredDType::Other(s) => {
            Err(CheckpointError::UnsupportedDtype { name: name.to_string(), path: raw.file.clone(), dtype: s.clone() })
        }
    }
}
