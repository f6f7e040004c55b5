//! ONNX's LinearAttention (opset 27) in float64: update rule "gated" with a per-key or per-head
//! decay, as many query heads as key/value heads. Heads are packed into the last axis (`[B, T, H * d]`).

pub struct LinearAttentionInputs<'a> {
    pub batch: usize,
    pub seqlen: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f64,
    pub query: &'a [f64],
    pub key: &'a [f64],
    pub value: &'a [f64],
    /// The decay g in log space, `[B, T, H * d_k]` (per key) or `[B, T, H]` (per head: every key
    /// row of a head decays alike).
    pub decay: &'a [f64],
    /// `[B, H, d_k, d_v]`; zeros when absent.
    pub past_state: Option<&'a [f64]>,
}

/// `S_t = exp(g_t) * S_{t-1} + k_t ⊗ v_t`, `o_t = scale * q_t^T S_t` per head. Returns
/// `(output [B, T, H * d_v], present_state [B, H, d_k, d_v])`.
pub fn linear_attention(p: &LinearAttentionInputs) -> (Vec<f64>, Vec<f64>) {
    let (bs, l, h, dk, dv) = (p.batch, p.seqlen, p.heads, p.dk, p.dv);
    let per_head = p.decay.len() == bs * l * h;
    let mut out = vec![0.0; bs * l * h * dv];
    let mut state = match p.past_state {
        Some(s) => s.to_vec(),
        None => vec![0.0; bs * h * dk * dv],
    };
    for b in 0..bs {
        for hd in 0..h {
            let s = &mut state[(b * h + hd) * dk * dv..(b * h + hd + 1) * dk * dv];
            for t in 0..l {
                let row = (b * l + t) * h;
                let (qk, vv) = ((row + hd) * dk, (row + hd) * dv);
                for i in 0..dk {
                    let g = if per_head { p.decay[row + hd] } else { p.decay[qk + i] };
                    let (decay, key) = (g.exp(), p.key[qk + i]);
                    for j in 0..dv {
                        s[i * dv + j] = decay * s[i * dv + j] + key * p.value[vv + j];
                    }
                }
                for j in 0..dv {
                    let dot: f64 = (0..dk).map(|i| p.query[qk + i] * s[i * dv + j]).sum();
                    out[vv + j] = p.scale * dot;
                }
            }
        }
    }
    (out, state)
}
