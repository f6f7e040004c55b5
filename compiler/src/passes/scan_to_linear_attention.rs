//! `mambac.SelectiveScan` → opset 27's `LinearAttention` (update rule "gated", per-key decay) and
//! ordinary ops (`--ops standard`). The scan is that recurrence with one head a channel:
//!
//! ```text
//! heads = dim, d_k = dstate, d_v = 1;  dt = softplus(delta + delta_bias)
//! query = C, key = B (each channel reads its group's, expanded to [B, L, dim * dstate])
//! value = dt * u [B, L, dim];  decay = dt * A [B, L, dim * dstate]  (log space: exp(dt A))
//! y = LinearAttention(...) (scale 1) + D * u;  y *= silu(z)
//! state [B, dim, dstate] = LinearAttention's [B, dim, dstate, 1]
//! ```
//!
//! Query, key and decay are materialised at dstate values a channel a token: dstate times the
//! activations the scan reads (docs/standard-onnx.md).

use super::standard_lowering::Lowering;
use super::{types_of, Rule};
use crate::ir::{scan_slots, Graph, LinearAttentionConfig, NodeId, Op, ValueRef};

pub struct ScanToLinearAttention;

impl Rule for ScanToLinearAttention {
    fn name(&self) -> &'static str {
        "scan_to_linear_attention"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::SelectiveScan(cfg) = g.op(node).clone() else { return false };
        // Standard ops read whole tensors: a sliced read (never in a --ops standard export) stays,
        // and pipeline::standard_ops_only refuses it.
        if !cfg.slices.0.is_empty() {
            return false;
        }
        let ins = g.node_inputs(node);
        let req = |slot: usize| ins[slot];
        let (Some(u), Some(delta), Some(a), Some(b), Some(c)) =
            (req(scan_slots::U), req(scan_slots::DELTA), req(scan_slots::A), req(scan_slots::B), req(scan_slots::C))
        else {
            return false;
        };
        let Some(types) = types_of(g, &[u, b]) else { return false };
        let t = types[0].elem;
        let (Some(dim), Some(groups), Some(dstate)) =
            (types[0].shape.0[2].known(), types[1].shape.0[2].known(), types[1].shape.0[3].known())
        else {
            return false;
        };
        let name = g.node(node).name.clone();
        let mut l = Lowering { g, name: name.clone(), t };

        let mut dt = delta;
        if let Some(bias) = ins[scan_slots::DELTA_BIAS] {
            let bias = l.in_t("delta_bias.cast", bias);
            dt = l.op("delta_bias", Op::Add, &[dt, bias]);
        }
        if cfg.delta_softplus {
            dt = l.op("softplus", Op::Softplus, &[dt]);
        }
        let value = l.op("value", Op::Mul, &[dt, u]);
        let a = l.in_t("A.cast", a);
        let dt_col = l.op("dt_per_key", Op::Unsqueeze { axis: 3 }, &[dt]);
        let decay = l.op("decay_4d", Op::Mul, &[dt_col, a]);
        let decay = l.op("decay", Op::Reshape { keep: 2, tail: vec![dim * dstate] }, &[decay]);
        let key = l.per_head("key", b, groups, dim, dstate);
        let query = l.per_head("query", c, groups, dim, dstate);
        let past = ins[scan_slots::INITIAL_STATE].map(|s| l.op("past_state", Op::Unsqueeze { axis: 3 }, &[s]));
        let la = l.g.add(
            name.clone(),
            Op::LinearAttention(LinearAttentionConfig { heads: dim, scale: 1.0 }),
            &[Some(query), Some(key), Some(value), past, Some(decay)],
        );
        let mut y: ValueRef = la.into();
        if let Some(d) = ins[scan_slots::D] {
            let d = l.in_t("D.cast", d);
            let du = l.op("D_skip", Op::Mul, &[u, d]);
            y = l.op("add_D_skip", Op::Add, &[y, du]);
        }
        if let Some(z) = ins[scan_slots::Z] {
            let gate = l.op("z_silu", Op::Silu, &[z]);
            y = l.op("gate", Op::Mul, &[y, gate]);
        }
        l.g.replace_uses(node.into(), y);
        if cfg.final_state {
            let la_state = ValueRef { node: la, output: 1 };
            let fin = l.op("final_state", Op::Reshape { keep: 1, tail: vec![dim, dstate] }, &[la_state]);
            let fin = l.state_f32(fin, past.is_some());
            l.g.replace_uses(ValueRef { node, output: 1 }, fin);
        }
        true
    }
}
