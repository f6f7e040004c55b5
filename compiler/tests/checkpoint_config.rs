//! config.json and the JSON beside it: every size bounded, the layer count checked against the
//! weights before anything is sized by it, files read under a size cap, and safetensors header
//! errors naming the tensor.

mod common;

#[path = "common/alloc_meter.rs"]
mod alloc_meter;

use std::path::{Path, PathBuf};

use common::{open_err, testdata};
use mambac_compiler::checkpoint::{Checkpoint, MambaConfig};
use mambac_compiler::synth::{self, Preset, SynthOptions};
use serde_json::json;

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

fn config_err(v: serde_json::Value) -> String {
    match MambaConfig::from_json(&v, Path::new("config.json")) {
        Ok(c) => panic!("{v} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// The tiny synthetic HF checkpoint with config.json keys replaced.
fn hf_with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth::write_checkpoint(&SynthOptions::new(Preset::Tiny), dir.path()).unwrap();
    let p = dir.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    dir
}

#[test]
fn every_size_is_bounded() {
    let hf = |k: &str, n: u64| {
        let mut v = json!({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 1024});
        v[k] = json!(n);
        config_err(v)
    };
    for key in ["hidden_size", "vocab_size", "state_size", "conv_kernel", "expand", "time_step_rank"] {
        assert_eq!(
            hf(key, (1 << 20) + 1),
            format!("config.json: key '{key}' must be at most 1048576, got 1048577"),
            "{key}"
        );
    }
    assert_eq!(
        hf("num_hidden_layers", 1_000_000_000),
        "config.json: key 'num_hidden_layers' must be at most 65536, got 1000000000"
    );
    assert_eq!(
        hf("intermediate_size", 1 << 40),
        "config.json: key 'intermediate_size' must be at most 1048576, got 1099511627776"
    );
    // u64::MAX, which no usize product survives.
    assert_eq!(
        hf("hidden_size", u64::MAX),
        format!("config.json: key 'hidden_size' must be at most 1048576, got {}", u64::MAX)
    );
    // Each size fits, their product does not.
    let v = json!({"hidden_size": 1 << 20, "expand": 4, "num_hidden_layers": 2, "vocab_size": 1024});
    assert_eq!(
        config_err(v),
        "config.json: the intermediate size 4194304 (expand 4 x hidden size 1048576) must be at most 1048576"
    );
    // The state-spaces spellings.
    let ss = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json!({"d_model": 64, "n_layer": 2, "vocab_size": 1021, "ssm_cfg": {}});
        edit(&mut v);
        config_err(v)
    };
    assert_eq!(ss(&|v| v["n_layer"] = json!(70000)), "config.json: key 'n_layer' must be at most 65536, got 70000");
    assert_eq!(
        ss(&|v| v["ssm_cfg"]["d_state"] = json!(1u64 << 33)),
        "config.json: key 'ssm_cfg.d_state' must be at most 1048576, got 8589934592"
    );
    assert_eq!(
        ss(&|v| v["ssm_cfg"]["dt_rank"] = json!(1u64 << 21)),
        "config.json: key 'ssm_cfg.dt_rank' must be at most 1048576, got 2097152"
    );
    assert_eq!(
        ss(&|v| v["pad_vocab_size_multiple"] = json!(1u64 << 62)),
        "config.json: key 'pad_vocab_size_multiple' must be at most 1048576, got 4611686018427387904"
    );
    assert_eq!(
        ss(&|v| v["ssm_cfg"]["expand"] = json!(1 << 15)),
        "config.json: the intermediate size 2097152 (expand 32768 x hidden size 64) must be at most 1048576"
    );
    // The largest sizes allowed are read.
    let v = json!({"hidden_size": 1 << 19, "num_hidden_layers": 1 << 16, "vocab_size": 1 << 20});
    let (c, _) = MambaConfig::from_json(&v, Path::new("config.json")).unwrap();
    assert_eq!((c.intermediate_size, c.num_hidden_layers), (1 << 20, 1 << 16));
}

#[test]
fn the_layer_count_must_match_the_weights() {
    for (n, alloc_bound) in [(3usize, 1usize << 20), (65536, 1 << 20), (1, 1 << 20)] {
        let dir = hf_with(|o| {
            o.insert("num_hidden_layers".into(), json!(n));
        });
        let (msg, peak, _) = alloc_meter::measure(|| open_err(dir.path()));
        assert_eq!(
            msg,
            format!(
                "{} gives num_hidden_layers {n}, but {} has 2 layers (backbone.layers.N tensors)",
                dir.path().join("config.json").display(),
                dir.path().join("model.safetensors").display()
            )
        );
        // Nothing was sized by the config's count: 65536 layers' names alone are megabytes.
        assert!(peak < alloc_bound + (2 << 20), "{n}: {peak} bytes");
    }
    // state-spaces names its key n_layer.
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(testdata("mamba-tiny-ssm/config.json")).unwrap();
    assert!(cfg.contains("\"n_layer\": 2"));
    std::fs::write(dir.path().join("config.json"), cfg.replace("\"n_layer\": 2", "\"n_layer\": 40000")).unwrap();
    std::os::unix::fs::symlink(testdata("mamba-tiny-ssm/pytorch_model.bin"), dir.path().join("pytorch_model.bin"))
        .unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!(
            "{} gives n_layer 40000, but {} has 2 layers (backbone.layers.N tensors)",
            dir.path().join("config.json").display(),
            dir.path().join("pytorch_model.bin").display()
        )
    );
}

#[test]
fn json_files_are_read_under_a_cap() {
    // A sparse 64 MiB + 1 file: refused from its size, before it is read.
    let dir = hf_with(|_| {});
    let p = dir.path().join("config.json");
    std::fs::File::create(&p).unwrap().set_len((64 << 20) + 1).unwrap();
    let (msg, peak, _) = alloc_meter::measure(|| open_err(dir.path()));
    assert_eq!(msg, format!("{} is 67108865 bytes, more than the 64 MiB a JSON file may have", p.display()));
    assert!(peak < 1 << 20, "{peak} bytes");
    // The shard index too.
    let dir = tempfile::tempdir().unwrap();
    let mut o = SynthOptions::new(Preset::Tiny);
    o.shards = Some(2);
    synth::write_checkpoint(&o, dir.path()).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::File::create(&index).unwrap().set_len(100 << 20).unwrap();
    assert_eq!(
        open_err(dir.path()),
        format!("{} is 104857600 bytes, more than the 64 MiB a JSON file may have", index.display())
    );
}

#[test]
fn symlinked_shards_are_followed() {
    // The Hugging Face cache: snapshot/<file> -> ../../blobs/<hash>.
    let store = tempfile::tempdir().unwrap();
    let mut o = SynthOptions::new(Preset::Tiny);
    o.shards = Some(2);
    synth::write_checkpoint(&o, store.path()).unwrap();
    let snap = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(store.path()).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), snap.path().join(e.file_name())).unwrap();
    }
    let ck = Checkpoint::open(snap.path()).unwrap();
    assert_eq!(ck.weight_files().len(), 2);
    let want = Checkpoint::open(store.path()).unwrap();
    let n = "backbone.layers.1.mixer.A_log";
    assert_eq!(*ck.tensor(n).unwrap().bytes, *want.tensor(n).unwrap().bytes);
}

/// A model.safetensors of one header and `data_len` data bytes, in the tiny HF folder.
fn safetensors_with(header: &str, data_len: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = hf_with(|_| {});
    let st = dir.path().join("model.safetensors");
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend((0..data_len).map(|i| (i * 37 + 11) as u8));
    std::fs::write(&st, v).unwrap();
    (dir, st)
}

#[test]
fn safetensors_header_errors_name_the_tensor() {
    let cases = [
        (
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            "tensor 'w': data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            8,
            "tensor 'w': data_offsets must be two non-negative integers [start, end]",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,
            8,
            "tensor 'w': data_offsets must be two non-negative integers [start, end]",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            8,
            "tensor 'w': shape must be a list of non-negative integers",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            8,
            "tensor 'w': shape [4294967296, 4294967296] is too large to address",
        ),
        (r#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, 8, "tensor 'w' has no dtype"),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#,
            16,
            "tensor 'b': its data_offsets overlap another tensor's or leave a gap before it",
        ),
    ];
    for (header, len, detail) in cases {
        let (dir, st) = safetensors_with(header, len);
        assert_eq!(
            open_err(dir.path()),
            format!("{} has a corrupt safetensors header: {detail}", st.display()),
            "{header}"
        );
    }
}
