//! The shape rules exist once per language: Rust (`mambac_compiler::ir::infer_node`, used by the
//! compiler) and C++ (`cpp/shape_check.cpp`, used by the ORT ops and the TensorRT plugin). This
//! test feeds both the same seeded grid of valid and broken inputs and requires the same verdict:
//! both accept (Rust's every output type equal to the one the C++ sizes give), or both reject
//! naming the same input. Optional outputs (`final_state`) are on in half the cases.

use mambac_compiler::ir::{gated_norm_slots, FusedGatedRmsNormConfig, GatedRmsNormConfig};
use mambac_compiler::ir::{
    infer_node, AddRmsNormConfig, CausalConv1dConfig, Dim, Elem, Mamba2LayerStepConfig, MambaLayerStepConfig, Op,
    SelectiveScanConfig, Slices, SsdDims, SsdScanConfig, ValueType,
};
use mambac_compiler::ir::{step2_slots, step_slots};
use mambac_ops::ffi::{
    check_add_rms_norm, check_causal_conv1d, check_gated_rms_norm, check_mamba2_layer_step, check_mamba_layer_step,
    check_selective_scan, check_ssd_scan, ElemType, SsdScanDims, TensorDesc,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
struct Input {
    elem: Elem,
    dims: Vec<usize>,
}

fn onnx_code(e: Elem) -> i32 {
    match e {
        Elem::F32 => 1,
        Elem::U8 => 2,
        Elem::I64 => 7,
        Elem::F16 => 10,
        Elem::BF16 => 16,
    }
}

fn to_desc(i: &Option<Input>) -> TensorDesc {
    match i {
        None => TensorDesc::absent(),
        Some(i) => TensorDesc::new(onnx_code(i.elem), &i.dims.iter().map(|&d| d as i64).collect::<Vec<_>>()),
    }
}

fn to_type(i: &Option<Input>) -> Option<ValueType> {
    i.as_ref().map(|i| ValueType::new(i.elem, i.dims.iter().map(|&d| Dim::Known(d)).collect()))
}

/// Which input a C++ error message names: `... input 'B' ...`.
fn named_input(msg: &str) -> Option<String> {
    let start = msg.find("input '")? + "input '".len();
    let end = msg[start..].find('\'')? + start;
    Some(msg[start..end].to_string())
}

fn elem_of(e: ElemType) -> Elem {
    match e {
        ElemType::F16 => Elem::F16,
        ElemType::BF16 => Elem::BF16,
        _ => Elem::F32,
    }
}

/// An output as the C++ sizes give it.
fn out(elem: Elem, dims: &[usize]) -> (Elem, Vec<usize>) {
    (elem, dims.to_vec())
}

/// One random change that may or may not break the inputs; it may remove the `required` slots.
fn mutate(rng: &mut StdRng, inputs: &mut [Option<Input>], required: &[usize]) {
    let present: Vec<usize> = (0..inputs.len()).filter(|&k| inputs[k].is_some()).collect();
    let k = present[rng.gen_range(0..present.len())];
    match rng.gen_range(0..5) {
        // A rank-0 input (a rank-1 one popped) has no dim to change.
        0 if inputs[k].as_ref().is_some_and(|i| i.dims.is_empty()) => {}
        0 => {
            let inp = inputs[k].as_mut().unwrap();
            let d = rng.gen_range(0..inp.dims.len());
            inp.dims[d] = rng.gen_range(1..9);
        }
        1 => {
            let inp = inputs[k].as_mut().unwrap();
            if rng.gen_bool(0.5) {
                inp.dims.push(rng.gen_range(1..4));
            } else {
                inp.dims.pop();
            }
        }
        2 => inputs[k].as_mut().unwrap().elem = [Elem::F32, Elem::F16, Elem::BF16, Elem::I64][rng.gen_range(0..4)],
        3 if required.contains(&k) => inputs[k] = None,
        _ => {}
    }
}

fn scan_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, l, n) = (rng.gen_range(1..4), rng.gen_range(1..6), rng.gen_range(1..9));
    let g = rng.gen_range(1..4);
    let d = g * rng.gen_range(1..5);
    let t = |dims: Vec<usize>| Some(Input { elem, dims });
    let f = |dims: Vec<usize>| Some(Input { elem: Elem::F32, dims });
    let mut opt = |x: Option<Input>| if rng.gen_bool(0.5) { x } else { None };
    vec![
        t(vec![b, l, d]),
        t(vec![b, l, d]),
        f(vec![d, n]),
        t(vec![b, l, g, n]),
        t(vec![b, l, g, n]),
        opt(f(vec![d])),
        opt(t(vec![b, l, d])),
        opt(f(vec![d])),
        opt(f(vec![b, d, n])),
    ]
}

fn ssd_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, l, p, n) = (rng.gen_range(1..4), rng.gen_range(1..6), rng.gen_range(1..5), rng.gen_range(1..9));
    let g = rng.gen_range(1..4);
    let h = g * rng.gen_range(1..4);
    let t = |dims: Vec<usize>| Some(Input { elem, dims });
    let f = |dims: Vec<usize>| Some(Input { elem: Elem::F32, dims });
    let mut opt = |x: Option<Input>| if rng.gen_bool(0.5) { x } else { None };
    vec![
        t(vec![b, l, h, p]),
        t(vec![b, l, h]),
        f(vec![h]),
        t(vec![b, l, g, n]),
        t(vec![b, l, g, n]),
        opt(f(vec![h])),
        opt(f(vec![h])),
        opt(f(vec![b, h, p, n])),
    ]
}

fn conv_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, l, d, w) = (rng.gen_range(1..4), rng.gen_range(1..6), rng.gen_range(1..9), rng.gen_range(2..5));
    let t = |dims: Vec<usize>| Some(Input { elem, dims });
    let mut opt = |x: Option<Input>| if rng.gen_bool(0.5) { x } else { None };
    vec![t(vec![b, l, d]), t(vec![d, w]), opt(t(vec![d])), opt(t(vec![b, d, w - 1]))]
}

fn add_norm_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, l, h) = (rng.gen_range(1..4), rng.gen_range(1..6), rng.gen_range(1..9));
    let f = |dims: Vec<usize>| Some(Input { elem: Elem::F32, dims });
    let residual = if rng.gen_bool(0.5) { f(vec![b, l, h]) } else { None };
    vec![Some(Input { elem, dims: vec![b, l, h] }), residual, f(vec![h])]
}

/// The C++ verdict: every output's type from its sizes, or its message.
type CppVerdict = Result<Vec<(Elem, Vec<usize>)>, String>;

fn step_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, h, i, n) = (rng.gen_range(1..4), rng.gen_range(1..9), rng.gen_range(1..9), rng.gen_range(1..9));
    let (r, k) = (rng.gen_range(1..4), rng.gen_range(2..5));
    let t = |dims: Vec<usize>| Some(Input { elem, dims });
    let f = |dims: Vec<usize>| Some(Input { elem: Elem::F32, dims });
    let mut opt = |x: Option<Input>| if rng.gen_bool(0.5) { x } else { None };
    vec![
        t(vec![b, i, k - 1]),
        f(vec![b, i, n]),
        f(vec![b, 1, h]),
        f(vec![h]),
        t(vec![h, 2 * i]),
        opt(t(vec![2 * i])),
        t(vec![i, k]),
        opt(t(vec![i])),
        t(vec![i, r + 2 * n]),
        t(vec![r, i]),
        opt(f(vec![i])),
        f(vec![i, n]),
        opt(f(vec![i])),
        t(vec![i, h]),
        opt(t(vec![h])),
    ]
}

fn step2_inputs(rng: &mut StdRng, elem: Elem) -> Vec<Option<Input>> {
    let (b, hid, p, n, k) =
        (rng.gen_range(1..4), rng.gen_range(1..9), rng.gen_range(1..5), rng.gen_range(1..6), rng.gen_range(1..5));
    let g = rng.gen_range(1..4);
    let heads = g * rng.gen_range(1..3);
    let inner = heads * p;
    let conv = inner + 2 * g * n;
    let in_dim = inner + conv + heads;
    let t = |dims: Vec<usize>| Some(Input { elem, dims });
    let f = |dims: Vec<usize>| Some(Input { elem: Elem::F32, dims });
    let mut opt = |x: Option<Input>| if rng.gen_bool(0.5) { x } else { None };
    vec![
        t(vec![b, conv, k - 1]),
        f(vec![b, heads, p, n]),
        f(vec![b, 1, hid]),
        f(vec![hid]),
        t(vec![hid, in_dim]),
        opt(t(vec![in_dim])),
        t(vec![conv, k]),
        opt(t(vec![conv])),
        opt(f(vec![heads])),
        f(vec![heads]),
        opt(f(vec![heads])),
        f(vec![inner]),
        t(vec![inner, hid]),
        opt(t(vec![hid])),
    ]
}

fn compare(label: &str, op: &Op, inputs: &[Option<Input>], cpp: CppVerdict) -> bool {
    let types: Vec<Option<ValueType>> = inputs.iter().map(to_type).collect();
    let refs: Vec<Option<&ValueType>> = types.iter().map(|t| t.as_ref()).collect();
    let rust = infer_node(op, &refs);
    match (&rust, &cpp) {
        (Ok(outs), Ok(want)) => {
            let got: Vec<(Elem, Vec<usize>)> = outs.iter().map(|t| (t.elem, t.shape.concrete().unwrap())).collect();
            assert_eq!(&got, want, "{label}: output types for {inputs:?}");
            true
        }
        (Err(r), Err(c)) => {
            assert_eq!(
                Some(r.input.clone()),
                named_input(c),
                "{label}: Rust says `{r}`, C++ says `{c}` for {inputs:?}"
            );
            false
        }
        _ => panic!("{label}: Rust {rust:?} vs C++ {cpp:?} for {inputs:?}"),
    }
}

#[test]
fn selective_scan_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261128);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let final_state = (case / 3) % 2 == 1;
        let op =
            Op::SelectiveScan(SelectiveScanConfig { delta_softplus: true, final_state, slices: Default::default() });
        let mut inputs = scan_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2, 3, 4]);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_selective_scan(&descs)
            .map(|p| {
                let mut outs = vec![out(elem_of(p.elem), &[p.batch, p.seqlen, p.dim])];
                if final_state {
                    outs.push(out(Elem::F32, &[p.batch, p.dim, p.dstate]));
                }
                outs
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("scan case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn causal_conv1d_checks_agree() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let final_state = (case / 3) % 2 == 1;
        let op = Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state, slices: Default::default() });
        let mut inputs = conv_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1]);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_causal_conv1d(&descs)
            .map(|p| {
                let t = elem_of(p.elem);
                let mut outs = vec![out(t, &[p.batch, p.seqlen, p.dim])];
                if final_state {
                    outs.push(out(t, &[p.batch, p.dim, p.width - 1]));
                }
                outs
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("conv case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn mamba_layer_step_checks_agree() {
    let mut rng = StdRng::seed_from_u64(1212);
    let op = Op::MambaLayerStep(MambaLayerStepConfig { eps: 1e-5 });
    let required: Vec<usize> = (0..15).filter(|s| !step_slots::OPTIONAL.contains(s)).collect();
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = step_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &required);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_mamba_layer_step(&descs)
            .map(|p| {
                vec![
                    out(Elem::F32, &[p.batch, 1, p.hidden]),
                    out(elem_of(p.elem), &[p.batch, p.inner, p.width - 1]),
                    out(Elem::F32, &[p.batch, p.inner, p.dstate]),
                ]
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("step case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn ssd_scan_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261203);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let final_state = (case / 3) % 2 == 1;
        let op = Op::SsdScan(SsdScanConfig {
            dt_softplus: true,
            dt_min: 0.0,
            dt_max: f64::INFINITY,
            final_state,
            slices: Default::default(),
            dims: Default::default(),
        });
        let mut inputs = ssd_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2, 3, 4]);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_ssd_scan(&descs, &SsdScanDims::unset())
            .map(|p| {
                let mut outs = vec![out(elem_of(p.elem), &[p.batch, p.seqlen, p.heads, p.head_dim])];
                if final_state {
                    outs.push(out(Elem::F32, &[p.batch, p.heads, p.head_dim, p.dstate]));
                }
                outs
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("ssd case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn mamba2_layer_step_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261204);
    let op = Op::Mamba2LayerStep(Mamba2LayerStepConfig {
        eps: 1e-5,
        dt_min: 0.0,
        dt_max: f64::INFINITY,
        norm_before_gate: false,
    });
    let required: Vec<usize> = (0..14).filter(|s| !step2_slots::OPTIONAL.contains(s)).collect();
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = step2_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &required);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_mamba2_layer_step(&descs)
            .map(|p| {
                let conv = p.heads * p.head_dim + 2 * p.ngroups * p.dstate;
                vec![
                    out(Elem::F32, &[p.batch, 1, p.hidden]),
                    out(elem_of(p.elem), &[p.batch, conv, p.width - 1]),
                    out(Elem::F32, &[p.batch, p.heads, p.head_dim, p.dstate]),
                ]
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("mamba2 step case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

/// Reads some of the `sliceable` inputs as slices (docs/op-contract.md "Sliced inputs"): each
/// present one, half the time, gets an offset of 0-2 and a last axis 0-2 channels longer than the
/// slice on either side, so the later mutations may push the slice out of range or keep it in.
fn slice_some(rng: &mut StdRng, inputs: &mut [Option<Input>], sliceable: &[usize]) -> Slices {
    let mut slices = Slices::default();
    for &slot in sliceable {
        if let Some(i) = inputs[slot].as_mut().filter(|_| rng.gen_bool(0.5)) {
            let (offset, extra) = (rng.gen_range(0..3), rng.gen_range(0..3));
            *i.dims.last_mut().expect("sliceable inputs have rank 3 or 4") += offset + extra;
            slices = slices.with(slot, offset);
        }
    }
    slices
}

fn sliced_descs(inputs: &[Option<Input>], slices: &Slices) -> Vec<TensorDesc> {
    inputs.iter().enumerate().map(|(slot, i)| to_desc(i).sliced_at(slices.offset(slot).map(|o| o as i64))).collect()
}

#[test]
fn sliced_selective_scan_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261203);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = scan_inputs(&mut rng, elem);
        let slices = slice_some(&mut rng, &mut inputs, &[3, 4, 6]);
        let op =
            Op::SelectiveScan(SelectiveScanConfig { delta_softplus: true, final_state: true, slices: slices.clone() });
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2, 3, 4]);
        }
        let cpp = check_selective_scan(&sliced_descs(&inputs, &slices))
            .map(|p| {
                vec![out(elem_of(p.elem), &[p.batch, p.seqlen, p.dim]), out(Elem::F32, &[p.batch, p.dim, p.dstate])]
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("sliced scan case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn sliced_causal_conv1d_checks_agree() {
    let mut rng = StdRng::seed_from_u64(12);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = conv_inputs(&mut rng, elem);
        let slices = slice_some(&mut rng, &mut inputs, &[0]);
        let op = Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state: true, slices: slices.clone() });
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1]);
        }
        let cpp = check_causal_conv1d(&sliced_descs(&inputs, &slices))
            .map(|p| {
                let t = elem_of(p.elem);
                vec![out(t, &[p.batch, p.seqlen, p.dim]), out(t, &[p.batch, p.dim, p.width - 1])]
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("sliced conv case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

/// Both verdicts on one SsdScan with final_state (the inputs mutated after the node was made, so
/// they may no longer fit it): true if both accept.
fn compare_ssd(label: &str, inputs: &[Option<Input>], slices: &Slices, dims: SsdDims) -> bool {
    let cfg = SsdScanConfig {
        dt_softplus: true,
        dt_min: 0.0,
        dt_max: f64::INFINITY,
        final_state: true,
        slices: slices.clone(),
        dims,
    };
    let attrs = SsdScanDims::from_attrs(dims.as_array().map(|d| d.map(|d| d as i64)));
    let cpp = check_ssd_scan(&sliced_descs(inputs, slices), &attrs)
        .map(|p| {
            vec![
                out(elem_of(p.elem), &[p.batch, p.seqlen, p.heads, p.head_dim]),
                out(Elem::F32, &[p.batch, p.heads, p.head_dim, p.dstate]),
            ]
        })
        .map_err(|e| e.what().to_string());
    compare(label, &Op::SsdScan(cfg), inputs, cpp)
}

#[test]
fn sliced_ssd_scan_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261204);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = ssd_inputs(&mut rng, elem);
        let slices = slice_some(&mut rng, &mut inputs, &[1]);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2, 3, 4]);
        }
        if compare_ssd(&format!("sliced ssd case {case}"), &inputs, &slices, SsdDims::default()) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

/// x, B and C packed into rank-3 rows (docs/op-contract.md "Sliced inputs"): each with its dims
/// as attributes mostly, missing now and then; whole inputs with the attributes set sometimes.
#[test]
fn packed_ssd_scan_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261205);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let mut inputs = ssd_inputs(&mut rng, elem);
        let (p, g, n) = {
            let (x, b) = (inputs[0].as_ref().unwrap(), inputs[3].as_ref().unwrap());
            (x.dims[3], b.dims[2], b.dims[3])
        };
        let mut slices = Slices::default();
        let mut dims = SsdDims::default();
        for slot in [0, 3, 4] {
            let packed = rng.gen_bool(0.5);
            if packed {
                let i = inputs[slot].as_mut().unwrap();
                let (offset, extra) = (rng.gen_range(0..3), rng.gen_range(0..3));
                let count = i.dims.pop().unwrap() * i.dims.pop().unwrap();
                i.dims.push(offset + count + extra);
                slices = slices.with(slot, offset);
            }
            if rng.gen_bool(if packed { 0.9 } else { 0.2 }) {
                if slot == 0 {
                    dims.head_dim = Some(p);
                } else {
                    dims.ngroups = Some(g);
                    dims.dstate = Some(n);
                }
            }
        }
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2, 3, 4]);
        }
        if compare_ssd(&format!("packed ssd case {case}"), &inputs, &slices, dims) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

#[test]
fn add_rms_norm_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261203);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let residual_out = (case / 3) % 2 == 1;
        let op = Op::AddRmsNorm(AddRmsNormConfig { eps: 1e-5, residual_out });
        let mut inputs = add_norm_inputs(&mut rng, elem);
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 2]);
        }
        let descs: Vec<TensorDesc> = inputs.iter().map(to_desc).collect();
        let cpp = check_add_rms_norm(&descs)
            .map(|p| {
                // The sizes are x's (the check returns rows = batch * seqlen): its dims, checked.
                let dims = &inputs[0].as_ref().expect("accepted: x present").dims;
                assert_eq!((p.rows, p.hidden), (dims[0] * dims[1], dims[2]));
                let mut outs = vec![out(elem_of(p.elem), dims)];
                if residual_out {
                    outs.push(out(Elem::F32, dims));
                }
                outs
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("add_rms_norm case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}

/// GatedRmsNorm (y, z, weight) with z whole or read at an offset of a longer row; the group size
/// divides d unless a mutation changes d.
#[test]
fn gated_rms_norm_checks_agree() {
    let mut rng = StdRng::seed_from_u64(20261205);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..3000 {
        let elem = [Elem::F32, Elem::F16, Elem::BF16][case % 3];
        let (b, l, gs) = (rng.gen_range(1..4), rng.gen_range(1..6), rng.gen_range(1..5));
        let d = gs * rng.gen_range(1..4);
        let t = |dims: Vec<usize>| Some(Input { elem, dims });
        let mut inputs = vec![t(vec![b, l, d]), t(vec![b, l, d]), Some(Input { elem: Elem::F32, dims: vec![d] })];
        let slices = slice_some(&mut rng, &mut inputs, &[gated_norm_slots::Z]);
        let norm = GatedRmsNormConfig { eps: 1e-5, group_size: gs, norm_before_gate: case % 2 == 0 };
        let op = Op::FusedGatedRmsNorm(FusedGatedRmsNormConfig { norm, slices: slices.clone() });
        for _ in 0..rng.gen_range(0..3) {
            mutate(&mut rng, &mut inputs, &[0, 1, 2]);
        }
        let cpp = check_gated_rms_norm(&sliced_descs(&inputs, &slices), gs as i64)
            .map(|p| {
                // rows = batch * seqlen: the output keeps y's [batch, seqlen, d], y's type.
                let y = &inputs[0].as_ref().expect("accepted: y present").dims;
                assert_eq!((p.rows, p.d), (y[0] * y[1], y[2]));
                vec![out(elem_of(p.elem), y)]
            })
            .map_err(|e| e.what().to_string());
        if compare(&format!("gated norm case {case}"), &op, &inputs, cpp) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 500 && rejected > 500, "grid too one-sided: {accepted} accepted, {rejected} rejected");
}
