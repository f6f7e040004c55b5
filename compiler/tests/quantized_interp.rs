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
    CompileOptions { lower: LowerOptions { dtype: Elem::F32, quant: Some(quant), ..Default::default() }, fuse, max_rewrites: None }
}

#[test]
fn quantized_logits_stay_within_the_tier() {
    let r = reference("mamba-tiny-hf");
    // Same tiers as tests/python/test_quantized.py (accuracy_level 0: float compute).
    for (fixture, bits, tier) in [("mamba-tiny-hf", 8, 1.5e-2), ("mamba-tiny-ssm", 8, 1.5e-2), ("mamba-tiny-hf", 4, 0.25)] {
        let ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        let fused = run_interp(&ckpt, &opts(bits, true), ids_input(&r["input_ids"]));
        let unfused = run_interp(&ckpt, &opts(bits, false), ids_input(&r["input_ids"]));
        let err = worst_rel(&fused["logits"].data, &r["logits"].data);
        eprintln!("{fixture} int{bits}: worst rel {err:.3e}");
        assert!(err <= tier && err > 1e-5, "{fixture} int{bits}: worst rel {err:.3e} (tier {tier:e}; 0 would mean nothing was quantized)");
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
