//! The float64 interpreter on the Mamba-2 fixtures: the lowered graph (unfused and fused)
//! reproduces the reference logits and final states, and chunked prefill through the states
//! reproduces the one-shot logits.
//!
//! `mamba2-tiny-hf`'s reference is transformers' (good to ~2e-7: it keeps steps in float32);
//! `mamba2-groups2`'s is testdata/gen_mamba2_groups.py's numpy float64 dual-form SSD (2 groups,
//! biases, untied lm_head, a clamping time_step_limit), good to float64 rounding.

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::ir::Elem;
use mambac_compiler::lower::{nodes_of_kind, LowerOptions};
use mambac_compiler::pipeline::{compile, CompileOptions};

/// Per fixture: the tolerance its reference allows.
const FIXTURES: [(&str, f64); 2] = [("mamba2-tiny-hf", 1e-6), ("mamba2-groups2", 1e-10)];

fn opts(fuse: bool, stateful: bool) -> CompileOptions {
    CompileOptions {
        lower: LowerOptions { dtype: Elem::F32, stateful, ..Default::default() },
        fuse,
        max_rewrites: None,
    }
}

#[test]
fn logits_match_reference() {
    for (fixture, tol) in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).expect("fixture opens");
        let r = reference(fixture);
        for fuse in [false, true] {
            let out = run_interp(&ckpt, &opts(fuse, false), ids_input(&r["input_ids"]));
            assert_eq!(out["logits"].shape, r["logits"].shape);
            let err = worst_rel(&out["logits"].data, &r["logits"].data);
            eprintln!("{fixture} fuse={fuse}: worst rel {err:.3e}");
            assert!(err <= tol, "{fixture} fuse={fuse}: worst rel {err:.3e} > {tol:e}");
        }
    }
}

/// Zero states in, the whole sequence: the final states equal the reference's.
#[test]
fn final_states_match_reference() {
    for (fixture, tol) in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let r = reference(fixture);
        let mut inputs = zero_states(&ckpt.config, r["input_ids"].shape[0]);
        inputs.insert("input_ids".into(), r["input_ids"].clone());
        let out = run_interp(&ckpt, &opts(true, true), inputs);
        assert!(worst_rel(&out["logits"].data, &r["logits"].data) <= tol);
        for i in 0..ckpt.config.num_hidden_layers {
            let ssm = &out[&format!("ssm_state_out.{i}")];
            assert_eq!(ssm.shape, r[&format!("ssm_states.{i}")].shape);
            let err = worst_rel(&ssm.data, &r[&format!("ssm_states.{i}")].data);
            assert!(err <= tol, "{fixture} ssm state {i}: {err:.3e}");
            // The references keep the last K conv inputs; the CausalConv1d state the last K-1.
            let conv_ref = &r[&format!("conv_states.{i}")];
            let k = conv_ref.shape[2];
            let want: Vec<f64> = conv_ref.data.chunks(k).flat_map(|c| c[1..].to_vec()).collect();
            let err = worst_rel(&out[&format!("conv_state_out.{i}")].data, &want);
            assert!(err <= tol, "{fixture} conv state {i}: {err:.3e}");
        }
    }
}

/// Uneven chunks carrying the states reproduce the full-sequence logits at every position.
#[test]
fn chunked_prefill_reproduces_one_shot() {
    for (fixture, tol) in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let r = reference(fixture);
        let ids = &r["input_ids"];
        let len = ids.shape[1];
        let compiled = compile(&ckpt, &opts(true, true)).unwrap();
        let vg = mambac_compiler::ir::validate(&compiled.graph).unwrap();
        let mut states = zero_states(&ckpt.config, ids.shape[0]);
        for w in [0, 1, 2, 7, 8, len].windows(2) {
            let mut inputs = states.clone();
            inputs.insert("input_ids".into(), slice_seq(ids, w[0], w[1]));
            let out = mambac_compiler::interp::interpret(&vg, &ckpt, &inputs).unwrap();
            let err = worst_rel(&out["logits"].data, &slice_seq(&r["logits"], w[0], w[1]).data);
            assert!(err <= tol, "{fixture} chunk {w:?}: {err:.3e}");
            for i in 0..ckpt.config.num_hidden_layers {
                states.insert(format!("conv_state.{i}"), out[&format!("conv_state_out.{i}")].clone());
                states.insert(format!("ssm_state.{i}"), out[&format!("ssm_state_out.{i}")].clone());
            }
        }
    }
}

#[test]
fn fusion_folds_the_conv_and_a() {
    let ckpt = Checkpoint::open(&testdata("mamba2-groups2")).unwrap();
    let compiled = compile(&ckpt, &opts(true, false)).unwrap();
    let g = &compiled.graph;
    let layers = ckpt.config.num_hidden_layers;
    assert_eq!(nodes_of_kind(g, "SsdScan").len(), layers);
    // The float32 primitive became the fused op (docs/decisions.md "Mamba-2's gated norm as one op").
    assert_eq!(nodes_of_kind(g, "FusedGatedRmsNorm").len(), layers);
    assert!(nodes_of_kind(g, "GatedRmsNorm").is_empty());
    assert_eq!(nodes_of_kind(g, "CausalConv1d").len(), layers);
    assert!(nodes_of_kind(g, "SelectiveScan").is_empty());
    for kind in ["Exp", "Neg", "Silu", "Softplus"] {
        assert!(nodes_of_kind(g, kind).is_empty(), "{kind} left after fusion");
    }
    assert_eq!(
        compiled.passes.rules_applied,
        vec![
            "fold_const_unary",
            "fuse_conv_bias",
            "fuse_conv_silu",
            "fuse_gated_norm_casts",
            "split_to_sliced_reads",
            "fuse_add_rms_norm"
        ]
    );
}

/// in_proj's output [z | xBC | dt] is read in place (docs/op-contract.md "Sliced inputs"): the
/// fused gated norm takes z at offset 0, the conv xBC at offset I, SsdScan dt at offset
/// I + conv_dim; the conv output [x | B | C] is read in place too, SsdScan taking x at 0, B at I
/// and C at I + G N, with head_dim, ngroups and dstate as attributes. No split or slice is left,
/// nor the reshapes to heads and groups.
#[test]
fn the_ops_read_in_projs_output_in_place() {
    use mambac_compiler::ir::{conv_slots, gated_norm_slots, ssd_slots, Op, Slices, SsdDims};
    let ckpt = Checkpoint::open(&testdata("mamba2-groups2")).unwrap();
    let cfg = &ckpt.config;
    let m2 = cfg.mamba2.as_ref().unwrap();
    let (inner, conv_dim, gn) = (cfg.intermediate_size, m2.conv_dim(cfg), m2.n_groups * cfg.state_size);
    let compiled = compile(&ckpt, &opts(true, true)).unwrap();
    let g = &compiled.graph;
    let layers = cfg.num_hidden_layers;
    assert!(nodes_of_kind(g, "SplitLast").is_empty(), "no split left");
    assert!(nodes_of_kind(g, "SliceLast").is_empty(), "z is read in place, not sliced out");
    for id in nodes_of_kind(g, "FusedGatedRmsNorm") {
        let want = Slices::default().with(gated_norm_slots::Z, 0);
        assert!(matches!(g.op(id), Op::FusedGatedRmsNorm(c) if c.slices == want));
        // z is the same packed tensor the conv reads xBC from.
        let z = g.input(id, gated_norm_slots::Z).unwrap();
        let conv = nodes_of_kind(g, "CausalConv1d").into_iter().find(|&c| g.input(c, conv_slots::X) == Some(z));
        assert!(conv.is_some(), "the gated norm's z is in_proj's output");
    }
    // x_heads, B_groups and C_groups go; y_flat (the scan's output to the norm) stays.
    assert_eq!(nodes_of_kind(g, "Reshape").len(), layers);
    for id in nodes_of_kind(g, "CausalConv1d") {
        let want = Slices::default().with(conv_slots::X, inner);
        assert!(matches!(g.op(id), Op::CausalConv1d(c) if c.slices == want));
    }
    let conv_out = |id| g.input(id, ssd_slots::X).map(|v| g.op(v.node).kind());
    for id in nodes_of_kind(g, "SsdScan") {
        let want = Slices::default()
            .with(ssd_slots::X, 0)
            .with(ssd_slots::DT, inner + conv_dim)
            .with(ssd_slots::B, inner)
            .with(ssd_slots::C, inner + gn);
        let dims = SsdDims { head_dim: Some(m2.head_dim), ngroups: Some(m2.n_groups), dstate: Some(cfg.state_size) };
        assert!(matches!(g.op(id), Op::SsdScan(c) if c.slices == want && c.dims == dims), "{:?}", g.op(id));
        assert_eq!(conv_out(id), Some("CausalConv1d"));
        assert_eq!(g.input(id, ssd_slots::B), g.input(id, ssd_slots::X));
        assert_eq!(g.input(id, ssd_slots::C), g.input(id, ssd_slots::X));
    }
}
