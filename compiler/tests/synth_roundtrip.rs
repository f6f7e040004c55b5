//! Synthetic checkpoints: write → Checkpoint::open → every tensor identical to what was
//! generated, for each dtype, sharded, the state-spaces writer, and the override options.

use mambac_compiler::checkpoint::{shapes, Checkpoint, DType, Layout, MambaConfig};
use mambac_compiler::synth::{self, Preset, SynthOptions};

/// Opens what `write` produced and checks config and every tensor against `tensor_bytes`.
fn check_roundtrip(opts: &SynthOptions, ck: &Checkpoint, written: &MambaConfig) {
    assert_eq!(&ck.config, written);
    assert_eq!(&opts.config().unwrap(), written);
    for (name, shape) in shapes::expected_tensors(written) {
        let t = ck.tensor(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(t.dtype, opts.dtype, "{name}");
        let want = synth::tensor_bytes(opts, &name).unwrap();
        assert!(*t.bytes == want[..], "{name}: bytes differ");
        let vals = t.to_f32();
        assert!(vals.iter().all(|v| v.is_finite()), "{name}: non-finite value");
    }
    let lm = ck.tensor(shapes::LM_HEAD).unwrap();
    assert_eq!(lm.shape, vec![written.vocab_size, written.hidden_size]);
    if written.tie_word_embeddings {
        assert_eq!(*lm.bytes, *ck.tensor(shapes::EMBEDDING).unwrap().bytes);
    }
}

/// The folder is returned with the checkpoint so it outlives the memory maps.
fn roundtrip_hf(opts: &SynthOptions) -> (tempfile::TempDir, Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let written = synth::write_checkpoint(opts, dir.path()).unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.layout, Layout::HuggingFace);
    check_roundtrip(opts, &ck, &written);
    (dir, ck)
}

#[test]
fn tiny_f32_f16_bf16_roundtrip() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut o = SynthOptions::new(Preset::Tiny);
        o.dtype = dtype;
        o.seed = 7;
        let (_dir, ck) = roundtrip_hf(&o);
        assert_eq!(ck.dtype(), dtype);
        assert_eq!(ck.config.vocab_size, 1024);
        assert_eq!(ck.weight_files().len(), 1);
    }
}

#[test]
fn dtypes_hold_the_same_values_up_to_rounding() {
    let mut o = SynthOptions::new(Preset::Tiny);
    let f32v = synth::tensor_bytes(&o, "backbone.layers.0.mixer.A_log").unwrap();
    o.dtype = DType::F16;
    let f16v = synth::tensor_bytes(&o, "backbone.layers.0.mixer.A_log").unwrap();
    let a = DType::F32.decode_f32(&f32v);
    let b = DType::F16.decode_f32(&f16v);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 2e-3 * x.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn values_have_the_intended_scales() {
    let o = SynthOptions::new(Preset::Tiny);
    let get = |n: &str| DType::F32.decode_f32(&synth::tensor_bytes(&o, n).unwrap());
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let std = |v: &[f32]| {
        let m = mean(v);
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt()
    };
    let emb = get("backbone.embeddings.weight");
    assert!((std(&emb) - 0.02).abs() < 0.002 && mean(&emb).abs() < 0.002);
    // A_log row = ln(1..=16) + small noise.
    let a = get("backbone.layers.1.mixer.A_log");
    for (i, v) in a.iter().enumerate() {
        let want = ((i % 16 + 1) as f32).ln();
        assert!((v - want).abs() < 0.3, "A_log[{i}] = {v}");
    }
    let d = get("backbone.layers.0.mixer.D");
    assert!((mean(&d) - 1.0).abs() < 0.05);
    // softplus(dt bias) in [1e-3, 1e-1].
    for b in get("backbone.layers.0.mixer.dt_proj.bias") {
        let dt = (1.0 + (b as f64).exp()).ln();
        assert!((0.9e-3..=1.1e-1).contains(&dt), "dt = {dt}");
    }
    let w = get("backbone.layers.0.mixer.in_proj.weight");
    let bound = 1.0 / 64f32.sqrt();
    assert!(w.iter().all(|x| x.abs() <= bound));
    assert!(std(&w) > 0.5 * bound / 3f32.sqrt());
    let n = get("backbone.norm_f.weight");
    assert!((mean(&n) - 1.0).abs() < 0.05 && std(&n) > 0.01);
    // Seeds matter, names matter.
    let mut o2 = o.clone();
    o2.seed = 1;
    assert_ne!(
        synth::tensor_bytes(&o2, "backbone.norm_f.weight").unwrap(),
        synth::tensor_bytes(&o, "backbone.norm_f.weight").unwrap()
    );
    assert_ne!(get("backbone.layers.0.norm.weight"), get("backbone.layers.1.norm.weight"));
}

#[test]
fn sharded_roundtrip() {
    for shards in [2, 3, 5] {
        let mut o = SynthOptions::new(Preset::Tiny);
        o.shards = Some(shards);
        o.dtype = DType::BF16;
        o.tie_word_embeddings = Some(false);
        let (_dir, ck) = roundtrip_hf(&o);
        let files = ck.weight_files();
        assert_eq!(files.len(), shards);
        for (i, f) in files.iter().enumerate() {
            assert_eq!(
                f.file_name().unwrap().to_str().unwrap(),
                format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
            );
        }
        assert!(ck.dir.join("model.safetensors.index.json").is_file());
        assert!(!ck.dir.join("model.safetensors").exists());
    }
}

#[test]
fn overrides_roundtrip() {
    let mut o = SynthOptions::new(Preset::Tiny);
    o.dtype = DType::F16;
    o.seed = 3;
    o.state_size = Some(8);
    o.conv_kernel = Some(3);
    o.time_step_rank = Some(7);
    o.use_bias = Some(true);
    o.use_conv_bias = Some(false);
    o.tie_word_embeddings = Some(false);
    o.num_hidden_layers = Some(3);
    o.vocab_size = Some(1000);
    o.hidden_size = Some(48);
    let (_dir, ck) = roundtrip_hf(&o);
    let c = &ck.config;
    assert_eq!((c.state_size, c.conv_kernel, c.time_step_rank, c.num_hidden_layers), (8, 3, 7, 3));
    assert_eq!((c.hidden_size, c.intermediate_size, c.vocab_size), (48, 96, 1000));
    assert!(c.use_bias && !c.use_conv_bias && !c.tie_word_embeddings);
    assert_eq!(ck.tensor("backbone.layers.2.mixer.x_proj.weight").unwrap().shape, vec![7 + 16, 96]);
    assert_eq!(ck.tensor("backbone.layers.2.mixer.conv1d.weight").unwrap().shape, vec![96, 1, 3]);
    assert_eq!(ck.tensor("backbone.layers.2.mixer.in_proj.bias").unwrap().shape, vec![192]);
    assert_eq!(ck.tensor("backbone.layers.2.mixer.out_proj.bias").unwrap().shape, vec![48]);
    assert!(!ck.has_tensor("backbone.layers.0.mixer.conv1d.bias"));
    // Untied: lm_head is its own tensor.
    assert_ne!(*ck.tensor("lm_head.weight").unwrap().bytes, *ck.tensor(shapes::EMBEDDING).unwrap().bytes);
}

#[test]
fn state_spaces_writer_roundtrip() {
    for (dtype, tie) in [(DType::F32, true), (DType::F16, false), (DType::BF16, true)] {
        let mut o = SynthOptions::new(Preset::Tiny);
        o.dtype = dtype;
        o.tie_word_embeddings = Some(tie);
        o.state_size = Some(8);
        o.vocab_size = Some(1000);
        o.use_bias = Some(true);
        let dir = tempfile::tempdir().unwrap();
        let written = synth::write_state_spaces_checkpoint(&o, dir.path()).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.layout, Layout::StateSpaces);
        check_roundtrip(&o, &ck, &written);
        // It also equals the HF writer's output for the same options.
        let dir2 = tempfile::tempdir().unwrap();
        synth::write_checkpoint(&o, dir2.path()).unwrap();
        let hf = Checkpoint::open(dir2.path()).unwrap();
        assert_eq!(hf.config, ck.config);
        for (name, _) in shapes::expected_tensors(&ck.config) {
            assert_eq!(*hf.tensor(&name).unwrap().bytes, *ck.tensor(&name).unwrap().bytes, "{name}");
        }
    }
}

#[test]
fn presets_parse_and_have_the_standard_sizes() {
    let want = [
        ("tiny", 64, 2, 1024),
        ("130m", 768, 24, 50280),
        ("370m", 1024, 48, 50280),
        ("790m", 1536, 48, 50280),
        ("1.4b", 2048, 48, 50280),
        ("2.8b", 2560, 64, 50280),
    ];
    for (name, h, l, v) in want {
        let p = Preset::parse(name).unwrap();
        assert_eq!(p.name(), name);
        let c = SynthOptions::new(p).config().unwrap();
        assert_eq!((c.hidden_size, c.num_hidden_layers, c.vocab_size), (h, l, v));
        assert_eq!((c.state_size, c.conv_kernel, c.expand, c.intermediate_size), (16, 4, 2, 2 * h));
        assert_eq!(c.time_step_rank, h.div_ceil(16));
    }
    assert_eq!(Preset::parse("Mamba-2.8B"), Some(Preset::B2_8));
    assert_eq!(Preset::parse("7b"), None);
}
