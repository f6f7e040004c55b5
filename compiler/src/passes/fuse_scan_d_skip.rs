//! `Add(SelectiveScan(u, ...), Mul(u, Const D[dim]))` → `SelectiveScan(u, ..., D)`.
//! Only before a gate is fused: the gate multiplies the D term too.

use super::{const_rows, const_to_f32, is_vector_const, operands_where, Rule};
use crate::ir::scan_slots;
use crate::ir::{Graph, NodeId, Op, ValueRef};

pub struct FuseScanDSkip;

impl Rule for FuseScanDSkip {
    fn name(&self) -> &'static str {
        "fuse_scan_d_skip"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::Add) {
            return false;
        }
        let is_bare_scan = |v: ValueRef| {
            v.output == 0
                && matches!(g.op(v.node), Op::SelectiveScan(_))
                && g.input(v.node, scan_slots::D).is_none()
                && g.input(v.node, scan_slots::Z).is_none()
        };
        let Some((y, skip)) = operands_where(g, node, is_bare_scan) else { return false };
        if !matches!(g.op(skip.node), Op::Mul) || !g.is_single_use(y) {
            return false;
        }
        let u = g.input(y.node, scan_slots::U);
        let dim = g.input(y.node, scan_slots::A).and_then(|a| const_rows(g, a));
        let Some((d, other)) = operands_where(g, skip.node, |v| is_vector_const(g, v, dim)) else { return false };
        if Some(other) != u || dim.is_none() {
            return false;
        }
        const_to_f32(g, d);
        g.set_input(y.node, scan_slots::D, Some(d));
        g.replace_uses(node.into(), y);
        true
    }
}
