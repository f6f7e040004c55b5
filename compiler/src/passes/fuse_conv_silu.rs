//! `Silu(CausalConv1d(..., activation = none))` → `CausalConv1d(..., activation = silu)`.

use super::Rule;
use crate::ir::{Graph, NodeId, Op};

pub struct FuseConvSilu;

impl Rule for FuseConvSilu {
    fn name(&self) -> &'static str {
        "fuse_conv_silu"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::Silu) {
            return false;
        }
        let Some(y) = g.input(node, 0) else { return false };
        if y.output != 0 || !matches!(g.op(y.node), Op::CausalConv1d(c) if !c.silu) || !g.is_single_use(y) {
            return false;
        }
        if let Op::CausalConv1d(c) = &mut g.node_mut(y.node).op {
            c.silu = true;
        }
        g.replace_uses(node.into(), y);
        true
    }
}
