//! Rewrite passes. One rule a file, each named after the pattern it matches; the list of rules
//! and their order is [`RULES`], the one place to look.
//!
//! The driver applies rules until none matches, validating the graph after every rewrite and
//! labelling each `rule/i`, and can stop after N rewrites so a bad rewrite can be bisected
//! (`mambac inspect --max-rewrites N`).

mod conv_to_causal_conv_with_state;
mod fold_const_unary;
mod fuse_add_rms_norm;
mod fuse_conv_bias;
mod fuse_conv_silu;
mod fuse_gated_norm_casts;
mod fuse_layer_step;
mod fuse_mamba2_layer_step;
mod fuse_scan_d_skip;
mod fuse_scan_delta_bias;
mod fuse_scan_gate;
mod fuse_scan_softplus;
mod last_position_first;
mod layer_match;
mod scan_to_linear_attention;
mod split_to_sliced_reads;
mod ssd_scan_to_linear_attention;
mod standard_lowering;

use crate::ir::{validate, Graph, NodeId, Op, ValidationError, ValueRef, ValueType};

/// A local rewrite: looks at `node`, and when the pattern matches rewrites the graph and returns
/// true. Guards come first and exit early; a rule never leaves the graph invalid.
pub trait Rule {
    fn name(&self) -> &'static str;
    fn apply(&self, g: &mut Graph, node: NodeId) -> bool;
}

/// Every rule, in the order the driver tries them.
pub const RULES: &[&dyn Rule] = &[
    &fold_const_unary::FoldConstUnary,
    &fuse_conv_bias::FuseConvBias,
    &fuse_conv_silu::FuseConvSilu,
    &fuse_scan_softplus::FuseScanSoftplus,
    &fuse_scan_delta_bias::FuseScanDeltaBias,
    &fuse_scan_d_skip::FuseScanDSkip,
    &fuse_scan_gate::FuseScanGate,
    // Last: they fold a layer the rules above have fused (and fire only when seqlen is 1).
    &fuse_layer_step::FuseLayerStep,
    &fuse_mamba2_layer_step::FuseMamba2LayerStep,
];

/// `--ops mambac` only, after the fusion rules (whose patterns read the split parts and the
/// float32 gated norm): Mamba-2's gated norm becomes the fused op reading T, then the fused ops
/// read their parts of a projection's output in place, and the copying splits go.
pub const SLICE_RULES: &[&dyn Rule] =
    &[&fuse_gated_norm_casts::FuseGatedNormCasts, &split_to_sliced_reads::SplitToSlicedReads];

/// `--ops mambac` only, after the layer-step rules (whose decode-graph layers fold their norms
/// themselves): the residual add and the next norm become one `AddRmsNorm` between every two
/// layers, and before the final norm (with `--logits last`, once its slice has moved through the
/// add).
pub const NORM_RULES: &[&dyn Rule] = &[&last_position_first::LastPositionFirst, &fuse_add_rms_norm::FuseAddRmsNorm];

/// `--ops standard`: after the fusion rules, the fused ops become opset 27's standard ops (and
/// ordinary ones around them), so the model needs no custom op library.
pub const STANDARD_RULES: &[&dyn Rule] = &[
    &conv_to_causal_conv_with_state::ConvToCausalConvWithState,
    &scan_to_linear_attention::ScanToLinearAttention,
    &ssd_scan_to_linear_attention::SsdScanToLinearAttention,
];

#[derive(Debug, thiserror::Error)]
#[error("after rewrite {label}: {source}")]
pub struct PassError {
    pub label: String,
    pub source: ValidationError,
}

/// What the driver did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// `rule/i` for every rewrite, in order.
    pub rewrites: Vec<String>,
    /// Names of the rules that fired at least once, in `RULES` order.
    pub rules_applied: Vec<&'static str>,
    pub nodes_removed: usize,
}

impl PassReport {
    /// Appends the report of a later run (the standard rules after the fusion rules).
    pub fn extend(&mut self, later: PassReport) {
        self.rewrites.extend(later.rewrites);
        self.rules_applied.extend(later.rules_applied);
        self.nodes_removed += later.nodes_removed;
    }
}

/// Applies every rule of [`RULES`] to a fixpoint (or until `max_rewrites`), then removes dead nodes.
pub fn run_passes(g: &mut Graph, max_rewrites: Option<usize>) -> Result<PassReport, PassError> {
    run_rules(g, RULES, max_rewrites)
}

/// Applies `rules` to a fixpoint (or until `max_rewrites`), then removes dead nodes.
pub fn run_rules(g: &mut Graph, rules: &[&dyn Rule], max_rewrites: Option<usize>) -> Result<PassReport, PassError> {
    let mut report = PassReport::default();
    let mut counts = vec![0usize; rules.len()];
    let nodes_before = g.node_count();
    'fixpoint: loop {
        let mut changed = false;
        for (r, rule) in rules.iter().enumerate() {
            let order = g.topo_order().map_err(|source| PassError { label: "start".into(), source })?;
            for node in order {
                if max_rewrites.is_some_and(|m| report.rewrites.len() >= m) {
                    break 'fixpoint;
                }
                if !g.contains(node) || !rule.apply(g, node) {
                    continue;
                }
                let label = format!("{}/{}", rule.name(), counts[r]);
                counts[r] += 1;
                changed = true;
                // Absorbed nodes are dead now; drop them so they are not validated as if live.
                g.remove_dead();
                validate(g).map_err(|source| PassError { label: label.clone(), source })?;
                report.rewrites.push(label);
            }
        }
        if !changed {
            break;
        }
    }
    g.remove_dead();
    // Saturating: the standard rules add more nodes than they remove.
    report.nodes_removed = nodes_before.saturating_sub(g.node_count());
    validate(g).map_err(|source| PassError { label: "remove_dead".into(), source })?;
    report.rules_applied = rules.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(r, _)| r.name()).collect();
    Ok(report)
}

// Small matchers shared by the rules.

/// The node producing `v`, if its op satisfies `pred`.
pub(crate) fn producer_if(g: &Graph, v: Option<ValueRef>, pred: impl Fn(&Op) -> bool) -> Option<NodeId> {
    let v = v?;
    pred(g.op(v.node)).then_some(v.node)
}

/// `v` is a constant of shape `[len]`.
pub(crate) fn is_vector_const(g: &Graph, v: ValueRef, len: Option<usize>) -> bool {
    matches!(g.op(v.node), Op::Const(c) if c.shape.len() == 1 && len.is_none_or(|l| c.shape[0] == l))
}

/// Length of the channel dim of a constant weight `[dim, ...]`.
pub(crate) fn const_rows(g: &Graph, v: ValueRef) -> Option<usize> {
    match g.op(v.node) {
        Op::Const(c) => c.shape.first().copied(),
        _ => None,
    }
}

/// The types of `values` (between rewrites the graph is valid); None if it is not.
pub(crate) fn types_of(g: &Graph, values: &[ValueRef]) -> Option<Vec<ValueType>> {
    let vg = validate(g).ok()?;
    Some(values.iter().map(|&v| vg.type_of(v).clone()).collect())
}

/// Converts a vector constant to float32 in place (the fused ops take D and delta_bias in f32).
pub(crate) fn const_to_f32(g: &mut Graph, v: ValueRef) {
    if let Op::Const(c) = &mut g.node_mut(v.node).op {
        c.elem = crate::ir::Elem::F32;
    }
}

/// For a commutative binary node, the operand pair ordered so `first` satisfies `pred`.
pub(crate) fn operands_where(g: &Graph, node: NodeId, pred: impl Fn(ValueRef) -> bool) -> Option<(ValueRef, ValueRef)> {
    let (a, b) = (g.input(node, 0)?, g.input(node, 1)?);
    if pred(a) {
        Some((a, b))
    } else if pred(b) {
        Some((b, a))
    } else {
        None
    }
}
