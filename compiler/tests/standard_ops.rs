//! `--ops standard`: the fused ops rewritten to opset 27's CausalConvWithState and LinearAttention
//! (and ordinary ops) compute what they did. The float64 interpreter on the standard graph
//! reproduces the fixtures' reference logits and states; a grouped scan with every option gives
//! what the SelectiveScan it replaces gives; the new ops' validation names the input at fault.

mod common;

use common::graph_build::{constant, input, random, random_feeds};
use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::interp::interpret;
use mambac_compiler::ir::{
    validate, CausalConvWithStateConfig, Elem, Graph, LinearAttentionConfig, Op, SelectiveScanConfig, ValueRef,
};
use mambac_compiler::lower::{nodes_of_kind, LowerOptions, OpSet};
use mambac_compiler::passes::{run_rules, STANDARD_RULES};
use mambac_compiler::pipeline::{compile, decode_options, CompileOptions};

const INTERP_TOL: f64 = 1e-6;

fn opts(fuse: bool, stateful: bool, ops: OpSet) -> CompileOptions {
    CompileOptions { lower: LowerOptions { stateful, ops, ..Default::default() }, fuse, max_rewrites: None }
}

#[test]
fn standard_graph_matches_reference() {
    let r = reference("mamba-tiny-hf");
    for fixture in ["mamba-tiny-hf", "mamba-tiny-ssm"] {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        for fuse in [true, false] {
            let o = opts(fuse, false, OpSet::Standard);
            let compiled = compile(&ckpt, &o).unwrap();
            for custom in ["CausalConv1d", "SelectiveScan", "MambaLayerStep"] {
                assert!(nodes_of_kind(&compiled.graph, custom).is_empty(), "{custom} left");
            }
            let layers = ckpt.config.num_hidden_layers;
            assert_eq!(nodes_of_kind(&compiled.graph, "LinearAttention").len(), layers);
            assert_eq!(nodes_of_kind(&compiled.graph, "CausalConvWithState").len(), layers);
            let applied = &compiled.passes.rules_applied;
            assert_eq!(applied[applied.len() - 2..], ["conv_to_causal_conv_with_state", "scan_to_linear_attention"]);
            let out = run_interp(&ckpt, &o, ids_input(&r["input_ids"]));
            let err = worst_rel(&out["logits"].data, &r["logits"].data);
            assert!(err <= INTERP_TOL, "{fixture} fuse={fuse}: worst rel {err:.3e}");
        }
    }
}

/// Chunks carrying the states reproduce the one-shot logits, and every state equals the custom-op
/// graph's: the standard export's state interface is the same.
#[test]
fn standard_states_are_the_custom_ops_states() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let cfg = ckpt.config.clone();
    let r = reference("mamba-tiny-hf");
    let ids = &r["input_ids"];
    let (batch, len) = (ids.shape[0], ids.shape[1]);
    let graphs: Vec<_> =
        [OpSet::Mambac, OpSet::Standard].iter().map(|&ops| compile(&ckpt, &opts(true, true, ops)).unwrap()).collect();
    let vgs: Vec<_> = graphs.iter().map(|c| validate(&c.graph).unwrap()).collect();
    let mut states = zero_states(&cfg, batch);
    for w in [0, 7, 8, 20, len].windows(2) {
        let mut inputs = states.clone();
        inputs.insert("input_ids".into(), slice_seq(ids, w[0], w[1]));
        let custom = interpret(&vgs[0], &ckpt, &inputs).unwrap();
        let standard = interpret(&vgs[1], &ckpt, &inputs).unwrap();
        let err = worst_rel(&standard["logits"].data, &slice_seq(&r["logits"], w[0], w[1]).data);
        assert!(err <= INTERP_TOL, "chunk {w:?}: {err:.3e}");
        for (name, value) in &custom {
            assert_eq!(standard[name].shape, value.shape, "{name}");
            let err = worst_rel(&standard[name].data, &value.data);
            assert!(err <= INTERP_TOL, "chunk {w:?} {name}: {err:.3e}");
        }
        for i in 0..cfg.num_hidden_layers {
            states.insert(format!("conv_state.{i}"), standard[&format!("conv_state_out.{i}")].clone());
            states.insert(format!("ssm_state.{i}"), standard[&format!("ssm_state_out.{i}")].clone());
        }
    }
}

#[test]
fn decode_graph_needs_the_custom_ops() {
    let o = opts(true, true, OpSet::Standard);
    let err = decode_options(&o).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "the decode graph needs --ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"
    );
}

/// A scan with 3 groups, every optional input, softplus and both outputs, and a conv with bias,
/// SiLU and state: the rewritten graph's outputs equal the original's.
#[test]
fn grouped_scan_and_conv_with_every_option() {
    let (b, l, dim, groups, n, k) = (2, 9, 12, 3, 5, 4);
    let mut g = Graph::new();
    let u = input(&mut g, "u", Elem::F32, &[b, l, dim]);
    let conv_w = constant(&mut g, "conv_w", random(dim * k, 1), &[dim, k]);
    let conv_b = constant(&mut g, "conv_b", random(dim, 2), &[dim]);
    let conv_s = input(&mut g, "conv_s", Elem::F32, &[b, dim, k - 1]);
    let conv = g.add(
        "conv",
        Op::CausalConv1d(mambac_compiler::ir::CausalConv1dConfig {
            silu: true,
            final_state: true,
            slices: Default::default(),
        }),
        &[Some(u), Some(conv_w), Some(conv_b), Some(conv_s)],
    );
    let delta = input(&mut g, "delta", Elem::F32, &[b, l, dim]);
    let a: Vec<f64> = random(dim * n, 3).iter().map(|v| -(v.abs() + 0.1) * 3.0).collect();
    let a = constant(&mut g, "A", a, &[dim, n]);
    let bb = input(&mut g, "B", Elem::F32, &[b, l, groups, n]);
    let cc = input(&mut g, "C", Elem::F32, &[b, l, groups, n]);
    let d = constant(&mut g, "D", random(dim, 4), &[dim]);
    let z = input(&mut g, "z", Elem::F32, &[b, l, dim]);
    let bias = constant(&mut g, "delta_bias", random(dim, 5), &[dim]);
    let h0 = input(&mut g, "h0", Elem::F32, &[b, dim, n]);
    let scan = g.add(
        "scan",
        Op::SelectiveScan(SelectiveScanConfig { delta_softplus: true, final_state: true, slices: Default::default() }),
        &[Some(conv.into()), Some(delta), Some(a), Some(bb), Some(cc), Some(d), Some(z), Some(bias), Some(h0)],
    );
    g.add_output("y", scan.into());
    g.add_output("h", ValueRef { node: scan, output: 1 });
    g.add_output("conv_state_out", ValueRef { node: conv, output: 1 });

    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let feeds = random_feeds(&[
        ("u", vec![b, l, dim], 10),
        ("conv_s", vec![b, dim, k - 1], 11),
        ("delta", vec![b, l, dim], 12),
        ("B", vec![b, l, groups, n], 13),
        ("C", vec![b, l, groups, n], 14),
        ("z", vec![b, l, dim], 15),
        ("h0", vec![b, dim, n], 16),
    ]);
    let want = interpret(&validate(&g).unwrap(), &ckpt, &feeds).unwrap();
    let report = run_rules(&mut g, STANDARD_RULES, None).unwrap();
    assert_eq!(report.rewrites, ["conv_to_causal_conv_with_state/0", "scan_to_linear_attention/0"]);
    let got = interpret(&validate(&g).unwrap(), &ckpt, &feeds).unwrap();
    for (name, w) in &want {
        assert_eq!(got[name].shape, w.shape, "{name}");
        let err = worst_rel(&got[name].data, &w.data);
        assert!(err <= 1e-12, "{name}: {err:.3e}");
    }
}

fn validation_error(g: &Graph) -> String {
    validate(g).err().expect("invalid").to_string()
}

#[test]
fn linear_attention_names_the_input_at_fault() {
    let mut g = Graph::new();
    let q = input(&mut g, "q", Elem::F32, &[2, 3, 12]);
    let k = input(&mut g, "k", Elem::F32, &[2, 3, 12]);
    let v = input(&mut g, "v", Elem::F32, &[2, 3, 5]);
    let decay = input(&mut g, "g", Elem::F16, &[2, 3, 12]);
    let la = g.add(
        "la",
        Op::LinearAttention(LinearAttentionConfig { heads: 4, scale: 1.0 }),
        &[Some(q), Some(k), Some(v), None, Some(decay)],
    );
    g.add_output("o", la.into());
    assert_eq!(
        validation_error(&g),
        "node 'la' (LinearAttention): input 'value' has shape [2, 3, 5], expected a known last dim, a multiple of 4 heads"
    );
    let v8 = input(&mut g, "v8", Elem::F32, &[2, 3, 8]);
    g.set_input(la, 2, Some(v8));
    assert_eq!(
        validation_error(&g),
        "node 'la' (LinearAttention): input 'decay' has element type float16, expected float32 (same as 'query')"
    );
    let decay = input(&mut g, "g32", Elem::F32, &[2, 3, 12]);
    g.set_input(la, 4, Some(decay));
    let past = input(&mut g, "past", Elem::F32, &[2, 4, 2, 3]);
    g.set_input(la, 3, Some(past));
    assert_eq!(
        validation_error(&g),
        "node 'la' (LinearAttention): input 'past_state' has shape [2, 4, 2, 3], expected [2, 4, 3, 2]"
    );
}

#[test]
fn causal_conv_with_state_names_the_input_at_fault() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, &[2, 6, 9]);
    let w = input(&mut g, "w", Elem::F32, &[6, 4]);
    let conv = g.add(
        "conv",
        Op::CausalConvWithState(CausalConvWithStateConfig { silu: true }),
        &[Some(x), Some(w), None, None],
    );
    g.add_output("y", conv.into());
    assert_eq!(
        validation_error(&g),
        "node 'conv' (CausalConvWithState): input 'weight' has shape [6, 4], expected rank 3"
    );
    let w3 = input(&mut g, "w3", Elem::F32, &[6, 1, 4]);
    g.set_input(conv, 1, Some(w3));
    let past = input(&mut g, "past", Elem::F32, &[2, 6, 4]);
    g.set_input(conv, 3, Some(past));
    assert_eq!(
        validation_error(&g),
        "node 'conv' (CausalConvWithState): input 'past_state' has shape [2, 6, 4], expected [2, 6, 3]"
    );
}

#[test]
fn expand_checks_its_shape() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, &[2, 3, 4, 5]);
    let r = g.add_op("r", Op::Reshape { keep: 2, tail: vec![20] }, &[x]);
    g.add_output("r", r.into());
    let vg = validate(&g).unwrap();
    assert_eq!(vg.type_of(r.into()).to_string(), "float32[2, 3, 20]");
    drop(vg);
    let e = g.add_op("e", Op::Expand { shape: vec![7, 4, 5] }, &[x]);
    g.add_output("e", e.into());
    assert_eq!(
        validation_error(&g),
        "node 'e' (Expand): input 'x' has shape [2, 3, 4, 5], which does not broadcast with [7, 4, 5]"
    );
}
