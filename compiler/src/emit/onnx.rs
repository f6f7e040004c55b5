//! IR → ONNX. Standard ops (opset 18, or 27 in a graph holding opset 27's CausalConvWithState or
//! LinearAttention: the `--ops standard` export) everywhere but the fused ops, which go to the `mambac`
//! domain with docs/op-contract.md's input order; absent optional inputs are empty names, trailing ones
//! dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_protobuf::{GraphProto, Message, ModelProto, OperatorSetIdProto, TensorProto};

use super::external_data::ExternalDataWriter;
use super::proto::{attr_float, attr_int, attr_ints, attr_string, entry, i64_tensor, node, tensor, value_info};
use crate::atomic_file::AtomicFile;
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::ir::gated_norm_slots;
use crate::ir::standard_ops::{self as std_ops, causal_conv_with_state as std_conv, linear_attention as std_la};
use crate::ir::{
    conv_slots, encode_f64, norm_slots, scan_slots, ssd_slots, step2_slots, step_slots, ConstTensor, Dim, Elem, Op,
    ValidatedGraph, ValueRef, ValueType,
};

pub const OPSET: i64 = 18;
pub const CUSTOM_DOMAIN: &str = mambac_op_schema::DOMAIN.str;
/// Node op type of the fused layer step (the decode graph's layers).
pub const LAYER_STEP_OP: &str = step_slots::OP.str;
/// ONNX Runtime's contrib domain (`MatMulNBits` of quantized exports).
pub const MS_DOMAIN: &str = "com.microsoft";
const IR_VERSION: i64 = 8;
/// Protobuf cannot serialise a message over 2 GiB; stay clear of it.
const INLINE_LIMIT: u64 = 1_900_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExternalData {
    /// External once the weights pass the inline limit.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    pub external_data: ExternalData,
    /// `metadata_props` entries.
    pub metadata: Vec<(String, String)>,
    /// Names the external-data file (`<model>.<export_id>.data`), so that it never is the file
    /// an earlier model reads.
    pub export_id: String,
}

#[derive(Debug, Clone)]
pub struct EmitReport {
    pub nodes: usize,
    pub initializers: usize,
    pub weight_bytes: u64,
    pub external_data: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("weights are {bytes} bytes, over protobuf's 2 GB limit: external data is required")]
    TooLargeInline { bytes: u64 },
    #[error("graph output '{0}' is a graph input or a constant; ONNX outputs must be produced by a node")]
    OutputNotProduced(String),
    #[error("two graphs of one export hold different weights named '{0}' (a mambac bug)")]
    ConflictingConst(String),
    #[error(
        "{path} is not in the folder of {first}, whose external data file it would share: write both to one folder"
    )]
    ExternalDataFolder { path: PathBuf, first: PathBuf },
    // `error`, not `source`: the message already holds the cause, which a `{:#}` chain would
    // print a second time.
    #[error("cannot write {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: protobuf::Error },
    #[error("cannot serialise the model: {0}")]
    Protobuf(#[from] protobuf::Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Progress: bytes of weights written so far, out of the total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

struct Emitter<'v, 'g> {
    vg: &'v ValidatedGraph<'g>,
    graph: GraphProto,
    names: HashMap<ValueRef, String>,
}

/// One model file of an export: a validated graph, where it goes and its metadata.
pub struct EmitTarget<'a, 'g> {
    pub graph: &'a ValidatedGraph<'g>,
    pub path: &'a Path,
    pub metadata: Vec<(String, String)>,
}

pub fn emit_onnx(
    vg: &ValidatedGraph<'_>,
    ckpt: &Checkpoint,
    opts: &EmitOptions,
    path: &Path,
    progress: Progress<'_>,
) -> Result<EmitReport, EmitError> {
    let target = EmitTarget { graph: vg, path, metadata: opts.metadata.clone() };
    let mut reports = emit_onnx_models(&[target], ckpt, opts.external_data, &opts.export_id, progress)?;
    Ok(reports.remove(0))
}

/// Emits several graphs of one checkpoint (the stateful graph and its decode graph) in one pass
/// over the weights: a constant several graphs hold (same name) is converted and stored once,
/// and every model points at the same bytes (the same external-data file and offsets, or copies
/// of the same inline tensor). With external data, the file goes beside the first target and the
/// others must be in its folder, since a model names its data file relative to itself. Every file
/// is written beside its target and renamed into place: the data first, then the models that
/// point at it, so a model a reader finds always has its data.
pub fn emit_onnx_models(
    targets: &[EmitTarget<'_, '_>],
    ckpt: &Checkpoint,
    external_data: ExternalData,
    export_id: &str,
    progress: Progress<'_>,
) -> Result<Vec<EmitReport>, EmitError> {
    let Some(first) = targets.first() else { return Ok(Vec::new()) };
    let mut consts: HashMap<&str, &ConstTensor> = HashMap::new();
    for t in targets {
        for c in graph_consts(t.graph) {
            if let Some(prev) = consts.insert(&c.name, c) {
                if prev != c {
                    return Err(EmitError::ConflictingConst(c.name.clone()));
                }
            }
        }
    }
    let total: u64 = consts.values().map(|c| const_bytes(c)).sum();
    let external = match external_data {
        ExternalData::Always => true,
        ExternalData::Never if total > INLINE_LIMIT => return Err(EmitError::TooLargeInline { bytes: total }),
        ExternalData::Never => false,
        ExternalData::Auto => total > INLINE_LIMIT,
    };
    if external {
        if let Some(t) = targets.iter().find(|t| t.path.parent() != first.path.parent()) {
            return Err(EmitError::ExternalDataFolder { path: t.path.to_path_buf(), first: first.path.to_path_buf() });
        }
    }
    let ext =
        if external { Some(ExternalDataWriter::create(first.path, export_id).map_err(io(first.path))?) } else { None };
    let mut store = WeightStore { ckpt, ext, stored: HashMap::new(), done: 0, total, io_path: first.path };
    let mut models = Vec::with_capacity(targets.len());
    for t in targets {
        models.push(build_model(t, &mut store, progress)?);
    }
    let external_path = match store.ext {
        Some(w) => {
            let p = w.path().to_path_buf();
            w.finish().map_err(|error| EmitError::Io { path: p.clone(), error })?;
            Some(p)
        }
        None => None,
    };
    let mut reports = Vec::with_capacity(targets.len());
    for (t, (model, nodes, initializers)) in targets.iter().zip(models) {
        let mut out = AtomicFile::create(t.path).map_err(io(t.path))?;
        model.write_to_writer(&mut out).map_err(|error| EmitError::Write { path: t.path.to_path_buf(), error })?;
        out.commit().map_err(io(t.path))?;
        let weight_bytes = graph_consts(t.graph).map(const_bytes).sum();
        reports.push(EmitReport { nodes, initializers, weight_bytes, external_data: external_path.clone() });
    }
    Ok(reports)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EmitError + '_ {
    move |error| EmitError::Io { path: path.to_path_buf(), error }
}

fn graph_consts<'a>(vg: &'a ValidatedGraph<'_>) -> impl Iterator<Item = &'a ConstTensor> + 'a {
    vg.order.iter().filter_map(|&id| match vg.graph.op(id) {
        Op::Const(c) => Some(c),
        _ => None,
    })
}

fn const_bytes(c: &ConstTensor) -> u64 {
    (c.numel() * c.elem.size()) as u64
}

/// The initializers of one export's models: each converted from the checkpoint and stored once.
struct WeightStore<'c, 'p> {
    ckpt: &'c Checkpoint,
    ext: Option<ExternalDataWriter>,
    /// By name: the initializer as stored (data external, or inline).
    stored: HashMap<String, TensorProto>,
    done: u64,
    total: u64,
    /// The model the external data file belongs to, for write errors.
    io_path: &'p Path,
}

impl WeightStore<'_, '_> {
    fn initializer(&mut self, c: &ConstTensor, progress: Progress<'_>) -> Result<TensorProto, EmitError> {
        if let Some(t) = self.stored.get(&c.name) {
            return Ok(t.clone());
        }
        let raw = c.to_bytes(self.ckpt)?;
        let mut t = tensor(&c.name, c.elem, &c.shape, Vec::new());
        self.done += raw.len() as u64;
        match self.ext.as_mut() {
            Some(w) => w.store(&mut t, &raw).map_err(io(self.io_path))?,
            None => t.raw_data = raw,
        }
        // The bytes are in the file or the message now: drop the checkpoint's mapped pages, so a
        // large export does not hold the whole checkpoint resident (a const read again, e.g. a
        // tied embedding, faults them back in from the file).
        if let crate::ir::ConstSource::Checkpoint { tensor, .. } = &c.source {
            self.ckpt.release_tensor(tensor);
        }
        progress(self.done, self.total);
        self.stored.insert(c.name.clone(), t.clone());
        Ok(t)
    }
}

/// One model: (the message, its node count, its initializer count).
fn build_model(
    target: &EmitTarget<'_, '_>,
    store: &mut WeightStore<'_, '_>,
    progress: Progress<'_>,
) -> Result<(ModelProto, usize, usize), EmitError> {
    let vg = target.graph;
    let g = vg.graph;
    let mut e = Emitter { vg, graph: GraphProto::new(), names: HashMap::new() };
    e.graph.name = "mamba".into();
    for o in g.outputs() {
        if matches!(g.op(o.value.node), Op::Input { .. } | Op::Const(_)) {
            return Err(EmitError::OutputNotProduced(o.name.clone()));
        }
        e.names.insert(o.value, o.name.clone());
    }
    let mut initializers = 0;
    for &id in &vg.order {
        let n = g.node(id);
        match &n.op {
            Op::Input { name, ty } => {
                e.names.insert(id.into(), name.clone());
                e.graph.input.push(value_info(name, ty));
            }
            Op::Const(c) => {
                let t = store.initializer(c, progress)?;
                e.names.insert(id.into(), c.name.clone());
                e.graph.initializer.push(t);
                initializers += 1;
            }
            _ => e.node(id),
        }
    }
    for o in g.outputs() {
        e.graph.output.push(value_info(&o.name, vg.type_of(o.value)));
    }
    e.intermediate_value_info();

    let mut model = ModelProto::new();
    model.producer_name = "mambac".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    let has = |pred: fn(&Op) -> bool| vg.order.iter().any(|&id| pred(g.op(id)));
    // The standard export's ops are opset 27's; every other export stays at opset 18, which more
    // runtimes read. The mambac domain is imported only by graphs that use it.
    let standard = has(|op| matches!(op, Op::CausalConvWithState(_) | Op::LinearAttention(_)));
    let (opset, ir_version) = if standard { (std_ops::OPSET, std_ops::IR_VERSION) } else { (OPSET, IR_VERSION) };
    model.ir_version = ir_version;
    let mut domains: Vec<(&str, i64)> = vec![("", opset)];
    if has(Op::is_fused_op) {
        domains.push((CUSTOM_DOMAIN, mambac_op_schema::DOMAIN_VERSION));
    }
    if has(|op| matches!(op, Op::MatMulNBits(_))) {
        domains.push((MS_DOMAIN, 1));
    }
    for (domain, version) in domains {
        let mut op = OperatorSetIdProto::new();
        op.domain = domain.into();
        op.version = version;
        model.opset_import.push(op);
    }
    model.metadata_props = target.metadata.iter().map(|(k, v)| entry(k, v)).collect();
    let nodes = e.graph.node.len();
    model.graph = Some(e.graph).into();
    Ok((model, nodes, initializers))
}

impl Emitter<'_, '_> {
    /// A `value_info` for every value a node computes that is not a graph output (those have
    /// theirs), with the IR's types and its symbolic dims (`batch`, `seqlen`: the graph inputs'
    /// names). ONNX's own shape inference cannot see into the `mambac` ops, so without these
    /// every value downstream of one would be untyped for ONNX tools (docs/onnx-shapes.md).
    fn intermediate_value_info(&mut self) {
        let g = self.vg.graph;
        let outputs: std::collections::HashSet<ValueRef> = g.outputs().iter().map(|o| o.value).collect();
        for &id in &self.vg.order {
            if matches!(g.op(id), Op::Input { .. } | Op::Const(_)) {
                continue;
            }
            for k in 0..g.op(id).num_outputs() {
                let v = ValueRef { node: id, output: k };
                if !outputs.contains(&v) {
                    let info = value_info(&self.value_name(v), self.vg.type_of(v));
                    self.graph.value_info.push(info);
                }
            }
        }
    }

    /// The type of a value an op's expansion computes between its standard ops.
    fn expansion_value_info(&mut self, name: &str, ty: &ValueType) {
        self.graph.value_info.push(value_info(name, ty));
    }

    fn value_name(&self, v: ValueRef) -> String {
        if let Some(n) = self.names.get(&v) {
            return n.clone();
        }
        let base = &self.vg.graph.node(v.node).name;
        if v.output == 0 {
            base.clone()
        } else {
            format!("{base}:{}", v.output)
        }
    }

    /// A small constant the expansion of one IR op needs (axes, split sizes, epsilon), named
    /// `<node>.<what>` by the caller: unique, since node names are, and the same in every graph
    /// of an export that holds the node (the decode graph's final norm reads the stateful
    /// graph's helpers by name).
    fn helper_const(&mut self, t: TensorProto) -> String {
        let name = t.name.clone();
        self.graph.initializer.push(t);
        name
    }

    fn push(
        &mut self,
        op_type: &str,
        domain: &str,
        name: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<onnx_protobuf::AttributeProto>,
    ) {
        let mut n = node(op_type, domain, name, inputs, outputs);
        n.attribute = attrs;
        self.graph.node.push(n);
    }

    fn node(&mut self, id: crate::ir::NodeId) {
        let g = self.vg.graph;
        let n = g.node(id);
        let name = n.name.clone();
        let ins: Vec<Option<String>> = g.node_inputs(id).iter().map(|v| v.map(|v| self.value_name(v))).collect();
        let req = |k: usize| ins[k].clone().expect("validated: required input present");
        let outs: Vec<String> =
            (0..n.op.num_outputs()).map(|k| self.value_name(ValueRef { node: id, output: k })).collect();
        let out = outs[0].clone();
        match &n.op {
            Op::Input { .. } | Op::Const(_) => unreachable!("handled by emit_onnx"),
            Op::Gather { axis } => {
                self.push("Gather", "", &name, vec![req(0), req(1)], outs, vec![attr_int("axis", *axis as i64)])
            }
            Op::Transpose { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.push("Transpose", "", &name, vec![req(0)], outs, vec![attr_ints("perm", &perm)])
            }
            Op::RmsNorm { eps } => self.rms_norm(&name, id, req(0), req(1), out, *eps),
            Op::Cast { to } => self.push(
                "Cast",
                "",
                &name,
                vec![req(0)],
                outs,
                vec![attr_int("to", super::proto::data_type(*to) as i64)],
            ),
            Op::MatMul => self.push("MatMul", "", &name, vec![req(0), req(1)], outs, vec![]),
            Op::MatMulNBits(cfg) => {
                let attrs = vec![
                    attr_int("K", cfg.k as i64),
                    attr_int("N", cfg.n as i64),
                    attr_int("bits", cfg.quant.bits as i64),
                    attr_int("block_size", cfg.quant.block as i64),
                    attr_int("accuracy_level", cfg.accuracy_level),
                ];
                self.push("MatMulNBits", MS_DOMAIN, &name, vec![req(0), req(1), req(2)], outs, attrs)
            }
            Op::Add => self.push("Add", "", &name, vec![req(0), req(1)], outs, vec![]),
            Op::Mul => self.push("Mul", "", &name, vec![req(0), req(1)], outs, vec![]),
            Op::Softplus => self.push("Softplus", "", &name, vec![req(0)], outs, vec![]),
            Op::Exp => self.push("Exp", "", &name, vec![req(0)], outs, vec![]),
            Op::Neg => self.push("Neg", "", &name, vec![req(0)], outs, vec![]),
            Op::Clip { min, max } => {
                // Clip's bounds are inputs of x's type (an infinite bound stays infinite in it).
                let elem = self.vg.type_of(g.input(id, 0).expect("validated")).elem;
                let lo = self.helper_const(tensor(&format!("{name}.min"), elem, &[], encode_f64(&[*min], elem)));
                let hi = self.helper_const(tensor(&format!("{name}.max"), elem, &[], encode_f64(&[*max], elem)));
                self.push("Clip", "", &name, vec![req(0), lo, hi], outs, vec![])
            }
            Op::Silu => {
                // Opset 18 has no SiLU: x * sigmoid(x).
                let s = format!("{name}.sigmoid");
                self.push("Sigmoid", "", &s, vec![req(0)], vec![s.clone()], vec![]);
                let ty = self.vg.type_of(g.input(id, 0).expect("validated")).clone();
                self.expansion_value_info(&s, &ty);
                self.push("Mul", "", &name, vec![req(0), s], outs, vec![]);
            }
            Op::SplitLast { sizes } => {
                let sizes: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
                let split = self.helper_const(i64_tensor(&format!("{name}.sizes"), &sizes));
                self.push("Split", "", &name, vec![req(0), split], outs, vec![attr_int("axis", -1)]);
            }
            Op::SliceLast { start, len } => {
                let starts = self.helper_const(i64_tensor(&format!("{name}.starts"), &[*start as i64]));
                let ends = self.helper_const(i64_tensor(&format!("{name}.ends"), &[(start + len) as i64]));
                let axes = self.helper_const(i64_tensor(&format!("{name}.axes"), &[-1]));
                self.push("Slice", "", &name, vec![req(0), starts, ends, axes], outs, vec![]);
            }
            Op::LastPosition => {
                let starts = self.helper_const(i64_tensor(&format!("{name}.starts"), &[-1]));
                let ends = self.helper_const(i64_tensor(&format!("{name}.ends"), &[i64::MAX]));
                let axes = self.helper_const(i64_tensor(&format!("{name}.axes"), &[1]));
                self.push("Slice", "", &name, vec![req(0), starts, ends, axes], outs, vec![]);
            }
            Op::ArgMaxLast => self.push(
                "ArgMax",
                "",
                &name,
                vec![req(0)],
                outs,
                vec![attr_int("axis", -1), attr_int("keepdims", 0), attr_int("select_last_index", 0)],
            ),
            Op::MinusOneWhereNonFinite => self.minus_one_where_non_finite(&name, id, req(0), req(1), out),
            Op::Unsqueeze { axis } => {
                let axes = self.helper_const(i64_tensor(&format!("{name}.axes"), &[*axis as i64]));
                self.push("Unsqueeze", "", &name, vec![req(0), axes], outs, vec![]);
            }
            Op::Expand { shape } => {
                let shape: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
                let shape = self.helper_const(i64_tensor(&format!("{name}.shape"), &shape));
                self.push("Expand", "", &name, vec![req(0), shape], outs, vec![]);
            }
            Op::CausalConvWithState(cfg) => {
                let act = attr_string(std_conv::ACTIVATION, if cfg.silu { "silu" } else { "none" });
                self.push(std_conv::OP, "", &name, optional_inputs(ins), outs, vec![act]);
            }
            Op::LinearAttention(cfg) => {
                let attrs = vec![
                    attr_int(std_la::Q_NUM_HEADS, cfg.heads as i64),
                    attr_int(std_la::KV_NUM_HEADS, cfg.heads as i64),
                    attr_string(std_la::UPDATE_RULE, std_la::GATED),
                    // Explicit: 0 (the default) means 1/sqrt(d_k).
                    attr_float(std_la::SCALE, cfg.scale as f32),
                ];
                self.push(std_la::OP, "", &name, optional_inputs(ins), outs, attrs);
            }
            Op::CausalConv1d(cfg) => {
                let act = if cfg.silu { "silu" } else { "none" };
                let mut attrs = vec![attr_string(conv_slots::ACTIVATION.str, act)];
                attrs.extend(slice_attrs(&cfg.slices, &conv_slots::SLICEABLE));
                let attrs = with_tensorrt_keys(attrs, &ins);
                self.push(conv_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::SelectiveScan(cfg) => {
                let mut attrs = vec![attr_int(scan_slots::DELTA_SOFTPLUS.str, cfg.delta_softplus as i64)];
                attrs.extend(slice_attrs(&cfg.slices, &scan_slots::SLICEABLE));
                let attrs = with_tensorrt_keys(attrs, &ins);
                self.push(scan_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::Reshape { keep, tail } => {
                let mut shape = vec![0i64; *keep];
                shape.extend(tail.iter().map(|&d| d as i64));
                let shape = self.helper_const(i64_tensor(&format!("{name}.shape"), &shape));
                self.push("Reshape", "", &name, vec![req(0), shape], outs, vec![]);
            }
            Op::GatedRmsNorm(cfg) => self.gated_rms_norm(&name, id, [req(0), req(1), req(2)], out, cfg),
            Op::SsdScan(cfg) => {
                let mut attrs = vec![
                    attr_int(ssd_slots::DT_SOFTPLUS.str, cfg.dt_softplus as i64),
                    attr_float(ssd_slots::DT_MIN.str, cfg.dt_min as f32),
                    attr_float(ssd_slots::DT_MAX.str, cfg.dt_max as f32),
                ];
                attrs.extend(slice_attrs(&cfg.slices, &ssd_slots::SLICEABLE));
                let dims = ssd_slots::PACKED_DIMS.iter().zip(cfg.dims.as_array());
                attrs.extend(dims.filter_map(|(name, d)| d.map(|d| attr_int(name.str, d as i64))));
                self.push(ssd_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::AddRmsNorm(cfg) => {
                let attrs = with_tensorrt_keys(vec![attr_float(norm_slots::EPSILON.str, cfg.eps as f32)], &ins);
                self.push(norm_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::FusedGatedRmsNorm(cfg) => {
                let n = &cfg.norm;
                let mut attrs = vec![
                    attr_float(gated_norm_slots::EPSILON.str, n.eps as f32),
                    attr_int(gated_norm_slots::GROUP_SIZE.str, n.group_size as i64),
                    attr_int(gated_norm_slots::NORM_BEFORE_GATE.str, n.norm_before_gate as i64),
                ];
                attrs.extend(slice_attrs(&cfg.slices, &gated_norm_slots::SLICEABLE));
                let attrs = with_tensorrt_keys(attrs, &ins);
                self.push(gated_norm_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::MambaLayerStep(cfg) => {
                let attrs = with_tensorrt_keys(vec![attr_float(step_slots::EPSILON.str, cfg.eps as f32)], &ins);
                self.push(LAYER_STEP_OP, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
            Op::Mamba2LayerStep(cfg) => {
                // No TensorRT keys: the op has no TensorRT plugin.
                let attrs = vec![
                    attr_float(step2_slots::EPSILON.str, cfg.eps as f32),
                    attr_float(step2_slots::DT_MIN.str, cfg.dt_min as f32),
                    attr_float(step2_slots::DT_MAX.str, cfg.dt_max as f32),
                    attr_int(step2_slots::NORM_BEFORE_GATE.str, cfg.norm_before_gate as i64),
                ];
                self.push(step2_slots::OP.str, CUSTOM_DOMAIN, &name, optional_inputs(ins), outs, attrs);
            }
        }
    }

    /// `picks` with -1 where a row of `scores` holds a NaN or an infinity, in standard ops:
    /// `Where(IsNaN(s - s), -1, picks)` with `s = ReduceSum(scores, axes=[-1])`. The sum is NaN
    /// where a row holds a NaN (or both infinities) and infinite where it holds one infinity, so
    /// `s - s` is NaN exactly then. One reduction reads the logits (ArgMax reads them once more);
    /// the rest works on one value a row. The alternatives cost more: `ReduceSum(scores * 0)`
    /// writes and reads a second logits-sized tensor (a prefill of every position's logits holds
    /// two), and ONNX leaves open whether ReduceMax and ReduceMin propagate a NaN. The
    /// one row this misreads is a finite one whose float32 sum overflows: a mean magnitude over
    /// 3.4e38 / vocab (7e33 at 50k entries), which float16 logits (|x| <= 65504) never reach and
    /// no working model produces. ORT folds none of it (ORT 1.32, all optimizations: the
    /// four nodes stay; `s - s` is no no-op to it).
    fn minus_one_where_non_finite(
        &mut self,
        name: &str,
        id: crate::ir::NodeId,
        scores: String,
        picks: String,
        out: String,
    ) {
        let g = self.vg.graph;
        let rows = self.vg.type_of(g.input(id, 1).expect("validated")).clone();
        let axes = self.helper_const(i64_tensor(&format!("{name}.axes"), &[-1]));
        let minus_one = (-1i64).to_le_bytes().to_vec();
        let minus_one = self.helper_const(tensor(&format!("{name}.minus_one"), Elem::I64, &[], minus_one));
        let t = |s: &str| format!("{name}.{s}");
        let reduce_attrs = vec![attr_int("keepdims", 0)];
        self.push("ReduceSum", "", &t("row_sum"), vec![scores, axes], vec![t("row_sum")], reduce_attrs);
        self.push("Sub", "", &t("sum_minus_sum"), vec![t("row_sum"), t("row_sum")], vec![t("sum_minus_sum")], vec![]);
        self.push("IsNaN", "", &t("not_finite"), vec![t("sum_minus_sum")], vec![t("not_finite")], vec![]);
        self.push("Where", "", name, vec![t("not_finite"), minus_one, picks], vec![out], vec![]);
        let sums = ValueType { elem: Elem::F32, shape: rows.shape.clone() };
        self.expansion_value_info(&t("row_sum"), &sums);
        self.expansion_value_info(&t("sum_minus_sum"), &sums);
        // The IR has no boolean type; the ONNX value_info says BOOL itself.
        let mut flags = value_info(&t("not_finite"), &sums);
        if let Some(onnx_protobuf::type_proto::Value::TensorType(tt)) =
            flags.type_.mut_or_insert_default().value.as_mut()
        {
            tt.elem_type = onnx_protobuf::tensor_proto::DataType::BOOL as i32;
        }
        self.graph.value_info.push(flags);
    }

    /// RMSNorm in the standard-op pattern ONNX Runtime fuses (SimplifiedLayerNormalization):
    /// Pow → ReduceMean → Add(eps) → Sqrt → Div → [Cast] → Mul(weight).
    fn rms_norm(&mut self, name: &str, id: crate::ir::NodeId, x: String, w: String, out: String, eps: f64) {
        let g = self.vg.graph;
        let x_ty = self.vg.type_of(g.input(id, 0).expect("validated")).clone();
        let x_elem = x_ty.elem;
        let w_elem = self.vg.type_of(g.input(id, 1).expect("validated")).elem;
        let two = self.helper_const(tensor(&format!("{name}.two"), x_elem, &[], encode_f64(&[2.0], x_elem)));
        let eps = self.helper_const(tensor(&format!("{name}.eps"), x_elem, &[], encode_f64(&[eps], x_elem)));
        let axes = self.helper_const(i64_tensor(&format!("{name}.axes"), &[-1]));
        let t = |s: &str| format!("{name}.{s}");
        self.push("Pow", "", &t("pow"), vec![x.clone(), two], vec![t("pow")], vec![]);
        self.push("ReduceMean", "", &t("mean"), vec![t("pow"), axes], vec![t("mean")], vec![attr_int("keepdims", 1)]);
        self.push("Add", "", &t("add_eps"), vec![t("mean"), eps], vec![t("add_eps")], vec![]);
        self.push("Sqrt", "", &t("sqrt"), vec![t("add_eps")], vec![t("sqrt")], vec![]);
        self.push("Div", "", &t("div"), vec![x, t("sqrt")], vec![t("div")], vec![]);
        let mut reduced = x_ty.clone();
        *reduced.shape.0.last_mut().expect("validated: rank >= 1") = Dim::Known(1);
        for (what, ty) in
            [("pow", &x_ty), ("mean", &reduced), ("add_eps", &reduced), ("sqrt", &reduced), ("div", &x_ty)]
        {
            self.expansion_value_info(&t(what), ty);
        }
        let mut normed = t("div");
        if x_elem != w_elem {
            self.expansion_value_info(&t("cast"), &ValueType { elem: w_elem, shape: x_ty.shape.clone() });
            self.push(
                "Cast",
                "",
                &t("cast"),
                vec![normed],
                vec![t("cast")],
                vec![attr_int("to", super::proto::data_type(w_elem) as i64)],
            );
            normed = t("cast");
        }
        self.push("Mul", "", name, vec![normed, w], vec![out], vec![]);
    }
}

impl Emitter<'_, '_> {
    /// Mamba-2's gated RMSNorm in standard ops: the gate (x * sigmoid(z) * z), a Reshape to
    /// `[..., groups, group_size]`, the RMSNorm pattern without weight, a Reshape back, the weight.
    fn gated_rms_norm(
        &mut self,
        name: &str,
        id: crate::ir::NodeId,
        [x, z, w]: [String; 3],
        out: String,
        cfg: &crate::ir::GatedRmsNormConfig,
    ) {
        let g = self.vg.graph;
        let xt = self.vg.type_of(g.input(id, 0).expect("validated"));
        let (elem, rank) = (xt.elem, xt.shape.rank());
        let width = xt.shape.last().and_then(|d| d.known()).expect("validated: known width") as i64;
        let t = |s: &str| format!("{name}.{s}");
        let mut grouped = vec![0i64; rank - 1];
        grouped.extend([-1, cfg.group_size as i64]);
        let mut flat = vec![0i64; rank - 1];
        flat.push(width);
        let grouped = self.helper_const(i64_tensor(&t("grouped_shape"), &grouped));
        let flat = self.helper_const(i64_tensor(&t("flat_shape"), &flat));
        let two = self.helper_const(tensor(&t("two"), elem, &[], encode_f64(&[2.0], elem)));
        let eps = self.helper_const(tensor(&t("eps"), elem, &[], encode_f64(&[cfg.eps], elem)));
        let axes = self.helper_const(i64_tensor(&t("axes"), &[-1]));
        self.push("Sigmoid", "", &t("z_sigmoid"), vec![z.clone()], vec![t("z_sigmoid")], vec![]);
        self.push("Mul", "", &t("z_silu"), vec![z, t("z_sigmoid")], vec![t("z_silu")], vec![]);
        let normed_in = if cfg.norm_before_gate {
            x
        } else {
            self.push("Mul", "", &t("gate"), vec![x, t("z_silu")], vec![t("gate")], vec![]);
            t("gate")
        };
        self.push("Reshape", "", &t("groups"), vec![normed_in, grouped], vec![t("groups")], vec![]);
        self.push("Pow", "", &t("pow"), vec![t("groups"), two], vec![t("pow")], vec![]);
        self.push("ReduceMean", "", &t("mean"), vec![t("pow"), axes], vec![t("mean")], vec![attr_int("keepdims", 1)]);
        self.push("Add", "", &t("add_eps"), vec![t("mean"), eps], vec![t("add_eps")], vec![]);
        self.push("Sqrt", "", &t("sqrt"), vec![t("add_eps")], vec![t("sqrt")], vec![]);
        self.push("Div", "", &t("div"), vec![t("groups"), t("sqrt")], vec![t("div")], vec![]);
        self.push("Reshape", "", &t("flat"), vec![t("div"), flat], vec![t("flat")], vec![]);
        if cfg.norm_before_gate {
            self.push("Mul", "", &t("times_weight"), vec![t("flat"), w], vec![t("times_weight")], vec![]);
            self.push("Mul", "", name, vec![t("times_weight"), t("z_silu")], vec![out], vec![]);
        } else {
            self.push("Mul", "", name, vec![t("flat"), w], vec![out], vec![]);
        }
    }
}

/// The `<input>_offset` attributes of a fused op's sliced inputs (docs/op-contract.md "Sliced
/// inputs"), by the op's table of sliceable slots and their attribute names.
fn slice_attrs(
    slices: &crate::ir::Slices,
    sliceable: &[(usize, mambac_op_schema::Name)],
) -> Vec<onnx_protobuf::AttributeProto> {
    sliceable.iter().filter_map(|&(slot, name)| slices.offset(slot).map(|o| attr_int(name.str, o as i64))).collect()
}

/// ONNX optional inputs: absent ones are empty names; trailing absent ones are dropped.
/// The attributes TensorRT's ONNX parser needs to find mambac's plugin (docs/tensorrt.md): it
/// looks a plugin up by op type, `plugin_namespace` and `plugin_version`, and ignores the domain
/// (TensorRT-LLM has a `SelectiveScan` of its own in namespace `tensorrt_llm`). A node with an
/// absent optional input before a present one also gets `present_inputs`, the bit mask of the
/// input slots it fills, since the plugin sees only the present inputs. ONNX Runtime's op ignores
/// all three.
fn with_tensorrt_keys(
    mut attrs: Vec<onnx_protobuf::AttributeProto>,
    ins: &[Option<String>],
) -> Vec<onnx_protobuf::AttributeProto> {
    use mambac_op_schema::tensorrt as trt;
    attrs.push(attr_string(trt::NAMESPACE_KEY.str, trt::NAMESPACE.str));
    attrs.push(attr_string(trt::VERSION_KEY.str, trt::VERSION.str));
    let last = ins.iter().rposition(Option::is_some).unwrap_or(0);
    if ins[..last].iter().any(Option::is_none) {
        let mask = ins.iter().enumerate().filter(|(_, v)| v.is_some()).fold(0i64, |m, (k, _)| m | (1 << k));
        attrs.push(attr_int(trt::PRESENT_INPUTS.str, mask));
    }
    attrs
}

fn optional_inputs(ins: Vec<Option<String>>) -> Vec<String> {
    let mut v: Vec<String> = ins.into_iter().map(|s| s.unwrap_or_default()).collect();
    while v.last().is_some_and(|s| s.is_empty()) {
        v.pop();
    }
    v
}
