//! Every way a checkpoint folder can be wrong gives an error naming the file or tensor, never a
//! panic. Bad files are built in temporary folders from synthetic or fixture checkpoints.

mod common;

use std::io::Write;
use std::path::Path;

use common::{open_err, testdata};
use mambac_compiler::checkpoint::{pickle, Checkpoint, CheckpointError};
use mambac_compiler::synth::{self, Preset, SynthOptions};

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

/// A tiny synthetic HF checkpoint in a fresh folder.
fn tiny_hf(opts: Option<SynthOptions>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth::write_checkpoint(&opts.unwrap_or_else(|| SynthOptions::new(Preset::Tiny)), dir.path()).unwrap();
    dir
}

/// Rewrites model.safetensors through the safetensors crate, letting `edit` drop or change
/// tensors: (name, dtype, shape, bytes).
fn rewrite_safetensors(path: &Path, edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut items: Vec<_> =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    edit(&mut items);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = items
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A torch.save-like zip with the given data.pkl and storages `data/<key>`.
fn write_torch_zip(path: &Path, pkl: &[u8], storages: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", o).unwrap();
    z.write_all(pkl).unwrap();
    for (k, b) in storages {
        z.start_file(format!("archive/data/{k}"), o).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
}

/// A folder with the tiny state-spaces config.json and the given pytorch_model.bin contents.
fn ssm_dir_with_pickle(pkl: &[u8], storages: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm/config.json"), dir.path().join("config.json")).unwrap();
    write_torch_zip(&dir.path().join("pytorch_model.bin"), pkl, storages);
    dir
}

/// Protocol-2 pickle snippets for hand-made state dicts.
fn p_str(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}
fn p_int(i: u32) -> Vec<u8> {
    let mut v = vec![b'J'];
    v.extend_from_slice(&i.to_le_bytes());
    v
}
fn p_tuple(vals: &[u32]) -> Vec<u8> {
    let mut v = vec![b'('];
    for &x in vals {
        v.extend(p_int(x));
    }
    v.push(b't');
    v
}
/// `{name: _rebuild_tensor_v2(storage(key, numel), offset, shape, stride, False, OrderedDict())}`.
fn p_state_dict(name: &str, key: &str, numel: u32, offset: u32, shape: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut v = vec![0x80, 2, b'}', b'('];
    v.extend(p_str(name));
    v.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    v.extend(b"(");
    v.extend(p_str("storage"));
    v.extend(b"ctorch\nFloatStorage\n");
    v.extend(p_str(key));
    v.extend(p_str("cpu"));
    v.extend(p_int(numel));
    v.extend(b"tQ");
    v.extend(p_int(offset));
    v.extend(p_tuple(shape));
    v.extend(p_tuple(stride));
    v.extend(b"\x89ccollections\nOrderedDict\n)Rt");
    v.extend(b"Ru.");
    v
}

#[test]
fn missing_dir() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nope");
    assert_eq!(open_err(&gone), format!("checkpoint folder {} does not exist", gone.display()));
}

#[test]
fn missing_config() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(open_err(dir.path()), format!("no config.json in {}", dir.path().display()));
}

#[test]
fn missing_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-hf/config.json"), dir.path().join("config.json")).unwrap();
    // Other files are ignored, not mistaken for weights.
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "no weights in {}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin",
            dir.path().display()
        )
    );
}

#[test]
fn config_not_json_and_missing_keys() {
    let dir = tiny_hf(None);
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, "{\"hidden_size\": 64,").unwrap();
    assert_contains(&open_err(dir.path()), &[&cfg.display().to_string(), "invalid JSON"]);
    std::fs::write(&cfg, r#"{"hidden_size": 64, "vocab_size": 1024}"#).unwrap();
    assert_eq!(open_err(dir.path()), format!("{}: missing key 'num_hidden_layers'", cfg.display()));
    std::fs::write(&cfg, r#"{"hidden_size": "64", "num_hidden_layers": 2, "vocab_size": 1024}"#).unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!("{}: key 'hidden_size' must be a positive integer, got \"64\"", cfg.display())
    );
    std::fs::write(&cfg, r#"{"d_model": 64, "n_layer": 2, "vocab_size": 1024, "ssm_cfg": {"d_state": -1}}"#).unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!("{}: key 'ssm_cfg.d_state' must be a positive integer, got -1", cfg.display())
    );
    std::fs::write(&cfg, r#"{"layers": 3}"#).unwrap();
    assert_contains(&open_err(dir.path()), &["not a Mamba config"]);
}

#[test]
fn other_families_and_hybrid_configs_are_refused() {
    let dir = tiny_hf(None);
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"model_type": "jamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 1024}"#)
        .unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "{}: model_type 'jamba' is not supported (mambac reads model_type 'mamba' and 'mamba2')",
            cfg.display()
        )
    );
    std::fs::write(&cfg, r#"{"d_model": 64, "n_layer": 2, "vocab_size": 1024, "ssm_cfg": {"layer": "Mamba3"}}"#)
        .unwrap();
    assert_contains(
        &open_err(dir.path()),
        &["ssm_cfg.layer 'Mamba3' is not supported (mambac reads Mamba1 and Mamba2 layers)"],
    );
    std::fs::write(&cfg, r#"{"d_model": 64, "n_layer": 2, "vocab_size": 1024, "attn_layer_idx": [1]}"#).unwrap();
    assert_contains(&open_err(dir.path()), &["attention layers"]);
}

#[test]
fn truncated_safetensors() {
    let dir = tiny_hf(None);
    let st = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let msg = open_err(dir.path());
    assert_contains(&msg, &[&format!("{} is truncated", st.display()), "bytes of tensor data"]);
    // Cut inside the header, and before the header length.
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    assert_contains(&open_err(dir.path()), &[&format!("{} is truncated: the header needs", st.display())]);
    std::fs::write(&st, [1u8, 2, 3]).unwrap();
    assert_contains(&open_err(dir.path()), &[&format!("{} is truncated: 3 bytes", st.display())]);
    std::fs::write(&st, []).unwrap();
    assert_contains(&open_err(dir.path()), &[&format!("{} is truncated: 0 bytes", st.display())]);
}

#[test]
fn corrupt_safetensors_header() {
    let dir = tiny_hf(None);
    let st = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    // Overwrite the start of the JSON header with garbage.
    bytes[8..16].copy_from_slice(b"#garbage");
    std::fs::write(&st, &bytes).unwrap();
    assert_contains(&open_err(dir.path()), &[&format!("{} has a corrupt safetensors header: not JSON", st.display())]);
    // A header length of 2^60.
    bytes[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&st, &bytes).unwrap();
    assert_contains(&open_err(dir.path()), &["corrupt safetensors header: header length", "implausible"]);
    // Overlapping offsets.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(&[0u8; 12]);
    std::fs::write(&st, &v).unwrap();
    assert_contains(&open_err(dir.path()), &["corrupt safetensors header"]);
    // Extra bytes after the data.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(&[0u8; 20]);
    std::fs::write(&st, &v).unwrap();
    assert_contains(&open_err(dir.path()), &["corrupt safetensors header", "extra bytes"]);
}

#[test]
fn missing_tensor() {
    let dir = tiny_hf(None);
    let st = dir.path().join("model.safetensors");
    rewrite_safetensors(&st, |items| items.retain(|(n, ..)| n != "backbone.layers.1.mixer.D"));
    assert_eq!(open_err(dir.path()), format!("missing tensor 'backbone.layers.1.mixer.D' in {}", st.display()));
}

#[test]
fn missing_tensor_asked_for_by_name() {
    let ck = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let e = ck.tensor("backbone.layers.7.mixer.D").unwrap_err();
    assert!(matches!(e, CheckpointError::MissingTensor { .. }));
    assert_contains(&e.to_string(), &["missing tensor 'backbone.layers.7.mixer.D' in", "model.safetensors"]);
}

#[test]
fn untied_config_without_lm_head() {
    let dir = tiny_hf(None);
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    std::fs::write(&cfg, text).unwrap();
    assert_contains(&open_err(dir.path()), &["missing tensor 'lm_head.weight' in"]);
}

#[test]
fn shape_contradicting_config() {
    let mut o = SynthOptions::new(Preset::Tiny);
    o.state_size = Some(8);
    let dir = tiny_hf(Some(o));
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"state_size\": 8", "\"state_size\": 16");
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(
        open_err(dir.path()),
        "tensor 'backbone.layers.0.mixer.A_log' has shape [128, 8], expected [128, 16] from config.json"
    );
    // The typed error carries both shapes and the file.
    let Err(CheckpointError::ShapeMismatch { actual, expected, path, .. }) = Checkpoint::open(dir.path()) else {
        panic!("expected ShapeMismatch")
    };
    assert_eq!((actual, expected), (vec![128, 8], vec![128, 16]));
    assert_eq!(path, dir.path().join("model.safetensors"));
}

#[test]
fn vocab_contradicting_config_in_state_spaces() {
    // The fixture's embedding has 1024 rows; vocab 1030 padded to a multiple of 8 is 1032.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm/pytorch_model.bin"), dir.path().join("pytorch_model.bin")).unwrap();
    let text = std::fs::read_to_string(testdata("mamba-tiny-ssm/config.json")).unwrap().replace("1021", "1030");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    assert_eq!(
        open_err(dir.path()),
        "tensor 'backbone.embeddings.weight' has shape [1024, 64], expected [1032, 64] from config.json"
    );
}

#[test]
fn unsupported_and_unknown_dtypes() {
    let dir = tiny_hf(None);
    let st = dir.path().join("model.safetensors");
    // F64: known to safetensors, not read by mambac.
    rewrite_safetensors(&st, |items| {
        for it in items.iter_mut().filter(|it| it.0 == "backbone.norm_f.weight") {
            it.1 = safetensors::Dtype::F64;
            it.3 = vec![0u8; 64 * 8];
        }
    });
    assert_eq!(
        open_err(dir.path()),
        format!(
            "tensor 'backbone.norm_f.weight' in {} has dtype F64; mambac reads float32, float16 and bfloat16",
            st.display()
        )
    );
    // "F7": a dtype nobody knows.
    let header = br#"{"backbone.norm_f.weight":{"dtype":"F7","shape":[64],"data_offsets":[0,256]}}"#;
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header);
    v.extend_from_slice(&[0u8; 256]);
    std::fs::write(&st, &v).unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "tensor 'backbone.norm_f.weight' in {} has dtype F7; mambac reads float32, float16 and bfloat16",
            st.display()
        )
    );
}

#[test]
fn index_naming_a_missing_shard() {
    let mut o = SynthOptions::new(Preset::Tiny);
    o.shards = Some(2);
    let dir = tiny_hf(Some(o));
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    assert_eq!(
        open_err(dir.path()),
        format!("{} names shard model-00002-of-00002.safetensors, which does not exist", index.display())
    );
}

#[test]
fn index_errors() {
    let mut o = SynthOptions::new(Preset::Tiny);
    o.shards = Some(2);
    let dir = tiny_hf(Some(o));
    let index = dir.path().join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index).unwrap();
    // A tensor in the index that its shard lacks.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["weight_map"]["backbone.layers.9.mixer.D"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&index, v.to_string()).unwrap();
    assert_contains(
        &open_err(dir.path()),
        &["maps 'backbone.layers.9.mixer.D' to model-00001-of-00002.safetensors, which does not contain it"],
    );
    // A path escaping the folder.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["weight_map"]["backbone.norm_f.weight"] = "../model-00001-of-00002.safetensors".into();
    std::fs::write(&index, v.to_string()).unwrap();
    assert_contains(&open_err(dir.path()), &["is not a plain file name"]);
    std::fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    assert_contains(&open_err(dir.path()), &[&index.display().to_string(), "no 'weight_map' object"]);
    // A tensor missing from every shard names the index.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["weight_map"].as_object_mut().unwrap().remove("backbone.layers.1.mixer.D");
    std::fs::write(&index, v.to_string()).unwrap();
    rewrite_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), |items| {
        items.retain(|(n, ..)| n != "backbone.layers.1.mixer.D")
    });
    rewrite_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), |items| {
        items.retain(|(n, ..)| n != "backbone.layers.1.mixer.D")
    });
    assert_eq!(open_err(dir.path()), format!("missing tensor 'backbone.layers.1.mixer.D' in {}", index.display()));
}

#[test]
fn corrupt_and_truncated_zip() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba-tiny-ssm/config.json"), dir.path().join("config.json")).unwrap();
    let bin = dir.path().join("pytorch_model.bin");
    std::fs::write(&bin, b"this is not a zip file at all, just text").unwrap();
    assert_contains(&open_err(dir.path()), &[&format!("{} is not a readable torch zip archive", bin.display())]);
    let full = std::fs::read(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap();
    std::fs::write(&bin, &full[..full.len() / 2]).unwrap();
    assert_contains(&open_err(dir.path()), &[&format!("{} is not a readable torch zip archive", bin.display())]);
    // Legacy torch.save (a bare pickle) is named as such.
    std::fs::write(&bin, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert_contains(&open_err(dir.path()), &["legacy (pre-1.6) torch.save file"]);
    // A zip that is not a torch archive.
    let mut z = zip::ZipWriter::new(std::fs::File::create(&bin).unwrap());
    z.start_file("readme.txt", zip::write::SimpleFileOptions::default()).unwrap();
    z.write_all(b"hello").unwrap();
    z.finish().unwrap();
    assert_contains(&open_err(dir.path()), &["no data.pkl entry"]);
}

#[test]
fn corrupt_pickle() {
    let bin = |d: &tempfile::TempDir| d.path().join("pytorch_model.bin").display().to_string();
    let d = ssm_dir_with_pickle(b"\x80\x02}q\x00(\xff", &[]);
    assert_eq!(
        open_err(d.path()),
        format!("{}: pickle opcode 0xff at byte 6 is not supported (state dicts do not use it)", bin(&d))
    );
    let d = ssm_dir_with_pickle(b"\x80\x02}q\x00(X\x10\x00\x00\x00abc", &[]);
    assert_eq!(
        open_err(d.path()),
        format!("{}: pickle data ends early: the opcode at byte 6 needs more bytes", bin(&d))
    );
    let d = ssm_dir_with_pickle(b"\x80\x02h\x05.", &[]);
    assert_eq!(open_err(d.path()), format!("{}: malformed pickle at byte 2: memo 5 is not set", bin(&d)));
    let d = ssm_dir_with_pickle(b"\x80\x02u.", &[]);
    assert_contains(&open_err(d.path()), &["malformed pickle at byte 2: no MARK"]);
    let d = ssm_dir_with_pickle(b"\x80\x02K\x01.", &[]);
    assert_contains(&open_err(d.path()), &["data.pkl does not hold a state dict"]);
}

#[test]
fn pickle_global_outside_the_allow_list() {
    // What a malicious file does: GLOBAL os.system, then call it.
    let pkl = b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touch\x85R.";
    let d = ssm_dir_with_pickle(pkl, &[]);
    let msg = open_err(d.path());
    assert_contains(
        &msg,
        &[&d.path().join("pytorch_model.bin").display().to_string(), "pickle global 'os.system' is not allowed"],
    );
    // STACK_GLOBAL is checked the same way.
    let mut pkl = vec![0x80, 2];
    pkl.extend(p_str("builtins"));
    pkl.extend(p_str("eval"));
    pkl.extend(b"\x93.");
    let d = ssm_dir_with_pickle(&pkl, &[]);
    assert_contains(&open_err(d.path()), &["pickle global 'builtins.eval' is not allowed"]);
    // And the typed error names the global.
    assert!(
        matches!(pickle::load(b"\x80\x02cposix\nsystem\n."), Err(pickle::PickleError::DisallowedGlobal(g)) if g == "posix.system")
    );
}

#[test]
fn non_contiguous_and_out_of_range_tensors() {
    let storage = vec![0u8; 64 * 4];
    // A transposed view: shape [8, 8], stride [1, 8].
    let pkl = p_state_dict("backbone.norm_f.weight", "0", 64, 0, &[8, 8], &[1, 8]);
    let d = ssm_dir_with_pickle(&pkl, &[("0", &storage)]);
    assert_contains(
        &open_err(d.path()),
        &["tensor 'backbone.norm_f.weight' is not contiguous (shape [8, 8], stride [1, 8]"],
    );
    // Offset past the end of its storage.
    let pkl = p_state_dict("backbone.norm_f.weight", "0", 64, 10, &[64], &[1]);
    let d = ssm_dir_with_pickle(&pkl, &[("0", &storage)]);
    assert_contains(
        &open_err(d.path()),
        &["tensor 'backbone.norm_f.weight' (offset 10, 64 elements) reaches past the end of storage '0'"],
    );
    // A storage the archive lacks.
    let pkl = p_state_dict("backbone.norm_f.weight", "7", 64, 0, &[64], &[1]);
    let d = ssm_dir_with_pickle(&pkl, &[("0", &storage)]);
    assert_contains(
        &open_err(d.path()),
        &["tensor 'backbone.norm_f.weight' uses storage '7', which is not in the archive"],
    );
    // A well-formed one-tensor state dict is read, then the other tensors are missing.
    let pkl = p_state_dict("backbone.norm_f.weight", "0", 64, 0, &[64], &[1]);
    let d = ssm_dir_with_pickle(&pkl, &[("0", &storage)]);
    assert_contains(&open_err(d.path()), &["missing tensor 'backbone.embeddings.weight' in", "pytorch_model.bin"]);
}

/// Any truncation or byte flip of the fixtures gives Ok or Err, never a panic.
#[test]
fn damaged_files_never_panic() {
    for (folder, file) in [("mamba-tiny-hf", "model.safetensors"), ("mamba-tiny-ssm", "pytorch_model.bin")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(testdata(folder).join("config.json"), dir.path().join("config.json")).unwrap();
        let full = std::fs::read(testdata(folder).join(file)).unwrap();
        let target = dir.path().join(file);
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..60 {
            let mut bytes = full.clone();
            if i % 2 == 0 {
                bytes.truncate((next() as usize) % full.len());
            } else {
                // Flip bytes in the first 3 KB: headers, pickle, zip local headers.
                for _ in 0..4 {
                    let at = (next() as usize) % 3000.min(bytes.len());
                    bytes[at] ^= (next() as u8) | 1;
                }
            }
            std::fs::write(&target, &bytes).unwrap();
            let _ = Checkpoint::open(dir.path());
        }
    }
    // And the pickle reader alone on mutations of the fixture's pickle.
    let f = std::fs::File::open(testdata("mamba-tiny-ssm/pytorch_model.bin")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("pytorch_model/data.pkl").unwrap(), &mut pkl).unwrap();
    for i in 0..pkl.len() {
        let mut m = pkl.clone();
        m[i] = m[i].wrapping_add(1 + (i % 7) as u8);
        let _ = pickle::load(&m);
        let _ = pickle::load(&pkl[..i]);
    }
}

/// A hostile data.pkl through the whole open: nested a million deep, it is read and dropped
/// without recursion and refused for what it is.
#[test]
fn deeply_nested_pickle_through_open() {
    let mut pkl = vec![0x80, 2, b')'];
    pkl.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    pkl.push(b'.');
    let d = ssm_dir_with_pickle(&pkl, &[]);
    assert_eq!(
        open_err(d.path()),
        format!(
            "{}: data.pkl does not hold a state dict (a dict of tensors)",
            d.path().join("pytorch_model.bin").display()
        )
    );
}
