//! Mamba2LayerStep in float64 (docs/decode-graph.md "Mamba2LayerStep"), straight from its
//! equations: one token a sequence, weights stored `[in, out]`, head h reading group
//! `h / (heads / ngroups)`. The norm, in_proj, conv and out_proj are [`StepFrame`]'s; the SSD step
//! and gated norm between them are Mamba-2's own.

use super::step_frame::StepFrame;
use super::{gated_rms_norm, ssd_dt};

pub struct Mamba2LayerStepInputs<'a> {
    /// The norm, in_proj (`[hidden, inner + conv_dim + heads]`: z, xBC, dt), the conv (`conv_dim
    /// = heads * head_dim + 2 * ngroups * dstate` channels) and out_proj.
    pub frame: StepFrame<'a>,
    pub heads: usize,
    pub head_dim: usize,
    pub ngroups: usize,
    pub dstate: usize,
    pub dt_min: f64,
    pub dt_max: f64,
    pub norm_before_gate: bool,
    /// `[batch, heads, head_dim, dstate]`.
    pub ssm_state: &'a [f64],
    pub dt_bias: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub d: Option<&'a [f64]>,
    pub gate_norm_weight: &'a [f64],
}

/// Returns `(residual_out [batch, 1, hidden], conv_state_out [batch, conv_dim, width - 1],
/// ssm_state_out [batch, heads, head_dim, dstate])`.
pub fn mamba2_layer_step(p: &Mamba2LayerStepInputs) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (nh, hd, n) = (p.heads, p.head_dim, p.dstate);
    let inner = nh * hd;
    let gn = p.ngroups * n;
    let conv_dim = inner + 2 * gn;
    let heads_per_group = nh / p.ngroups;
    let mut ssm_out = Vec::with_capacity(p.frame.batch * inner * n);
    let (res_out, conv_out) = p.frame.run(inner + conv_dim + nh, inner..inner + conv_dim, |b, proj, xc| {
        let (z, dt) = (&proj[..inner], &proj[inner + conv_dim..]);
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
        gated_rms_norm(&y, z, p.gate_norm_weight, inner / p.ngroups, p.frame.eps, p.norm_before_gate)
    });
    (res_out, conv_out, ssm_out)
}
