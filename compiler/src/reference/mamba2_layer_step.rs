//! Mamba2LayerStep in float64 (docs/decode-graph.md "Mamba2LayerStep"), straight from its
//! equations: one token a sequence, weights stored `[in, out]`, head h reading group
//! `h / (heads / ngroups)`.

use super::layer_step::linear;
use super::{gated_rms_norm, silu, ssd_dt};

pub struct Mamba2LayerStepInputs<'a> {
    pub batch: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ngroups: usize,
    pub dstate: usize,
    pub width: usize,
    pub eps: f64,
    pub dt_min: f64,
    pub dt_max: f64,
    pub norm_before_gate: bool,
    /// `[batch, conv_dim, width - 1]`, oldest first; conv_dim = heads * head_dim + 2 * ngroups * dstate.
    pub conv_state: &'a [f64],
    /// `[batch, heads, head_dim, dstate]`.
    pub ssm_state: &'a [f64],
    /// `[batch, 1, hidden]`.
    pub residual: &'a [f64],
    pub norm_weight: &'a [f64],
    /// `[hidden, inner + conv_dim + heads]`: z, xBC, dt.
    pub in_proj_weight: &'a [f64],
    pub in_proj_bias: Option<&'a [f64]>,
    pub conv_weight: &'a [f64],
    pub conv_bias: Option<&'a [f64]>,
    pub dt_bias: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub d: Option<&'a [f64]>,
    pub gate_norm_weight: &'a [f64],
    pub out_proj_weight: &'a [f64],
    pub out_proj_bias: Option<&'a [f64]>,
}

/// Returns `(residual_out [batch, 1, hidden], conv_state_out [batch, conv_dim, width - 1],
/// ssm_state_out [batch, heads, head_dim, dstate])`.
pub fn mamba2_layer_step(p: &Mamba2LayerStepInputs) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (h, nh, hd, n, k) = (p.hidden, p.heads, p.head_dim, p.dstate, p.width);
    let inner = nh * hd;
    let gn = p.ngroups * n;
    let conv_dim = inner + 2 * gn;
    let past = k - 1;
    let heads_per_group = nh / p.ngroups;
    let mut res_out = Vec::with_capacity(p.batch * h);
    let mut conv_out = Vec::with_capacity(p.batch * conv_dim * past);
    let mut ssm_out = Vec::with_capacity(p.batch * inner * n);
    for b in 0..p.batch {
        let res = &p.residual[b * h..(b + 1) * h];
        let inv = 1.0 / (res.iter().map(|v| v * v).sum::<f64>() / h as f64 + p.eps).sqrt();
        let v: Vec<f64> = res.iter().zip(p.norm_weight).map(|(x, w)| x * inv * w).collect();
        let proj = linear(&v, p.in_proj_weight, inner + conv_dim + nh, p.in_proj_bias);
        let (z, rest) = proj.split_at(inner);
        let (xbc, dt) = rest.split_at(conv_dim);
        let mut xc = vec![0.0; conv_dim];
        for (c, xcv) in xc.iter_mut().enumerate() {
            let state = &p.conv_state[(b * conv_dim + c) * past..(b * conv_dim + c + 1) * past];
            let w = &p.conv_weight[c * k..(c + 1) * k];
            let window = || state.iter().chain(std::iter::once(&xbc[c]));
            *xcv = silu(p.conv_bias.map_or(0.0, |cb| cb[c]) + window().zip(w).map(|(s, wk)| s * wk).sum::<f64>());
            // The window [state, x] less its oldest value (nothing for width 1).
            conv_out.extend(window().skip(1));
        }
        let (x, bc) = xc.split_at(inner);
        let (bm, cm) = bc.split_at(gn);
        let mut y = vec![0.0; inner];
        for hh in 0..nh {
            let g = hh / heads_per_group;
            let delta = ssd_dt(dt[hh], p.dt_bias.map_or(0.0, |v| v[hh]), true, p.dt_min, p.dt_max);
            let decay = (delta * p.a[hh]).exp();
            for pp in 0..hd {
                let c = hh * hd + pp;
                let h0 = &p.ssm_state[(b * inner + c) * n..(b * inner + c + 1) * n];
                let mut acc = 0.0;
                for s in 0..n {
                    let hs = decay * h0[s] + delta * x[c] * bm[g * n + s];
                    ssm_out.push(hs);
                    acc += cm[g * n + s] * hs;
                }
                y[c] = acc + p.d.map_or(0.0, |d| d[hh] * x[c]);
            }
        }
        let y = gated_rms_norm(&y, z, p.gate_norm_weight, inner / p.ngroups, p.eps, p.norm_before_gate);
        let out = linear(&y, p.out_proj_weight, h, p.out_proj_bias);
        res_out.extend(res.iter().zip(&out).map(|(a, b)| a + b));
    }
    (res_out, conv_out, ssm_out)
}
