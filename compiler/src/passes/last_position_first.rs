//! `LastPosition(Add(a, b))` → `Add(LastPosition(a), LastPosition(b))`, and `LastPosition(Cast(x))`
//! → `Cast(LastPosition(x))`: with `--logits last` the final norm's stream is sliced before the
//! norm; moved through the residual add and the mixer output's cast, the slice lets
//! `fuse_add_rms_norm` fold the final add and norm too (and the add runs on one position, not all).
//! Both ops are per position, so the slice commutes with them; the operands must have the sum's
//! shape (no broadcasting along the sequence). Only for `--ops mambac` graphs
//! ([`super::NORM_RULES`]), whose only use of it is that fusion.

use super::{types_of, Rule};
use crate::ir::{Graph, NodeId, Op, ValueRef};

pub struct LastPositionFirst;

impl Rule for LastPositionFirst {
    fn name(&self) -> &'static str {
        "last_position_first"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        if !matches!(g.op(node), Op::LastPosition) {
            return false;
        }
        let Some(v) = g.input(node, 0) else { return false };
        if v.output != 0 || !matches!(g.op(v.node), Op::Add | Op::Cast { .. }) || !g.is_single_use(v) {
            return false;
        }
        let inputs: Vec<ValueRef> = g.node_inputs(v.node).into_iter().flatten().collect();
        let Some(types) = types_of(g, &[&inputs[..], &[v]].concat()) else { return false };
        let (out_ty, in_tys) = types.split_last().expect("v is last");
        if in_tys.iter().any(|t| t.shape != out_ty.shape) {
            return false;
        }
        let name = g.node(node).name.clone();
        let sliced: Vec<Option<ValueRef>> = inputs
            .iter()
            .enumerate()
            .map(|(k, &i)| Some(g.add_op(format!("{name}.{k}"), Op::LastPosition, &[i]).into()))
            .collect();
        let op = g.op(v.node).clone();
        let moved = g.add(format!("{}.last_position", g.node(v.node).name), op, &sliced);
        g.replace_uses(ValueRef { node, output: 0 }, ValueRef { node: moved, output: 0 });
        true
    }
}
