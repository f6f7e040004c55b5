//! `fuse_gated_norm_casts` (docs/decisions.md "Mamba-2's gated norm as one op"): a fused
//! `--ops mambac` Mamba-2 graph has one `mambac.GatedRmsNorm` a layer reading y and z in T
//! (z from in_proj's output in place) and writing T, with none of the float32 Casts around the
//! primitive left; the interpreter's logits equal the unfused graph's; `--no-fuse`,
//! `--ops standard` and the decode graph keep the primitive (or fold it into their layer steps).

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::ir::{gated_norm_slots, validate, Elem, Op, Slices};
use mambac_compiler::lower::{nodes_of_kind, LowerOptions, OpSet};
use mambac_compiler::pipeline::{compile, compile_decode, CompileOptions};

const FIXTURES: [&str; 2] = ["mamba2-tiny-hf", "mamba2-groups2"];
const DTYPES: [Elem; 3] = [Elem::F32, Elem::F16, Elem::BF16];

fn opts(dtype: Elem, fuse: bool, stateful: bool, ops: OpSet) -> CompileOptions {
    CompileOptions { lower: LowerOptions { dtype, stateful, ops, ..Default::default() }, fuse, max_rewrites: None }
}

#[test]
fn one_fused_norm_a_layer_reading_and_writing_t() {
    for fixture in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let layers = ckpt.config.num_hidden_layers;
        for dtype in DTYPES {
            for stateful in [false, true] {
                let what = format!("{fixture} {dtype} stateful={stateful}");
                let g = compile(&ckpt, &opts(dtype, true, stateful, OpSet::Mambac)).unwrap().graph;
                let vg = validate(&g).unwrap();
                let fused = nodes_of_kind(&g, "FusedGatedRmsNorm");
                assert_eq!(fused.len(), layers, "{what}");
                assert!(nodes_of_kind(&g, "GatedRmsNorm").is_empty(), "{what}");
                for id in fused {
                    let ty = |slot| vg.type_of(g.input(id, slot).unwrap()).elem;
                    assert_eq!((ty(0), ty(1), ty(2)), (dtype, dtype, Elem::F32), "{what}: y, z, weight");
                    assert_eq!(vg.type_of(id.into()).elem, dtype, "{what}: out");
                    let Op::FusedGatedRmsNorm(c) = g.op(id) else { unreachable!() };
                    assert_eq!(c.slices, Slices::default().with(gated_norm_slots::Z, 0), "{what}");
                    // z is in_proj's packed output, the tensor the conv reads xBC from.
                    let z = g.input(id, gated_norm_slots::Z);
                    assert!(nodes_of_kind(&g, "CausalConv1d").iter().any(|&c| g.input(c, 0) == z), "{what}");
                }
                // The lowering's Casts around the primitive are gone (a float32 export has none).
                for id in nodes_of_kind(&g, "Cast") {
                    let name = &g.node(id).name;
                    for gone in [".mixer.y_to_f32", ".mixer.z_to_f32", ".mixer.norm.to_t"] {
                        assert!(!name.ends_with(gone), "{what}: {name} left");
                    }
                }
            }
        }
    }
}

/// The interpreter computes in float64 and ignores Casts, so the fused graph must give the
/// unfused graph's logits to float64 rounding, in every dtype (the pass rewires, it does not
/// change the maths; z read at its offset).
#[test]
fn fused_logits_equal_unfused() {
    for fixture in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let r = reference(fixture);
        for dtype in DTYPES {
            let run = |fuse| run_interp(&ckpt, &opts(dtype, fuse, false, OpSet::Mambac), ids_input(&r["input_ids"]));
            let (fused, plain) = (run(true), run(false));
            let err = worst_rel(&fused["logits"].data, &plain["logits"].data);
            assert!(err <= 1e-12, "{fixture} {dtype}: worst rel {err:.3e}");
        }
    }
}

#[test]
fn other_graphs_keep_the_primitive() {
    for fixture in FIXTURES {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let layers = ckpt.config.num_hidden_layers;
        for dtype in [Elem::F32, Elem::F16] {
            // --no-fuse: the plain lowering; --ops standard: no custom op may appear.
            for (fuse, ops) in [(false, OpSet::Mambac), (true, OpSet::Standard)] {
                let g = compile(&ckpt, &opts(dtype, fuse, false, ops)).unwrap().graph;
                assert_eq!(nodes_of_kind(&g, "GatedRmsNorm").len(), layers, "{fixture} {dtype} {ops:?}");
                assert!(nodes_of_kind(&g, "FusedGatedRmsNorm").is_empty(), "{fixture} {dtype} {ops:?}");
            }
            // The decode graph: each layer's norm is inside its Mamba2LayerStep.
            let d = compile_decode(&ckpt, &opts(dtype, true, true, OpSet::Mambac)).unwrap().graph;
            assert_eq!(nodes_of_kind(&d, "Mamba2LayerStep").len(), layers, "{fixture} {dtype} decode");
            assert!(nodes_of_kind(&d, "FusedGatedRmsNorm").is_empty() && nodes_of_kind(&d, "GatedRmsNorm").is_empty());
        }
    }
}
