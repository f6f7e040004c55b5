//! Shape and type inference of the standard ONNX ops `--ops standard` lowers to (their opset-27
//! schemas): Expand, CausalConvWithState, LinearAttention.

use super::infer::{broadcast, err, expect_elem, expect_float, expect_rank, expect_shape, InferError};
use super::op::{CausalConvWithStateConfig, LinearAttentionConfig};
use super::types::{Dim, Shape, ValueType};

/// ONNX Expand: numpy broadcasting of x's shape and `shape`.
pub(super) fn infer_expand(x: &ValueType, shape: &[usize]) -> Result<Vec<ValueType>, InferError> {
    let dims = broadcast(&x.shape, &Shape::known(shape))
        .map_err(|_| err("x", format!("has shape {}, which does not broadcast with {shape:?}", x.shape)))?;
    Ok(vec![ValueType::new(x.elem, dims)])
}

/// CausalConvWithState: input [B, C, L], weight [C, 1, K], bias [C], past_state [B, C, K-1];
/// out y [B, C, L] and present_state [B, C, K-1], all of input's type.
pub(super) fn infer_causal_conv_with_state(
    _cfg: &CausalConvWithStateConfig,
    x: &ValueType,
    w: &ValueType,
    bias: Option<&ValueType>,
    past: Option<&ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    expect_rank("input", x, 3)?;
    expect_float("input", x)?;
    let (batch, channels) = (x.shape.0[0].clone(), x.shape.0[1].clone());
    expect_elem("weight", w, x.elem, "same as 'input'")?;
    expect_rank("weight", w, 3)?;
    if w.shape.0[0] != channels || w.shape.0[1] != Dim::Known(1) {
        return Err(err("weight", format!("has shape {}, expected [{channels}, 1, k]", w.shape)));
    }
    let k = match w.shape.0[2].known() {
        Some(k) if k >= 1 => k,
        _ => return Err(err("weight", format!("has shape {}, expected a known k >= 1", w.shape))),
    };
    if let Some(b) = bias {
        expect_elem("bias", b, x.elem, "same as 'input'")?;
        expect_shape("bias", b, std::slice::from_ref(&channels))?;
    }
    let state = vec![batch, channels, Dim::Known(k - 1)];
    if let Some(s) = past {
        expect_elem("past_state", s, x.elem, "same as 'input'")?;
        expect_shape("past_state", s, &state)?;
    }
    Ok(vec![x.clone(), ValueType::new(x.elem, state)])
}

/// `d` split into `heads` equal parts: the per-head size.
fn per_head(name: &str, t: &ValueType, heads: usize) -> Result<usize, InferError> {
    match t.shape.0[2].known() {
        Some(n) if heads > 0 && n % heads == 0 && n > 0 => Ok(n / heads),
        _ => Err(err(name, format!("has shape {}, expected a known last dim, a multiple of {heads} heads", t.shape))),
    }
}

/// LinearAttention ("gated"): query, key [B, T, H*d_k], value [B, T, H*d_v], decay [B, T, H*d_k]
/// (per key) or [B, T, H] (per head) of one float type T; past_state [B, H, d_k, d_v] of any
/// float type S (T when absent); out output [B, T, H*d_v] of T and present_state of S.
pub(super) fn infer_linear_attention(
    cfg: &LinearAttentionConfig,
    q: &ValueType,
    k: &ValueType,
    v: &ValueType,
    past: Option<&ValueType>,
    decay: &ValueType,
) -> Result<Vec<ValueType>, InferError> {
    let h = cfg.heads;
    expect_rank("query", q, 3)?;
    expect_float("query", q)?;
    let (batch, seq) = (q.shape.0[0].clone(), q.shape.0[1].clone());
    let dk = per_head("query", q, h)?;
    let qk_dims = q.shape.0.clone();
    expect_elem("key", k, q.elem, "same as 'query'")?;
    expect_shape("key", k, &qk_dims)?;
    expect_elem("value", v, q.elem, "same as 'query'")?;
    expect_rank("value", v, 3)?;
    let dv = per_head("value", v, h)?;
    expect_shape("value", v, &[batch.clone(), seq.clone(), Dim::Known(h * dv)])?;
    expect_elem("decay", decay, q.elem, "same as 'query'")?;
    let per_head = [batch.clone(), seq.clone(), Dim::Known(h)];
    if decay.shape.0 != qk_dims && decay.shape.0 != per_head {
        let (per_key, per_head) = (Shape(qk_dims), Shape(per_head.to_vec()));
        return Err(err(
            "decay",
            format!("has shape {}, expected {per_key} (per key) or {per_head} (per head)", decay.shape),
        ));
    }
    let state = vec![batch.clone(), Dim::Known(h), Dim::Known(dk), Dim::Known(dv)];
    let state_elem = match past {
        Some(s) => {
            expect_float("past_state", s)?;
            expect_shape("past_state", s, &state)?;
            s.elem
        }
        None => q.elem,
    };
    Ok(vec![ValueType::new(q.elem, vec![batch, seq, Dim::Known(h * dv)]), ValueType::new(state_elem, state)])
}
