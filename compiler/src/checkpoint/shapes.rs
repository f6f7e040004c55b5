//! The tensors a Mamba-1 or Mamba-2 model needs, by canonical (Hugging Face) name, with the shape its
//! config implies. The one place that knows the parameter list; the readers check against it
//! and the synthetic writer writes from it.

use super::config::{Mamba2Params, MambaConfig};

/// Canonical name of the embedding.
pub const EMBEDDING: &str = "backbone.embeddings.weight";
/// Canonical name of the output projection (absent from the file when tied).
pub const LM_HEAD: &str = "lm_head.weight";
/// Canonical name of the final norm.
pub const NORM_F: &str = "backbone.norm_f.weight";

/// Every tensor the model needs, in the order save_pretrained writes a layer (embedding, then
/// each layer, then the final norm and lm_head). lm_head is included only when untied.
pub fn expected_tensors(c: &MambaConfig) -> Vec<(String, Vec<usize>)> {
    if let Some(m2) = &c.mamba2 {
        return expected_tensors_mamba2(c, m2);
    }
    let (h, i, n, k, r, v) =
        (c.hidden_size, c.intermediate_size, c.state_size, c.conv_kernel, c.time_step_rank, c.vocab_size);
    let mut out = vec![(EMBEDDING.to_string(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        out.push((p("norm.weight"), vec![h]));
        out.push((p("mixer.A_log"), vec![i, n]));
        out.push((p("mixer.D"), vec![i]));
        out.push((p("mixer.in_proj.weight"), vec![2 * i, h]));
        if c.use_bias {
            out.push((p("mixer.in_proj.bias"), vec![2 * i]));
        }
        // Stored as torch's Conv1d weight, [out_channels, in_channels / groups, kernel].
        out.push((p("mixer.conv1d.weight"), vec![i, 1, k]));
        if c.use_conv_bias {
            out.push((p("mixer.conv1d.bias"), vec![i]));
        }
        out.push((p("mixer.x_proj.weight"), vec![r + 2 * n, i]));
        out.push((p("mixer.dt_proj.weight"), vec![i, r]));
        // dt_proj always has a bias: it is the scan's delta_bias.
        out.push((p("mixer.dt_proj.bias"), vec![i]));
        out.push((p("mixer.out_proj.weight"), vec![h, i]));
        if c.use_bias {
            out.push((p("mixer.out_proj.bias"), vec![h]));
        }
    }
    out.push((NORM_F.to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![v, h]));
    }
    out
}

/// Mamba-2 (transformers' `Mamba2ForCausalLM`): in_proj `[I + conv_dim + H, hidden]`, the conv
/// over x, B and C, and per-head dt_bias, A_log and D.
fn expected_tensors_mamba2(c: &MambaConfig, m: &Mamba2Params) -> Vec<(String, Vec<usize>)> {
    let (h, i, k, v, heads) = (c.hidden_size, c.intermediate_size, c.conv_kernel, c.vocab_size, m.num_heads);
    let conv_dim = m.conv_dim(c);
    let mut out = vec![(EMBEDDING.to_string(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        out.push((p("norm.weight"), vec![h]));
        out.push((p("mixer.in_proj.weight"), vec![m.in_proj_dim(c), h]));
        if c.use_bias {
            out.push((p("mixer.in_proj.bias"), vec![m.in_proj_dim(c)]));
        }
        out.push((p("mixer.conv1d.weight"), vec![conv_dim, 1, k]));
        if c.use_conv_bias {
            out.push((p("mixer.conv1d.bias"), vec![conv_dim]));
        }
        out.push((p("mixer.dt_bias"), vec![heads]));
        out.push((p("mixer.A_log"), vec![heads]));
        out.push((p("mixer.D"), vec![heads]));
        out.push((p("mixer.norm.weight"), vec![i]));
        out.push((p("mixer.out_proj.weight"), vec![h, i]));
        if c.use_bias {
            out.push((p("mixer.out_proj.bias"), vec![h]));
        }
    }
    out.push((NORM_F.to_string(), vec![h]));
    if !c.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![v, h]));
    }
    out
}

/// The shape `name` must have under `c`, or None when the model has no such tensor.
pub fn expected_shape(c: &MambaConfig, name: &str) -> Option<Vec<usize>> {
    if name == LM_HEAD {
        return Some(vec![c.vocab_size, c.hidden_size]);
    }
    expected_tensors(c).into_iter().find(|(n, _)| n == name).map(|(_, s)| s)
}

/// Names a tensor may be stored under, canonical first. state-spaces files call the embedding
/// `backbone.embedding.weight`; older HF conversions occasionally do too.
pub fn stored_names(canonical: &str) -> Vec<String> {
    let mut v = vec![canonical.to_string()];
    if canonical == EMBEDDING {
        v.push("backbone.embedding.weight".to_string());
    }
    v
}
