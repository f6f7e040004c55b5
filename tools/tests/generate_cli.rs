//! `mambac generate` and `mambac bench` end to end, through the built CLI, ONNX Runtime and the
//! op library: greedy generation equals the argmax continuation of the float64 interpreter run
//! step by step (on both Mamba-1 fixtures, and on an untied synthetic checkpoint whose
//! continuations do not just repeat the last token, as the tied fixtures' do); prompts of
//! different lengths generated as one batch give the tokens each gives alone; text prompts; the
//! error messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::interp::{interpret, Tensor64};
use mambac_compiler::ir::{validate, Elem};
use mambac_compiler::lower::LowerOptions;
use mambac_compiler::pipeline::{compile, CompileOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// ORT_DYLIB_PATH, else the repository venv's wheel.
fn ort_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    std::fs::read_dir(root().join(".venv/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|py| py.path().join("site-packages/onnxruntime/capi"))
        .flat_map(|capi| std::fs::read_dir(capi).into_iter().flatten().flatten().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .expect("ONNX Runtime: set ORT_DYLIB_PATH or run tools/setup.sh (creates .venv)")
}

fn ops_lib() -> PathBuf {
    let lib = std::env::var_os("MAMBAC_OPS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/libmambac_ops.so"));
    assert!(lib.is_file(), "{} not found: cargo build --release, or set MAMBAC_OPS_LIB", lib.display());
    lib
}

fn mambac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mambac"))
        .args(args)
        .env("ORT_DYLIB_PATH", ort_lib())
        .env("MAMBAC_OPS_LIB", ops_lib())
        .output()
        .expect("mambac runs")
}

fn ok(args: &[&str]) -> String {
    let out = mambac(args);
    assert!(out.status.success(), "mambac {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = mambac(args);
    assert!(!out.status.success(), "mambac {args:?} should fail; stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn export(ckpt: &Path, out: &Path, stateful: bool) {
    let mut args = vec!["export", ckpt.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"];
    if stateful {
        args.push("--stateful");
    }
    ok(&args);
}

/// The `ids` of the JSON line that ends the output.
fn json_ids(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"));
    v["ids"].clone()
}

fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().expect("a list").iter().map(|x| x.as_i64().expect("an id")).collect()
}

fn joined(p: &[i64]) -> String {
    p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// Greedy continuation by the float64 interpreter (unfused graph, so independent of the fusion
/// rules and the op library): the prompt in one step from zero states, then one token a step.
/// Also returns the smallest gap between the best and second-best logit (relative to the
/// largest), so a test can tell a real mismatch from a float32 near-tie.
fn reference_continuation(ckpt_dir: &Path, prompt: &[i64], n: usize) -> (Vec<i64>, f64) {
    let ckpt = Checkpoint::open(ckpt_dir).unwrap();
    let cfg = ckpt.config.clone();
    let opts = CompileOptions {
        lower: LowerOptions { dtype: Elem::F32, stateful: true, ..Default::default() },
        fuse: false,
        max_rewrites: None,
    };
    let compiled = compile(&ckpt, &opts).unwrap();
    let vg = validate(&compiled.graph).unwrap();
    let mut inputs: HashMap<String, Tensor64> = HashMap::new();
    for i in 0..cfg.num_hidden_layers {
        inputs.insert(format!("conv_state.{i}"), Tensor64::zeros(vec![1, cfg.intermediate_size, cfg.conv_kernel - 1]));
        inputs.insert(format!("ssm_state.{i}"), Tensor64::zeros(vec![1, cfg.intermediate_size, cfg.state_size]));
    }
    let mut feed: Vec<i64> = prompt.to_vec();
    let (mut out, mut min_gap) = (Vec::new(), f64::INFINITY);
    for _ in 0..n {
        inputs.insert("input_ids".into(), Tensor64::new(vec![1, feed.len()], feed.iter().map(|&x| x as f64).collect()));
        let res = interpret(&vg, &ckpt, &inputs).unwrap();
        let logits = &res["logits"];
        let vocab = logits.shape[2];
        let last = &logits.data[logits.data.len() - vocab..];
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));
        let scale = last.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        min_gap = min_gap.min((last[order[0]] - last[order[1]]) / scale);
        out.push(order[0] as i64);
        for i in 0..cfg.num_hidden_layers {
            inputs.insert(format!("conv_state.{i}"), res[&format!("conv_state_out.{i}")].clone());
            inputs.insert(format!("ssm_state.{i}"), res[&format!("ssm_state_out.{i}")].clone());
        }
        feed = vec![order[0] as i64];
    }
    (out, min_gap)
}

const PROMPTS: [&[i64]; 3] =
    [&[17, 900, 3, 44, 1000, 12, 7], &[500], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]];
const NEW: usize = 10;

fn check_greedy(ckpt_dir: &Path, dir: &Path, name: &str) {
    let model = dir.join(format!("{name}.onnx"));
    export(ckpt_dir, &model, true);
    let model = model.to_str().unwrap();
    let n = NEW.to_string();
    let mut want = Vec::new();
    for p in PROMPTS {
        let (cont, gap) = reference_continuation(ckpt_dir, p, NEW);
        // float32 logits are within ~1e-6 of float64 here; a gap this wide cannot flip.
        assert!(gap > 1e-4, "{name}: prompt {p:?} has a near-tie ({gap:.2e}) in its reference: choose another prompt");
        let alone = ids_of(&json_ids(&ok(&[
            "generate",
            model,
            "--prompt-ids",
            &joined(p),
            "--max-new-tokens",
            &n,
            "--greedy",
            "--json",
        ])));
        assert_eq!(alone, cont, "{name}: greedy continuation of {p:?}");
        want.push(cont);
    }
    // All three prompts (lengths 7, 1, 20) as one batch: ';' and a repeated flag.
    let two = format!("{};{}", joined(PROMPTS[0]), joined(PROMPTS[1]));
    let out = ok(&[
        "generate",
        model,
        "--prompt-ids",
        &two,
        "--prompt-ids",
        &joined(PROMPTS[2]),
        "--max-new-tokens",
        &n,
        "--greedy",
        "--json",
        "--threads",
        "2",
    ]);
    let batched: Vec<Vec<i64>> = json_ids(&out).as_array().unwrap().iter().map(ids_of).collect();
    assert_eq!(batched, want, "{name}: batched greedy generation");
    // Streamed as produced: one tagged line per token before the JSON line.
    assert_eq!(out.lines().filter(|l| l.starts_with("[2] ")).count(), NEW, "{out}");
}

#[test]
fn greedy_generation_matches_the_float64_interpreter_on_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["mamba-tiny-hf", "mamba-tiny-ssm"] {
        check_greedy(&root().join("testdata").join(fixture), dir.path(), fixture);
    }
}

fn untied(dir: &Path) -> PathBuf {
    let ckpt = dir.join("untied");
    ok(&["synth", "--preset", "tiny", "--untied", "--seed", "5", ckpt.to_str().unwrap()]);
    ckpt
}

#[test]
fn greedy_generation_matches_the_float64_interpreter_on_an_untied_model() {
    let dir = tempfile::tempdir().unwrap();
    check_greedy(&untied(dir.path()), dir.path(), "untied");
}

/// Sampling: prompt j of a batch draws from seed + j, so it gives what it gives alone with that seed.
#[test]
fn sampled_batch_equals_each_prompt_alone_and_a_seed_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("untied.onnx");
    export(&untied(dir.path()), &model, true);
    let model = model.to_str().unwrap();
    let sample = ["--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--max-new-tokens", "12", "--json"];
    let prompts = format!("{};{};{}", joined(PROMPTS[0]), joined(PROMPTS[1]), joined(PROMPTS[2]));
    let batched =
        json_ids(&ok(&[&["generate", model, "--prompt-ids", &prompts, "--seed", "40"], &sample[..]].concat()));
    let again = json_ids(&ok(&[&["generate", model, "--prompt-ids", &prompts, "--seed", "40"], &sample[..]].concat()));
    assert_eq!(batched, again, "a seed gives the same tokens");
    for (j, p) in PROMPTS.iter().enumerate() {
        let seed = (40 + j).to_string();
        let alone =
            ids_of(&json_ids(&ok(
                &[&["generate", model, "--prompt-ids", &joined(p), "--seed", &seed], &sample[..]].concat()
            )));
        assert_eq!(ids_of(&batched[j]), alone, "prompt {j}");
    }
    let other = json_ids(&ok(&[&["generate", model, "--prompt-ids", &prompts, "--seed", "41"], &sample[..]].concat()));
    assert_ne!(batched, other, "another seed, other tokens");
}

/// A word-level tokenizer.json: token i is the word "w{i}".
fn word_tokenizer(path: &Path, vocab: usize) {
    let words: serde_json::Map<String, serde_json::Value> =
        (0..vocab).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let t = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": { "type": "Whitespace" }, "post_processor": null, "decoder": null,
        "model": { "type": "WordLevel", "vocab": words, "unk_token": "w0" }
    });
    std::fs::write(path, serde_json::to_string(&t).unwrap()).unwrap();
}

#[test]
fn text_prompts_through_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("untied.onnx");
    export(&untied(dir.path()), &model, true);
    let model = model.to_str().unwrap();
    let tok = dir.path().join("tokenizer.json");
    word_tokenizer(&tok, 1024);
    let tok = tok.to_str().unwrap();
    let by_ids =
        ids_of(&json_ids(&ok(&["generate", model, "--prompt-ids", "17,900,3", "--max-new-tokens", "6", "--json"])));
    let out =
        ok(&["generate", model, "--prompt", "w17 w900 w3", "--tokenizer", tok, "--max-new-tokens", "6", "--json"]);
    assert_eq!(ids_of(&json_ids(&out)), by_ids);
    let words: Vec<String> = by_ids.iter().map(|i| format!("w{i}")).collect();
    assert_eq!(out.lines().next().unwrap().trim(), words.join(" "), "streamed text");
    // Several text prompts: a tagged line per token, then each prompt's text.
    let out = ok(&[
        "generate",
        model,
        "--prompt",
        "w17 w900 w3",
        "--prompt",
        "w5",
        "--tokenizer",
        tok,
        "--max-new-tokens",
        "3",
    ]);
    assert!(out.lines().any(|l| l == format!("[1] {}", words[..3].join(" "))), "{out}");
}

#[test]
fn generate_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let hf = root().join("testdata/mamba-tiny-hf");
    let plain = dir.path().join("plain.onnx");
    export(&hf, &plain, false);
    let stateful = dir.path().join("stateful.onnx");
    export(&hf, &stateful, true);
    let (plain, stateful) = (plain.to_str().unwrap(), stateful.to_str().unwrap());

    let e = fails(&["generate", plain, "--prompt-ids", "1,2"]);
    assert!(e.contains("no state inputs") && e.contains("--stateful"), "{e}");
    let e = fails(&["bench", plain, "--prompt-len", "4", "--decode-tokens", "2", "--reps", "1"]);
    assert!(e.contains("no state inputs"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1,x,3"]);
    assert!(e.contains("--prompt-ids: prompt 1: 'x' is not a token id"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1,2;3;"]);
    assert!(e.contains("prompt 3: '' is not a token id"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "5;1,1024"]);
    assert!(e.contains("prompt 2: token id 1024 at position 1 is out of range") && e.contains("1024 entries"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1", "--temperature", "0"]);
    assert!(e.contains("--temperature must be a positive number"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1", "--top-p", "1.5"]);
    assert!(e.contains("--top-p must be in (0, 1]"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1", "--greedy", "--top-k", "3"]);
    assert!(e.contains("cannot be used with"), "{e}");
    // export copies the checkpoint's tokenizer.json beside the model; without it, text needs --tokenizer.
    let beside = Path::new(stateful).with_file_name("tokenizer.json");
    std::fs::remove_file(&beside).unwrap();
    let e = fails(&["generate", stateful, "--prompt", "hello"]);
    assert_eq!(
        e,
        format!(
            "error: --prompt needs a tokenizer: give --tokenizer, or put tokenizer.json beside {stateful} (mambac export \
             copies the checkpoint's)\n"
        )
    );
    let e = fails(&["generate", "/nonexistent/model.onnx", "--prompt-ids", "1"]);
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(&["generate", stateful, "--prompt-ids", "1", "--tokenizer", "/nonexistent/tokenizer.json"]);
    assert!(e.contains("cannot read the tokenizer"), "{e}");
}

#[test]
fn bench_reports_a_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    export(&root().join("testdata/mamba-tiny-hf"), &model, true);
    let model = model.to_str().unwrap();
    let args = [
        "bench",
        model,
        "--batch",
        "3",
        "--prompt-len",
        "16",
        "--decode-tokens",
        "5",
        "--warmup",
        "1",
        "--reps",
        "3",
        "--threads",
        "1",
    ];
    let table = ok(&args);
    assert!(table.contains("tok/s median"), "{table}");
    for phase in ["prefill", "decode"] {
        let row = table.lines().find(|l| l.starts_with(phase)).unwrap_or_else(|| panic!("no {phase} row:\n{table}"));
        let median: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(median > 0.0, "{row}");
    }
    let j: serde_json::Value = serde_json::from_str(ok(&[&args[..], &["--json"]].concat()).trim()).unwrap();
    assert_eq!(j["batch"], 3);
    assert_eq!(j["layers"], 2);
    assert_eq!(j["prefill"]["tokens"], 48.0);
    assert_eq!(j["decode"]["tokens"], 15.0);
    let reset = &j["reset"]["ms"];
    let (lo, mid, hi) =
        (reset["min"].as_f64().unwrap(), reset["median"].as_f64().unwrap(), reset["max"].as_f64().unwrap());
    assert!(0.0 < lo && lo <= mid && mid <= hi, "reset: {reset}");
    assert!(table.lines().any(|l| l.starts_with("reset ") && l.ends_with(" /batch")), "{table}");
    // CUDA graphs are a CUDA EP matter: the CPU EP never captures, with or without the flag (the
    // graph path itself runs only on the GPU: tools/gpu/ort_cuda_e2e.py part B).
    assert_eq!(j["cuda_graph"], false);
    let j: serde_json::Value =
        serde_json::from_str(ok(&[&args[..], &["--json", "--no-cuda-graph"]].concat()).trim()).unwrap();
    assert_eq!(j["cuda_graph"], false);
    for phase in ["prefill", "decode"] {
        let t = &j[phase]["tokens_per_s"];
        let (lo, mid, hi) = (t["min"].as_f64().unwrap(), t["median"].as_f64().unwrap(), t["max"].as_f64().unwrap());
        assert!(0.0 < lo && lo <= mid && mid <= hi, "{phase}: {t}");
    }
}

/// `--stop-id`: a sequence ends right after producing the id (kept as its last token); the other
/// sequences of the batch go on, and each equals its unstopped run cut at its first stop id.
#[test]
fn stop_id_ends_each_sequence_at_its_first_occurrence() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("untied.onnx");
    export(&untied(dir.path()), &model, true);
    let model = model.to_str().unwrap();
    let prompts = format!("{};{};{}", joined(PROMPTS[0]), joined(PROMPTS[1]), joined(PROMPTS[2]));
    let full = json_ids(&ok(&["generate", model, "--prompt-ids", &prompts, "--max-new-tokens", "12", "--json"]));
    let full: Vec<Vec<i64>> = full.as_array().expect("a list per prompt").iter().map(ids_of).collect();
    // The third token of prompt 0: it stops prompt 0 early; the others stop wherever it occurs.
    let stop = full[0][2];
    let stopped = json_ids(&ok(&[
        "generate",
        model,
        "--prompt-ids",
        &prompts,
        "--max-new-tokens",
        "12",
        "--json",
        "--stop-id",
        &stop.to_string(),
    ]));
    let stopped: Vec<Vec<i64>> = stopped.as_array().expect("a list per prompt").iter().map(ids_of).collect();
    for (j, ids) in full.iter().enumerate() {
        let cut = ids.iter().position(|&t| t == stop).map_or(ids.len(), |k| k + 1);
        assert_eq!(stopped[j], ids[..cut].to_vec(), "prompt {j}");
    }
    assert!(stopped[0].len() <= 3);
}

/// A decode step whose logits are NaN in one sequence: the graph's greedy pick marks it and
/// `generate` fails with the error naming the prompt, its new token and the batch row, as a
/// message, not a panic. The untied checkpoint's embedding row of prompt 2's first new token is
/// NaN: prefill (which never looks the token up) is finite, and the first decode step of prompt
/// 2 reads that row.
#[test]
fn generate_reports_non_finite_logits_of_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = untied(dir.path());
    let clean = dir.path().join("clean.onnx");
    export(&ckpt, &clean, true);
    let prompts = format!("{};{}", joined(PROMPTS[0]), joined(PROMPTS[2]));
    let run = |model: &Path, new: &str| {
        let m = model.to_str().unwrap();
        mambac(&["generate", m, "--prompt-ids", &prompts, "--max-new-tokens", new, "--greedy", "--json"])
    };
    let first = run(&clean, "1");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first: Vec<i64> = json_ids(std::str::from_utf8(&first.stdout).unwrap())
        .as_array()
        .expect("a list per prompt")
        .iter()
        .map(|ids| ids_of(ids)[0])
        .collect();
    let poison = first[1];
    assert!(
        poison != first[0] && !PROMPTS[0].contains(&poison) && !PROMPTS[2].contains(&poison),
        "token {poison} is read by another sequence too: choose other prompts"
    );

    let weights = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let (_, dtype, shape, data) =
        tensors.iter_mut().find(|t| t.0 == "backbone.embeddings.weight").expect("the embedding");
    assert_eq!(*dtype, safetensors::Dtype::F32);
    let row = data.len() / shape[0];
    for b in data[poison as usize * row..(poison as usize + 1) * row].chunks_mut(4) {
        b.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let views =
        tensors.iter().map(|(k, d, s, b)| (k.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()));
    std::fs::write(&weights, safetensors::serialize(views, None).unwrap()).unwrap();
    let broken = dir.path().join("broken.onnx");
    export(&ckpt, &broken, true);
    let out = run(&broken, "3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.ends_with(
            "prompt 2, new token 2: the logits of batch row 1 are not finite (NaN or infinity) at position 0 of this \
             step: the model produced no usable token\n"
        ),
        "{stderr}"
    );
}
