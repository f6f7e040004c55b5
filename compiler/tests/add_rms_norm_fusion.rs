//! `fuse_add_rms_norm` (and `last_position_first`) on the fixtures: every layer's residual add
//! and next norm, and the final norm, become one `AddRmsNorm` in `--ops mambac` exports; the node
//! count goes down by the glue folded; the float64 interpreter still gives the reference logits;
//! `--no-fuse`, `--ops standard` and the decode graph keep the unfused pattern.

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::interp::Tensor64;
use mambac_compiler::ir::{norm_slots, Elem, Op};
use mambac_compiler::lower::{nodes_of_kind, LogitsOutput, LowerOptions, OpSet};
use mambac_compiler::pipeline::{compile, compile_decode, CompileOptions, Compiled};

const FIXTURES: [&str; 3] = ["mamba-tiny-hf", "mamba2-tiny-hf", "mamba2-groups2"];

fn opts(dtype: Elem, logits: LogitsOutput, stateful: bool) -> CompileOptions {
    CompileOptions {
        lower: LowerOptions { dtype, logits, stateful, ..Default::default() },
        fuse: true,
        max_rewrites: None,
    }
}

/// The same compile stopped before the norm rules (they run last): the graph they start from.
fn before_norm_rules(ckpt: &Checkpoint, o: &CompileOptions, fused: &Compiled) -> Compiled {
    let norm_rewrites = fused
        .passes
        .rewrites
        .iter()
        .filter(|r| r.starts_with("fuse_add_rms_norm/") || r.starts_with("last_position_first/"))
        .count();
    let max = Some(fused.passes.rewrites.len() - norm_rewrites);
    compile(ckpt, &CompileOptions { max_rewrites: max, ..o.clone() }).unwrap()
}

#[test]
fn every_layer_and_the_final_norm_become_one_node() {
    for fixture in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let layers = ckpt.config.num_hidden_layers;
        for dtype in [Elem::F16, Elem::BF16, Elem::F32] {
            for logits in [LogitsOutput::All, LogitsOutput::Last] {
                for stateful in [false, true] {
                    let what = format!("{fixture} {dtype:?} {logits:?} stateful={stateful}");
                    let o = opts(dtype, logits, stateful);
                    let fused = compile(&ckpt, &o).unwrap();
                    let g = &fused.graph;
                    let norms = nodes_of_kind(g, "AddRmsNorm");
                    // float32 exports have no cast to fold into the first layer's norm, which
                    // stays a plain RmsNorm (fusing it would only add a copy).
                    let (want, plain) = if dtype == Elem::F32 { (layers, 1) } else { (layers + 1, 0) };
                    assert_eq!(norms.len(), want, "{what}");
                    assert_eq!(nodes_of_kind(g, "RmsNorm").len(), plain, "{what}");
                    // No cast of the stream is left: only the logits' cast to float32 for
                    // next_token (Mamba-2's gated norm takes T itself: fuse_gated_norm_casts).
                    let casts = nodes_of_kind(g, "Cast").len();
                    assert_eq!(casts, usize::from(dtype != Elem::F32), "{what}: casts left");
                    // Exactly one norm has no residual_out: the final one (its sum has no reader).
                    let no_out = norms.iter().filter(|&&n| matches!(g.op(n), Op::AddRmsNorm(c) if !c.residual_out));
                    assert_eq!(no_out.count(), 1, "{what}");
                    let first = norms.iter().filter(|&&n| g.input(n, norm_slots::RESIDUAL).is_none()).count();
                    assert_eq!(first, usize::from(dtype != Elem::F32), "{what}: the first layer reads no residual");

                    let before = before_norm_rules(&ckpt, &o, &fused);
                    assert!(nodes_of_kind(&before.graph, "AddRmsNorm").is_empty(), "{what}");
                    // Every residual add is folded (the projections' bias adds stay).
                    let adds = |g| nodes_of_kind(g, "Add").len();
                    assert_eq!(adds(&before.graph) - adds(g), layers, "{what}: residual adds left");
                    // Per fused norm: Add, RmsNorm and (half) two casts go, one node comes; the
                    // first layer's norm (half) folds a cast, a norm and a cast. With --logits
                    // last the slice moves through the final add (and cast): two slices for one.
                    let per_layer = if dtype == Elem::F32 { 1 } else { 3 };
                    let mut saved = layers * per_layer + usize::from(dtype != Elem::F32) * 2;
                    if logits == LogitsOutput::Last {
                        saved -= 1;
                    }
                    assert_eq!(before.graph.node_count() - g.node_count(), saved, "{what}");
                }
            }
        }
    }
}

#[test]
fn the_interpreter_gives_the_reference_logits() {
    for (fixture, tol) in [("mamba-tiny-hf", 1e-6), ("mamba2-tiny-hf", 1e-6), ("mamba2-groups2", 1e-10)] {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let r = reference(fixture);
        // The interpreter computes every op in float64 (casts are identities), so a half export's
        // graph is held to the reference as tightly as a float32 one's.
        for dtype in [Elem::F16, Elem::F32] {
            for logits in [LogitsOutput::All, LogitsOutput::Last] {
                let out = run_interp(&ckpt, &opts(dtype, logits, false), ids_input(&r["input_ids"]));
                let want = match logits {
                    LogitsOutput::All => r["logits"].clone(),
                    LogitsOutput::Last => last_position(&r["logits"]),
                };
                assert_eq!(out["logits"].shape, want.shape);
                let err = worst_rel(&out["logits"].data, &want.data);
                assert!(err <= tol, "{fixture} {dtype:?} {logits:?}: worst rel {err:.3e} > {tol:e}");
            }
        }
    }
}

fn last_position(t: &Tensor64) -> Tensor64 {
    let (b, l, v) = (t.shape[0], t.shape[1], t.shape[2]);
    let data = (0..b).flat_map(|i| t.data[(i * l + l - 1) * v..(i * l + l) * v].iter().copied()).collect();
    Tensor64::new(vec![b, 1, v], data)
}

#[test]
fn unfused_standard_and_decode_graphs_keep_the_pattern() {
    for fixture in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let layers = ckpt.config.num_hidden_layers;
        let o = opts(Elem::F16, LogitsOutput::All, true);
        let unfused = compile(&ckpt, &CompileOptions { fuse: false, ..o.clone() }).unwrap();
        assert!(nodes_of_kind(&unfused.graph, "AddRmsNorm").is_empty(), "{fixture} --no-fuse");
        assert_eq!(nodes_of_kind(&unfused.graph, "RmsNorm").len(), layers + 1);
        let standard = CompileOptions { lower: LowerOptions { ops: OpSet::Standard, ..o.lower }, ..o.clone() };
        let standard = compile(&ckpt, &standard).unwrap();
        assert!(nodes_of_kind(&standard.graph, "AddRmsNorm").is_empty(), "{fixture} --ops standard");
        assert_eq!(nodes_of_kind(&standard.graph, "RmsNorm").len(), layers + 1);
        // The decode graph's layer steps hold their norms; the final norm reads the last step's
        // residual (no add to fold) and stays.
        let decode = compile_decode(&ckpt, &o).unwrap();
        assert!(nodes_of_kind(&decode.graph, "AddRmsNorm").is_empty(), "{fixture} decode graph");
        assert_eq!(nodes_of_kind(&decode.graph, "RmsNorm").len(), 1);
    }
}
