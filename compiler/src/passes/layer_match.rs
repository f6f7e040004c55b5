//! Matchers the layer-step rules share (`fuse_layer_step`, `fuse_mamba2_layer_step`): both fold
//! one fused layer of the decode lowering, anchored at its residual `Add`, into one node.

use super::{is_vector_const, operands_where};
use crate::ir::{validate, Dim, Elem, Graph, NodeId, Op, ValueRef};

/// A matched layer: the step op and its inputs, and the nodes it replaces.
pub(super) struct MatchedLayer {
    pub op: Op,
    pub inputs: Vec<Option<ValueRef>>,
    /// The residual stream the layer reads (one of the anchor's operands).
    pub residual: ValueRef,
    /// The conv and the scan, whose state outputs (output 1) become the step's outputs 1 and 2.
    pub conv: NodeId,
    pub scan: NodeId,
    /// Every node of the layer but the anchor.
    pub nodes: Vec<NodeId>,
}

/// The rules' `apply`: when `anchor` is an `Add` whose operands `matcher` takes for a layer
/// (residual first, either order), and the layer can be folded (see [`absorbable`], [`one_token`]),
/// the anchor becomes the step node in place (its readers, the next layer, need no rewiring) and
/// the two state outputs are redirected to the step's.
pub(super) fn fold_layer(
    g: &mut Graph,
    anchor: NodeId,
    matcher: impl Fn(&Graph, ValueRef, ValueRef) -> Option<MatchedLayer>,
) -> bool {
    if !matches!(g.op(anchor), Op::Add) {
        return false;
    }
    let (Some(a), Some(b)) = (g.input(anchor, 0), g.input(anchor, 1)) else { return false };
    let Some(m) = matcher(g, a, b).or_else(|| matcher(g, b, a)) else { return false };
    if !absorbable(g, anchor, &m.nodes, [m.conv, m.scan]) || !one_token(g, m.residual) {
        return false;
    }
    for slot in 0..2 {
        g.set_input(anchor, slot, None);
    }
    g.node_mut(anchor).op = m.op;
    for (slot, v) in m.inputs.iter().enumerate() {
        g.set_input(anchor, slot, *v);
    }
    g.replace_uses(ValueRef { node: m.conv, output: 1 }, ValueRef { node: anchor, output: 1 });
    g.replace_uses(ValueRef { node: m.scan, output: 1 }, ValueRef { node: anchor, output: 2 });
    true
}

/// Whether every value of the layer's `nodes` is read only by the layer (the anchor or `nodes`):
/// folding them must not change what any other reader sees. Output 1 of `states` (the conv's and
/// the scan's final states) is excepted: the step produces those.
fn absorbable(g: &Graph, anchor: NodeId, nodes: &[NodeId], states: [NodeId; 2]) -> bool {
    let inside = |n: NodeId| n == anchor || nodes.contains(&n);
    nodes.iter().all(|&n| {
        (0..g.op(n).num_outputs()).all(|output| {
            let v = ValueRef { node: n, output };
            let state = output == 1 && states.contains(&n);
            state || (g.users(v).iter().all(|(u, _)| inside(*u)) && !g.outputs().iter().any(|o| o.value == v))
        })
    })
}

/// Whether `residual` is a float32 `[batch, 1, hidden]`: the step is one token a sequence, on
/// the float32 stream. Types need the whole graph inferred, so this runs only on a matched layer.
fn one_token(g: &Graph, residual: ValueRef) -> bool {
    let Ok(vg) = validate(g) else { return false };
    let ty = vg.type_of(residual);
    ty.elem == Elem::F32 && ty.shape.0.get(1) == Some(&Dim::Known(1))
}

/// The node producing `v` when its op satisfies `pred` (and `v` is its output 0).
pub(super) fn producer(g: &Graph, v: ValueRef, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
    (v.output == 0 && pred(g.op(v.node))).then_some(v.node)
}

/// `v`, or the input of the `Cast` producing it.
pub(super) fn through_cast(g: &Graph, v: ValueRef, nodes: &mut Vec<NodeId>) -> Option<ValueRef> {
    match producer(g, v, |op| matches!(op, Op::Cast { .. })) {
        Some(c) => {
            nodes.push(c);
            g.input(c, 0)
        }
        None => Some(v),
    }
}

/// `MatMul(x, w) [+ vector const]` → (x, w, bias).
pub(super) fn linear(
    g: &Graph,
    v: ValueRef,
    nodes: &mut Vec<NodeId>,
) -> Option<(ValueRef, ValueRef, Option<ValueRef>)> {
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
pub(super) fn split_of(g: &Graph, v: ValueRef, pred: impl Fn(&[usize]) -> bool) -> Option<NodeId> {
    matches!(g.op(v.node), Op::SplitLast { sizes } if pred(sizes)).then_some(v.node)
}
