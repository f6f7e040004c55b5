//! Hugging Face `Mamba2Config` (model_type "mamba2") resolved into a [`MambaConfig`] with
//! [`Mamba2Params`]: num_heads, head_dim, n_groups, state_size, expand, conv_kernel, chunk_size,
//! use_bias, use_conv_bias, time_step_limit, rms_norm, norm_before_gate, layer_norm_epsilon,
//! tie_word_embeddings, vocab_size. Missing keys take transformers' defaults.
//!
//! The block (transformers' `Mamba2Mixer`, mamba_ssm's `Mamba2`): in_proj gives
//! `[z (I), xBC (I + 2 G N), dt (H)]` with I = num_heads * head_dim = expand * hidden_size.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::config::{check_intermediate, Keys, MambaConfig, MAX_DIM, MAX_LAYERS};
use super::error::CheckpointError;

/// The Mamba-2 block's parameters beyond Mamba-1's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mamba2Params {
    pub num_heads: usize,
    pub head_dim: usize,
    /// Groups of B and C (and of the gated RMSNorm); head h reads group h / (num_heads / n_groups).
    pub n_groups: usize,
    /// The SSD kernels' chunk length: a speed knob, the equations do not depend on it.
    pub chunk_size: usize,
    /// dt is clamped to [min, max] after the softplus; (0, inf) clamps nothing.
    pub time_step_limit: (f64, f64),
    /// mamba_ssm's RMSNormGated flag: false (every released model) = norm(y * silu(z)) * w;
    /// true = norm(y) * w * silu(z).
    pub norm_before_gate: bool,
}

impl Mamba2Params {
    /// Channels of the conv (x, B and C): I + 2 G N.
    pub fn conv_dim(&self, c: &MambaConfig) -> usize {
        c.intermediate_size + 2 * self.n_groups * c.state_size
    }

    /// Width of in_proj's output: z, xBC and dt.
    pub fn in_proj_dim(&self, c: &MambaConfig) -> usize {
        c.intermediate_size + self.conv_dim(c) + self.num_heads
    }

    /// Whether the time-step clamp changes anything (softplus is never below 0).
    pub fn clamps_dt(&self) -> bool {
        self.time_step_limit.0 > 0.0 || self.time_step_limit.1 != f64::INFINITY
    }
}

/// transformers 5 writes infinity as `{"__float__": "Infinity"}` (JSON has no infinity).
fn limit_value(v: &Value) -> Option<f64> {
    match v {
        Value::Object(m) if m.len() == 1 => match m.get("__float__")?.as_str()? {
            "Infinity" | "inf" => Some(f64::INFINITY),
            _ => None,
        },
        _ => v.as_f64(),
    }
}

fn time_step_limit(k: &Keys<'_>, key: &str) -> Result<(f64, f64), CheckpointError> {
    let v = match k.obj.get(key) {
        None | Some(Value::Null) => return Ok((0.0, f64::INFINITY)),
        Some(v) => v,
    };
    let pair = v.as_array().filter(|a| a.len() == 2).map(|a| (limit_value(&a[0]), limit_value(&a[1])));
    match pair {
        Some((Some(lo), Some(hi))) if !lo.is_nan() && lo >= 0.0 && lo.is_finite() && hi >= lo && hi > 0.0 => {
            Ok((lo, hi))
        }
        _ => Err(k.err(key, "[min, max] with 0 <= min <= max and max > 0", v)),
    }
}

pub(super) fn from_hf(obj: &Map<String, Value>, path: &Path) -> Result<MambaConfig, CheckpointError> {
    let k = Keys { obj, prefix: "", path };
    if let Some(v) = obj.get("hidden_act") {
        if v.as_str() != Some("silu") {
            return Err(k.err("hidden_act", "\"silu\" (the only activation of Mamba-2 blocks)", v));
        }
    }
    if !k.bool_or("rms_norm", true)? {
        return Err(CheckpointError::config(
            path,
            "rms_norm false (Mamba-2 blocks without the gated RMSNorm) is not supported",
        ));
    }
    let hidden = k.usize_req("hidden_size", MAX_DIM)?;
    let expand = k.usize_or("expand", 2)?;
    let intermediate = expand * hidden;
    check_intermediate(path, intermediate, expand, hidden)?;
    let num_heads = k.usize_or("num_heads", 128)?;
    let head_dim = k.usize_or("head_dim", 64)?;
    if num_heads * head_dim != intermediate {
        return Err(CheckpointError::config(
            path,
            format!(
                "num_heads {num_heads} x head_dim {head_dim} = {} must equal the intermediate size {intermediate} \
                 (expand {expand} x hidden_size {hidden})",
                num_heads * head_dim
            ),
        ));
    }
    let n_groups = k.usize_or("n_groups", 8)?;
    if !num_heads.is_multiple_of(n_groups) {
        return Err(CheckpointError::config(
            path,
            format!("key 'n_groups' ({n_groups}) must divide 'num_heads' ({num_heads}): each group serves whole heads"),
        ));
    }
    let state_size = k.usize_or("state_size", 128)?;
    let m2 = Mamba2Params {
        num_heads,
        head_dim,
        n_groups,
        chunk_size: k.usize_or("chunk_size", 256)?,
        time_step_limit: time_step_limit(&k, "time_step_limit")?,
        norm_before_gate: k.bool_or("norm_before_gate", false)?,
    };
    let cfg = MambaConfig {
        hidden_size: hidden,
        state_size,
        num_hidden_layers: k.usize_req("num_hidden_layers", MAX_LAYERS)?,
        expand,
        conv_kernel: k.usize_or("conv_kernel", 4)?,
        // Mamba-2 has no dt projection; transformers keeps the key for its initialiser only.
        time_step_rank: 0,
        intermediate_size: intermediate,
        use_bias: k.bool_or("use_bias", false)?,
        use_conv_bias: k.bool_or("use_conv_bias", true)?,
        layer_norm_epsilon: k.f64_or("layer_norm_epsilon", 1e-5)?,
        tie_word_embeddings: k.bool_or("tie_word_embeddings", false)?,
        vocab_size: k.usize_req("vocab_size", MAX_DIM)?,
        mamba2: Some(m2),
    };
    check_conv_width(&cfg, path)
}

/// The conv's channel count (x, B and C) is a dimension too; in_proj's width follows from it.
fn check_conv_width(cfg: &MambaConfig, path: &Path) -> Result<MambaConfig, CheckpointError> {
    let m = cfg.mamba2.as_ref().expect("a Mamba-2 config");
    let conv_dim = m.conv_dim(cfg);
    if conv_dim > MAX_DIM {
        return Err(CheckpointError::config(
            path,
            format!(
                "the conv width {conv_dim} (intermediate size {} + 2 x n_groups {} x state_size {}) must be at \
                 most {MAX_DIM}",
                cfg.intermediate_size, m.n_groups, cfg.state_size
            ),
        ));
    }
    Ok(cfg.clone())
}

/// mamba_ssm's `Mamba2` block from a state-spaces config's `ssm_cfg` (layer "Mamba2"): headdim,
/// ngroups, chunk_size, dt_limit, norm_before_gate, rmsnorm, with mamba_ssm's defaults. `c` holds
/// what the Mamba-1 parse shares (d_model, n_layer, vocab padding, d_state, d_conv, biases).
pub(super) fn from_state_spaces(mut c: MambaConfig, s: &Keys<'_>) -> Result<MambaConfig, CheckpointError> {
    let path = s.path;
    if !s.bool_or("rmsnorm", true)? {
        return Err(CheckpointError::config(path, "ssm_cfg.rmsnorm false (no gated RMSNorm) is not supported"));
    }
    if s.bool_or("D_has_hdim", false)? {
        return Err(CheckpointError::config(path, "ssm_cfg.D_has_hdim true (D per channel) is not supported"));
    }
    let inter = c.intermediate_size;
    if let Some(d_ssm) = s.usize_opt("d_ssm", MAX_DIM)? {
        if d_ssm != inter {
            return Err(CheckpointError::config(
                path,
                format!("ssm_cfg.d_ssm {d_ssm} is not the intermediate size {inter}: blocks with an MLP part are not supported"),
            ));
        }
    }
    let head_dim = s.usize_or("headdim", 64)?;
    if !inter.is_multiple_of(head_dim) {
        return Err(CheckpointError::config(
            path,
            format!(
                "key 'ssm_cfg.headdim' ({head_dim}) must divide the intermediate size {inter} (expand {} x d_model {})",
                c.expand, c.hidden_size
            ),
        ));
    }
    let num_heads = inter / head_dim;
    let n_groups = s.usize_or("ngroups", 1)?;
    if !num_heads.is_multiple_of(n_groups) {
        return Err(CheckpointError::config(
            path,
            format!("key 'ssm_cfg.ngroups' ({n_groups}) must divide the head count {num_heads} (intermediate size / headdim)"),
        ));
    }
    c.mamba2 = Some(Mamba2Params {
        num_heads,
        head_dim,
        n_groups,
        chunk_size: s.usize_or("chunk_size", 256)?,
        time_step_limit: time_step_limit(s, "dt_limit")?,
        norm_before_gate: s.bool_or("norm_before_gate", false)?,
    });
    check_conv_width(&c, path)
}

/// The config as transformers' `Mamba2Config` JSON (infinity spelt as transformers 5 does).
pub(super) fn to_hf_json(c: &MambaConfig, m: &Mamba2Params) -> Value {
    let hi =
        if m.time_step_limit.1.is_finite() { json!(m.time_step_limit.1) } else { json!({"__float__": "Infinity"}) };
    json!({
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": "mamba2",
        "hidden_size": c.hidden_size,
        "state_size": c.state_size,
        "num_hidden_layers": c.num_hidden_layers,
        "expand": c.expand,
        "conv_kernel": c.conv_kernel,
        "num_heads": m.num_heads,
        "head_dim": m.head_dim,
        "n_groups": m.n_groups,
        "chunk_size": m.chunk_size,
        "time_step_limit": [m.time_step_limit.0, hi],
        "norm_before_gate": m.norm_before_gate,
        "use_bias": c.use_bias,
        "use_conv_bias": c.use_conv_bias,
        "layer_norm_epsilon": c.layer_norm_epsilon,
        "tie_word_embeddings": c.tie_word_embeddings,
        "vocab_size": c.vocab_size,
        "hidden_act": "silu",
        "rms_norm": true,
        "residual_in_fp32": true,
    })
}
