//! One conformance case: seeded inputs rounded to their element type, the one-node model, the
//! float64 reference of the same inputs, and the comparison with docs/op-contract.md's tier.

use half::{bf16, f16};
use mambac_compiler::emit::proto;
use mambac_compiler::ir::{Dim, Elem, Shape, ValueType};
use mambac_compiler::reference::{
    self, CausalConv1dInputs, LayerStepInputs, Mamba2LayerStepInputs, SelectiveScanInputs, SsdScanInputs, StepFrame,
};
use mambac_op_schema::{
    causal_conv1d as conv, mamba2_layer_step as step2, mamba_layer_step as step, selective_scan as scan,
    ssd_scan as ssd, DOMAIN,
};
use onnx_protobuf::{AttributeProto, GraphProto, ModelProto, OperatorSetIdProto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::grid::{Case, OpName};

/// A tensor as the op sees it: values already rounded to `elem`, kept in float64.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub elem: Elem,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Tensor {
    /// Little-endian bytes of `elem` (what ORT and TensorProto.raw_data take).
    pub fn bytes(&self) -> Vec<u8> {
        match self.elem {
            Elem::F16 => self.values.iter().flat_map(|&v| f16::from_f64(v).to_le_bytes()).collect(),
            Elem::BF16 => self.values.iter().flat_map(|&v| bf16::from_f64(v).to_le_bytes()).collect(),
            _ => self.values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        }
    }
}

/// Rounds to the element type, as the op receives it.
fn round(v: f64, elem: Elem) -> f64 {
    match elem {
        Elem::F16 => f16::from_f64(v).to_f64(),
        Elem::BF16 => bf16::from_f64(v).to_f64(),
        _ => v as f32 as f64,
    }
}

/// Standard normal draws (Box-Muller), so the grid needs no distribution crate.
fn normal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

struct Draw<'r> {
    rng: &'r mut StdRng,
}

impl Draw<'_> {
    /// `scale * N(0, 1) + shift`, rounded to `elem`; `abs`: |N(0, 1)| first.
    fn tensor(&mut self, name: &str, elem: Elem, shape: &[usize], scale: f64, shift: f64, abs: bool) -> Tensor {
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                let x = normal(self.rng);
                round(scale * if abs { x.abs() } else { x } + shift, elem)
            })
            .collect();
        Tensor { name: name.to_string(), elem, shape: shape.to_vec(), values }
    }
}

/// A case made ready to run: the op's input slots (None = absent), its attributes, its outputs
/// with their types, and the float64 reference outputs.
pub struct Prepared {
    pub op_type: &'static str,
    pub inputs: Vec<Option<Tensor>>,
    pub attrs: Vec<AttributeProto>,
    pub outputs: Vec<(String, Elem, Vec<usize>)>,
    pub reference: Vec<Vec<f64>>,
}

pub fn prepare(case: &Case) -> Prepared {
    let mut rng = StdRng::seed_from_u64(case.seed);
    let mut d = Draw { rng: &mut rng };
    match case.op {
        OpName::SelectiveScan => selective_scan(case, &mut d),
        OpName::CausalConv1d => causal_conv1d(case, &mut d),
        OpName::MambaLayerStep => layer_step(case, &mut d),
        OpName::Mamba2LayerStep => mamba2_layer_step(case, &mut d),
        OpName::SsdScan => ssd_scan(case, &mut d),
    }
}

fn values(t: &Option<Tensor>) -> Option<&[f64]> {
    t.as_ref().map(|t| t.values.as_slice())
}

fn selective_scan(case: &Case, d: &mut Draw) -> Prepared {
    let [b, l, dim, n, g] = case.dims[..] else { unreachable!("scan dims") };
    let (t, o) = (case.elem, case.options);
    let name = |slot: usize| scan::INPUT_NAMES[slot];
    // The CPU tests' distributions: delta ~ N(-1, 0.5) before softplus, small and positive
    // without it (a negative step grows the state); A = -exp(N(0, 1)).
    let delta = if o.flag {
        d.tensor(name(scan::DELTA), t, &[b, l, dim], 0.5, -1.0, false)
    } else {
        d.tensor(name(scan::DELTA), t, &[b, l, dim], 0.3, 0.01, true)
    };
    let mut a = d.tensor(name(scan::A), Elem::F32, &[dim, n], 1.0, 0.0, false);
    a.values.iter_mut().for_each(|v| *v = round(-v.exp(), Elem::F32));
    let opt = |d: &mut Draw, slot, shape: &[usize], elem, scale, abs, on: bool| {
        on.then(|| d.tensor(name(slot), elem, shape, scale, 0.0, abs))
    };
    let inputs = vec![
        Some(d.tensor(name(scan::U), t, &[b, l, dim], 1.0, 0.0, false)),
        Some(delta),
        Some(a),
        Some(d.tensor(name(scan::B), t, &[b, l, g, n], 1.0, 0.0, false)),
        Some(d.tensor(name(scan::C), t, &[b, l, g, n], 1.0, 0.0, false)),
        opt(d, scan::D, &[dim], Elem::F32, 1.0, false, o.optional_inputs),
        opt(d, scan::Z, &[b, l, dim], t, 1.0, false, o.optional_inputs),
        opt(d, scan::DELTA_BIAS, &[dim], Elem::F32, if o.flag { 0.5 } else { 0.1 }, !o.flag, o.optional_inputs),
        opt(d, scan::INITIAL_STATE, &[b, dim, n], Elem::F32, 1.0, false, o.initial_state),
    ];
    let v = |slot: usize| values(&inputs[slot]);
    let (y, h) = reference::selective_scan(&SelectiveScanInputs {
        batch: b,
        seqlen: l,
        dim,
        dstate: n,
        ngroups: g,
        u: v(scan::U).unwrap(),
        delta: v(scan::DELTA).unwrap(),
        a: v(scan::A).unwrap(),
        b: v(scan::B).unwrap(),
        c: v(scan::C).unwrap(),
        d: v(scan::D),
        z: v(scan::Z),
        delta_bias: v(scan::DELTA_BIAS),
        initial_state: v(scan::INITIAL_STATE),
        delta_softplus: o.flag,
    });
    let mut outputs = vec![("y".to_string(), t, vec![b, l, dim])];
    let mut reference = vec![y];
    if o.final_state {
        outputs.push(("final_state".to_string(), Elem::F32, vec![b, dim, n]));
        reference.push(h);
    }
    let attrs = vec![proto::attr_int(scan::DELTA_SOFTPLUS.str, o.flag as i64)];
    Prepared { op_type: scan::OP.str, inputs, attrs, outputs, reference }
}

fn causal_conv1d(case: &Case, d: &mut Draw) -> Prepared {
    let [b, l, dim, k] = case.dims[..] else { unreachable!("conv dims") };
    let (t, o) = (case.elem, case.options);
    let name = |slot: usize| conv::INPUT_NAMES[slot];
    let inputs = vec![
        Some(d.tensor(name(conv::X), t, &[b, l, dim], 1.0, 0.0, false)),
        Some(d.tensor(name(conv::WEIGHT), t, &[dim, k], 0.5, 0.0, false)),
        o.optional_inputs.then(|| d.tensor(name(conv::BIAS), t, &[dim], 1.0, 0.0, false)),
        (o.initial_state && k > 1).then(|| d.tensor(name(conv::INITIAL_STATE), t, &[b, dim, k - 1], 1.0, 0.0, false)),
    ];
    let v = |slot: usize| values(&inputs[slot]);
    let (y, fin) = reference::causal_conv1d(&CausalConv1dInputs {
        batch: b,
        seqlen: l,
        dim,
        width: k,
        x: v(conv::X).unwrap(),
        weight: v(conv::WEIGHT).unwrap(),
        bias: v(conv::BIAS),
        initial_state: v(conv::INITIAL_STATE),
        silu: o.flag,
    });
    let mut outputs = vec![("y".to_string(), t, vec![b, l, dim])];
    let mut reference = vec![y];
    if o.final_state {
        outputs.push(("final_state".to_string(), t, vec![b, dim, k - 1]));
        reference.push(fin);
    }
    let attrs = vec![proto::attr_string(conv::ACTIVATION.str, if o.flag { "silu" } else { "none" })];
    Prepared { op_type: conv::OP.str, inputs, attrs, outputs, reference }
}

fn layer_step(case: &Case, d: &mut Draw) -> Prepared {
    let [b, h, i, n, r, k] = case.dims[..] else { unreachable!("layer step dims") };
    let (t, o) = (case.elem, case.options);
    let name = |slot: usize| step::INPUT_NAMES[slot];
    let f = Elem::F32;
    let inv = |x: usize| 1.0 / (x as f64).sqrt();
    let mut a = d.tensor(name(step::A), f, &[i, n], 1.0, 0.0, false);
    a.values.iter_mut().for_each(|v| *v = round(-v.exp(), f));
    let on = o.optional_inputs;
    let inputs = vec![
        Some(d.tensor(name(step::CONV_STATE), t, &[b, i, k - 1], 1.0, 0.0, false)),
        Some(d.tensor(name(step::SSM_STATE), f, &[b, i, n], 1.0, 0.0, false)),
        Some(d.tensor(name(step::RESIDUAL), f, &[b, 1, h], 1.0, 0.0, false)),
        Some(d.tensor(name(step::NORM_WEIGHT), f, &[h], 0.1, 1.0, false)),
        Some(d.tensor(name(step::IN_PROJ_WEIGHT), t, &[h, 2 * i], inv(h), 0.0, false)),
        on.then(|| d.tensor(name(step::IN_PROJ_BIAS), t, &[2 * i], 0.1, 0.0, false)),
        Some(d.tensor(name(step::CONV_WEIGHT), t, &[i, k], 0.5, 0.0, false)),
        on.then(|| d.tensor(name(step::CONV_BIAS), t, &[i], 0.1, 0.0, false)),
        Some(d.tensor(name(step::X_PROJ_WEIGHT), t, &[i, r + 2 * n], inv(i), 0.0, false)),
        Some(d.tensor(name(step::DT_PROJ_WEIGHT), t, &[r, i], inv(r), 0.0, false)),
        on.then(|| d.tensor(name(step::DT_BIAS), f, &[i], 0.5, -1.0, false)),
        Some(a),
        on.then(|| d.tensor(name(step::D), f, &[i], 1.0, 0.0, false)),
        Some(d.tensor(name(step::OUT_PROJ_WEIGHT), t, &[i, h], inv(i), 0.0, false)),
        on.then(|| d.tensor(name(step::OUT_PROJ_BIAS), t, &[h], 0.1, 0.0, false)),
    ];
    let v = |slot: usize| values(&inputs[slot]);
    let eps = step::DEFAULT_EPSILON as f64;
    let (res, conv_state, ssm_state) = reference::layer_step(&LayerStepInputs {
        frame: StepFrame::of_node(&step::FRAME, v, [b, h, k], eps),
        inner: i,
        dstate: n,
        dt_rank: r,
        ssm_state: v(step::SSM_STATE).unwrap(),
        x_proj_weight: v(step::X_PROJ_WEIGHT).unwrap(),
        dt_proj_weight: v(step::DT_PROJ_WEIGHT).unwrap(),
        dt_bias: v(step::DT_BIAS),
        a: v(step::A).unwrap(),
        d: v(step::D),
    });
    let outputs = vec![
        ("residual_out".to_string(), f, vec![b, 1, h]),
        ("conv_state_out".to_string(), t, vec![b, i, k - 1]),
        ("ssm_state_out".to_string(), f, vec![b, i, n]),
    ];
    let attrs = vec![proto::attr_float(step::EPSILON.str, step::DEFAULT_EPSILON)];
    Prepared { op_type: step::OP.str, inputs, attrs, outputs, reference: vec![res, conv_state, ssm_state] }
}

fn mamba2_layer_step(case: &Case, d: &mut Draw) -> Prepared {
    let [b, h, heads, hd, g, n, k] = case.dims[..] else { unreachable!("mamba2 layer step dims") };
    let (t, o) = (case.elem, case.options);
    let name = |slot: usize| step2::INPUT_NAMES[slot];
    let f = Elem::F32;
    let inv = |x: usize| 1.0 / (x as f64).sqrt();
    let inner = heads * hd;
    let conv_dim = inner + 2 * g * n;
    let in_dim = inner + conv_dim + heads;
    let mut a = d.tensor(name(step2::A), f, &[heads], 1.0, 0.0, false);
    a.values.iter_mut().for_each(|v| *v = round(-v.exp(), f));
    let on = o.optional_inputs;
    let inputs = vec![
        Some(d.tensor(name(step2::CONV_STATE), t, &[b, conv_dim, k - 1], 1.0, 0.0, false)),
        Some(d.tensor(name(step2::SSM_STATE), f, &[b, heads, hd, n], 1.0, 0.0, false)),
        Some(d.tensor(name(step2::RESIDUAL), f, &[b, 1, h], 1.0, 0.0, false)),
        Some(d.tensor(name(step2::NORM_WEIGHT), f, &[h], 0.1, 1.0, false)),
        Some(d.tensor(name(step2::IN_PROJ_WEIGHT), t, &[h, in_dim], inv(h), 0.0, false)),
        on.then(|| d.tensor(name(step2::IN_PROJ_BIAS), t, &[in_dim], 0.1, 0.0, false)),
        Some(d.tensor(name(step2::CONV_WEIGHT), t, &[conv_dim, k], 0.5, 0.0, false)),
        on.then(|| d.tensor(name(step2::CONV_BIAS), t, &[conv_dim], 0.1, 0.0, false)),
        on.then(|| d.tensor(name(step2::DT_BIAS), f, &[heads], 0.5, -1.0, false)),
        Some(a),
        on.then(|| d.tensor(name(step2::D), f, &[heads], 1.0, 0.0, false)),
        Some(d.tensor(name(step2::GATE_NORM_WEIGHT), f, &[inner], 0.1, 1.0, false)),
        Some(d.tensor(name(step2::OUT_PROJ_WEIGHT), t, &[inner, h], inv(inner), 0.0, false)),
        on.then(|| d.tensor(name(step2::OUT_PROJ_BIAS), t, &[h], 0.1, 0.0, false)),
    ];
    let v = |slot: usize| values(&inputs[slot]);
    let eps = step2::DEFAULT_EPSILON as f64;
    let (dt_min, dt_max) = if o.flag { (0.01f32, 0.5f32) } else { (0.0, f32::INFINITY) };
    let (res, conv_state, ssm_state) = reference::mamba2_layer_step(&Mamba2LayerStepInputs {
        frame: StepFrame::of_node(&step2::FRAME, v, [b, h, k], eps),
        heads,
        head_dim: hd,
        ngroups: g,
        dstate: n,
        dt_min: dt_min as f64,
        dt_max: dt_max as f64,
        norm_before_gate: false,
        ssm_state: v(step2::SSM_STATE).unwrap(),
        dt_bias: v(step2::DT_BIAS),
        a: v(step2::A).unwrap(),
        d: v(step2::D),
        gate_norm_weight: v(step2::GATE_NORM_WEIGHT).unwrap(),
    });
    let outputs = vec![
        ("residual_out".to_string(), f, vec![b, 1, h]),
        ("conv_state_out".to_string(), t, vec![b, conv_dim, k - 1]),
        ("ssm_state_out".to_string(), f, vec![b, heads, hd, n]),
    ];
    let attrs = vec![
        proto::attr_float(step2::EPSILON.str, step2::DEFAULT_EPSILON),
        proto::attr_float(step2::DT_MIN.str, dt_min),
        proto::attr_float(step2::DT_MAX.str, dt_max),
        proto::attr_int(step2::NORM_BEFORE_GATE.str, 0),
    ];
    Prepared { op_type: step2::OP.str, inputs, attrs, outputs, reference: vec![res, conv_state, ssm_state] }
}

fn ssd_scan(case: &Case, d: &mut Draw) -> Prepared {
    let [b, l, heads, hd, g, n] = case.dims[..] else { unreachable!("ssd scan dims") };
    let (t, o) = (case.elem, case.options);
    let name = |slot: usize| ssd::INPUT_NAMES[slot];
    let f = Elem::F32;
    // tests/python/test_ops_ssd.py's distributions: dt + dt_bias ~ N(-2, 0.7) before softplus
    // (dt' about 0.03 to 0.4), small and positive without it; A = -exp(N(0, 0.5)).
    let (dt, dt_bias) = if o.flag {
        (d.tensor(name(ssd::DT), t, &[b, l, heads], 0.5, -1.0, false), (0.5, -1.0, false))
    } else {
        (d.tensor(name(ssd::DT), t, &[b, l, heads], 0.1, 0.0, true), (0.05, 0.0, true))
    };
    let mut a = d.tensor(name(ssd::A), f, &[heads], 0.5, 0.0, false);
    a.values.iter_mut().for_each(|v| *v = round(-v.exp(), f));
    let on = o.optional_inputs;
    let inputs = vec![
        Some(d.tensor(name(ssd::X), t, &[b, l, heads, hd], 1.0, 0.0, false)),
        Some(dt),
        Some(a),
        Some(d.tensor(name(ssd::B), t, &[b, l, g, n], 1.0, 0.0, false)),
        Some(d.tensor(name(ssd::C), t, &[b, l, g, n], 1.0, 0.0, false)),
        on.then(|| d.tensor(name(ssd::D), f, &[heads], 1.0, 0.0, false)),
        on.then(|| d.tensor(name(ssd::DT_BIAS), f, &[heads], dt_bias.0, dt_bias.1, dt_bias.2)),
        o.initial_state.then(|| d.tensor(name(ssd::INITIAL_STATE), f, &[b, heads, hd, n], 1.0, 0.0, false)),
    ];
    let v = |slot: usize| values(&inputs[slot]);
    // Both ends of the clamp bite for either dt distribution; without it, the op's defaults.
    let (dt_min, dt_max) = if o.limit { (0.05f32, 0.2f32) } else { (0.0, f32::INFINITY) };
    let (y, h) = reference::ssd_scan(&SsdScanInputs {
        batch: b,
        seqlen: l,
        heads,
        head_dim: hd,
        ngroups: g,
        dstate: n,
        x: v(ssd::X).unwrap(),
        dt: v(ssd::DT).unwrap(),
        a: v(ssd::A).unwrap(),
        b: v(ssd::B).unwrap(),
        c: v(ssd::C).unwrap(),
        d: v(ssd::D),
        dt_bias: v(ssd::DT_BIAS),
        initial_state: v(ssd::INITIAL_STATE),
        dt_softplus: o.flag,
        dt_min: dt_min as f64,
        dt_max: dt_max as f64,
    });
    let mut outputs = vec![("y".to_string(), t, vec![b, l, heads, hd])];
    let mut reference = vec![y];
    if o.final_state {
        outputs.push(("final_state".to_string(), f, vec![b, heads, hd, n]));
        reference.push(h);
    }
    let mut attrs = vec![proto::attr_int(ssd::DT_SOFTPLUS.str, o.flag as i64)];
    if o.limit {
        attrs.push(proto::attr_float(ssd::DT_MIN.str, dt_min));
        attrs.push(proto::attr_float(ssd::DT_MAX.str, dt_max));
    }
    Prepared { op_type: ssd::OP.str, inputs, attrs, outputs, reference }
}

fn known(shape: &[usize], elem: Elem) -> ValueType {
    ValueType { elem, shape: Shape(shape.iter().map(|&n| Dim::Known(n)).collect()) }
}

/// The one-node model, inputs and outputs with their full shapes.
pub fn model(p: &Prepared) -> ModelProto {
    let mut slots: Vec<String> =
        p.inputs.iter().map(|t| t.as_ref().map_or(String::new(), |t| t.name.clone())).collect();
    while slots.last().is_some_and(String::is_empty) {
        slots.pop();
    }
    let outs: Vec<String> = p.outputs.iter().map(|(n, _, _)| n.clone()).collect();
    let mut node = proto::node(p.op_type, DOMAIN.str, p.op_type, slots, outs);
    node.attribute = p.attrs.clone();
    let mut graph = GraphProto::new();
    graph.name = p.op_type.to_string();
    graph.node.push(node);
    graph.input = p.inputs.iter().flatten().map(|t| proto::value_info(&t.name, &known(&t.shape, t.elem))).collect();
    graph.output = p.outputs.iter().map(|(n, e, s)| proto::value_info(n, &known(s, *e))).collect();
    let mut model = ModelProto::new();
    model.ir_version = 8;
    model.producer_name = "mambac conformance".into();
    for (domain, version) in [("", mambac_compiler::emit::OPSET), (DOMAIN.str, mambac_op_schema::DOMAIN_VERSION)] {
        let mut o = OperatorSetIdProto::new();
        o.domain = domain.to_string();
        o.version = version;
        model.opset_import.push(o);
    }
    model.graph = Some(graph).into();
    model
}

/// docs/op-contract.md's op-level tier: (rtol, atol).
pub fn tier(elem: Elem) -> (f64, f64) {
    match elem {
        Elem::F16 => (3e-3, 5e-3),
        Elem::BF16 => (3e-2, 5e-2),
        _ => (1e-5, 1e-5),
    }
}

/// Worst `|out - ref| / max|ref|`, and whether every element is within
/// `atol * max(1, max|ref|) + rtol * |ref|` (the tier with atol relative to the tensor's scale,
/// docs/decisions.md). NaN fails.
pub fn compare(out: &[f64], reference: &[f64], elem: Elem) -> (f64, bool) {
    let (rtol, atol) = tier(elem);
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let atol = atol * scale.max(1.0);
    let mut worst = 0.0f64;
    let mut ok = out.len() == reference.len();
    for (o, r) in out.iter().zip(reference) {
        let err = (o - r).abs();
        if err.is_nan() {
            return (f64::INFINITY, false);
        }
        worst = worst.max(err);
        ok &= err <= atol + rtol * r.abs();
    }
    (if scale > 0.0 { worst / scale } else { worst }, ok)
}
