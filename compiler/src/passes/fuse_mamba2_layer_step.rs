//! One Mamba-2 layer of the fused stateful graph, when seqlen is fixed to 1 (the decode lowering),
//! → one `Mamba2LayerStep` (docs/decode-graph.md "Mamba2LayerStep"). The anchor is the layer's
//! residual `Add`:
//!
//! ```text
//! Add(r, [Cast](MatMul([Cast](GatedRmsNorm([Cast](Reshape(SsdScan(x, dt, A, B, C, D?, dt_bias?,
//!                                  ssm_state; softplus, dt_limit))), [Cast](z), w_gate)), W_out) [+ b_out]))
//!   x, B, C   = Reshape(keep 2, [heads, P] | [G, N] | [G, N]) of SplitLast([I, G N, G N], xBC')
//!   xBC'      = CausalConv1d(xBC, w, b?, conv_state; silu)
//!   z, xBC, dt = SplitLast([I, I + 2 G N, heads], MatMul([Cast](RmsNorm(r, norm_w)), W_in) [+ b_in])
//! ```
//!
//! The gated norm's groups must be the scan's (`group_size * G = I`, the op derives one from the
//! other) and both norms must share one epsilon (the op's one `epsilon`); else the rule leaves the
//! layer as it is. The rewrite is `layer_match::fold_layer`'s. Last in `RULES`, after the conv
//! fusions it needs.

use super::layer_match::{fold_layer, linear, producer, split_of, through_cast, MatchedLayer};
use super::Rule;
use crate::ir::{conv_slots, ssd_slots, step2_slots as slots};
use crate::ir::{Graph, Mamba2LayerStepConfig as Step, NodeId, Op, ValueRef};

pub struct FuseMamba2LayerStep;

impl Rule for FuseMamba2LayerStep {
    fn name(&self) -> &'static str {
        "fuse_mamba2_layer_step"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        fold_layer(g, node, match_layer)
    }
}

/// `Reshape(keep 2, tail of `len` dims)` producing `v`: its input and its tail.
fn reshape(g: &Graph, v: ValueRef, len: usize, nodes: &mut Vec<NodeId>) -> Option<(ValueRef, Vec<usize>)> {
    let n = producer(g, v, |op| matches!(op, Op::Reshape { keep: 2, tail } if tail.len() == len))?;
    nodes.push(n);
    match g.op(n) {
        Op::Reshape { tail, .. } => Some((g.input(n, 0)?, tail.clone())),
        _ => None,
    }
}

/// Matches the layer whose residual `Add` reads `r` and `out`.
fn match_layer(g: &Graph, r: ValueRef, out: ValueRef) -> Option<MatchedLayer> {
    let mut nodes = Vec::new();
    let out = through_cast(g, out, &mut nodes)?;
    let (normed, w_out, b_out) = linear(g, out, &mut nodes)?;
    let normed = through_cast(g, normed, &mut nodes)?;
    let gnorm = producer(g, normed, |op| matches!(op, Op::GatedRmsNorm(_)))?;
    let Op::GatedRmsNorm(gate_cfg) = g.op(gnorm) else { return None };
    nodes.push(gnorm);
    let y_flat = through_cast(g, g.input(gnorm, 0)?, &mut nodes)?;
    let z = through_cast(g, g.input(gnorm, 1)?, &mut nodes)?;

    // y: the scan's output, flattened back to [.., I].
    let (y, _) = reshape(g, y_flat, 1, &mut nodes)?;
    let scan = producer(g, y, |op| matches!(op, Op::SsdScan(c) if c.dt_softplus && c.final_state))?;
    let Op::SsdScan(scan_cfg) = g.op(scan) else { return None };
    nodes.push(scan);

    // x, B and C: the conv's output split and viewed as heads and groups.
    let (x, heads_tail) = reshape(g, g.input(scan, ssd_slots::X)?, 2, &mut nodes)?;
    let (b, b_tail) = reshape(g, g.input(scan, ssd_slots::B)?, 2, &mut nodes)?;
    let (c, c_tail) = reshape(g, g.input(scan, ssd_slots::C)?, 2, &mut nodes)?;
    let split_xbc = split_of(g, x, |s| s.len() == 3 && s[1] == s[2])?;
    let part = |node: NodeId, k: usize| ValueRef { node, output: k };
    if [x, b, c] != [0, 1, 2].map(|k| part(split_xbc, k)) {
        return None;
    }
    let ngroups = b_tail[0];
    let inner = heads_tail[0] * heads_tail[1];
    if b_tail != c_tail || gate_cfg.group_size * ngroups != inner {
        return None;
    }
    nodes.push(split_xbc);
    let conv_v = g.input(split_xbc, 0)?;
    let conv = producer(g, conv_v, |op| matches!(op, Op::CausalConv1d(c) if c.silu && c.final_state))?;
    nodes.push(conv);

    // z, xBC and dt: the three parts of in_proj's output, from the norm of this layer's residual.
    let xbc = g.input(conv, conv_slots::X)?;
    let split_in = split_of(g, xbc, |s| s.len() == 3)?;
    if (xbc.output, z, g.input(scan, ssd_slots::DT)?) != (1, part(split_in, 0), part(split_in, 2)) {
        return None;
    }
    nodes.push(split_in);
    let (v, w_in, b_in) = linear(g, g.input(split_in, 0)?, &mut nodes)?;
    let v = through_cast(g, v, &mut nodes)?;
    let norm = producer(g, v, |op| matches!(op, Op::RmsNorm { .. }))?;
    let Op::RmsNorm { eps } = g.op(norm) else { return None };
    if g.input(norm, 0)? != r || *eps != gate_cfg.eps {
        return None;
    }
    nodes.push(norm);

    let mut inputs = vec![None; slots::INPUT_NAMES.len()];
    inputs[slots::CONV_STATE] = Some(g.input(conv, conv_slots::INITIAL_STATE)?);
    inputs[slots::SSM_STATE] = Some(g.input(scan, ssd_slots::INITIAL_STATE)?);
    inputs[slots::RESIDUAL] = Some(r);
    inputs[slots::NORM_WEIGHT] = g.input(norm, 1);
    inputs[slots::IN_PROJ_WEIGHT] = Some(w_in);
    inputs[slots::IN_PROJ_BIAS] = b_in;
    inputs[slots::CONV_WEIGHT] = g.input(conv, conv_slots::WEIGHT);
    inputs[slots::CONV_BIAS] = g.input(conv, conv_slots::BIAS);
    inputs[slots::DT_BIAS] = g.input(scan, ssd_slots::DT_BIAS);
    inputs[slots::A] = g.input(scan, ssd_slots::A);
    inputs[slots::D] = g.input(scan, ssd_slots::D);
    inputs[slots::GATE_NORM_WEIGHT] = g.input(gnorm, 2);
    inputs[slots::OUT_PROJ_WEIGHT] = Some(w_out);
    inputs[slots::OUT_PROJ_BIAS] = b_out;
    let cfg = Step {
        eps: *eps,
        dt_min: scan_cfg.dt_min,
        dt_max: scan_cfg.dt_max,
        norm_before_gate: gate_cfg.norm_before_gate,
    };
    Some(MatchedLayer { op: Op::Mamba2LayerStep(cfg), inputs, residual: r, conv, scan, nodes })
}
