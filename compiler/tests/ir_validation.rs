//! Validation and the pass driver: errors name the node and the input at fault, rewrites are
//! labelled and can be stopped after N (bisecting), and a malformed graph is refused.

use mambac_compiler::ir::scan_slots;
use mambac_compiler::ir::{
    validate, CausalConv1dConfig, ConstSource, ConstTensor, ConstTransform, Dim, Elem, Graph, Op, SelectiveScanConfig,
    ValidationError, ValueRef, ValueType,
};
use mambac_compiler::lower::{lower_config, LowerOptions};
use mambac_compiler::passes::{run_passes, RULES};

fn input(g: &mut Graph, name: &str, elem: Elem, dims: Vec<Dim>) -> ValueRef {
    g.add_op(name, Op::Input { name: name.into(), ty: ValueType::new(elem, dims) }, &[]).into()
}

fn constant(g: &mut Graph, name: &str, elem: Elem, shape: &[usize]) -> ValueRef {
    let c = ConstTensor {
        name: name.into(),
        shape: shape.to_vec(),
        elem,
        source: ConstSource::Computed(std::sync::Arc::new(vec![0.5; shape.iter().product()])),
    };
    g.add_op(name, Op::Const(c), &[]).into()
}

fn scan_graph(b_dims: Vec<Dim>, a_elem: Elem) -> Graph {
    let mut g = Graph::new();
    let bl = || vec![Dim::sym("batch"), Dim::sym("seqlen")];
    let mut udims = bl();
    udims.push(Dim::Known(48));
    let u = input(&mut g, "u", Elem::F32, udims.clone());
    let delta = input(&mut g, "delta", Elem::F32, udims);
    let a = constant(&mut g, "A", a_elem, &[48, 16]);
    let b = input(&mut g, "B", Elem::F32, b_dims.clone());
    let c = input(&mut g, "C", Elem::F32, b_dims);
    let s = g.add(
        "scan",
        Op::SelectiveScan(SelectiveScanConfig { delta_softplus: true, final_state: false, slices: Default::default() }),
        &[Some(u), Some(delta), Some(a), Some(b), Some(c)],
    );
    g.add_output("y", s.into());
    g
}

#[test]
fn valid_scan_graph_infers_output_type() {
    let dims = vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(3), Dim::Known(16)];
    let g = scan_graph(dims, Elem::F32);
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "float32[batch, seqlen, 48]");
}

#[test]
fn groups_must_divide_dim() {
    let dims = vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(5), Dim::Known(16)];
    let err = validate(&scan_graph(dims, Elem::F32)).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'scan' (SelectiveScan): input 'B' has shape [batch, seqlen, 5, 16], ngroups 5 does not divide dim 48"
    );
}

#[test]
fn a_must_be_float32() {
    let dims = vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(1), Dim::Known(16)];
    let err = validate(&scan_graph(dims, Elem::F16)).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'scan' (SelectiveScan): input 'A' has element type float16, expected float32 (A is always float32)"
    );
}

#[test]
fn b_with_wrong_dstate_is_named() {
    let dims = vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(1), Dim::Known(8)];
    let err = validate(&scan_graph(dims, Elem::F32)).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'scan' (SelectiveScan): input 'B' has shape [batch, seqlen, 1, 8], expected [batch, seqlen, 1, 16]"
    );
}

#[test]
fn missing_required_input_is_named() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(8)]);
    let conv = g.add(
        "conv",
        Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state: false, slices: Default::default() }),
        &[Some(x), None],
    );
    g.add_output("y", conv.into());
    let err = validate(&g).err().expect("invalid");
    assert_eq!(err.to_string(), "node 'conv' (CausalConv1d): input 'weight' is required but missing");
}

#[test]
fn conv_state_shape_follows_width() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(8)]);
    let w = constant(&mut g, "w", Elem::F32, &[8, 4]);
    let s = input(&mut g, "state", Elem::F32, vec![Dim::sym("batch"), Dim::Known(8), Dim::Known(4)]);
    let conv = g.add(
        "conv",
        Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state: true, slices: Default::default() }),
        &[Some(x), Some(w), None, Some(s)],
    );
    g.add_output("y", conv.into());
    let err = validate(&g).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'conv' (CausalConv1d): input 'initial_state' has shape [batch, 8, 4], expected [batch, 8, 3]"
    );
}

#[test]
fn reading_a_missing_output_is_refused() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, vec![Dim::Known(2), Dim::Known(3), Dim::Known(8)]);
    let w = constant(&mut g, "w", Elem::F32, &[8, 4]);
    let conv = g.add(
        "conv",
        Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state: false, slices: Default::default() }),
        &[Some(x), Some(w)],
    );
    g.add_output("state", ValueRef { node: conv, output: 1 });
    assert!(matches!(validate(&g), Err(ValidationError::NoSuchGraphOutput { output: 1, available: 1, .. })));
}

#[test]
fn duplicate_node_names_are_refused() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, vec![Dim::Known(4)]);
    let y = g.add_op("x", Op::Exp, &[x]);
    g.add_output("y", y.into());
    assert_eq!(validate(&g).err().unwrap().to_string(), "two nodes are named 'x'");
}

fn tiny_config() -> mambac_compiler::checkpoint::MambaConfig {
    let mut o = mambac_compiler::synth::SynthOptions::new(mambac_compiler::synth::Preset::Tiny);
    o.num_hidden_layers = Some(2);
    o.config().unwrap()
}

/// Rewrites are labelled `rule/i`, and the driver can stop after any N; every prefix leaves a
/// valid graph (validation runs after each rewrite), and N = all reaches the full fusion.
#[test]
fn driver_stops_after_n_rewrites_for_bisecting() {
    let cfg = tiny_config();
    let mut full = lower_config(&cfg, LowerOptions::default());
    let report = run_passes(&mut full, None).unwrap();
    // Per layer: A folds twice (Exp, Neg), then conv bias, conv SiLU, softplus, dt bias, D, gate.
    assert_eq!(report.rewrites.len(), 8 * cfg.num_hidden_layers);
    assert_eq!(report.rewrites[0], "fold_const_unary/0");
    assert!(report.rewrites.contains(&"fuse_scan_gate/1".to_string()));
    for n in 0..report.rewrites.len() {
        let mut g = lower_config(&cfg, LowerOptions::default());
        let partial = run_passes(&mut g, Some(n)).unwrap();
        assert_eq!(partial.rewrites, report.rewrites[..n]);
        validate(&g).unwrap();
    }
    assert_eq!(RULES.len(), 9);
}

#[test]
fn half_export_keeps_scan_parameters_float32() {
    let cfg = tiny_config();
    let mut g = lower_config(&cfg, LowerOptions { dtype: Elem::F16, stateful: true, ..Default::default() });
    run_passes(&mut g, None).unwrap();
    let vg = validate(&g).unwrap();
    for id in g.node_ids() {
        if let Op::SelectiveScan(_) = g.op(id) {
            let ins = g.node_inputs(id);
            for slot in [scan_slots::A, scan_slots::D, scan_slots::DELTA_BIAS, scan_slots::INITIAL_STATE] {
                assert_eq!(vg.type_of(ins[slot].unwrap()).elem, Elem::F32, "slot {slot}");
            }
            assert_eq!(vg.type_of(ins[scan_slots::U].unwrap()).elem, Elem::F16);
        }
    }
    let logits = g.outputs().iter().find(|o| o.name == "logits").unwrap().value;
    assert_eq!(vg.type_of(logits).elem, Elem::F16);
}

#[test]
fn transpose_const_names_are_distinct() {
    let cfg = tiny_config();
    let g = lower_config(&cfg, LowerOptions::default());
    let names: Vec<_> = g
        .node_ids()
        .into_iter()
        .filter_map(|n| match g.op(n) {
            Op::Const(c)
                if matches!(c.source, ConstSource::Checkpoint { transform: ConstTransform::Transpose2d, .. }) =>
            {
                Some(c.name.clone())
            }
            _ => None,
        })
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".weight.T")), "{names:?}");
}

fn argmax_graph(elem: Elem) -> Graph {
    let mut g = Graph::new();
    let x = input(&mut g, "logits", elem, vec![Dim::sym("batch"), Dim::Known(1), Dim::Known(10)]);
    let a = g.add_op("next_token", Op::ArgMaxLast, &[x]);
    g.add_output("next_token", a.into());
    g
}

#[test]
fn argmax_drops_the_last_axis_and_gives_int64() {
    let g = argmax_graph(Elem::F32);
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "int64[batch, 1]");
}

#[test]
fn argmax_reads_float32_only() {
    let err = validate(&argmax_graph(Elem::F16)).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'next_token' (ArgMaxLast): input 'x' has element type float16, expected float32 (the exports cast \
         16-bit logits first)"
    );
}

/// `next_token`'s non-finite check: `picks` are int64 with `scores`' shape less its last axis.
fn non_finite_check(scores_elem: Elem, picks_elem: Elem, picks_dims: Vec<Dim>) -> Result<String, String> {
    let mut g = Graph::new();
    let scores = input(&mut g, "logits", scores_elem, vec![Dim::sym("batch"), Dim::Known(1), Dim::Known(10)]);
    let picks = input(&mut g, "picks", picks_elem, picks_dims);
    let n = g.add_op("next_token", Op::MinusOneWhereNonFinite, &[scores, picks]);
    g.add_output("next_token", n.into());
    match validate(&g) {
        Ok(vg) => Ok(vg.type_of(g.outputs()[0].value).to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn the_non_finite_check_keeps_the_picks_type_and_names_a_misfit() {
    let rows = || vec![Dim::sym("batch"), Dim::Known(1)];
    assert_eq!(non_finite_check(Elem::F32, Elem::I64, rows()), Ok("int64[batch, 1]".into()));
    let node = "node 'next_token' (MinusOneWhereNonFinite): input";
    assert_eq!(
        non_finite_check(Elem::F16, Elem::I64, rows()),
        Err(format!(
            "{node} 'scores' has element type float16, expected float32 (the logits as ArgMaxLast reads them)"
        ))
    );
    assert_eq!(
        non_finite_check(Elem::F32, Elem::F32, rows()),
        Err(format!("{node} 'picks' has element type float32, expected int64 (token ids)"))
    );
    assert_eq!(
        non_finite_check(Elem::F32, Elem::I64, vec![Dim::sym("batch"), Dim::Known(2)]),
        Err(format!("{node} 'picks' has shape [batch, 2], expected [batch, 1]"))
    );
}

/// A conv reading x from channel 8 of a packed [batch, seqlen, 20] (docs/op-contract.md "Sliced
/// inputs"): y and the state take weight's dim; a slice past the end names x and the attribute.
fn sliced_conv(x_last: usize, offset: usize) -> Result<String, String> {
    use mambac_compiler::ir::{conv_slots, Slices};
    let mut g = Graph::new();
    let x = input(&mut g, "xz", Elem::F32, vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(x_last)]);
    let w = constant(&mut g, "w", Elem::F32, &[8, 4]);
    let slices = Slices::default().with(conv_slots::X, offset);
    let conv = g.add(
        "conv",
        Op::CausalConv1d(CausalConv1dConfig { silu: true, final_state: true, slices }),
        &[Some(x), Some(w)],
    );
    g.add_output("y", conv.into());
    g.add_output("state", ValueRef { node: conv, output: 1 });
    let vg = validate(&g).map_err(|e| e.to_string())?;
    Ok(format!("{} {}", vg.type_of(g.outputs()[0].value), vg.type_of(g.outputs()[1].value)))
}

#[test]
fn a_sliced_conv_input_types_its_outputs_by_the_weight() {
    assert_eq!(sliced_conv(20, 8), Ok("float32[batch, seqlen, 8] float32[batch, 8, 3]".into()));
    assert_eq!(sliced_conv(16, 8), Ok("float32[batch, seqlen, 8] float32[batch, 8, 3]".into()));
    assert_eq!(
        sliced_conv(15, 8),
        Err("node 'conv' (CausalConv1d): input 'x' has shape [batch, seqlen, 15], whose last dim must hold \
             x_offset 8 + 8 channels"
            .into())
    );
}

#[test]
fn sliced_scan_inputs_keep_their_other_dims_checked() {
    use mambac_compiler::ir::Slices;
    let packed = |g: &mut Graph, name: &str, dims: Vec<Dim>| input(g, name, Elem::F32, dims);
    let run = |b_last: usize, b_groups: usize, z_dims: Vec<Dim>| {
        let mut g = Graph::new();
        let bl = || vec![Dim::sym("batch"), Dim::sym("seqlen")];
        let udims = [bl(), vec![Dim::Known(48)]].concat();
        let u = input(&mut g, "u", Elem::F32, udims.clone());
        let delta = input(&mut g, "delta", Elem::F32, udims);
        let a = constant(&mut g, "A", Elem::F32, &[48, 16]);
        let dbc = packed(&mut g, "dbc", [bl(), vec![Dim::Known(b_groups), Dim::Known(b_last)]].concat());
        let z = packed(&mut g, "xz", z_dims);
        let slices = Slices::default().with(scan_slots::B, 3).with(scan_slots::C, 19).with(scan_slots::Z, 48);
        let s = g.add(
            "scan",
            Op::SelectiveScan(SelectiveScanConfig { delta_softplus: true, final_state: false, slices }),
            &[Some(u), Some(delta), Some(a), Some(dbc), Some(dbc), None, Some(z)],
        );
        g.add_output("y", s.into());
        validate(&g).map(|vg| vg.type_of(g.outputs()[0].value).to_string()).map_err(|e| e.to_string())
    };
    let xz = |last: usize| vec![Dim::sym("batch"), Dim::sym("seqlen"), Dim::Known(last)];
    assert_eq!(run(35, 1, xz(96)), Ok("float32[batch, seqlen, 48]".into()));
    assert_eq!(
        run(34, 1, xz(96)),
        Err("node 'scan' (SelectiveScan): input 'C' has shape [batch, seqlen, 1, 34], whose last dim must hold \
             C_offset 19 + 16 channels"
            .into())
    );
    assert_eq!(
        run(35, 5, xz(96)),
        Err(
            "node 'scan' (SelectiveScan): input 'B' has shape [batch, seqlen, 5, 35], ngroups 5 does not divide dim 48"
                .into()
        )
    );
    assert_eq!(
        run(35, 1, vec![Dim::sym("batch"), Dim::Known(2), Dim::Known(96)]),
        Err("node 'scan' (SelectiveScan): input 'z' has shape [batch, 2, 96], expected [batch, seqlen, row]".into())
    );
}

#[test]
fn slice_last_takes_its_channels() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F16, vec![Dim::sym("batch"), Dim::Known(40)]);
    let ok = g.add_op("ok", Op::SliceLast { start: 8, len: 32 }, &[x]);
    g.add_output("ok", ok.into());
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "float16[batch, 32]");
    let bad = g.add_op("bad", Op::SliceLast { start: 9, len: 32 }, &[x]);
    g.add_output("bad", bad.into());
    assert_eq!(
        validate(&g).err().unwrap().to_string(),
        "node 'bad' (SliceLast): input 'x' has shape [batch, 40], expected a last dim of at least 41"
    );
}
