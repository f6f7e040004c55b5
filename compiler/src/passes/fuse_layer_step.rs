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
//! The anchor becomes the step node in place (its readers, the next layer, need no rewiring) and
//! the two state outputs are redirected to the step's. Every other value of the layer must be
//! read only inside the layer, or folding it would change what its readers see. Only after the
//! scan and conv fusions (the rule needs their flags and folded inputs), so it is last in `RULES`.

use super::{is_vector_const, operands_where, Rule};
use crate::ir::{conv_slots, scan_slots, step_slots};
use crate::ir::{validate, Dim, Elem, Graph, MambaLayerStepConfig as Step, NodeId, Op, ValueRef};

pub struct FuseLayerStep;

impl Rule for FuseLayerStep {
    fn name(&self) -> &'static str {
        "fuse_layer_step"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::Add) {
            return false;
        }
        let (Some(a), Some(b)) = (g.input(node, 0), g.input(node, 1)) else { return false };
        let Some(m) = match_layer(g, a, b).or_else(|| match_layer(g, b, a)) else { return false };
        if !m.absorbable(g, node) || !one_token(g, m.inputs[step_slots::RESIDUAL].expect("matched")) {
            return false;
        }
        for slot in 0..2 {
            g.set_input(node, slot, None);
        }
        g.node_mut(node).op = Op::MambaLayerStep(m.cfg.clone());
        for (slot, v) in m.inputs.iter().enumerate() {
            g.set_input(node, slot, *v);
        }
        g.replace_uses(ValueRef { node: m.conv, output: 1 }, ValueRef { node, output: 1 });
        g.replace_uses(ValueRef { node: m.scan, output: 1 }, ValueRef { node, output: 2 });
        true
    }
}

/// A matched layer: the step's inputs, and the nodes it replaces.
struct Layer {
    cfg: Step,
    inputs: [Option<ValueRef>; 15],
    conv: NodeId,
    scan: NodeId,
    /// Every node of the layer but the anchor.
    nodes: Vec<NodeId>,
}

impl Layer {
    /// Whether every value of the layer's nodes is read only by the layer (the state outputs
    /// excepted: the step produces them).
    fn absorbable(&self, g: &Graph, anchor: NodeId) -> bool {
        let inside = |n: NodeId| n == anchor || self.nodes.contains(&n);
        self.nodes.iter().all(|&n| {
            (0..g.op(n).num_outputs()).all(|output| {
                let v = ValueRef { node: n, output };
                let state = output == 1 && (n == self.conv || n == self.scan);
                state || (g.users(v).iter().all(|(u, _)| inside(*u)) && !g.outputs().iter().any(|o| o.value == v))
            })
        })
    }
}

/// Whether `residual` is a float32 `[batch, 1, hidden]`: the step is one token a sequence, on
/// the float32 stream. Types need the whole graph inferred, so this runs only on a matched layer.
fn one_token(g: &Graph, residual: ValueRef) -> bool {
    let Ok(vg) = validate(g) else { return false };
    let ty = vg.type_of(residual);
    ty.elem == Elem::F32 && ty.shape.0.get(1) == Some(&Dim::Known(1))
}

/// The node producing `v` when its op satisfies `pred` (and `v` is its output 0).
fn producer(g: &Graph, v: ValueRef, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
    (v.output == 0 && pred(g.op(v.node))).then_some(v.node)
}

/// `v`, or the input of the `Cast` producing it.
fn through_cast(g: &Graph, v: ValueRef, nodes: &mut Vec<NodeId>) -> Option<ValueRef> {
    match producer(g, v, |op| matches!(op, Op::Cast { .. })) {
        Some(c) => {
            nodes.push(c);
            g.input(c, 0)
        }
        None => Some(v),
    }
}

/// `MatMul(x, w) [+ vector const]` → (x, w, bias).
fn linear(g: &Graph, v: ValueRef, nodes: &mut Vec<NodeId>) -> Option<(ValueRef, ValueRef, Option<ValueRef>)> {
    let (mm, bias) = match producer(g, v, |op| matches!(op, Op::Add)) {
        Some(add) => {
            let (bias, y) = operands_where(g, add, |x| is_vector_const(g, x, None))?;
            nodes.push(add);
            (y, Some(bias))
        }
        None => (v, None),
    };
    let mm = producer(g, mm, |op| matches!(op, Op::MatMul))?;
    nodes.push(mm);
    Some((g.input(mm, 0)?, g.input(mm, 1)?, bias))
}

/// The `SplitLast` producing `v`, if its sizes satisfy `pred`.
fn split_of(g: &Graph, v: ValueRef, pred: impl Fn(&[usize]) -> bool) -> Option<NodeId> {
    matches!(g.op(v.node), Op::SplitLast { sizes } if pred(sizes)).then_some(v.node)
}

/// `Unsqueeze(axis 2)` of output `k` of `split`.
fn unsqueezed(g: &Graph, v: ValueRef, split: NodeId, k: usize, nodes: &mut Vec<NodeId>) -> Option<()> {
    let u = producer(g, v, |op| matches!(op, Op::Unsqueeze { axis: 2 }))?;
    (g.input(u, 0)? == ValueRef { node: split, output: k }).then(|| nodes.push(u))
}

/// Matches the layer whose residual `Add` reads `r` and `out`.
fn match_layer(g: &Graph, r: ValueRef, out: ValueRef) -> Option<Layer> {
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
    Some(Layer { cfg: Step { eps: *eps }, inputs, conv, scan, nodes })
}
