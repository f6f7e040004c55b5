//! Reading the Hugging Face fixture (testdata/mamba-tiny-hf, made by transformers'
//! save_pretrained): config, every tensor's shape and values against an independent reader
//! (the safetensors crate's own deserializer over the file bytes).

use std::path::PathBuf;

use mambac_compiler::checkpoint::{shapes, Checkpoint, DType, Layout, MambaConfig};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

fn tiny_config() -> MambaConfig {
    MambaConfig {
        hidden_size: 64,
        state_size: 16,
        num_hidden_layers: 2,
        expand: 2,
        conv_kernel: 4,
        time_step_rank: 4,
        intermediate_size: 128,
        use_bias: false,
        use_conv_bias: true,
        layer_norm_epsilon: 1e-5,
        tie_word_embeddings: true,
        vocab_size: 1024,
        mamba2: None,
    }
}

#[test]
fn hf_fixture_config_and_layout() {
    let ck = Checkpoint::open(&testdata("mamba-tiny-hf")).expect("open");
    assert_eq!(ck.layout, Layout::HuggingFace);
    assert_eq!(ck.config, tiny_config());
    assert_eq!(ck.dtype(), DType::F32);
    assert_eq!(ck.weight_files(), vec![testdata("mamba-tiny-hf").join("model.safetensors")]);
}

#[test]
fn hf_fixture_tensors_match_the_file() {
    let dir = testdata("mamba-tiny-hf");
    let ck = Checkpoint::open(&dir).expect("open");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("deserialize");
    let expected = shapes::expected_tensors(&ck.config);
    // Tied: every stored tensor is a needed one and lm_head is not stored.
    assert_eq!(st.len(), expected.len());
    for (name, shape) in &expected {
        let t = ck.tensor(name).expect(name);
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(t.dtype, DType::F32);
        assert_eq!(t.numel(), shape.iter().product::<usize>());
        let r = st.tensor(name).expect(name);
        assert_eq!(&*t.bytes, r.data(), "{name}");
        // Borrowed from the map, not copied.
        assert!(matches!(t.bytes, std::borrow::Cow::Borrowed(_)), "{name}");
        let f = t.to_f32();
        assert_eq!(f.len(), t.numel());
        let first = f32::from_le_bytes([r.data()[0], r.data()[1], r.data()[2], r.data()[3]]);
        assert_eq!(f[0].to_bits(), first.to_bits());
        assert_eq!(t.to_f64()[0], f64::from(first));
    }
    // The tied lm_head is the embedding, under its own name.
    assert!(ck.has_tensor(shapes::LM_HEAD));
    let lm = ck.tensor(shapes::LM_HEAD).expect("lm_head");
    assert_eq!(lm.name, "lm_head.weight");
    assert_eq!(lm.shape, vec![1024, 64]);
    assert_eq!(&*lm.bytes, &*ck.tensor(shapes::EMBEDDING).expect("emb").bytes);
    // No biases on in/out proj in this config.
    assert!(!ck.has_tensor("backbone.layers.0.mixer.in_proj.bias"));
    assert!(ck.tensor("backbone.layers.0.mixer.in_proj.bias").is_err());
    assert!(ck.has_tensor("backbone.layers.1.mixer.conv1d.bias"));
}

#[test]
fn hf_config_roundtrips_through_to_hf_json() {
    let ck = Checkpoint::open(&testdata("mamba-tiny-hf")).expect("open");
    let j = ck.config.to_hf_json();
    let (c, layout) = MambaConfig::from_json(&j, std::path::Path::new("x/config.json")).expect("parse");
    assert_eq!(layout, Layout::HuggingFace);
    assert_eq!(c, ck.config);
}

#[test]
fn hf_config_defaults_and_auto_rank() {
    let j = serde_json::json!({"hidden_size": 100, "num_hidden_layers": 3, "vocab_size": 50, "time_step_rank": "auto"});
    let (c, _) = MambaConfig::from_json(&j, std::path::Path::new("config.json")).expect("parse");
    assert_eq!(c.time_step_rank, 7); // ceil(100 / 16)
    assert_eq!(c.intermediate_size, 200);
    assert_eq!((c.state_size, c.conv_kernel, c.expand), (16, 4, 2));
    assert!(!c.use_bias && c.use_conv_bias && c.tie_word_embeddings);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
}

#[test]
fn dtype_names_parse_back() {
    for d in [DType::F32, DType::F16, DType::BF16] {
        assert_eq!(DType::parse(d.name()), Some(d));
    }
    assert_eq!(DType::parse("fp16"), Some(DType::F16));
    assert_eq!(DType::parse("bf16"), Some(DType::BF16));
    assert_eq!(DType::parse("int8"), None);
    assert_eq!((DType::F32.size(), DType::F16.size(), DType::BF16.size()), (4, 2, 2));
}
