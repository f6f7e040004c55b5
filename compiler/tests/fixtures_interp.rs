//! The float64 interpreter on the unfused and the fused IR of every Mamba-1 fixture reproduces
//! the Hugging Face reference logits (and, stateful, the reference final states) to 1e-6.

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::ir::Elem;
use mambac_compiler::lower::{nodes_of_kind, LowerOptions};
use mambac_compiler::pipeline::{compile, CompileOptions};

const INTERP_TOL: f64 = 1e-6;

fn opts(fuse: bool, stateful: bool) -> CompileOptions {
    CompileOptions {
        lower: LowerOptions { dtype: Elem::F32, stateful, ..Default::default() },
        fuse,
        max_rewrites: None,
    }
}

fn check_logits(fixture: &str, fuse: bool) {
    let ckpt = Checkpoint::open(&testdata(fixture)).expect("fixture opens");
    let r = reference("mamba-tiny-hf");
    let out = run_interp(&ckpt, &opts(fuse, false), ids_input(&r["input_ids"]));
    let logits = &out["logits"];
    assert_eq!(logits.shape, r["logits"].shape);
    let err = worst_rel(&logits.data, &r["logits"].data);
    eprintln!("{fixture} fuse={fuse}: worst rel {err:.3e}");
    assert!(err <= INTERP_TOL, "{fixture} fuse={fuse}: worst rel {err:.3e} > {INTERP_TOL:e}");
}

#[test]
fn hf_unfused_matches_reference() {
    check_logits("mamba-tiny-hf", false);
}

#[test]
fn hf_fused_matches_reference() {
    check_logits("mamba-tiny-hf", true);
}

#[test]
fn state_spaces_unfused_matches_reference() {
    check_logits("mamba-tiny-ssm", false);
}

#[test]
fn state_spaces_fused_matches_reference() {
    check_logits("mamba-tiny-ssm", true);
}

#[test]
fn fusion_leaves_only_fused_ops_around_the_scan() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let compiled = compile(&ckpt, &opts(true, false)).unwrap();
    let g = &compiled.graph;
    let layers = ckpt.config.num_hidden_layers;
    assert_eq!(nodes_of_kind(g, "SelectiveScan").len(), layers);
    assert_eq!(nodes_of_kind(g, "CausalConv1d").len(), layers);
    // Everything the scan and conv absorb is gone: softplus, exp/neg of A_log, the z gate's
    // SiLU and the conv's SiLU (the norm's and lm_head's ops remain).
    for kind in ["Softplus", "Exp", "Neg", "Silu"] {
        assert!(nodes_of_kind(g, kind).is_empty(), "{kind} left after fusion");
    }
    for id in nodes_of_kind(g, "SelectiveScan") {
        let inputs = g.node_inputs(id);
        assert!(inputs[5].is_some() && inputs[6].is_some() && inputs[7].is_some(), "D, z, delta_bias fused");
        assert!(matches!(g.op(id), mambac_compiler::ir::Op::SelectiveScan(c) if c.delta_softplus));
    }
    for id in nodes_of_kind(g, "CausalConv1d") {
        assert!(g.node_inputs(id)[2].is_some(), "conv bias fused");
        assert!(matches!(g.op(id), mambac_compiler::ir::Op::CausalConv1d(c) if c.silu));
    }
    assert_eq!(
        compiled.passes.rules_applied,
        vec![
            "fold_const_unary",
            "fuse_conv_bias",
            "fuse_conv_silu",
            "fuse_scan_softplus",
            "fuse_scan_delta_bias",
            "fuse_scan_d_skip",
            "fuse_scan_gate",
            "split_to_sliced_reads",
            "fuse_add_rms_norm"
        ]
    );
}

/// The fused ops read x and z from in_proj's output and B and C from x_proj's in place
/// (docs/op-contract.md "Sliced inputs"): no split is left, dt_proj reads a slice of dt_rank
/// columns, and the offsets are those of the packed layouts.
#[test]
fn fused_ops_read_the_projections_in_place() {
    use mambac_compiler::ir::{conv_slots, scan_slots, Op, Slices};
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let cfg = &ckpt.config;
    let (inner, n, r) = (cfg.intermediate_size, cfg.state_size, cfg.time_step_rank);
    for stateful in [false, true] {
        let compiled = compile(&ckpt, &opts(true, stateful)).unwrap();
        let g = &compiled.graph;
        let layers = cfg.num_hidden_layers;
        assert!(nodes_of_kind(g, "SplitLast").is_empty(), "a split is left");
        let slices = nodes_of_kind(g, "SliceLast");
        assert_eq!(slices.len(), layers);
        for id in slices {
            assert!(matches!(g.op(id), Op::SliceLast { start: 0, len } if *len == r));
        }
        let want = Slices::default().with(scan_slots::B, r).with(scan_slots::C, r + n).with(scan_slots::Z, inner);
        for id in nodes_of_kind(g, "SelectiveScan") {
            assert!(matches!(g.op(id), Op::SelectiveScan(c) if c.slices == want), "{:?}", g.op(id));
            let b = g.input(id, scan_slots::B).unwrap();
            assert_eq!(g.input(id, scan_slots::C), Some(b), "B and C read one packed tensor");
            assert!(matches!(g.op(b.node), Op::Unsqueeze { axis: 2 }));
        }
        for id in nodes_of_kind(g, "CausalConv1d") {
            let want = Slices::default().with(conv_slots::X, 0);
            assert!(matches!(g.op(id), Op::CausalConv1d(c) if c.slices == want));
            let x = g.input(id, conv_slots::X).unwrap();
            let scan = nodes_of_kind(g, "SelectiveScan").into_iter().find(|&s| g.input(s, scan_slots::Z) == Some(x));
            assert!(scan.is_some(), "the conv's x and a scan's z are one tensor");
        }
    }
}

/// Zero states as input, the whole sequence: the final states equal the reference's.
#[test]
fn stateful_final_states_match_reference() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let cfg = &ckpt.config;
    let r = reference("mamba-tiny-hf");
    let batch = r["input_ids"].shape[0];
    for fuse in [false, true] {
        let mut inputs = ids_input(&r["input_ids"]);
        inputs.extend(zero_states(cfg, batch));
        let out = run_interp(&ckpt, &opts(fuse, true), inputs);
        assert!(worst_rel(&out["logits"].data, &r["logits"].data) <= INTERP_TOL);
        for i in 0..cfg.num_hidden_layers {
            let ssm = &out[&format!("ssm_state_out.{i}")];
            let err = worst_rel(&ssm.data, &r[&format!("ssm_states.{i}")].data);
            assert!(err <= INTERP_TOL, "ssm state {i}: {err:.3e}");
            // The reference keeps the last K inputs; docs/op-contract.md's state keeps the last K-1.
            let conv_ref = &r[&format!("conv_states.{i}")];
            let k = conv_ref.shape[2];
            let want: Vec<f64> = conv_ref.data.chunks(k).flat_map(|c| c[1..].to_vec()).collect();
            let err = worst_rel(&out[&format!("conv_state_out.{i}")].data, &want);
            assert!(err <= INTERP_TOL, "conv state {i}: {err:.3e}");
        }
    }
}

/// A prompt of k tokens then the rest in uneven chunks, carrying the states, reproduces the
/// full-sequence logits at every position (Mamba is causal).
#[test]
fn stateful_chunks_reproduce_full_sequence() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let cfg = ckpt.config.clone();
    let r = reference("mamba-tiny-hf");
    let ids = &r["input_ids"];
    let (batch, len) = (ids.shape[0], ids.shape[1]);
    let compiled = compile(&ckpt, &opts(true, true)).unwrap();
    let vg = mambac_compiler::ir::validate(&compiled.graph).unwrap();
    let mut states = zero_states(&cfg, batch);
    let bounds = [0, 5, 6, 7, 19, 20, len];
    for w in bounds.windows(2) {
        let mut inputs = states.clone();
        inputs.insert("input_ids".into(), slice_seq(ids, w[0], w[1]));
        let out = mambac_compiler::interp::interpret(&vg, &ckpt, &inputs).unwrap();
        let want = slice_seq(&r["logits"], w[0], w[1]);
        let err = worst_rel(&out["logits"].data, &want.data);
        assert!(err <= INTERP_TOL, "chunk {w:?}: {err:.3e}");
        for i in 0..cfg.num_hidden_layers {
            states.insert(format!("conv_state.{i}"), out[&format!("conv_state_out.{i}")].clone());
            states.insert(format!("ssm_state.{i}"), out[&format!("ssm_state_out.{i}")].clone());
        }
    }
}

/// `--logits last`: one position of logits, equal to the reference's last position, in one pass
/// and when the prompt comes in chunks.
#[test]
fn last_position_logits() {
    use mambac_compiler::lower::LogitsOutput;
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let r = reference("mamba-tiny-hf");
    let len = r["input_ids"].shape[1];
    for fuse in [false, true] {
        let o = CompileOptions {
            lower: LowerOptions { logits: LogitsOutput::Last, ..Default::default() },
            fuse,
            max_rewrites: None,
        };
        let out = run_interp(&ckpt, &o, ids_input(&r["input_ids"]));
        assert_eq!(out["logits"].shape, vec![2, 1, 1024]);
        let want = slice_seq(&r["logits"], len - 1, len);
        let err = worst_rel(&out["logits"].data, &want.data);
        assert!(err <= INTERP_TOL, "fuse={fuse}: {err:.3e}");
    }
}

/// `next_token` is the float64 argmax of every position's logits (the reference's own argmax at
/// each position), `[batch, positions]`.
#[test]
fn next_token_is_the_argmax_of_the_reference_logits() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let r = reference("mamba-tiny-hf");
    let (batch, len) = (r["input_ids"].shape[0], r["input_ids"].shape[1]);
    let o = CompileOptions { lower: LowerOptions::default(), fuse: true, max_rewrites: None };
    let out = run_interp(&ckpt, &o, ids_input(&r["input_ids"]));
    assert_eq!(out["next_token"].shape, vec![batch, len]);
    let vocab = r["logits"].shape[2];
    let want: Vec<f64> = r["logits"]
        .data
        .chunks(vocab)
        .map(|row| (0..vocab).fold(0, |m, i| if row[i] > row[m] { i } else { m }) as f64)
        .collect();
    assert_eq!(out["next_token"].data, want);
}
