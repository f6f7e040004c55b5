//! `mambac.SsdScan` (Mamba-2) → opset 27's `LinearAttention` (update rule "gated", one decay a
//! head) and ordinary ops (`--ops standard`). Head h of the scan is head h of the attention, its
//! state transposed (`[d_k, d_v]` = `[N, P]` where the scan keeps `[P, N]`):
//!
//! ```text
//! heads = H, d_k = N (state size), d_v = P (head_dim)
//! dt = clip(softplus(dt + dt_bias), dt_min, dt_max)     [B, L, H], in float32
//! query = C, key = B (head h reads group h / (H / G), expanded to [B, L, H * N])
//! value = dt * x [B, L, H * P];  decay = dt * A [B, L, H]  (log space: exp(dt A))
//! y = LinearAttention(...) (scale 1) + D * x
//! state [B, H, P, N] = Transpose(LinearAttention's [B, H, N, P])
//! ```
//!
//! Unlike Mamba-1's rewrite nothing is materialised per state channel but B and C's expansion
//! from groups to heads: the decay is one value a head.

use super::standard_lowering::Lowering;
use super::{types_of, Rule};
use crate::ir::{ssd_slots, Elem, Graph, LinearAttentionConfig, NodeId, Op, SsdScanConfig, ValueRef};

pub struct SsdScanToLinearAttention;

/// `[B, H, P, N]` ↔ `[B, H, N, P]`.
const SWAP_STATE: [usize; 4] = [0, 1, 3, 2];

impl Rule for SsdScanToLinearAttention {
    fn name(&self) -> &'static str {
        "ssd_scan_to_linear_attention"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::SsdScan(cfg) = g.op(node).clone() else { return false };
        // Standard ops read whole tensors: a sliced read (never in a --ops standard export) stays,
        // and pipeline::standard_ops_only refuses it.
        if !cfg.slices.0.is_empty() {
            return false;
        }
        let ins = g.node_inputs(node);
        let req = |slot: usize| ins[slot];
        let (Some(x), Some(dt), Some(a), Some(b), Some(c)) =
            (req(ssd_slots::X), req(ssd_slots::DT), req(ssd_slots::A), req(ssd_slots::B), req(ssd_slots::C))
        else {
            return false;
        };
        let Some(types) = types_of(g, &[x, b]) else { return false };
        let t = types[0].elem;
        let dims = |k: usize, i: usize| types[k].shape.0[i].known();
        let (Some(heads), Some(head_dim), Some(groups), Some(n)) = (dims(0, 2), dims(0, 3), dims(1, 2), dims(1, 3))
        else {
            return false;
        };
        let name = g.node(node).name.clone();
        let mut l = Lowering { g, name: name.clone(), t };

        let dt = step_sizes(&mut l, &cfg, dt, ins[ssd_slots::DT_BIAS]);
        let decay = l.op("decay.f32", Op::Mul, &[dt, a]);
        let decay = l.cast("decay", decay, Elem::F32, t);
        let dt = l.cast("dt", dt, Elem::F32, t);
        let dt_col = l.op("dt_per_value", Op::Unsqueeze { axis: 3 }, &[dt]);
        let value = l.op("value_4d", Op::Mul, &[dt_col, x]);
        let value = l.op("value", Op::Reshape { keep: 2, tail: vec![heads * head_dim] }, &[value]);
        let key = l.per_head("key", b, groups, heads, n);
        let query = l.per_head("query", c, groups, heads, n);
        let past = ins[ssd_slots::INITIAL_STATE]
            .map(|s| l.op("past_state", Op::Transpose { perm: SWAP_STATE.to_vec() }, &[s]));
        let la = l.g.add(
            name.clone(),
            Op::LinearAttention(LinearAttentionConfig { heads, scale: 1.0 }),
            &[Some(query), Some(key), Some(value), past, Some(decay)],
        );
        let mut y = l.op("y_heads", Op::Reshape { keep: 2, tail: vec![heads, head_dim] }, &[la.into()]);
        if let Some(d) = ins[ssd_slots::D] {
            let d = l.in_t("D.cast", d);
            let d = l.op("D_per_head", Op::Unsqueeze { axis: 1 }, &[d]);
            let dx = l.op("D_skip", Op::Mul, &[x, d]);
            y = l.op("add_D_skip", Op::Add, &[y, dx]);
        }
        l.g.replace_uses(node.into(), y);
        if cfg.final_state {
            let la_state = ValueRef { node: la, output: 1 };
            let fin = l.op("final_state", Op::Transpose { perm: SWAP_STATE.to_vec() }, &[la_state]);
            let fin = l.state_f32(fin, past.is_some());
            l.g.replace_uses(ValueRef { node, output: 1 }, fin);
        }
        true
    }
}

/// dt `[B, L, H]` of T → float32 `clip(softplus(dt + dt_bias), dt_min, dt_max)`, as the scan
/// computes it: in float32 (dt is one value a head a token, so this costs little), and with no
/// Clip where the limits change nothing (softplus is never negative).
fn step_sizes(l: &mut Lowering<'_>, cfg: &SsdScanConfig, dt: ValueRef, bias: Option<ValueRef>) -> ValueRef {
    let t = l.t;
    let mut dt = l.cast("dt.f32", dt, t, Elem::F32);
    if let Some(bias) = bias {
        dt = l.op("dt_bias", Op::Add, &[dt, bias]);
    }
    if cfg.dt_softplus {
        dt = l.op("softplus", Op::Softplus, &[dt]);
    }
    let no_floor = cfg.dt_min == f64::NEG_INFINITY || (cfg.dt_softplus && cfg.dt_min <= 0.0);
    if !(no_floor && cfg.dt_max == f64::INFINITY) {
        dt = l.op("dt_limit", Op::Clip { min: cfg.dt_min, max: cfg.dt_max }, &[dt]);
    }
    dt
}
