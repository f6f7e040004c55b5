//! SsdScan (Mamba-2) in float64, step by step, token-major layouts (docs/op-contract.md "SsdScan").

use super::softplus;

/// Inputs of one scan: x `[batch, seqlen, heads, head_dim]`, dt `[batch, seqlen, heads]`, A, D and
/// dt_bias `[heads]`, B and C `[batch, seqlen, ngroups, dstate]`, initial_state
/// `[batch, heads, head_dim, dstate]`.
pub struct SsdScanInputs<'a> {
    pub batch: usize,
    pub seqlen: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ngroups: usize,
    pub dstate: usize,
    pub x: &'a [f64],
    pub dt: &'a [f64],
    pub a: &'a [f64],
    pub b: &'a [f64],
    pub c: &'a [f64],
    pub d: Option<&'a [f64]>,
    pub dt_bias: Option<&'a [f64]>,
    pub initial_state: Option<&'a [f64]>,
    pub dt_softplus: bool,
    pub dt_min: f64,
    pub dt_max: f64,
}

/// `clamp(softplus(dt + bias))`; a NaN stays NaN (neither comparison holds).
pub fn ssd_dt(raw: f64, bias: f64, dt_softplus: bool, dt_min: f64, dt_max: f64) -> f64 {
    let mut dt = raw + bias;
    if dt_softplus {
        dt = softplus(dt);
    }
    super::clamp(dt, dt_min, dt_max)
}

/// Returns `(y [batch, seqlen, heads, head_dim], final_state [batch, heads, head_dim, dstate])`.
pub fn ssd_scan(p: &SsdScanInputs) -> (Vec<f64>, Vec<f64>) {
    let (bs, l, nh, hd, g, n) = (p.batch, p.seqlen, p.heads, p.head_dim, p.ngroups, p.dstate);
    let heads_per_group = nh / g;
    let mut y = vec![0.0; bs * l * nh * hd];
    let mut state = match p.initial_state {
        Some(s) => s.to_vec(),
        None => vec![0.0; bs * nh * hd * n],
    };
    for b in 0..bs {
        for h in 0..nh {
            let grp = h / heads_per_group;
            for t in 0..l {
                let bt = b * l + t;
                let dt = ssd_dt(p.dt[bt * nh + h], p.dt_bias.map_or(0.0, |v| v[h]), p.dt_softplus, p.dt_min, p.dt_max);
                let decay = (dt * p.a[h]).exp();
                let bc = (bt * g + grp) * n;
                let (b_row, c_row) = (&p.b[bc..][..n], &p.c[bc..][..n]);
                for pp in 0..hd {
                    let xv = p.x[(bt * nh + h) * hd + pp];
                    let s = &mut state[((b * nh + h) * hd + pp) * n..][..n];
                    let mut acc = 0.0;
                    for k in 0..n {
                        s[k] = decay * s[k] + dt * b_row[k] * xv;
                        acc += c_row[k] * s[k];
                    }
                    y[(bt * nh + h) * hd + pp] = acc + p.d.map_or(0.0, |d| d[h] * xv);
                }
            }
        }
    }
    (y, state)
}

/// Mamba-2's gated RMSNorm over groups of `group_size` channels of rows of `width` (IR
/// `GatedRmsNorm`): `rms(x * silu(z)) * w`, or with `norm_before_gate` `rms(x) * w * silu(z)`.
pub fn gated_rms_norm(
    x: &[f64],
    z: &[f64],
    w: &[f64],
    group_size: usize,
    eps: f64,
    norm_before_gate: bool,
) -> Vec<f64> {
    let width = w.len();
    let mut out = Vec::with_capacity(x.len());
    for (xr, zr) in x.chunks(width).zip(z.chunks(width)) {
        let gated: Vec<f64> =
            if norm_before_gate { xr.to_vec() } else { xr.iter().zip(zr).map(|(&a, &b)| a * super::silu(b)).collect() };
        for (k, grp) in gated.chunks(group_size).enumerate() {
            let ms = grp.iter().map(|v| v * v).sum::<f64>() / group_size as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            for (j, v) in grp.iter().enumerate() {
                let c = k * group_size + j;
                let gate = if norm_before_gate { super::silu(zr[c]) } else { 1.0 };
                out.push(v * inv * w[c] * gate);
            }
        }
    }
    out
}
