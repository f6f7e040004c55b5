//! `Exp(Const)` / `Neg(Const)` → `Const` with the function folded in (`A = -exp(A_log)`).

use super::Rule;
use crate::ir::{ConstSource, Graph, NodeId, Op, UnaryFn};

pub struct FoldConstUnary;

impl Rule for FoldConstUnary {
    fn name(&self) -> &'static str {
        "fold_const_unary"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let f = match g.op(node) {
            Op::Exp => UnaryFn::Exp,
            Op::Neg => UnaryFn::Neg,
            _ => return false,
        };
        let Some(x) = g.input(node, 0) else { return false };
        let Op::Const(c) = g.op(x.node) else { return false };
        let mut folded = c.clone();
        match &mut folded.source {
            ConstSource::Checkpoint { map, .. } => map.push(f),
            ConstSource::Computed(v) => {
                *v = std::sync::Arc::new(v.iter().map(|&x| f.apply(x)).collect());
            }
        }
        folded.name = g.node(node).name.clone();
        // The node becomes the folded constant in place: its readers need no rewiring.
        g.set_input(node, 0, None);
        g.node_mut(node).op = Op::Const(folded);
        true
    }
}
