//! `SelectiveScan(delta = Add(x, Const b[dim]))` → `SelectiveScan(delta = x, delta_bias = b)`.
//! Valid with the softplus flag on or off: the bias is added before the softplus either way.

use super::{const_rows, const_to_f32, is_vector_const, operands_where, producer_if, Rule};
use crate::ir::scan_slots;
use crate::ir::{Graph, NodeId, Op};

pub struct FuseScanDeltaBias;

impl Rule for FuseScanDeltaBias {
    fn name(&self) -> &'static str {
        "fuse_scan_delta_bias"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::SelectiveScan(_)) || g.input(node, scan_slots::DELTA_BIAS).is_some() {
            return false;
        }
        let Some(add) = producer_if(g, g.input(node, scan_slots::DELTA), |op| matches!(op, Op::Add)) else {
            return false;
        };
        let dim = g.input(node, scan_slots::A).and_then(|a| const_rows(g, a));
        let Some((bias, x)) = operands_where(g, add, |v| is_vector_const(g, v, dim)) else { return false };
        if dim.is_none() {
            return false;
        }
        const_to_f32(g, bias);
        g.set_input(node, scan_slots::DELTA, Some(x));
        g.set_input(node, scan_slots::DELTA_BIAS, Some(bias));
        true
    }
}
