//! Reading the state-spaces fixture (testdata/mamba-tiny-ssm: mamba_ssm config.json +
//! torch.save'd pytorch_model.bin with a shared lm_head/embedding storage), compared bit for bit
//! with the Hugging Face fixture holding the same weights.

use std::path::PathBuf;

use mambac_compiler::checkpoint::{pickle, shapes, Checkpoint, DType, Layout, MambaConfig};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

#[test]
fn ssm_config_equals_hf_config() {
    let ssm = Checkpoint::open(&testdata("mamba-tiny-ssm")).expect("open ssm");
    let hf = Checkpoint::open(&testdata("mamba-tiny-hf")).expect("open hf");
    assert_eq!(ssm.layout, Layout::StateSpaces);
    // vocab_size 1021 in the file, padded to 1024 by pad_vocab_size_multiple 8.
    assert_eq!(ssm.config.vocab_size, 1024);
    assert_eq!(ssm.config, hf.config);
    assert_eq!(ssm.weight_files(), vec![testdata("mamba-tiny-ssm").join("pytorch_model.bin")]);
}

#[test]
fn every_ssm_tensor_equals_the_hf_one_bit_for_bit() {
    let ssm = Checkpoint::open(&testdata("mamba-tiny-ssm")).expect("open ssm");
    let hf = Checkpoint::open(&testdata("mamba-tiny-hf")).expect("open hf");
    let mut names: Vec<String> = shapes::expected_tensors(&hf.config).into_iter().map(|(n, _)| n).collect();
    names.push(shapes::LM_HEAD.to_string());
    for name in &names {
        let a = ssm.tensor(name).expect(name);
        let b = hf.tensor(name).expect(name);
        assert_eq!(a.shape, b.shape, "{name}");
        assert_eq!(a.dtype, DType::F32, "{name}");
        assert_eq!(a.bytes.len(), a.numel() * 4, "{name}");
        assert_eq!(&*a.bytes, &*b.bytes, "{name}");
        // Stored zip entries are sliced, not copied.
        assert!(matches!(a.bytes, std::borrow::Cow::Borrowed(_)), "{name}");
    }
    // The state-spaces name is the stored one; the canonical name finds it.
    assert!(ssm.stored_tensor_names().contains(&"backbone.embedding.weight".to_string()));
    assert!(ssm.has_tensor("backbone.embeddings.weight"));
    // lm_head is stored (sharing the embedding's storage) and equals the embedding.
    assert!(ssm.stored_tensor_names().contains(&"lm_head.weight".to_string()));
    assert_eq!(&*ssm.tensor("lm_head.weight").unwrap().bytes, &*ssm.tensor(shapes::EMBEDDING).unwrap().bytes);
}

#[test]
fn ssm_config_defaults() {
    let j = serde_json::json!({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
        "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8});
    let (c, layout) = MambaConfig::from_json(&j, std::path::Path::new("config.json")).expect("parse");
    assert_eq!(layout, Layout::StateSpaces);
    assert_eq!(c.vocab_size, 50280);
    assert_eq!((c.state_size, c.conv_kernel, c.expand, c.time_step_rank), (16, 4, 2, 48));
    assert_eq!(c.intermediate_size, 1536);
    assert!(!c.use_bias && c.use_conv_bias && c.tie_word_embeddings);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
    let j = serde_json::json!({"d_model": 64, "n_layer": 2, "vocab_size": 1000, "pad_vocab_size_multiple": 1,
        "ssm_cfg": {"d_state": 8, "d_conv": 3, "expand": 3, "dt_rank": 7, "bias": true, "conv_bias": false},
        "tie_embeddings": false});
    let (c, _) = MambaConfig::from_json(&j, std::path::Path::new("config.json")).expect("parse");
    assert_eq!(c.vocab_size, 1000);
    assert_eq!((c.state_size, c.conv_kernel, c.expand, c.time_step_rank, c.intermediate_size), (8, 3, 3, 7, 192));
    assert!(c.use_bias && !c.use_conv_bias && !c.tie_word_embeddings);
}

/// The fixture's pickle, read directly: the tied lm_head is the same object as the embedding.
#[test]
fn pickle_reader_on_the_fixture() {
    let f = std::fs::File::open(testdata("mamba-tiny-ssm").join("pytorch_model.bin")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("pytorch_model/data.pkl").unwrap(), &mut data).unwrap();
    let pickle::Value::Dict(d) = pickle::load(&data).unwrap() else { panic!("not a dict") };
    let d = d.borrow();
    // Per layer: norm, A_log, D, in_proj, conv1d weight+bias, x_proj, dt_proj weight+bias, out_proj.
    assert_eq!(d.len(), 2 * 10 + 3);
    let get = |k: &str| {
        d.iter()
            .find_map(|(n, v)| match (n, v) {
                (pickle::Value::Str(n), pickle::Value::Tensor(t)) if n == k => Some(t.clone()),
                _ => None,
            })
            .unwrap()
    };
    let emb = get("backbone.embedding.weight");
    assert_eq!(emb.shape, vec![1024, 64]);
    assert_eq!(emb.stride, vec![64, 1]);
    assert_eq!(emb.storage.key, "0");
    assert_eq!(emb.storage.numel, 65536);
    assert!(std::rc::Rc::ptr_eq(&emb, &get("lm_head.weight")));
    let conv = get("backbone.layers.1.mixer.conv1d.weight");
    assert_eq!(conv.shape, vec![128, 1, 4]);
}

/// A re-zipped pytorch_model.bin with compressed (deflated) entries still reads: storages are
/// inflated once instead of sliced from the map.
#[test]
fn deflated_zip_entries_are_inflated() {
    use std::io::{Read, Write};
    let src = std::fs::File::open(testdata("mamba-tiny-ssm").join("pytorch_model.bin")).unwrap();
    let mut zin = zip::ZipArchive::new(src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm").join("config.json"), dir.path().join("config.json")).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dir.path().join("pytorch_model.bin")).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        zout.start_file(f.name(), opts).unwrap();
        zout.write_all(&buf).unwrap();
    }
    zout.finish().unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    let hf = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    for (name, _) in shapes::expected_tensors(&hf.config) {
        assert_eq!(*ck.tensor(&name).unwrap().bytes, *hf.tensor(&name).unwrap().bytes, "{name}");
    }
}
