//! The IR ops Mamba-2 adds (SsdScan, GatedRmsNorm, Reshape): inferred types, and validation
//! errors naming the node and the input at fault. (SsdScan's rule is also checked against the
//! C++ check in tests/shape_agreement.rs.)

use mambac_compiler::ir::{validate, Dim, Elem, GatedRmsNormConfig, Graph, Op, SsdScanConfig, ValueRef, ValueType};

fn input(g: &mut Graph, name: &str, elem: Elem, dims: Vec<Dim>) -> ValueRef {
    g.add_op(name, Op::Input { name: name.into(), ty: ValueType::new(elem, dims) }, &[]).into()
}

fn bl(rest: &[usize]) -> Vec<Dim> {
    let mut d = vec![Dim::sym("batch"), Dim::sym("seqlen")];
    d.extend(rest.iter().map(|&n| Dim::Known(n)));
    d
}

/// One SsdScan of 6 heads of 4, B/C of `groups` groups of 8 states.
fn ssd_graph(groups: usize, final_state: bool) -> Graph {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F16, bl(&[6, 4]));
    let dt = input(&mut g, "dt", Elem::F16, bl(&[6]));
    let a = input(&mut g, "A", Elem::F32, vec![Dim::Known(6)]);
    let b = input(&mut g, "B", Elem::F16, bl(&[groups, 8]));
    let c = input(&mut g, "C", Elem::F16, bl(&[groups, 8]));
    let cfg = SsdScanConfig {
        dt_softplus: true,
        dt_min: 0.0,
        dt_max: f64::INFINITY,
        final_state,
        slices: Default::default(),
        dims: Default::default(),
    };
    let s = g.add("ssd", Op::SsdScan(cfg), &[Some(x), Some(dt), Some(a), Some(b), Some(c)]);
    g.add_output("y", s.into());
    if final_state {
        g.add_output("state", ValueRef { node: s, output: 1 });
    }
    g
}

#[test]
fn ssd_scan_infers_y_and_the_float32_state() {
    let g = ssd_graph(3, true);
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "float16[batch, seqlen, 6, 4]");
    assert_eq!(vg.type_of(g.outputs()[1].value).to_string(), "float32[batch, 6, 4, 8]");
}

#[test]
fn ssd_scan_groups_must_divide_heads() {
    let err = validate(&ssd_graph(4, false)).err().expect("invalid");
    assert_eq!(
        err.to_string(),
        "node 'ssd' (SsdScan): input 'B' has shape [batch, seqlen, 4, 8], ngroups 4 does not divide heads 6"
    );
}

#[test]
fn reshape_and_gated_norm() {
    let mut g = Graph::new();
    let y = input(&mut g, "y", Elem::F32, bl(&[6, 4]));
    let z = input(&mut g, "z", Elem::F32, bl(&[24]));
    let w = input(&mut g, "w", Elem::F32, vec![Dim::Known(24)]);
    let flat = g.add_op("flat", Op::Reshape { keep: 2, tail: vec![24] }, &[y]).into();
    let cfg = GatedRmsNormConfig { eps: 1e-5, group_size: 8, norm_before_gate: false };
    let n = g.add_op("norm", Op::GatedRmsNorm(cfg), &[flat, z, w]);
    g.add_output("out", n.into());
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "float32[batch, seqlen, 24]");

    let mut bad = Graph::new();
    let y = input(&mut bad, "y", Elem::F32, bl(&[6, 4]));
    let r = bad.add_op("r", Op::Reshape { keep: 2, tail: vec![5, 5] }, &[y]);
    bad.add_output("out", r.into());
    assert_eq!(
        validate(&bad).err().unwrap().to_string(),
        "node 'r' (Reshape): input 'x' has shape [batch, seqlen, 6, 4], whose dims after the first 2 cannot \
         become [5, 5]"
    );

    let mut bad = Graph::new();
    let y = input(&mut bad, "y", Elem::F32, bl(&[24]));
    let z = input(&mut bad, "z", Elem::F32, bl(&[24]));
    let w = input(&mut bad, "w", Elem::F32, vec![Dim::Known(24)]);
    let cfg = GatedRmsNormConfig { eps: 1e-5, group_size: 7, norm_before_gate: false };
    let n = bad.add_op("norm", Op::GatedRmsNorm(cfg), &[y, z, w]);
    bad.add_output("out", n.into());
    assert_eq!(
        validate(&bad).err().unwrap().to_string(),
        "node 'norm' (GatedRmsNorm): input 'x' has shape [batch, seqlen, 24], whose last dim is not a multiple of \
         group_size 7"
    );
}

/// One SsdScan reading x, B and C from one packed `xbc` [batch, seqlen, row] (docs/op-contract.md
/// "Sliced inputs"): 6 heads of 4 at 0, B and C of 3 groups of 8 at 24 and 48.
fn packed_ssd_graph(row: usize, edit: impl FnOnce(&mut SsdScanConfig)) -> Graph {
    use mambac_compiler::ir::{ssd_slots, Slices, SsdDims};
    let mut g = Graph::new();
    let xbc = input(&mut g, "xbc", Elem::F16, bl(&[row]));
    let dt = input(&mut g, "dt", Elem::F16, bl(&[6]));
    let a = input(&mut g, "A", Elem::F32, vec![Dim::Known(6)]);
    let mut cfg = SsdScanConfig {
        dt_softplus: true,
        dt_min: 0.0,
        dt_max: f64::INFINITY,
        final_state: true,
        slices: Slices::default().with(ssd_slots::X, 0).with(ssd_slots::B, 24).with(ssd_slots::C, 48),
        dims: SsdDims { head_dim: Some(4), ngroups: Some(3), dstate: Some(8) },
    };
    edit(&mut cfg);
    let s = g.add("ssd", Op::SsdScan(cfg), &[Some(xbc), Some(dt), Some(a), Some(xbc), Some(xbc)]);
    g.add_output("y", s.into());
    g.add_output("state", ValueRef { node: s, output: 1 });
    g
}

#[test]
fn packed_ssd_scan_takes_heads_from_a_and_dims_from_its_attributes() {
    let g = packed_ssd_graph(72, |_| {});
    let vg = validate(&g).expect("valid");
    assert_eq!(vg.type_of(g.outputs()[0].value).to_string(), "float16[batch, seqlen, 6, 4]");
    assert_eq!(vg.type_of(g.outputs()[1].value).to_string(), "float32[batch, 6, 4, 8]");
}

#[test]
fn packed_ssd_scan_errors_name_the_input() {
    use mambac_compiler::ir::ssd_slots;
    type Edit = Box<dyn FnOnce(&mut SsdScanConfig)>;
    let cases: Vec<(usize, Edit, &str)> = vec![
        (
            71,
            Box::new(|_| {}),
            "input 'C' has shape [batch, seqlen, 71], whose last dim must hold C_offset 48 + 24 channels",
        ),
        (
            72,
            Box::new(|c| c.dims.head_dim = None),
            "input 'x' is read packed as [batch, seqlen, row], which has no head_dim axis: 'x_offset' needs \
             attribute 'head_dim'",
        ),
        (
            72,
            Box::new(|c| c.dims.dstate = None),
            "input 'B' is read packed as [batch, seqlen, row], which has no dstate axis: 'B_offset' needs \
             attribute 'dstate'",
        ),
        (
            72,
            Box::new(|c| c.dims.ngroups = Some(0)),
            "input 'B' is read with attribute 'ngroups' = 0, expected 1 to 2^31 - 1",
        ),
        (
            72,
            Box::new(|c| {
                c.dims.ngroups = Some(4);
                c.dims.dstate = Some(6);
            }),
            "input 'B' has shape [batch, seqlen, 72], ngroups 4 does not divide heads 6",
        ),
        (
            72,
            Box::new(|c| c.slices = std::mem::take(&mut c.slices).with(ssd_slots::X, 49)),
            "input 'x' has shape [batch, seqlen, 72], whose last dim must hold x_offset 49 + 24 channels",
        ),
    ];
    for (row, edit, want) in cases {
        let err = validate(&packed_ssd_graph(row, edit)).err().expect("invalid");
        assert_eq!(err.to_string(), format!("node 'ssd' (SsdScan): {want}"));
    }
}

#[test]
fn whole_ssd_scan_inputs_must_agree_with_set_dims() {
    let mut g = ssd_graph(3, false);
    let id = g.node_ids().into_iter().find(|&id| matches!(g.op(id), Op::SsdScan(_))).unwrap();
    if let Op::SsdScan(c) = &mut g.node_mut(id).op {
        c.dims.head_dim = Some(5);
    }
    assert_eq!(
        validate(&g).err().expect("invalid").to_string(),
        "node 'ssd' (SsdScan): input 'x' has shape [batch, seqlen, 6, 4], expected [batch, seqlen, 6, 5]"
    );
}
