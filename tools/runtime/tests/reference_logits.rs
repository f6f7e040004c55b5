//! The session code against the fixtures' reference logits, through ONNX Runtime and the op
//! library: a prompt prefilled then decoded one token at a time, a prompt fed in uneven chunks,
//! and prompts prefilled alone then stacked into one batch (the `generate` path), all reproduce
//! the full-sequence float64 reference within docs/op-contract.md's float32 tier (1e-4 worst relative).

mod common;

use common::{export, export_with, options, root, session};
use mambac_compiler::emit::decode_graph::decode_graph_path;
use mambac_runtime::{
    generate, open_session, prefill, stack_batch, DecodeGraphChoice, DecodeGraphMismatch, Error, GenerateOptions,
    HostTensor, Keep, Logits, Sampling, SessionOptions, StatefulSession,
};

const TOL: f64 = 1e-4;
const FIXTURES: [&str; 2] = ["mamba-tiny-hf", "mamba-tiny-ssm"];

/// input_ids [2, 37] and logits [2, 37, 1024] of the Hugging Face float64 run.
struct Reference {
    batch: usize,
    len: usize,
    ids: Vec<i64>,
    logits: Vec<f64>,
}

impl Reference {
    fn load() -> Reference {
        let bytes = std::fs::read(root().join("testdata/mamba-tiny-hf/reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ids_t = st.tensor("input_ids").unwrap();
        let logits_t = st.tensor("logits").unwrap();
        let ids = ids_t.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let logits = logits_t.data().chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        let s = logits_t.shape();
        assert_eq!(s.len(), 3, "logits [batch, len, vocab]");
        Reference { batch: s[0], len: s[1], ids, logits }
    }

    /// ids[:, t0..t1] row-major.
    fn ids(&self, rows: std::ops::Range<usize>, t0: usize, t1: usize) -> Vec<i64> {
        rows.flat_map(|b| self.ids[b * self.len + t0..b * self.len + t1].to_vec()).collect()
    }
}

/// Collects per-position logits of each row into `[batch, len, vocab]` and compares.
struct Collected {
    rows: Vec<Vec<f64>>,
}

impl Collected {
    fn new(batch: usize) -> Collected {
        Collected { rows: vec![Vec::new(); batch] }
    }

    fn push(&mut self, l: &Logits, first_row: usize) {
        for b in 0..l.batch {
            for p in 0..l.positions {
                self.rows[first_row + b].extend(l.row(b, p).iter().map(|&x| x as f64));
            }
        }
    }

    fn worst_rel(&self, r: &Reference) -> f64 {
        let out: Vec<f64> = self.rows.concat();
        assert_eq!(out.len(), r.logits.len(), "collected logits for every position");
        let scale = r.logits.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        out.iter()
            .zip(&r.logits)
            .map(|(o, x)| if (o - x).is_nan() { f64::INFINITY } else { (o - x).abs() })
            .fold(0.0, f64::max)
            / scale
    }
}

#[test]
fn prefill_then_decode_reproduces_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    for fixture in FIXTURES {
        let mut s = session(&export(fixture, dir.path()));
        for k in [1, 10] {
            s.reset(r.batch).unwrap();
            let mut got = Collected::new(r.batch);
            got.push(&s.step(&r.ids(0..r.batch, 0, k), k, Keep::All).unwrap(), 0);
            for t in k..r.len {
                got.push(&s.step(&r.ids(0..r.batch, t, t + 1), 1, Keep::All).unwrap(), 0);
            }
            let err = got.worst_rel(&r);
            eprintln!("{fixture}: prefill {k} + decode: worst rel {err:.2e}");
            assert!(err <= TOL, "{fixture}: prefill {k} then decode: worst rel {err:.3e} > {TOL:e}");
        }
    }
}

#[test]
fn uneven_chunks_reproduce_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    for fixture in FIXTURES {
        let mut s = session(&export(fixture, dir.path()));
        for bounds in [vec![0, 5, 6, 7, 19, 20, r.len], vec![0, 13, 14, 30, r.len - 1, r.len]] {
            s.reset(r.batch).unwrap();
            let mut got = Collected::new(r.batch);
            for w in bounds.windows(2) {
                got.push(&s.step(&r.ids(0..r.batch, w[0], w[1]), w[1] - w[0], Keep::All).unwrap(), 0);
            }
            let err = got.worst_rel(&r);
            eprintln!("{fixture}: chunks {bounds:?}: worst rel {err:.2e}");
            assert!(err <= TOL, "{fixture}: chunks {bounds:?}: worst rel {err:.3e} > {TOL:e}");
        }
    }
}

/// The `generate` path: each row prefilled alone at batch 1 (different lengths), the states
/// copied to the host and stacked, then both rows decoded as one batch.
#[test]
fn prompts_prefilled_alone_then_decoded_as_a_batch_reproduce_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    let mut s = session(&export("mamba-tiny-hf", dir.path()));
    let prompt_len = [9, 4];
    let mut per_row = Vec::new();
    let mut got = Collected::new(r.batch);
    for (b, &len) in prompt_len.iter().enumerate() {
        s.reset(1).unwrap();
        let logits = s.step(&r.ids(b..b + 1, 0, len), len, Keep::All).unwrap();
        got.push(&logits, b);
        // The shortcut generate takes (last position only) agrees with the full logits.
        let last = prefill(&mut s, &r.ids(b..b + 1, 0, len), Some(3)).unwrap();
        let want = logits.last(0);
        assert!(
            last.iter().zip(want).all(|(a, w)| (a - w).abs() <= 1e-5 * w.abs().max(1.0)),
            "chunked prefill's last logits"
        );
        per_row.push(s.states_to_host().unwrap());
    }
    s.set_states(&stack_batch(&per_row).unwrap()).unwrap();
    assert_eq!(s.batch(), 2);
    // The rows are at different positions (9 and 4): each gets its own next reference token,
    // both in one step, until row 0 reaches the end.
    let mut pos = prompt_len;
    while pos[0] < r.len {
        let ids: Vec<i64> = (0..r.batch).map(|b| r.ids[b * r.len + pos[b]]).collect();
        let l = s.step(&ids, 1, Keep::All).unwrap();
        for (b, p) in pos.iter_mut().enumerate() {
            got.rows[b].extend(l.row(b, 0).iter().map(|&x| x as f64));
            *p += 1;
        }
    }
    // Row 1 stopped 5 tokens short: finish it alone from its own states.
    let states = s.states_to_host().unwrap();
    let row1: Vec<_> = states
        .iter()
        .map(|t| {
            let n = t.bytes.len() / 2;
            HostTensor { dtype: t.dtype, shape: [&[1], &t.shape[1..]].concat(), bytes: t.bytes[n..].to_vec() }
        })
        .collect();
    s.set_states(&row1).unwrap();
    let rest = r.len - pos[1];
    got.push(&s.step(&r.ids(1..2, pos[1], r.len), rest, Keep::All).unwrap(), 1);
    let err = got.worst_rel(&r);
    eprintln!("alone then batched: worst rel {err:.2e}");
    assert!(err <= TOL, "prefill alone + batched decode: worst rel {err:.3e} > {TOL:e}");
}

#[test]
fn a_step_with_the_wrong_number_of_ids_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(&export("mamba-tiny-hf", dir.path()));
    s.reset(2).unwrap();
    let e = s.step(&[1, 2, 3], 1, Keep::Last).expect_err("rejected").to_string();
    assert!(e.contains("batch 2"), "{e}");
}

/// The decode graph attached while a sequence is under way (its states already in the session's
/// buffers): the states move to the host and on, and the rest of the sequence, decoded on the
/// decode graph, still reproduces the reference. (`StatefulSession::open` attaches it before any step;
/// this is the case `with_decode_session` guards.)
#[test]
fn a_decode_graph_attached_mid_sequence_keeps_the_states() {
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    let model = export_with("mamba-tiny-hf", &dir.path().join("dg.onnx"), true);
    let mut s = session(&model);
    s.reset(r.batch).unwrap();
    let mut got = Collected::new(r.batch);
    got.push(&s.step(&r.ids(0..r.batch, 0, 6), 6, Keep::All).unwrap(), 0);
    got.push(&s.step(&r.ids(0..r.batch, 6, 7), 1, Keep::All).unwrap(), 0);
    let decode = open_session(&decode_graph_path(&model), &options()).unwrap();
    let mut s = s.with_decode_session(decode).unwrap();
    assert!(s.has_decode_graph(), "batch 2: one-token steps run on the decode graph");
    for t in 7..r.len {
        got.push(&s.step(&r.ids(0..r.batch, t, t + 1), 1, Keep::All).unwrap(), 0);
    }
    let err = got.worst_rel(&r);
    assert!(err <= TOL, "decode graph attached mid-sequence: worst rel {err:.3e} > {TOL:e}");
}

/// `DecodeGraphChoice::On` with no decode graph beside the model: the typed error, with the
/// message naming the file and the flag that makes it.
#[test]
fn decode_graph_on_without_the_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = export("mamba-tiny-hf", dir.path());
    let opts = SessionOptions { decode_graph: DecodeGraphChoice::On, ..options() };
    let e = StatefulSession::open(&model, &opts).err().expect("refused");
    assert!(matches!(e, Error::DecodeGraphMissing(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "--decode-graph on: {} does not exist (export it with `mambac export --stateful --decode-graph`)",
            decode_graph_path(&model).display()
        )
    );
}

/// A decode graph of another export beside the model: `On` refuses it with the reason, `Auto`
/// (which on the CPU EP never picks one) and `Off` open the model alone without a warning.
#[test]
fn a_decode_graph_of_another_export_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_with("mamba-tiny-hf", &dir.path().join("a.onnx"), true);
    let other = export_with("mamba-tiny-hf", &dir.path().join("b.onnx"), true);
    std::fs::copy(decode_graph_path(&other), decode_graph_path(&model)).unwrap();
    let on = SessionOptions { decode_graph: DecodeGraphChoice::On, ..options() };
    let e = StatefulSession::open(&model, &on).err().expect("refused");
    let Error::DecodeGraphUnusable { reason: DecodeGraphMismatch::NotDerived { .. }, .. } = &e else { panic!("{e:?}") };
    assert_eq!(
        e.to_string(),
        format!(
            "--decode-graph on: {} cannot be used: it was not derived from this export of {} (re-export with --decode-graph)",
            decode_graph_path(&model).display(),
            model.display()
        )
    );
    for choice in [DecodeGraphChoice::Auto, DecodeGraphChoice::Off] {
        let s = StatefulSession::open(&model, &SessionOptions { decode_graph: choice, ..options() }).unwrap();
        assert!(!s.has_decode_graph() && s.warnings().is_empty() && !s.cuda_graph_capture(), "{choice:?}");
    }
}

/// `On` with the model's own decode graph: one-token steps run on it at every batch size (above
/// `DECODE_GRAPH_MAX_BATCH` too), and a greedy generation through it gives the tokens the model
/// alone gives.
#[test]
fn decode_graph_on_runs_every_batch_size_and_generates_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_with("mamba-tiny-hf", &dir.path().join("m.onnx"), true);
    let on = SessionOptions { decode_graph: DecodeGraphChoice::On, ..options() };
    let mut s = StatefulSession::open(&model, &on).unwrap();
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    s.reset(mambac_runtime::DECODE_GRAPH_MAX_BATCH + 1).unwrap();
    assert!(s.has_decode_graph());
    let r = Reference::load();
    let prompts: Vec<Vec<i64>> = vec![r.ids(0..1, 0, 9), r.ids(1..2, 0, 4)];
    let gen = GenerateOptions {
        max_new_tokens: 6,
        sampling: Sampling::Greedy,
        seed: 0,
        prefill_chunk: None,
        stop_ids: vec![],
    };
    let with = generate(&mut s, &prompts, &gen, |_, _| Ok::<(), Error>(())).unwrap();
    let off = SessionOptions { decode_graph: DecodeGraphChoice::Off, ..options() };
    let mut plain = StatefulSession::open(&model, &off).unwrap();
    assert!(!plain.has_decode_graph());
    let without = generate(&mut plain, &prompts, &gen, |_, _| Ok::<(), Error>(())).unwrap();
    assert_eq!(with.ids, without.ids);
    assert_eq!(with.ids.iter().map(Vec::len).collect::<Vec<_>>(), vec![6, 6]);
}

/// An error from the token callback ends generation and comes back as the caller's own type.
#[test]
fn the_callbacks_error_is_returned_as_it_is() {
    #[derive(Debug)]
    enum Mine {
        Stop(usize),
        Runtime(Error),
    }
    impl From<Error> for Mine {
        fn from(e: Error) -> Mine {
            Mine::Runtime(e)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(&export("mamba-tiny-hf", dir.path()));
    let gen = GenerateOptions { max_new_tokens: 5, ..GenerateOptions::default() };
    let mut seen = 0;
    let e = generate(&mut s, &[vec![3, 4, 5]], &gen, |_, _| {
        seen += 1;
        if seen == 3 {
            Err(Mine::Stop(seen))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(e, Mine::Stop(3)), "{e:?}");
    let e = generate(&mut s, &[vec![3, 1 << 40]], &gen, |_, _| Ok::<(), Mine>(())).unwrap_err();
    let Mine::Runtime(e) = e else { panic!("{e:?}") };
    assert!(matches!(e, Error::TokenOutOfRange { id: 1099511627776, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "prompt 1: token id 1099511627776 at position 1 is out of range: the model's vocabulary has 1024 entries (ids 0..=1023)"
    );
}

#[test]
fn a_missing_model_is_a_typed_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("absent.onnx");
    let e = StatefulSession::open(&model, &options()).err().expect("refused");
    assert!(matches!(&e, Error::ModelNotFound(p) if *p == model), "{e:?}");
    assert_eq!(e.to_string(), format!("model {} does not exist", model.display()));
}

/// `Auto` runs a Mamba-2 decode graph at batch 1 only (`MAMBA2_DECODE_GRAPH_MAX_BATCH`: the
/// general graph is faster from batch 8 on the H200) and a Mamba-1 one up to
/// `DECODE_GRAPH_MAX_BATCH`; the limit follows the model's states, not its file name.
#[test]
fn auto_takes_each_familys_decode_graph_up_to_its_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, most) in [
        ("mamba-tiny-hf", mambac_runtime::DECODE_GRAPH_MAX_BATCH),
        ("mamba2-tiny-hf", mambac_runtime::MAMBA2_DECODE_GRAPH_MAX_BATCH),
    ] {
        let model = export_with(fixture, &dir.path().join(format!("{fixture}.onnx")), true);
        let decode = open_session(&decode_graph_path(&model), &options()).unwrap();
        let mut s = session(&model).with_decode_session(decode).unwrap();
        s.reset(most).unwrap();
        assert!(s.has_decode_graph(), "{fixture}: batch {most} runs on the decode graph");
        s.reset(most + 1).unwrap();
        assert!(!s.has_decode_graph(), "{fixture}: batch {} runs on the general graph", most + 1);
    }
}
