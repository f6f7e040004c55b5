//! Hugging Face Mamba-2 folders (`Mamba2ForCausalLM`): the config's keys and every bad one named,
//! the tensors the config implies checked by name and shape.

mod common;

use std::path::Path;

use common::{open_err, testdata};
use mambac_compiler::checkpoint::{shapes, Checkpoint, Layout, MambaConfig};
use serde_json::{json, Value};

/// The mamba2-tiny-hf fixture's config.json.
fn fixture_config() -> Value {
    serde_json::from_slice(&std::fs::read(testdata("mamba2-tiny-hf").join("config.json")).unwrap()).unwrap()
}

fn config_err(v: Value) -> String {
    match MambaConfig::from_json(&v, Path::new("config.json")) {
        Ok(c) => panic!("{v} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = fixture_config();
    edit(v.as_object_mut().unwrap());
    v
}

#[test]
fn fixture_config_resolves() {
    let ck = Checkpoint::open(&testdata("mamba2-tiny-hf")).expect("fixture opens");
    assert_eq!(ck.layout, Layout::HuggingFace);
    let c = &ck.config;
    let m = c.mamba2.as_ref().expect("a Mamba-2 config");
    assert_eq!((c.hidden_size, c.intermediate_size, c.state_size, c.conv_kernel), (64, 128, 16, 4));
    assert_eq!((m.num_heads, m.head_dim, m.n_groups, m.chunk_size), (8, 16, 1, 16));
    assert_eq!(m.time_step_limit, (0.0, f64::INFINITY));
    assert!(!m.clamps_dt() && !m.norm_before_gate);
    assert_eq!((m.conv_dim(c), m.in_proj_dim(c)), (160, 296));
    assert!(c.tie_word_embeddings && !c.use_bias && c.use_conv_bias);
    // Tied: lm_head is the embedding.
    assert!(ck.has_tensor(shapes::LM_HEAD));
    assert_eq!(ck.tensor("backbone.layers.1.mixer.A_log").unwrap().shape, vec![8]);
}

#[test]
fn defaults_are_transformers_defaults() {
    let v = json!({"model_type": "mamba2", "hidden_size": 4096, "num_hidden_layers": 64, "vocab_size": 32768});
    let (c, _) = MambaConfig::from_json(&v, Path::new("config.json")).unwrap();
    let m = c.mamba2.unwrap();
    assert_eq!((m.num_heads, m.head_dim, m.n_groups, m.chunk_size, c.state_size), (128, 64, 8, 256, 128));
    assert_eq!(
        (c.expand, c.conv_kernel, c.use_bias, c.use_conv_bias, c.tie_word_embeddings),
        (2, 4, false, true, false)
    );
}

#[test]
fn time_step_limit_forms() {
    let parse = |lim: Value| {
        let v = with(|o| {
            o.insert("time_step_limit".into(), lim);
        });
        MambaConfig::from_json(&v, Path::new("config.json")).unwrap().0.mamba2.unwrap().time_step_limit
    };
    assert_eq!(parse(json!([0.001, 100.0])), (0.001, 100.0));
    assert_eq!(parse(json!([0.0, {"__float__": "Infinity"}])), (0.0, f64::INFINITY));
    assert_eq!(parse(Value::Null), (0.0, f64::INFINITY));
    let bad = |lim: Value| {
        let shown = lim.to_string();
        let msg = config_err(with(|o| {
            o.insert("time_step_limit".into(), lim);
        }));
        assert_eq!(
            msg,
            format!(
                "config.json: key 'time_step_limit' must be [min, max] with 0 <= min <= max and max > 0, got {shown}"
            )
        );
    };
    bad(json!([0.1]));
    bad(json!([0.1, 0.01]));
    bad(json!([-1.0, 1.0]));
    bad(json!([0.0, 0.0]));
    bad(json!("auto"));
    bad(json!([0.0, {"__float__": "NaN"}]));
    bad(json!([{"__float__": "Infinity"}, {"__float__": "Infinity"}]));
}

#[test]
fn every_bad_key_is_named() {
    let err = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| config_err(with(edit));
    assert_eq!(
        err(&|o| {
            o.insert("head_dim".into(), json!(8));
        }),
        "config.json: num_heads 8 x head_dim 8 = 64 must equal the intermediate size 128 (expand 2 x hidden_size 64)"
    );
    assert_eq!(
        err(&|o| {
            o.insert("n_groups".into(), json!(3));
        }),
        "config.json: key 'n_groups' (3) must divide 'num_heads' (8): each group serves whole heads"
    );
    assert_eq!(
        err(&|o| {
            o.insert("hidden_act".into(), json!("gelu"));
        }),
        "config.json: key 'hidden_act' must be \"silu\" (the only activation of Mamba-2 blocks), got \"gelu\""
    );
    assert_eq!(
        err(&|o| {
            o.insert("rms_norm".into(), json!(false));
        }),
        "config.json: rms_norm false (Mamba-2 blocks without the gated RMSNorm) is not supported"
    );
    assert_eq!(
        err(&|o| {
            o.insert("norm_before_gate".into(), json!("yes"));
        }),
        "config.json: key 'norm_before_gate' must be true or false, got \"yes\""
    );
    for key in ["num_heads", "head_dim", "n_groups", "chunk_size", "state_size"] {
        assert_eq!(
            err(&|o| {
                o.insert(key.into(), json!((1u64 << 20) + 1));
            }),
            format!("config.json: key '{key}' must be at most 1048576, got 1048577"),
        );
        assert_eq!(
            err(&|o| {
                o.insert(key.into(), json!(0));
            }),
            format!("config.json: key '{key}' must be a positive integer, got 0"),
        );
    }
    // Each size fits, the conv's channel count (x, B and C) does not.
    assert_eq!(
        err(&|o| {
            o.insert("state_size".into(), json!(1 << 20));
        }),
        "config.json: the conv width 2097280 (intermediate size 128 + 2 x n_groups 1 x state_size 1048576) must be \
         at most 1048576"
    );
}

/// A copy of the fixture with model.safetensors rewritten by `edit` (name, shape, f32 values).
fn fixture_with(edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(testdata("mamba2-tiny-hf").join(f), dir.path().join(f)).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut items: Vec<_> = st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
    edit(&mut items);
    let views: Vec<_> = items
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    dir
}

#[test]
fn mamba2_tensors_are_checked_by_name_and_shape() {
    let dir = fixture_with(|items| items.retain(|(n, _, _)| n != "backbone.layers.1.mixer.dt_bias"));
    assert_eq!(
        open_err(dir.path()),
        format!(
            "missing tensor 'backbone.layers.1.mixer.dt_bias' in {}",
            dir.path().join("model.safetensors").display()
        )
    );
    let dir = fixture_with(|items| {
        for (n, s, b) in items.iter_mut() {
            if n == "backbone.layers.0.mixer.A_log" {
                *s = vec![2, 4];
                b.truncate(32);
            }
        }
    });
    assert_eq!(
        open_err(dir.path()),
        "tensor 'backbone.layers.0.mixer.A_log' has shape [2, 4], expected [8] from config.json"
    );
    // in_proj's width is z + xBC + dt: 128 + 160 + 8.
    let dir = fixture_with(|items| {
        for (n, s, b) in items.iter_mut() {
            if n == "backbone.layers.0.mixer.in_proj.weight" {
                *s = vec![295, 64];
                b.truncate(295 * 64 * 4);
            }
        }
    });
    assert_eq!(
        open_err(dir.path()),
        "tensor 'backbone.layers.0.mixer.in_proj.weight' has shape [295, 64], expected [296, 64] from config.json"
    );
}

/// mamba2-groups2's block as mamba_ssm's own config.json (state-spaces layout, ssm_cfg.layer
/// "Mamba2").
fn state_spaces_config() -> Value {
    json!({
        "d_model": 32, "n_layer": 2, "vocab_size": 61, "pad_vocab_size_multiple": 8, "d_intermediate": 0,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "d_conv": 4, "expand": 2, "headdim": 16, "ngroups": 2,
                    "bias": true, "conv_bias": true, "dt_limit": [0.05, 0.5], "chunk_size": 8},
        "attn_layer_idx": [], "rms_norm": true, "norm_epsilon": 1e-5, "tie_embeddings": false,
    })
}

#[test]
fn state_spaces_mamba2_reads_and_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("mamba2-groups2").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), state_spaces_config().to_string()).unwrap();
    let ck = Checkpoint::open(dir.path()).expect("opens");
    assert_eq!(ck.layout, Layout::StateSpaces);
    let m = ck.config.mamba2.as_ref().unwrap();
    assert_eq!((m.num_heads, m.head_dim, m.n_groups, m.chunk_size), (4, 16, 2, 8));
    assert_eq!((m.time_step_limit, ck.config.vocab_size), ((0.05, 0.5), 64));
    let r = common::reference("mamba2-groups2");
    let opts = mambac_compiler::pipeline::CompileOptions::default();
    let out = common::run_interp(&ck, &opts, common::ids_input(&r["input_ids"]));
    let err = common::worst_rel(&out["logits"].data, &r["logits"].data);
    assert!(err <= 1e-10, "worst rel {err:.3e}");
}

#[test]
fn state_spaces_mamba2_bad_keys_are_named() {
    let err = |edit: &dyn Fn(&mut Value)| {
        let mut v = state_spaces_config();
        edit(&mut v);
        config_err(v)
    };
    assert_eq!(
        err(&|v| v["ssm_cfg"]["headdim"] = json!(48)),
        "config.json: key 'ssm_cfg.headdim' (48) must divide the intermediate size 64 (expand 2 x d_model 32)"
    );
    assert_eq!(
        err(&|v| v["ssm_cfg"]["ngroups"] = json!(3)),
        "config.json: key 'ssm_cfg.ngroups' (3) must divide the head count 4 (intermediate size / headdim)"
    );
    assert_eq!(
        err(&|v| v["ssm_cfg"]["D_has_hdim"] = json!(true)),
        "config.json: ssm_cfg.D_has_hdim true (D per channel) is not supported"
    );
    assert_eq!(
        err(&|v| v["ssm_cfg"]["rmsnorm"] = json!(false)),
        "config.json: ssm_cfg.rmsnorm false (no gated RMSNorm) is not supported"
    );
    assert_eq!(
        err(&|v| v["ssm_cfg"]["d_ssm"] = json!(32)),
        "config.json: ssm_cfg.d_ssm 32 is not the intermediate size 64: blocks with an MLP part are not supported"
    );
    assert_eq!(
        err(&|v| v["ssm_cfg"]["dt_limit"] = json!([1.0])),
        "config.json: key 'ssm_cfg.dt_limit' must be [min, max] with 0 <= min <= max and max > 0, got [1.0]"
    );
}
