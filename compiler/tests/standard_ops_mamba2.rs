//! `--ops standard` on Mamba-2: SsdScan rewritten to opset 27's LinearAttention (one decay a
//! head, B and C expanded from groups to heads, the state transposed) computes what it did. The
//! float64 interpreter on the standard graph reproduces the fixtures' references (2 groups and a
//! clamping dt limit in mamba2-groups2), chunks through the states equal the custom-op graph's,
//! and a hand-built scan with every option gives the SsdScan's outputs and types.

mod common;

use common::graph_build::{constant, input, random, random_feeds};
use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::interp::{interpret, Tensor64};
use mambac_compiler::ir::{validate, Elem, Graph, LinearAttentionConfig, Op, SsdScanConfig, ValueRef};
use mambac_compiler::lower::{nodes_of_kind, LowerOptions, OpSet};
use mambac_compiler::passes::{run_rules, STANDARD_RULES};
use mambac_compiler::pipeline::{compile, compile_decode, standard_ops_only, CompileOptions};

/// Per fixture: the tolerance its reference allows (as tests/mamba2_interp.rs).
const FIXTURES: [(&str, f64); 2] = [("mamba2-tiny-hf", 1e-6), ("mamba2-groups2", 1e-10)];

fn opts(fuse: bool, stateful: bool, ops: OpSet) -> CompileOptions {
    CompileOptions { lower: LowerOptions { stateful, ops, ..Default::default() }, fuse, max_rewrites: None }
}

#[test]
fn standard_graph_matches_reference() {
    for (fixture, tol) in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let r = reference(fixture);
        let layers = ckpt.config.num_hidden_layers;
        for fuse in [true, false] {
            let o = opts(fuse, false, OpSet::Standard);
            let compiled = compile(&ckpt, &o).unwrap();
            for custom in ["CausalConv1d", "SsdScan"] {
                assert!(nodes_of_kind(&compiled.graph, custom).is_empty(), "{fixture}: {custom} left");
            }
            assert_eq!(nodes_of_kind(&compiled.graph, "LinearAttention").len(), layers);
            assert_eq!(nodes_of_kind(&compiled.graph, "CausalConvWithState").len(), layers);
            // Only groups2's time_step_limit (0.05, 0.5) changes softplus's output.
            let clips = if fixture == "mamba2-groups2" { layers } else { 0 };
            assert_eq!(nodes_of_kind(&compiled.graph, "Clip").len(), clips, "{fixture}");
            assert!(compiled.passes.rules_applied.contains(&"ssd_scan_to_linear_attention"));
            let out = run_interp(&ckpt, &o, ids_input(&r["input_ids"]));
            let err = worst_rel(&out["logits"].data, &r["logits"].data);
            assert!(err <= tol, "{fixture} fuse={fuse}: worst rel {err:.3e}");
        }
    }
}

/// Uneven chunks (one token among them) carrying the states: every output, states included,
/// equals the custom-op graph's, and the logits the one-shot reference's.
#[test]
fn standard_states_are_the_custom_ops_states() {
    for (fixture, tol) in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let cfg = ckpt.config.clone();
        let r = reference(fixture);
        let ids = &r["input_ids"];
        let (batch, len) = (ids.shape[0], ids.shape[1]);
        let graphs: Vec<_> = [OpSet::Mambac, OpSet::Standard]
            .iter()
            .map(|&ops| compile(&ckpt, &opts(true, true, ops)).unwrap())
            .collect();
        let vgs: Vec<_> = graphs.iter().map(|c| validate(&c.graph).unwrap()).collect();
        let mut states = zero_states(&cfg, batch);
        for w in [0, 1, 2, 7, 8, len].windows(2) {
            let mut inputs = states.clone();
            inputs.insert("input_ids".into(), slice_seq(ids, w[0], w[1]));
            let custom = interpret(&vgs[0], &ckpt, &inputs).unwrap();
            let standard = interpret(&vgs[1], &ckpt, &inputs).unwrap();
            let err = worst_rel(&standard["logits"].data, &slice_seq(&r["logits"], w[0], w[1]).data);
            assert!(err <= tol, "{fixture} chunk {w:?}: {err:.3e}");
            for (name, value) in &custom {
                assert_eq!(standard[name].shape, value.shape, "{name}");
                let err = worst_rel(&standard[name].data, &value.data);
                // Both float64: only the order of the sums differs.
                assert!(err <= 1e-12, "{fixture} chunk {w:?} {name}: {err:.3e}");
            }
            for i in 0..cfg.num_hidden_layers {
                states.insert(format!("conv_state.{i}"), standard[&format!("conv_state_out.{i}")].clone());
                states.insert(format!("ssm_state.{i}"), standard[&format!("ssm_state_out.{i}")].clone());
            }
        }
        // The final states are the reference's: the transposes at the edge put them in its layout.
        for i in 0..cfg.num_hidden_layers {
            let err = worst_rel(&states[&format!("ssm_state.{i}")].data, &r[&format!("ssm_states.{i}")].data);
            assert!(err <= tol, "{fixture} ssm state {i}: {err:.3e}");
        }
    }
}

/// One SsdScan variant of the hand-built test.
struct Variant {
    elem: Elem,
    dt_softplus: bool,
    dt_min: f64,
    dt_max: f64,
    /// D, dt_bias, initial_state and final_state.
    optional: bool,
    /// Whether the rewrite must clamp dt.
    clip: bool,
}

/// 6 heads in 3 groups (head h reads group h / 2; h % 3, say, would give other outputs), dt
/// values on both sides of the limits: the rewritten graph's outputs and types are the scan's.
#[test]
fn ssd_scan_with_every_option() {
    let inf = f64::INFINITY;
    let v = |elem, dt_softplus, dt_min, dt_max, optional, clip| Variant {
        elem,
        dt_softplus,
        dt_min,
        dt_max,
        optional,
        clip,
    };
    let variants = [
        v(Elem::F32, true, 0.2, 0.9, true, true),
        v(Elem::F16, true, 0.2, 0.9, true, true),
        v(Elem::F16, true, 0.2, 0.9, false, true),
        v(Elem::F32, true, 0.0, inf, false, false),
        v(Elem::F32, false, -inf, inf, true, false),
        v(Elem::F32, false, 0.0, inf, true, true),
        v(Elem::F32, true, 0.0, 0.5, true, true),
    ];
    let ckpt = Checkpoint::open(&testdata("mamba2-tiny-hf")).unwrap();
    for (k, var) in variants.iter().enumerate() {
        let (b, l, heads, p, groups, n) = (2, 9, 6, 4, 3, 5);
        let mut g = Graph::new();
        let t = var.elem;
        let x = input(&mut g, "x", t, &[b, l, heads, p]);
        let dt = input(&mut g, "dt", t, &[b, l, heads]);
        let a: Vec<f64> = random(heads, 1).iter().map(|v| -(v.abs() + 0.1) * 2.0).collect();
        let a = constant(&mut g, "A", a, &[heads]);
        let bb = input(&mut g, "B", t, &[b, l, groups, n]);
        let cc = input(&mut g, "C", t, &[b, l, groups, n]);
        let opt = |g: &mut Graph, f: &dyn Fn(&mut Graph) -> ValueRef| var.optional.then(|| f(g));
        let d = opt(&mut g, &|g| constant(g, "D", random(heads, 2), &[heads]));
        // Biases that put softplus(dt + bias) below 0.2, inside and above 0.9.
        let dt_bias = opt(&mut g, &|g| constant(g, "dt_bias", vec![-3.0, -1.0, 0.0, 0.5, 1.5, 3.0], &[heads]));
        let h0 = opt(&mut g, &|g| input(g, "h0", Elem::F32, &[b, heads, p, n]));
        let cfg = SsdScanConfig {
            dt_softplus: var.dt_softplus,
            dt_min: var.dt_min,
            dt_max: var.dt_max,
            final_state: var.optional,
            slices: Default::default(),
            dims: Default::default(),
        };
        let scan = g.add("scan", Op::SsdScan(cfg), &[Some(x), Some(dt), Some(a), Some(bb), Some(cc), d, dt_bias, h0]);
        g.add_output("y", scan.into());
        if var.optional {
            g.add_output("h", ValueRef { node: scan, output: 1 });
        }
        let types = |g: &Graph| {
            let vg = validate(g).unwrap();
            g.outputs().iter().map(|o| vg.type_of(o.value).to_string()).collect::<Vec<_>>()
        };
        let want_types = types(&g);
        let feeds = random_feeds(&[
            ("x", vec![b, l, heads, p], 10),
            ("dt", vec![b, l, heads], 11),
            ("B", vec![b, l, groups, n], 12),
            ("C", vec![b, l, groups, n], 13),
            ("h0", vec![b, heads, p, n], 14),
        ]);
        let want = interpret(&validate(&g).unwrap(), &ckpt, &feeds).unwrap();
        let report = run_rules(&mut g, STANDARD_RULES, None).unwrap();
        assert_eq!(report.rewrites, ["ssd_scan_to_linear_attention/0"], "variant {k}");
        assert_eq!(nodes_of_kind(&g, "Clip").len(), var.clip as usize, "variant {k}");
        assert_eq!(types(&g), want_types, "variant {k}");
        let got = interpret(&validate(&g).unwrap(), &ckpt, &feeds).unwrap();
        for (name, w) in &want {
            assert_eq!(got[name].shape, w.shape, "variant {k} {name}");
            let err = worst_rel(&got[name].data, &w.data);
            assert!(err <= 1e-12, "variant {k} {name}: {err:.3e}");
        }
    }
}

fn linear_attention_graph(decay_last: usize) -> (Graph, mambac_compiler::ir::NodeId) {
    let mut g = Graph::new();
    let q = input(&mut g, "q", Elem::F32, &[2, 3, 12]);
    let k = input(&mut g, "k", Elem::F32, &[2, 3, 12]);
    let v = input(&mut g, "v", Elem::F32, &[2, 3, 8]);
    let decay = input(&mut g, "g", Elem::F32, &[2, 3, decay_last]);
    let la = g.add(
        "la",
        Op::LinearAttention(LinearAttentionConfig { heads: 4, scale: 1.0 }),
        &[Some(q), Some(k), Some(v), None, Some(decay)],
    );
    g.add_output("o", la.into());
    g.add_output("s", ValueRef { node: la, output: 1 });
    (g, la)
}

/// A decay of one value a head is that value on each of the head's key rows; a decay of any
/// other width is refused, naming both layouts.
#[test]
fn linear_attention_per_head_decay() {
    let ckpt = Checkpoint::open(&testdata("mamba2-tiny-hf")).unwrap();
    let mut feeds = random_feeds(&[("q", vec![2, 3, 12], 1), ("k", vec![2, 3, 12], 2), ("v", vec![2, 3, 8], 3)]);
    let per_head: Vec<f64> = random(2 * 3 * 4, 4).iter().map(|v| v - 0.5).collect();
    let per_key: Vec<f64> = per_head.iter().flat_map(|&v| [v; 3]).collect();
    let mut outs = Vec::new();
    for (width, decay) in [(4, per_head), (12, per_key)] {
        let (g, _) = linear_attention_graph(width);
        feeds.insert("g".into(), Tensor64::new(vec![2, 3, width], decay));
        outs.push(interpret(&validate(&g).unwrap(), &ckpt, &feeds).unwrap());
    }
    for name in ["o", "s"] {
        assert_eq!(outs[0][name].data, outs[1][name].data, "{name}");
    }
    let (g, _) = linear_attention_graph(5);
    assert_eq!(
        validate(&g).err().expect("invalid").to_string(),
        "node 'la' (LinearAttention): input 'decay' has shape [2, 3, 5], expected [2, 3, 12] (per key) or \
         [2, 3, 4] (per head)"
    );
}

/// The check that no custom op is left names the op and the node.
#[test]
fn a_custom_op_left_is_refused() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", Elem::F32, &[1, 2, 6]);
    let w = constant(&mut g, "w", random(24, 1), &[6, 4]);
    let conv = g.add(
        "layers.3.conv",
        Op::CausalConv1d(mambac_compiler::ir::CausalConv1dConfig {
            silu: true,
            final_state: false,
            slices: Default::default(),
        }),
        &[Some(x), Some(w), None, None],
    );
    g.add_output("y", conv.into());
    assert_eq!(
        standard_ops_only(&g).expect_err("refused").to_string(),
        "--ops standard has no standard-ONNX form of CausalConv1d (node 'layers.3.conv'): export this model with \
         --ops mambac"
    );
    run_rules(&mut g, STANDARD_RULES, None).unwrap();
    assert!(standard_ops_only(&g).is_ok());
}

/// `--ops standard` refuses a decode graph for what it is, whatever the model.
#[test]
fn decode_graph_needs_the_custom_ops() {
    let ckpt = Checkpoint::open(&testdata("mamba2-groups2")).unwrap();
    let err = compile_decode(&ckpt, &opts(true, true, OpSet::Standard)).err().expect("refused");
    assert_eq!(
        err.to_string(),
        "the decode graph needs --ops mambac: its layers are mambac.MambaLayerStep nodes, a custom op"
    );
}
