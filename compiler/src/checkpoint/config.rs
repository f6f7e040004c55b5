//! `config.json` of both layouts, resolved into one [`MambaConfig`].
//!
//! Hugging Face (`MambaConfig` of transformers): hidden_size, state_size, num_hidden_layers,
//! expand, conv_kernel, time_step_rank ("auto" = ceil(hidden/16)), intermediate_size, use_bias,
//! use_conv_bias, layer_norm_epsilon, tie_word_embeddings, vocab_size.
//!
//! state-spaces (`MambaConfig` of mamba_ssm): d_model, n_layer, vocab_size,
//! pad_vocab_size_multiple, ssm_cfg {d_state, d_conv, expand, dt_rank, bias, conv_bias},
//! tie_embeddings (ssm_cfg.layer "Mamba2": `config_mamba2.rs` reads the Mamba-2 keys). Its vocab_size is the tokenizer's: the embedding has it rounded up to a
//! multiple of pad_vocab_size_multiple, and that padded size is what [`MambaConfig::vocab_size`]
//! holds, because it is the size every tensor and the logits have.

use std::path::Path;

use serde_json::{json, Map, Value};

pub use super::config_mamba2::Mamba2Params;
use super::error::CheckpointError;

/// Which checkpoint family a folder is: decides the config keys and the embedding's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    HuggingFace,
    StateSpaces,
}

/// A Mamba-1 model's hyper-parameters, with every default and "auto" resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MambaConfig {
    pub hidden_size: usize,
    pub state_size: usize,
    pub num_hidden_layers: usize,
    pub expand: usize,
    pub conv_kernel: usize,
    /// "auto" resolved to ceil(hidden_size / 16).
    pub time_step_rank: usize,
    /// expand * hidden_size unless the config gives it.
    pub intermediate_size: usize,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    pub layer_norm_epsilon: f64,
    pub tie_word_embeddings: bool,
    /// The PADDED vocabulary: rows of the embedding, width of the logits.
    pub vocab_size: usize,
    /// The Mamba-2 (SSD) block's own parameters; None for a Mamba-1 model. For Mamba-2,
    /// `time_step_rank` is unused and `intermediate_size` is num_heads * head_dim.
    pub mamba2: Option<Mamba2Params>,
}

/// The largest size a dimension may have (hidden, state, vocabulary...): 16 times the largest
/// Mamba released, and small enough that no product of two overflows or allocates unchecked.
pub const MAX_DIM: usize = 1 << 20;
/// The most layers a config may give (the largest Mamba has 64).
pub const MAX_LAYERS: usize = 1 << 16;

/// Reads typed keys out of one JSON object, naming the file and key in every error.
pub(super) struct Keys<'a> {
    pub(super) obj: &'a Map<String, Value>,
    /// Prefix for nested objects ("ssm_cfg.") so errors name the full key.
    pub(super) prefix: &'a str,
    pub(super) path: &'a Path,
}

impl<'a> Keys<'a> {
    pub(super) fn err(&self, key: &str, what: &str, v: &Value) -> CheckpointError {
        CheckpointError::config(self.path, format!("key '{}{key}' must be {what}, got {v}", self.prefix))
    }

    pub(super) fn too_large(&self, key: &str, max: usize, v: &Value) -> CheckpointError {
        CheckpointError::config(self.path, format!("key '{}{key}' must be at most {max}, got {v}", self.prefix))
    }

    /// A positive integer no larger than `max`.
    pub(super) fn usize_opt(&self, key: &str, max: usize) -> Result<Option<usize>, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > max as u64 => Err(self.too_large(key, max, v)),
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(key, "a positive integer", v)),
            },
        }
    }

    pub(super) fn usize_req(&self, key: &str, max: usize) -> Result<usize, CheckpointError> {
        self.usize_opt(key, max)?
            .ok_or_else(|| CheckpointError::config(self.path, format!("missing key '{}{key}'", self.prefix)))
    }

    pub(super) fn usize_or(&self, key: &str, default: usize) -> Result<usize, CheckpointError> {
        Ok(self.usize_opt(key, MAX_DIM)?.unwrap_or(default))
    }

    /// An integer or "auto" (None) — time_step_rank / dt_rank.
    fn rank(&self, key: &str) -> Result<Option<usize>, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "auto" => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > MAX_DIM as u64 => Err(self.too_large(key, MAX_DIM, v)),
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(key, "a positive integer or \"auto\"", v)),
            },
        }
    }

    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(key, "true or false", v)),
        }
    }

    pub(super) fn f64_or(&self, key: &str, default: f64) -> Result<f64, CheckpointError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(self.err(key, "a positive number", v)),
            },
        }
    }
}

/// expand * hidden_size (or the intermediate_size given) is a dimension too.
pub(super) fn check_intermediate(path: &Path, i: usize, expand: usize, hidden: usize) -> Result<(), CheckpointError> {
    if i > MAX_DIM {
        return Err(CheckpointError::config(
            path,
            format!("the intermediate size {i} (expand {expand} x hidden size {hidden}) must be at most {MAX_DIM}"),
        ));
    }
    Ok(())
}

fn auto_rank(hidden: usize) -> usize {
    hidden.div_ceil(16)
}

impl MambaConfig {
    /// Parses either layout's config.json; the layout is told apart by its keys
    /// (`d_model` for state-spaces, `hidden_size` for Hugging Face).
    pub fn from_json(v: &Value, path_for_errors: &Path) -> Result<(MambaConfig, Layout), CheckpointError> {
        let path = path_for_errors;
        let obj = v.as_object().ok_or_else(|| CheckpointError::config(path, "config.json must hold a JSON object"))?;
        if let Some(Value::String(mt)) = obj.get("model_type") {
            match mt.as_str() {
                "mamba" => {}
                "mamba2" => return Ok((super::config_mamba2::from_hf(obj, path)?, Layout::HuggingFace)),
                _ => {
                    return Err(CheckpointError::config(
                        path,
                        format!("model_type '{mt}' is not supported (mambac reads model_type 'mamba' and 'mamba2')"),
                    ))
                }
            }
        }
        if obj.contains_key("d_model") {
            Ok((Self::from_state_spaces(obj, path)?, Layout::StateSpaces))
        } else if obj.contains_key("hidden_size") {
            Ok((Self::from_hf(obj, path)?, Layout::HuggingFace))
        } else {
            Err(CheckpointError::config(
                path,
                "neither 'hidden_size' (Hugging Face) nor 'd_model' (state-spaces) is present: not a Mamba config",
            ))
        }
    }

    fn from_hf(obj: &Map<String, Value>, path: &Path) -> Result<MambaConfig, CheckpointError> {
        let k = Keys { obj, prefix: "", path };
        let hidden = k.usize_req("hidden_size", MAX_DIM)?;
        let expand = k.usize_or("expand", 2)?;
        let intermediate = k.usize_or("intermediate_size", expand * hidden)?;
        check_intermediate(path, intermediate, expand, hidden)?;
        let cfg = MambaConfig {
            hidden_size: hidden,
            state_size: k.usize_or("state_size", 16)?,
            num_hidden_layers: k.usize_req("num_hidden_layers", MAX_LAYERS)?,
            expand,
            conv_kernel: k.usize_or("conv_kernel", 4)?,
            time_step_rank: k.rank("time_step_rank")?.unwrap_or_else(|| auto_rank(hidden)),
            intermediate_size: intermediate,
            use_bias: k.bool_or("use_bias", false)?,
            use_conv_bias: k.bool_or("use_conv_bias", true)?,
            layer_norm_epsilon: k.f64_or("layer_norm_epsilon", 1e-5)?,
            tie_word_embeddings: k.bool_or("tie_word_embeddings", true)?,
            vocab_size: k.usize_req("vocab_size", MAX_DIM)?,
            mamba2: None,
        };
        Ok(cfg)
    }

    fn from_state_spaces(obj: &Map<String, Value>, path: &Path) -> Result<MambaConfig, CheckpointError> {
        let k = Keys { obj, prefix: "", path };
        let empty = Map::new();
        let ssm = match obj.get("ssm_cfg") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(v) => return Err(k.err("ssm_cfg", "an object", v)),
        };
        let s = Keys { obj: ssm, prefix: "ssm_cfg.", path };
        let mamba2 = match ssm.get("layer") {
            Some(Value::String(layer)) if layer == "Mamba2" => true,
            Some(Value::String(layer)) if layer != "Mamba1" => {
                return Err(CheckpointError::config(
                    path,
                    format!("ssm_cfg.layer '{layer}' is not supported (mambac reads Mamba1 and Mamba2 layers)"),
                ));
            }
            _ => false,
        };
        // Hybrid models (attention layers, MLPs between mixers) are a different graph.
        if let Some(Value::Array(a)) = obj.get("attn_layer_idx") {
            if !a.is_empty() {
                return Err(CheckpointError::config(path, "attention layers (attn_layer_idx) are not supported"));
            }
        }
        if let Some(d) = obj.get("d_intermediate").and_then(Value::as_u64) {
            if d != 0 {
                return Err(CheckpointError::config(path, "MLP layers (d_intermediate > 0) are not supported"));
            }
        }
        if !k.bool_or("rms_norm", true)? {
            return Err(CheckpointError::config(path, "rms_norm false (LayerNorm) is not supported"));
        }
        let hidden = k.usize_req("d_model", MAX_DIM)?;
        let expand = s.usize_or("expand", 2)?;
        let vocab = k.usize_req("vocab_size", MAX_DIM)?;
        // mamba_ssm's default multiple is 8; 0 or 1 would mean no padding.
        let multiple = match obj.get("pad_vocab_size_multiple") {
            None | Some(Value::Null) => 8,
            Some(v) => match v.as_u64() {
                Some(n) if n > MAX_DIM as u64 => return Err(k.too_large("pad_vocab_size_multiple", MAX_DIM, v)),
                Some(n) => n as usize,
                None => return Err(k.err("pad_vocab_size_multiple", "an integer", v)),
            },
        };
        check_intermediate(path, expand * hidden, expand, hidden)?;
        let padded = if multiple > 1 { vocab.div_ceil(multiple) * multiple } else { vocab };
        // mamba_ssm's MixerModel takes norm_epsilon (default 1e-5); some configs spell it otherwise.
        let eps = match obj.get("norm_epsilon") {
            Some(_) => k.f64_or("norm_epsilon", 1e-5)?,
            None => k.f64_or("layer_norm_epsilon", 1e-5)?,
        };
        if mamba2 {
            let c = MambaConfig {
                hidden_size: hidden,
                // mamba_ssm's Mamba2 defaults.
                state_size: s.usize_or("d_state", 128)?,
                num_hidden_layers: k.usize_req("n_layer", MAX_LAYERS)?,
                expand,
                conv_kernel: s.usize_or("d_conv", 4)?,
                time_step_rank: 0,
                intermediate_size: expand * hidden,
                use_bias: s.bool_or("bias", false)?,
                use_conv_bias: s.bool_or("conv_bias", true)?,
                layer_norm_epsilon: eps,
                tie_word_embeddings: k.bool_or("tie_embeddings", true)?,
                vocab_size: padded,
                mamba2: None,
            };
            return super::config_mamba2::from_state_spaces(c, &s);
        }
        Ok(MambaConfig {
            hidden_size: hidden,
            state_size: s.usize_or("d_state", 16)?,
            num_hidden_layers: k.usize_req("n_layer", MAX_LAYERS)?,
            expand,
            conv_kernel: s.usize_or("d_conv", 4)?,
            time_step_rank: s.rank("dt_rank")?.unwrap_or_else(|| auto_rank(hidden)),
            intermediate_size: expand * hidden,
            use_bias: s.bool_or("bias", false)?,
            use_conv_bias: s.bool_or("conv_bias", true)?,
            layer_norm_epsilon: eps,
            tie_word_embeddings: k.bool_or("tie_embeddings", true)?,
            vocab_size: padded,
            mamba2: None,
        })
    }

    /// This config as a Hugging Face `config.json` (what `save_pretrained` writes for
    /// `MambaForCausalLM`), with the padded vocabulary and explicit ranks.
    pub fn to_hf_json(&self) -> Value {
        if let Some(m2) = &self.mamba2 {
            return super::config_mamba2::to_hf_json(self, m2);
        }
        json!({
            "architectures": ["MambaForCausalLM"],
            "model_type": "mamba",
            "hidden_size": self.hidden_size,
            "state_size": self.state_size,
            "num_hidden_layers": self.num_hidden_layers,
            "expand": self.expand,
            "conv_kernel": self.conv_kernel,
            "time_step_rank": self.time_step_rank,
            "intermediate_size": self.intermediate_size,
            "use_bias": self.use_bias,
            "use_conv_bias": self.use_conv_bias,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tie_word_embeddings": self.tie_word_embeddings,
            "vocab_size": self.vocab_size,
            "hidden_act": "silu",
            "residual_in_fp32": true,
        })
    }

    /// This config as a state-spaces `config.json` (no padding: vocab_size is already a
    /// multiple of pad_vocab_size_multiple 1).
    pub fn to_state_spaces_json(&self) -> Value {
        json!({
            "d_model": self.hidden_size,
            "d_intermediate": 0,
            "n_layer": self.num_hidden_layers,
            "vocab_size": self.vocab_size,
            "ssm_cfg": {
                "layer": "Mamba1",
                "d_state": self.state_size,
                "d_conv": self.conv_kernel,
                "expand": self.expand,
                "dt_rank": self.time_step_rank,
                "bias": self.use_bias,
                "conv_bias": self.use_conv_bias,
            },
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": true,
            "norm_epsilon": self.layer_norm_epsilon,
            "residual_in_fp32": true,
            "fused_add_norm": true,
            "pad_vocab_size_multiple": 1,
            "tie_embeddings": self.tie_word_embeddings,
        })
    }
}
