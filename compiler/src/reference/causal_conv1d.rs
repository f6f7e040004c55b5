//! CausalConv1d in float64, token-major layouts (docs/op-contract.md).

use super::silu;

pub struct CausalConv1dInputs<'a> {
    pub batch: usize,
    pub seqlen: usize,
    pub dim: usize,
    pub width: usize,
    pub x: &'a [f64],
    pub weight: &'a [f64],
    pub bias: Option<&'a [f64]>,
    /// `[batch, dim, width - 1]`: the last width-1 inputs seen, oldest first.
    pub initial_state: Option<&'a [f64]>,
    pub silu: bool,
}

/// Returns `(y [batch, seqlen, dim], final_state [batch, dim, width - 1])`.
pub fn causal_conv1d(p: &CausalConv1dInputs) -> (Vec<f64>, Vec<f64>) {
    let (bs, l, dim, w) = (p.batch, p.seqlen, p.dim, p.width);
    let past = w - 1;
    let mut y = vec![0.0; bs * l * dim];
    let mut fin = vec![0.0; bs * dim * past];
    for b in 0..bs {
        for d in 0..dim {
            // The channel's history: width-1 state values, then the sequence.
            let mut hist: Vec<f64> = match p.initial_state {
                Some(s) => s[(b * dim + d) * past..(b * dim + d + 1) * past].to_vec(),
                None => vec![0.0; past],
            };
            hist.extend((0..l).map(|t| p.x[(b * l + t) * dim + d]));
            for t in 0..l {
                let mut acc = p.bias.map_or(0.0, |bias| bias[d]);
                for k in 0..w {
                    acc += p.weight[d * w + k] * hist[t + k];
                }
                y[(b * l + t) * dim + d] = if p.silu { silu(acc) } else { acc };
            }
            fin[(b * dim + d) * past..(b * dim + d + 1) * past].copy_from_slice(&hist[l..]);
        }
    }
    (y, fin)
}
