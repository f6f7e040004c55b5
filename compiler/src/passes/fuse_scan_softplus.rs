//! `SelectiveScan(delta = Softplus(v), delta_softplus = 0)` → `SelectiveScan(delta = v, delta_softplus = 1)`.
//! Only without a delta_bias: softplus(v) + bias is not softplus(v + bias).

use super::{producer_if, Rule};
use crate::ir::scan_slots;
use crate::ir::{Graph, NodeId, Op};

pub struct FuseScanSoftplus;

impl Rule for FuseScanSoftplus {
    fn name(&self) -> &'static str {
        "fuse_scan_softplus"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::SelectiveScan(c) if !c.delta_softplus)
            || g.input(node, scan_slots::DELTA_BIAS).is_some()
        {
            return false;
        }
        let Some(sp) = producer_if(g, g.input(node, scan_slots::DELTA), |op| matches!(op, Op::Softplus)) else {
            return false;
        };
        let Some(v) = g.input(sp, 0) else { return false };
        g.set_input(node, scan_slots::DELTA, Some(v));
        if let Op::SelectiveScan(c) = &mut g.node_mut(node).op {
            c.delta_softplus = true;
        }
        true
    }
}
