//! The Mamba-2 block (transformers' `Mamba2Mixer`, mamba_ssm's `Mamba2`), per layer with
//! `v = RMSNorm(h)`, I = heads * head_dim, G groups of N state channels:
//!
//! ```text
//! z, xBC, dt = split(in_proj(v))                        [I], [I + 2 G N], [heads]
//! xBC   = SiLU(CausalConv1d(xBC, w) + b)                depthwise over x, B and C together
//! x, B, C = split(xBC)  ->  [B, L, heads, P], [B, L, G, N], [B, L, G, N]
//! y     = SsdScan(x, dt, A = -exp(A_log), B, C, D, dt_bias)   dt = clamp(softplus(dt + dt_bias))
//! y     = GatedRmsNorm(y, z) over groups of I / G       norm(y * SiLU(z)) * w, in float32
//! h     = h + out_proj(y)
//! ```

use super::{names, Lowerer};
use crate::checkpoint::Mamba2Params;
use crate::ir::{ConstTransform, Dim, Elem, GatedRmsNormConfig, Op, SsdScanConfig, ValueRef, ValueType};

impl Lowerer<'_> {
    pub(super) fn layer_mamba2(&mut self, i: usize, residual: ValueRef, m2: &Mamba2Params) -> ValueRef {
        let cfg = self.cfg;
        let p = format!("backbone.layers.{i}");
        let m = format!("{p}.mixer");
        let (hid, inter, n) = (cfg.hidden_size, cfg.intermediate_size, cfg.state_size);
        let (heads, head_dim, groups) = (m2.num_heads, m2.head_dim, m2.n_groups);
        let conv_dim = m2.conv_dim(cfg);
        let t = self.t();

        let v = self.rms_norm(&format!("{p}.norm"), residual);
        let proj = self.linear(&format!("{m}.in_proj"), v, hid, m2.in_proj_dim(cfg), cfg.use_bias);
        let split = self.g.add_op(
            format!("{m}.split_z_xbc_dt"),
            Op::SplitLast { sizes: vec![inter, conv_dim, heads] },
            &[proj],
        );
        let (z, xbc, dt) = (
            ValueRef { node: split, output: 0 },
            ValueRef { node: split, output: 1 },
            ValueRef { node: split, output: 2 },
        );

        // One conv over x, B and C together, as both implementations do.
        let xc = self.causal_conv(i, &m, xbc, conv_dim);
        let gn = groups * n;
        let split = self.g.add_op(format!("{m}.split_x_b_c"), Op::SplitLast { sizes: vec![inter, gn, gn] }, &[xc]);
        let heads_of = |this: &mut Self, name: String, v: ValueRef, tail: Vec<usize>| {
            this.op(name, Op::Reshape { keep: 2, tail }, &[v])
        };
        let x = heads_of(self, format!("{m}.x_heads"), ValueRef { node: split, output: 0 }, vec![heads, head_dim]);
        let b = heads_of(self, format!("{m}.B_groups"), ValueRef { node: split, output: 1 }, vec![groups, n]);
        let c = heads_of(self, format!("{m}.C_groups"), ValueRef { node: split, output: 2 }, vec![groups, n]);

        let a_log = self.weight(&format!("{m}.A_log"), &[heads], Elem::F32, ConstTransform::AsStored);
        let a = self.op(format!("{m}.A_log.exp"), Op::Exp, &[a_log]);
        let a = self.op(format!("{m}.A"), Op::Neg, &[a]);
        let d = self.weight(&format!("{m}.D"), &[heads], Elem::F32, ConstTransform::AsStored);
        let dt_bias = self.weight(&format!("{m}.dt_bias"), &[heads], Elem::F32, ConstTransform::AsStored);
        let ssm_state = self.opts.stateful.then(|| {
            let dims = vec![Dim::sym("batch"), Dim::Known(heads), Dim::Known(head_dim), Dim::Known(n)];
            self.input(names::ssm_state(i), ValueType::new(Elem::F32, dims))
        });
        let (dt_min, dt_max) = m2.time_step_limit;
        let scan = self.g.add(
            format!("{m}.ssd_scan"),
            Op::SsdScan(SsdScanConfig {
                dt_softplus: true,
                dt_min,
                dt_max,
                final_state: self.opts.stateful,
                slices: Default::default(),
                dims: Default::default(),
            }),
            &[Some(x), Some(dt), Some(a), Some(b), Some(c), Some(d), Some(dt_bias), ssm_state],
        );
        if self.opts.stateful {
            self.state_outputs.push((names::ssm_state_out(i), ValueRef { node: scan, output: 1 }));
        }
        let y = self.op(format!("{m}.y_flat"), Op::Reshape { keep: 2, tail: vec![inter] }, &[scan.into()]);

        // transformers and mamba_ssm normalise in float32 whatever the model's type.
        let s = self.stream();
        let y = self.cast(format!("{m}.y_to_f32"), y, t, s);
        let z = self.cast(format!("{m}.z_to_f32"), z, t, s);
        let w = self.weight(&format!("{m}.norm.weight"), &[inter], s, ConstTransform::AsStored);
        let norm = GatedRmsNormConfig {
            eps: cfg.layer_norm_epsilon,
            group_size: inter / groups,
            norm_before_gate: m2.norm_before_gate,
        };
        let y = self.op(format!("{m}.norm"), Op::GatedRmsNorm(norm), &[y, z, w]);
        let y = self.cast(format!("{m}.norm.to_t"), y, s, t);
        let out = self.linear(&format!("{m}.out_proj"), y, inter, hid, cfg.use_bias);
        let out = self.cast(format!("{m}.out_to_stream"), out, t, s);
        self.op(format!("{p}.residual"), Op::Add, &[residual, out])
    }
}
