//! SelectiveScan in float64, token-major layouts (docs/op-contract.md).

use super::{silu, softplus};

/// Inputs of one scan; slices are contiguous in docs/op-contract.md's layouts.
pub struct SelectiveScanInputs<'a> {
    pub batch: usize,
    pub seqlen: usize,
    pub dim: usize,
    pub dstate: usize,
    pub ngroups: usize,
    pub u: &'a [f64],
    pub delta: &'a [f64],
    pub a: &'a [f64],
    pub b: &'a [f64],
    pub c: &'a [f64],
    pub d: Option<&'a [f64]>,
    pub z: Option<&'a [f64]>,
    pub delta_bias: Option<&'a [f64]>,
    pub initial_state: Option<&'a [f64]>,
    pub delta_softplus: bool,
}

/// Returns `(y [batch, seqlen, dim], final_state [batch, dim, dstate])`.
pub fn selective_scan(p: &SelectiveScanInputs) -> (Vec<f64>, Vec<f64>) {
    let (bs, l, dim, n, g) = (p.batch, p.seqlen, p.dim, p.dstate, p.ngroups);
    let per_group = dim / g;
    let mut y = vec![0.0; bs * l * dim];
    let mut state = match p.initial_state {
        Some(s) => s.to_vec(),
        None => vec![0.0; bs * dim * n],
    };
    for b in 0..bs {
        for d in 0..dim {
            let grp = d / per_group;
            let h = &mut state[(b * dim + d) * n..(b * dim + d + 1) * n];
            for t in 0..l {
                let i = (b * l + t) * dim + d;
                let mut dt = p.delta[i] + p.delta_bias.map_or(0.0, |db| db[d]);
                if p.delta_softplus {
                    dt = softplus(dt);
                }
                let u = p.u[i];
                let bc = ((b * l + t) * g + grp) * n;
                let (a_row, b_row, c_row) = (&p.a[d * n..][..n], &p.b[bc..][..n], &p.c[bc..][..n]);
                let mut acc = 0.0;
                for (k, hk) in h.iter_mut().enumerate() {
                    *hk = (dt * a_row[k]).exp() * *hk + dt * b_row[k] * u;
                    acc += c_row[k] * *hk;
                }
                if let Some(dd) = p.d {
                    acc += dd[d] * u;
                }
                if let Some(z) = p.z {
                    acc *= silu(z[i]);
                }
                y[i] = acc;
            }
        }
    }
    (y, state)
}
