//! MambaLayerStep in float64 (docs/decode-graph.md), straight from its equations: one token a
//! sequence, weights stored `[in, out]`. The norm, in_proj, conv and out_proj are
//! [`StepFrame`]'s; the x_proj, dt_proj and scan between them are Mamba-1's own.

use super::step_frame::{linear, StepFrame};
use super::{silu, softplus};

pub struct LayerStepInputs<'a> {
    /// The norm, in_proj (`[hidden, 2 inner]`), the conv (`inner` channels) and out_proj.
    pub frame: StepFrame<'a>,
    pub inner: usize,
    pub dstate: usize,
    pub dt_rank: usize,
    /// `[batch, inner, dstate]`.
    pub ssm_state: &'a [f64],
    pub x_proj_weight: &'a [f64],
    pub dt_proj_weight: &'a [f64],
    pub dt_bias: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub d: Option<&'a [f64]>,
}

/// Returns `(residual_out [batch, 1, hidden], conv_state_out [batch, inner, width - 1],
/// ssm_state_out [batch, inner, dstate])`.
pub fn layer_step(p: &LayerStepInputs) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (i, n, r) = (p.inner, p.dstate, p.dt_rank);
    let mut ssm_out = Vec::with_capacity(p.frame.batch * i * n);
    // in_proj's outputs are x (the conv's input) and z.
    let (res_out, conv_out) = p.frame.run(2 * i, 0..i, |b, xz, xc| {
        let z = &xz[i..];
        let dbc = linear(xc, p.x_proj_weight, r + 2 * n, None);
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
        y
    });
    (res_out, conv_out, ssm_out)
}
