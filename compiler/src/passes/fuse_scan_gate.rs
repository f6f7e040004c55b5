//! `Mul(SelectiveScan(...), Silu(z))` → `SelectiveScan(..., z)`.

use super::{operands_where, producer_if, Rule};
use crate::ir::scan_slots;
use crate::ir::{Graph, NodeId, Op, ValueRef};

pub struct FuseScanGate;

impl Rule for FuseScanGate {
    fn name(&self) -> &'static str {
        "fuse_scan_gate"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::Mul) {
            return false;
        }
        let is_ungated_scan = |v: ValueRef| {
            v.output == 0 && matches!(g.op(v.node), Op::SelectiveScan(_)) && g.input(v.node, scan_slots::Z).is_none()
        };
        let Some((y, gate)) = operands_where(g, node, is_ungated_scan) else { return false };
        let Some(silu) = producer_if(g, Some(gate), |op| matches!(op, Op::Silu)) else { return false };
        if !g.is_single_use(y) {
            return false;
        }
        let Some(z) = g.input(silu, 0) else { return false };
        g.set_input(y.node, scan_slots::Z, Some(z));
        g.replace_uses(node.into(), y);
        true
    }
}
