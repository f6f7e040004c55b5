//! Shape and type inference of the standard ONNX ops `--ops standard` lowers to (their opset-27
//! schemas): Reshape, Expand, CausalConvWithState, LinearAttention.

use super::infer::{broadcast, err, expect_elem, expect_float, expect_rank, expect_shape, InferError};
use super::op::{CausalConvWithStateConfig, LinearAttentionConfig};
use super::types::{Dim, Shape, ValueType};

/// ONNX Reshape (allowzero 0): 0 copies the input's dim, one -1 takes what the others leave.
/// The dims the -1 stands for must be known; copied dims may be symbols.
pub(super) fn infer_reshape(x: &ValueType, shape: &[i64]) -> Result<Vec<ValueType>, InferError> {
    let bad = |why: &str| err("x", format!("has shape {}, cannot reshape to {shape:?}: {why}", x.shape));
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(shape.len());
    let mut copied = vec![false; x.shape.rank()];
    for (i, &s) in shape.iter().enumerate() {
        out.push(match s {
            0 => {
                let d = x.shape.0.get(i).ok_or_else(|| bad("a 0 past the input's rank"))?;
                copied[i] = true;
                Some(d.clone())
            }
            -1 => None,
            s if s > 0 => Some(Dim::Known(s as usize)),
            _ => return Err(bad("a negative size other than -1")),
        });
    }
    if out.iter().filter(|d| d.is_none()).count() > 1 {
        return Err(bad("more than one -1"));
    }
    // What is not copied must be known on both sides, and hold the same number of elements.
    let rest_in: Option<usize> = x.shape.0.iter().zip(&copied).filter(|(_, c)| !**c).map(|(d, _)| d.known()).product();
    let copied_out: Vec<bool> = shape.iter().map(|&s| s == 0).collect();
    let rest_out: usize =
        out.iter().zip(&copied_out).filter(|(_, c)| !**c).filter_map(|(d, _)| d.as_ref()?.known()).product();
    let rest_in = rest_in.ok_or_else(|| bad("a size it does not copy is symbolic"))?;
    let hole = if out.iter().any(Option::is_none) {
        if rest_out == 0 || rest_in % rest_out != 0 {
            return Err(bad("the sizes do not divide"));
        }
        rest_in / rest_out
    } else if rest_in != rest_out {
        return Err(bad("the element counts differ"));
    } else {
        0
    };
    let dims = out.into_iter().map(|d| d.unwrap_or(Dim::Known(hole))).collect();
    Ok(vec![ValueType::new(x.elem, dims)])
}

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

/// LinearAttention ("gated", per-key decay): query, key, decay [B, T, H*d_k], value [B, T, H*d_v]
/// of one float type T; past_state [B, H, d_k, d_v] of any float type S (T when absent); out
/// output [B, T, H*d_v] of T and present_state of S.
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
    expect_shape("decay", decay, &qk_dims)?;
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
