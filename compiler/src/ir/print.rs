//! Human-readable listings of a validated graph: text (`mambac inspect`) and DOT (`--dot`).

use std::fmt::Write;

use super::{conv_slots, gated_norm_slots, scan_slots, ssd_slots, Op, Slices, SsdDims, ValidatedGraph, ValueRef};

/// `, z_offset=48, ...` for a fused op's sliced inputs (docs/op-contract.md "Sliced inputs").
fn slices(s: &Slices, names: &[&str]) -> String {
    s.0.iter().map(|&(slot, o)| format!(", {}_offset={o}", names.get(slot).copied().unwrap_or("?"))).collect()
}

/// `, head_dim=64, ngroups=1, dstate=128`: the SsdScan dims its packed inputs do not carry.
fn packed_dims(d: &SsdDims) -> String {
    let names = ssd_slots::PACKED_DIMS.map(|n| n.str);
    names.iter().zip(d.as_array()).filter_map(|(n, v)| v.map(|v| format!(", {n}={v}"))).collect()
}

fn op_detail(op: &Op) -> String {
    match op {
        Op::Input { name, .. } => format!("Input '{name}'"),
        Op::Const(c) => format!("Const '{}'", c.name),
        Op::Gather { axis } => format!("Gather(axis={axis})"),
        Op::Transpose { perm } => format!("Transpose(perm={perm:?})"),
        Op::RmsNorm { eps } => format!("RmsNorm(eps={eps:e})"),
        Op::Cast { to } => format!("Cast(to={to})"),
        Op::SplitLast { sizes } => format!("SplitLast({sizes:?})"),
        Op::SliceLast { start, len } => format!("SliceLast([{start}, {}))", start + len),
        Op::Unsqueeze { axis } => format!("Unsqueeze(axis={axis})"),
        Op::Expand { shape } => format!("Expand({shape:?})"),
        Op::Clip { min, max } => format!("Clip({min}, {max})"),
        Op::CausalConvWithState(c) => {
            format!("CausalConvWithState(activation={})", if c.silu { "silu" } else { "none" })
        }
        Op::LinearAttention(c) => format!("LinearAttention(gated, heads={}, scale={})", c.heads, c.scale),
        Op::CausalConv1d(c) => format!(
            "mambac.CausalConv1d(activation={}{})",
            if c.silu { "silu" } else { "none" },
            slices(&c.slices, &conv_slots::INPUT_NAMES)
        ),
        Op::SelectiveScan(c) => {
            format!(
                "mambac.SelectiveScan(delta_softplus={}{})",
                c.delta_softplus as u8,
                slices(&c.slices, &scan_slots::INPUT_NAMES)
            )
        }
        Op::Reshape { keep, tail } => format!("Reshape(keep={keep}, tail={tail:?})"),
        Op::GatedRmsNorm(c) => format!(
            "GatedRmsNorm(eps={:e}, group_size={}, norm_before_gate={})",
            c.eps, c.group_size, c.norm_before_gate as u8
        ),
        Op::FusedGatedRmsNorm(c) => format!(
            "mambac.GatedRmsNorm(eps={:e}, group_size={}, norm_before_gate={}{})",
            c.norm.eps,
            c.norm.group_size,
            c.norm.norm_before_gate as u8,
            slices(&c.slices, &gated_norm_slots::INPUT_NAMES)
        ),
        Op::SsdScan(c) => {
            format!(
                "mambac.SsdScan(dt_softplus={}, dt_limit=({}, {}){}{})",
                c.dt_softplus as u8,
                c.dt_min,
                c.dt_max,
                slices(&c.slices, &ssd_slots::INPUT_NAMES),
                packed_dims(&c.dims)
            )
        }
        Op::AddRmsNorm(c) => format!("mambac.AddRmsNorm(eps={:e}, residual_out={})", c.eps, c.residual_out as u8),
        Op::Mamba2LayerStep(c) => format!(
            "mambac.Mamba2LayerStep(eps={:e}, dt_limit=({}, {}), norm_before_gate={})",
            c.eps, c.dt_min, c.dt_max, c.norm_before_gate as u8
        ),
        other => other.kind().to_string(),
    }
}

/// One line per node, in topological order:
/// `%7 backbone.layers.0.mixer.scan = mambac.SelectiveScan(...)(u=%5, ...) -> float32[batch, seqlen, 128]`
pub fn to_text(vg: &ValidatedGraph<'_>) -> String {
    let g = vg.graph;
    let mut s = String::new();
    for &id in &vg.order {
        let n = g.node(id);
        let names = n.op.input_names();
        let args: Vec<String> = g
            .node_inputs(id)
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.map(|v| format!("{}={v}", names.get(k).copied().unwrap_or("?"))))
            .collect();
        let outs: Vec<String> =
            (0..n.op.num_outputs()).map(|k| vg.type_of(ValueRef { node: id, output: k }).to_string()).collect();
        let _ = writeln!(s, "{id} {} = {}({}) -> {}", n.name, op_detail(&n.op), args.join(", "), outs.join(", "));
    }
    for o in g.outputs() {
        let _ = writeln!(s, "output '{}' = {} : {}", o.name, o.value, vg.type_of(o.value));
    }
    s
}

/// Graphviz DOT: nodes labelled with op and name, edges with the value's type.
pub fn to_dot(vg: &ValidatedGraph<'_>) -> String {
    let g = vg.graph;
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::from("digraph mamba {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n");
    for &id in &vg.order {
        let n = g.node(id);
        let style = match &n.op {
            Op::Const(_) => ", style=dashed",
            Op::Input { .. } => ", shape=ellipse",
            op if op.is_fused_op() => ", style=filled, fillcolor=\"#ffd27f\"",
            _ => "",
        };
        let _ = writeln!(s, "  n{} [label=\"{}\\n{}\"{style}];", id.index(), esc(&op_detail(&n.op)), esc(&n.name));
    }
    for &id in &vg.order {
        for (slot, v) in g.node_inputs(id).iter().enumerate() {
            if let Some(v) = v {
                let label = format!("{}: {}", g.op(id).input_names().get(slot).copied().unwrap_or("?"), vg.type_of(*v));
                let _ = writeln!(s, "  n{} -> n{} [label=\"{}\"];", v.node.index(), id.index(), esc(&label));
            }
        }
    }
    for (k, o) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{k} [label=\"{}\", shape=ellipse];\n  n{} -> out{k};",
            esc(&o.name),
            o.value.node.index()
        );
    }
    s.push_str("}\n");
    s
}
