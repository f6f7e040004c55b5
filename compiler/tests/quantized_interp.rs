//! `--quantize`: the interpreter evaluates the quantized graph (MatMulNBits read back from its
//! packed weights) and stays within the bit width's tier of the unquantized reference, on the
//! state-spaces fixture as on the Hugging Face one; the fused and unfused quantized graphs agree.

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::ir::{BlockQuant, Elem};
use mambac_compiler::lower::{nodes_of_kind, LowerOptions, WeightQuant};
use mambac_compiler::pipeline::{compile, CompileOptions};

fn opts(bits: u32, fuse: bool) -> CompileOptions {
    let quant = WeightQuant { quant: BlockQuant::new(bits, 32).unwrap(), accuracy_level: 0 };
    CompileOptions {
        lower: LowerOptions { dtype: Elem::F32, quant: Some(quant), ..Default::default() },
        fuse,
        max_rewrites: None,
    }
}

#[test]
fn quantized_logits_stay_within_the_tier() {
    let r = reference("mamba-tiny-hf");
    // Same tiers as tests/python/test_quantized.py (accuracy_level 0: float compute).
    for (fixture, bits, tier) in
        [("mamba-tiny-hf", 8, 1.5e-2), ("mamba-tiny-ssm", 8, 1.5e-2), ("mamba-tiny-hf", 4, 0.25)]
    {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let fused = run_interp(&ckpt, &opts(bits, true), ids_input(&r["input_ids"]));
        let unfused = run_interp(&ckpt, &opts(bits, false), ids_input(&r["input_ids"]));
        let err = worst_rel(&fused["logits"].data, &r["logits"].data);
        eprintln!("{fixture} int{bits}: worst rel {err:.3e}");
        assert!(
            err <= tier && err > 1e-5,
            "{fixture} int{bits}: worst rel {err:.3e} (tier {tier:e}; 0 would mean nothing was quantized)"
        );
        let agree = worst_rel(&fused["logits"].data, &unfused["logits"].data);
        assert!(agree <= 1e-9, "{fixture} int{bits}: fused vs unfused {agree:.3e}");
    }
}

#[test]
fn every_linear_becomes_matmulnbits() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let compiled = compile(&ckpt, &opts(4, true)).unwrap();
    let layers = ckpt.config.num_hidden_layers;
    assert_eq!(nodes_of_kind(&compiled.graph, "MatMul").len(), 0);
    assert_eq!(nodes_of_kind(&compiled.graph, "MatMulNBits").len(), 4 * layers + 1);
}

/// An untied lm_head, projection biases, dt_rank 7 (a K under one block) and an odd vocabulary:
/// the quantized graph against an independent float64 forward pass of the unquantized weights,
/// and the lm_head reads `lm_head.weight`, not the embedding.
#[test]
fn untied_biased_variant_within_the_tier() {
    use mambac_compiler::interp::Tensor64;
    use mambac_compiler::ir::Op;
    use mambac_compiler::synth::{write_checkpoint, Preset, SynthOptions};

    let dir = tempfile::tempdir().unwrap();
    let mut o = SynthOptions::new(Preset::Tiny);
    o.seed = 99;
    o.tie_word_embeddings = Some(false);
    o.use_bias = Some(true);
    o.time_step_rank = Some(7);
    o.vocab_size = Some(1001);
    write_checkpoint(&o, dir.path()).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let (batch, len) = (2, 9);
    let ids: Vec<usize> = (0..batch * len).map(|i| (i * 97 + 13) % 1001).collect();
    let want = common::forward::forward(&ckpt, &ids, batch);
    let ids_t = Tensor64::new(vec![batch, len], ids.iter().map(|&i| i as f64).collect());
    let out = run_interp(&ckpt, &opts(8, true), ids_input(&ids_t));
    let err = worst_rel(&out["logits"].data, &want);
    eprintln!("untied int8: worst rel {err:.3e}");
    assert!(err <= 1.5e-2 && err > 1e-5, "untied int8: worst rel {err:.3e}");

    let compiled = compile(&ckpt, &opts(8, true)).unwrap();
    let g = &compiled.graph;
    let lm_head = nodes_of_kind(g, "MatMulNBits")
        .into_iter()
        .find(|&n| g.node(n).name == "lm_head")
        .expect("a quantized lm_head");
    let values = g.input(lm_head, 1).unwrap().node;
    match g.op(values) {
        Op::Const(c) => assert_eq!(c.name, "lm_head.weight.q8"),
        other => panic!("lm_head values are {other:?}"),
    }
}
