//! The compiler on checkpoints the fixtures do not cover (written by `synth`): d_state 8, conv
//! width 3, a non-default dt_rank, in/out projection biases, no conv bias, an untied lm_head,
//! 3+ layers, a vocabulary that is not a multiple of 8, shards, bfloat16 and float16 weights.
//! The unfused and the fused graph, run by the float64 interpreter, must both match an independent
//! float64 forward pass (tests/common/forward.rs) to 1e-6, in one pass and in stateful chunks.

mod common;

use common::forward::forward;
use common::*;
use mambac_compiler::checkpoint::{Checkpoint, DType};
use mambac_compiler::interp::{interpret, Tensor64};
use mambac_compiler::ir::{validate, Elem};
use mambac_compiler::lower::LowerOptions;
use mambac_compiler::pipeline::{compile, CompileOptions};
use mambac_compiler::synth::{write_checkpoint, Preset, SynthOptions};
use rand::{Rng, SeedableRng};

const TOL: f64 = 1e-6;

fn random_ids(vocab: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..vocab)).collect()
}

fn check_variant(label: &str, configure: impl FnOnce(&mut SynthOptions)) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SynthOptions::new(Preset::Tiny);
    o.seed = 1234;
    configure(&mut o);
    write_checkpoint(&o, dir.path()).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap_or_else(|e| panic!("{label}: {e}"));
    let (batch, len) = (2, 11);
    let ids = random_ids(ckpt.config.vocab_size, batch * len, 7);
    let want = forward(&ckpt, &ids, batch);
    let ids_t = Tensor64::new(vec![batch, len], ids.iter().map(|&i| i as f64).collect());
    for fuse in [false, true] {
        let opts = CompileOptions {
            lower: LowerOptions { dtype: Elem::F32, stateful: false, ..Default::default() },
            fuse,
            max_rewrites: None,
        };
        let out = run_interp(&ckpt, &opts, ids_input(&ids_t));
        let err = worst_rel(&out["logits"].data, &want);
        assert!(err <= TOL, "{label} fuse={fuse}: worst rel {err:.3e}");
    }
    // Stateful, in chunks of 4, 1 and 6 tokens.
    let opts = CompileOptions {
        lower: LowerOptions { dtype: Elem::F32, stateful: true, ..Default::default() },
        fuse: true,
        max_rewrites: None,
    };
    let compiled = compile(&ckpt, &opts).unwrap();
    let vg = validate(&compiled.graph).unwrap();
    let c = &ckpt.config;
    let mut feeds = zero_states(c, batch);
    let want_t = Tensor64::new(vec![batch, len, c.vocab_size], want);
    for w in [0, 4, 5, 11].windows(2) {
        feeds.insert("input_ids".into(), slice_seq(&ids_t, w[0], w[1]));
        let out = interpret(&vg, &ckpt, &feeds).unwrap();
        let err = worst_rel(&out["logits"].data, &slice_seq(&want_t, w[0], w[1]).data);
        assert!(err <= TOL, "{label} stateful chunk {w:?}: worst rel {err:.3e}");
        for i in 0..c.num_hidden_layers {
            feeds.insert(format!("conv_state.{i}"), out[&format!("conv_state_out.{i}")].clone());
            feeds.insert(format!("ssm_state.{i}"), out[&format!("ssm_state_out.{i}")].clone());
        }
    }
}

#[test]
fn tiny_default() {
    check_variant("tiny", |_| {});
}

#[test]
fn d_state_8_conv_3_dt_rank_7() {
    check_variant("d_state 8, conv 3, dt_rank 7", |o| {
        o.state_size = Some(8);
        o.conv_kernel = Some(3);
        o.time_step_rank = Some(7);
    });
}

#[test]
fn projection_biases_and_no_conv_bias() {
    check_variant("use_bias, no conv bias", |o| {
        o.use_bias = Some(true);
        o.use_conv_bias = Some(false);
    });
}

#[test]
fn untied_lm_head_three_layers_odd_vocab() {
    check_variant("untied, 3 layers, vocab 1001", |o| {
        o.tie_word_embeddings = Some(false);
        o.num_hidden_layers = Some(3);
        o.vocab_size = Some(1001);
    });
}

#[test]
fn sharded_checkpoint() {
    check_variant("3 shards", |o| o.shards = Some(3));
}

#[test]
fn bfloat16_checkpoint() {
    check_variant("bfloat16", |o| o.dtype = DType::BF16);
}

#[test]
fn float16_checkpoint_with_wide_hidden() {
    check_variant("float16, hidden 48", |o| {
        o.dtype = DType::F16;
        o.hidden_size = Some(48);
    });
}
