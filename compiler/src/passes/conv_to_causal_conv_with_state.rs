//! `mambac.CausalConv1d(x [B, L, C], w [C, K], bias, state)` →
//! `Transpose(CausalConvWithState(Transpose(x) [B, C, L], Unsqueeze(w) [C, 1, K], bias, state))`:
//! opset 27's op, which is channels-first. Its state is CausalConv1d's (`[B, C, K-1]`, the last
//! K-1 inputs), so a stateful graph's interface does not change. (`--ops standard`)

use super::Rule;
use crate::ir::{conv_slots, CausalConvWithStateConfig, Graph, NodeId, Op, ValueRef};

pub struct ConvToCausalConvWithState;

impl Rule for ConvToCausalConvWithState {
    fn name(&self) -> &'static str {
        "conv_to_causal_conv_with_state"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::CausalConv1d(cfg) = g.op(node).clone() else { return false };
        // Standard ops read whole tensors: a sliced read (never in a --ops standard export) stays,
        // and pipeline::standard_ops_only refuses it.
        if !cfg.slices.0.is_empty() {
            return false;
        }
        let ins = g.node_inputs(node);
        let (Some(x), Some(w)) = (ins[conv_slots::X], ins[conv_slots::WEIGHT]) else { return false };
        let name = g.node(node).name.clone();
        let swap = || Op::Transpose { perm: vec![0, 2, 1] };
        let xt = g.add_op(format!("{name}.to_channels_first"), swap(), &[x]);
        let w3 = g.add_op(format!("{name}.weight_3d"), Op::Unsqueeze { axis: 1 }, &[w]);
        let conv = g.add(
            name.clone(),
            Op::CausalConvWithState(CausalConvWithStateConfig { silu: cfg.silu }),
            &[Some(xt.into()), Some(w3.into()), ins[conv_slots::BIAS], ins[conv_slots::INITIAL_STATE]],
        );
        let y = g.add_op(format!("{name}.to_token_major"), swap(), &[conv.into()]);
        g.replace_uses(node.into(), y.into());
        if cfg.final_state {
            g.replace_uses(ValueRef { node, output: 1 }, ValueRef { node: conv, output: 1 });
        }
        true
    }
}
