//! One layer of the fused stateful graph, when seqlen is fixed to 1 (the decode lowering), →
//! one `MambaLayerStep` (docs/decode-graph.md). The anchor is the layer's residual `Add`:
//!
//! ```text
//! Add(r, [Cast](MatMul(SelectiveScan(u = xc, delta = MatMul(dt, W_dt), A, B, C, D?, z,
//!                                    delta_bias?, ssm_state; softplus), W_out) [+ b_out]))
//!   xc      = CausalConv1d(x, w, b?, conv_state; silu)
//!   x, z    = SplitLast([I, I], MatMul([Cast](RmsNorm(r, norm_w)), W_in) [+ b_in])
//!   dt, B, C = SplitLast([R, N, N], MatMul(xc, W_x)), B and C through Unsqueeze(2)
//! ```
//!
//! The rewrite is `layer_match::fold_layer`'s, shared with `fuse_mamba2_layer_step`. Only after
//! the scan and conv fusions (the rule needs their flags and folded inputs), so it is last in
//! `RULES`.

use super::layer_match::{fold_layer, linear, producer, split_of, through_cast, MatchedLayer};
use super::Rule;
use crate::ir::{conv_slots, scan_slots, step_slots};
use crate::ir::{Graph, MambaLayerStepConfig as Step, NodeId, Op, ValueRef};

pub struct FuseLayerStep;

impl Rule for FuseLayerStep {
    fn name(&self) -> &'static str {
        "fuse_layer_step"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        fold_layer(g, node, match_layer)
    }
}

/// `Unsqueeze(axis 2)` of output `k` of `split`.
fn unsqueezed(g: &Graph, v: ValueRef, split: NodeId, k: usize, nodes: &mut Vec<NodeId>) -> Option<()> {
    let u = producer(g, v, |op| matches!(op, Op::Unsqueeze { axis: 2 }))?;
    (g.input(u, 0)? == ValueRef { node: split, output: k }).then(|| nodes.push(u))
}

/// Matches the layer whose residual `Add` reads `r` and `out`.
fn match_layer(g: &Graph, r: ValueRef, out: ValueRef) -> Option<MatchedLayer> {
    let mut nodes = Vec::new();
    let out = through_cast(g, out, &mut nodes)?;
    let (y, w_out, b_out) = linear(g, out, &mut nodes)?;
    let scan = producer(g, y, |op| matches!(op, Op::SelectiveScan(c) if c.delta_softplus && c.final_state))?;
    let conv_v = g.input(scan, scan_slots::U)?;
    let conv = producer(g, conv_v, |op| matches!(op, Op::CausalConv1d(c) if c.silu && c.final_state))?;
    nodes.extend([scan, conv]);

    // x and z: the two halves of in_proj's output, from the norm of this layer's residual.
    let (x, z) = (g.input(conv, conv_slots::X)?, g.input(scan, scan_slots::Z)?);
    let split_xz = split_of(g, x, |s| s.len() == 2 && s[0] == s[1])?;
    if (x.output, z) != (0, ValueRef { node: split_xz, output: 1 }) {
        return None;
    }
    nodes.push(split_xz);
    let (v, w_in, b_in) = linear(g, g.input(split_xz, 0)?, &mut nodes)?;
    let v = through_cast(g, v, &mut nodes)?;
    let norm = producer(g, v, |op| matches!(op, Op::RmsNorm { .. }))?;
    let Op::RmsNorm { eps } = g.op(norm) else { return None };
    if g.input(norm, 0)? != r {
        return None;
    }
    nodes.push(norm);

    // dt, B and C: x_proj of the conv's output, split.
    let dt = g.input(scan, scan_slots::DELTA)?;
    let dt_mm = producer(g, dt, |op| matches!(op, Op::MatMul))?;
    let dt_low = g.input(dt_mm, 0)?;
    let split_dbc = split_of(g, dt_low, |s| s.len() == 3 && s[1] == s[2])?;
    if dt_low.output != 0 {
        return None;
    }
    nodes.extend([dt_mm, split_dbc]);
    unsqueezed(g, g.input(scan, scan_slots::B)?, split_dbc, 1, &mut nodes)?;
    unsqueezed(g, g.input(scan, scan_slots::C)?, split_dbc, 2, &mut nodes)?;
    let (xc, w_x, no_bias) = linear(g, g.input(split_dbc, 0)?, &mut nodes)?;
    if xc != conv_v || no_bias.is_some() {
        return None;
    }

    let mut inputs = [None; 15];
    inputs[step_slots::CONV_STATE] = Some(g.input(conv, conv_slots::INITIAL_STATE)?);
    inputs[step_slots::SSM_STATE] = Some(g.input(scan, scan_slots::INITIAL_STATE)?);
    inputs[step_slots::RESIDUAL] = Some(r);
    inputs[step_slots::NORM_WEIGHT] = g.input(norm, 1);
    inputs[step_slots::IN_PROJ_WEIGHT] = Some(w_in);
    inputs[step_slots::IN_PROJ_BIAS] = b_in;
    inputs[step_slots::CONV_WEIGHT] = g.input(conv, conv_slots::WEIGHT);
    inputs[step_slots::CONV_BIAS] = g.input(conv, conv_slots::BIAS);
    inputs[step_slots::X_PROJ_WEIGHT] = Some(w_x);
    inputs[step_slots::DT_PROJ_WEIGHT] = g.input(dt_mm, 1);
    inputs[step_slots::DT_BIAS] = g.input(scan, scan_slots::DELTA_BIAS);
    inputs[step_slots::A] = g.input(scan, scan_slots::A);
    inputs[step_slots::D] = g.input(scan, scan_slots::D);
    inputs[step_slots::OUT_PROJ_WEIGHT] = Some(w_out);
    inputs[step_slots::OUT_PROJ_BIAS] = b_out;
    let op = Op::MambaLayerStep(Step { eps: *eps });
    Some(MatchedLayer { op, inputs: inputs.to_vec(), residual: r, conv, scan, nodes })
}
