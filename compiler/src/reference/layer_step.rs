//! MambaLayerStep in float64 (docs/decode-graph.md), straight from its equations: one token a
//! sequence, weights stored `[in, out]`.

use super::{silu, softplus};

pub struct LayerStepInputs<'a> {
    pub batch: usize,
    pub hidden: usize,
    pub inner: usize,
    pub dstate: usize,
    pub dt_rank: usize,
    pub width: usize,
    pub eps: f64,
    /// `[batch, inner, width - 1]`, oldest first.
    pub conv_state: &'a [f64],
    /// `[batch, inner, dstate]`.
    pub ssm_state: &'a [f64],
    /// `[batch, 1, hidden]`.
    pub residual: &'a [f64],
    pub norm_weight: &'a [f64],
    pub in_proj_weight: &'a [f64],
    pub in_proj_bias: Option<&'a [f64]>,
    pub conv_weight: &'a [f64],
    pub conv_bias: Option<&'a [f64]>,
    pub x_proj_weight: &'a [f64],
    pub dt_proj_weight: &'a [f64],
    pub dt_bias: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub d: Option<&'a [f64]>,
    pub out_proj_weight: &'a [f64],
    pub out_proj_bias: Option<&'a [f64]>,
}

/// `x [k] @ w [k, n] (+ bias)`.
pub(super) fn linear(x: &[f64], w: &[f64], n: usize, bias: Option<&[f64]>) -> Vec<f64> {
    let mut out = bias.map_or_else(|| vec![0.0; n], <[f64]>::to_vec);
    for (k, &xk) in x.iter().enumerate() {
        for (o, wv) in out.iter_mut().zip(&w[k * n..(k + 1) * n]) {
            *o += xk * wv;
        }
    }
    out
}

/// Returns `(residual_out [batch, 1, hidden], conv_state_out [batch, inner, width - 1],
/// ssm_state_out [batch, inner, dstate])`.
pub fn layer_step(p: &LayerStepInputs) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (h, i, n, r, k) = (p.hidden, p.inner, p.dstate, p.dt_rank, p.width);
    let past = k - 1;
    let mut res_out = Vec::with_capacity(p.batch * h);
    let mut conv_out = Vec::with_capacity(p.batch * i * past);
    let mut ssm_out = Vec::with_capacity(p.batch * i * n);
    for b in 0..p.batch {
        let res = &p.residual[b * h..(b + 1) * h];
        let inv = 1.0 / (res.iter().map(|v| v * v).sum::<f64>() / h as f64 + p.eps).sqrt();
        let v: Vec<f64> = res.iter().zip(p.norm_weight).map(|(x, w)| x * inv * w).collect();
        let xz = linear(&v, p.in_proj_weight, 2 * i, p.in_proj_bias);
        let (x, z) = xz.split_at(i);
        let mut xc = vec![0.0; i];
        for d in 0..i {
            let state = &p.conv_state[(b * i + d) * past..(b * i + d + 1) * past];
            let w = &p.conv_weight[d * k..(d + 1) * k];
            let acc = p.conv_bias.map_or(0.0, |cb| cb[d])
                + state.iter().chain(std::iter::once(&x[d])).zip(w).map(|(s, wk)| s * wk).sum::<f64>();
            xc[d] = silu(acc);
            // The window [state, x] less its oldest value (nothing for width 1).
            conv_out.extend(state.iter().chain(std::iter::once(&x[d])).skip(1));
        }
        let dbc = linear(&xc, p.x_proj_weight, r + 2 * n, None);
        let (dt_low, bc) = dbc.split_at(r);
        let (bv, cv) = bc.split_at(n);
        let dt = linear(dt_low, p.dt_proj_weight, i, None);
        let mut y = vec![0.0; i];
        for d in 0..i {
            let delta = softplus(dt[d] + p.dt_bias.map_or(0.0, |bias| bias[d]));
            let h0 = &p.ssm_state[(b * i + d) * n..(b * i + d + 1) * n];
            let mut acc = 0.0;
            for s in 0..n {
                let hs = (delta * p.a[d * n + s]).exp() * h0[s] + delta * bv[s] * xc[d];
                ssm_out.push(hs);
                acc += cv[s] * hs;
            }
            y[d] = (acc + p.d.map_or(0.0, |dd| dd[d] * xc[d])) * silu(z[d]);
        }
        let out = linear(&y, p.out_proj_weight, h, p.out_proj_bias);
        res_out.extend(res.iter().zip(&out).map(|(a, b)| a + b));
    }
    (res_out, conv_out, ssm_out)
}
