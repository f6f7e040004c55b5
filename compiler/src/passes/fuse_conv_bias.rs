//! `Add(CausalConv1d(x, w), Const b[dim])` → `CausalConv1d(x, w, b)`.

use super::{const_rows, is_vector_const, operands_where, Rule};
use crate::ir::conv_slots;
use crate::ir::{Graph, NodeId, Op};

pub struct FuseConvBias;

impl Rule for FuseConvBias {
    fn name(&self) -> &'static str {
        "fuse_conv_bias"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::Add) {
            return false;
        }
        let is_bare_conv = |v: crate::ir::ValueRef| {
            v.output == 0
                && matches!(g.op(v.node), Op::CausalConv1d(c) if !c.silu)
                && g.input(v.node, conv_slots::BIAS).is_none()
        };
        let Some((conv_y, bias)) = operands_where(g, node, is_bare_conv) else { return false };
        let dim = g.input(conv_y.node, conv_slots::WEIGHT).and_then(|w| const_rows(g, w));
        if !is_vector_const(g, bias, dim) || dim.is_none() || !g.is_single_use(conv_y) {
            return false;
        }
        g.set_input(conv_y.node, conv_slots::BIAS, Some(bias));
        g.replace_uses(node.into(), conv_y);
        true
    }
}
