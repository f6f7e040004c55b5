//! The exports' in-graph greedy pick on non-finite logits, through ONNX Runtime's CPU EP: a
//! sequence whose states hold a NaN (its logits then are NaN) makes `step_greedy` fail with the
//! error naming that batch row and the step's position, on the Mamba-1 and Mamba-2 fixtures,
//! one-token steps through the decode graph and the model, and a prompt step; the other rows'
//! logits stay finite, and the same states without the NaN give the host's argmax.

mod common;

use common::{export_with, options};
use mambac_runtime::{DecodeGraphChoice, Error, HostTensor, Keep, SessionOptions, StatefulSession};
use rand::{Rng, SeedableRng};
use safetensors::Dtype;

const FIXTURES: [&str; 2] = ["mamba-tiny-hf", "mamba2-tiny-hf"];
const BATCH: usize = 3;
const POISONED_ROW: usize = 1;
const PROMPT: usize = 5;

/// Seeded token ids within the model's vocabulary, `[BATCH, len]` row-major.
fn ids(s: &StatefulSession, len: usize, seed: u64) -> Vec<i64> {
    let vocab = s.sig.vocab.expect("mambac exports state the vocabulary") as i64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..BATCH * len).map(|_| rng.gen_range(0..vocab)).collect()
}

/// `states` with every value of batch row `row` of the first float32 state set to NaN.
fn poisoned(states: &[HostTensor], row: usize) -> Vec<HostTensor> {
    let mut out = states.to_vec();
    let t = out.iter_mut().find(|t| t.dtype == Dtype::F32).expect("a float32 state");
    let per_row = t.bytes.len() / t.shape[0];
    for b in t.bytes[row * per_row..(row + 1) * per_row].chunks_mut(4) {
        b.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    out
}

fn assert_names_the_row(e: Error, position: usize, what: &str) {
    assert!(matches!(e, Error::NonFiniteLogits { row: POISONED_ROW, position: p } if p == position), "{what}: {e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the logits of batch row {POISONED_ROW} are not finite (NaN or infinity) at position {position} of this \
             step: the model produced no usable token"
        ),
        "{what}"
    );
}

/// A prompt, then the states with one row's NaN: a one-token step (decode graph on and off) and
/// a prompt step report that row; the other rows' logits are finite and the poisoned row's are
/// not (what the graph's check saw); the clean states pick what the host's argmax picks.
#[test]
fn a_nan_state_row_is_the_error_naming_that_row() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let model = export_with(fixture, &dir.path().join(format!("{fixture}.onnx")), true);
        for choice in [DecodeGraphChoice::On, DecodeGraphChoice::Off] {
            let what = format!("{fixture}, decode graph {choice:?}");
            let mut s = StatefulSession::open(&model, &SessionOptions { decode_graph: choice, ..options() }).unwrap();
            assert!(s.greedy_in_graph(), "{what}: the export has next_token");
            s.reset(BATCH).unwrap();
            s.step_greedy(&ids(&s, PROMPT, 1), PROMPT).unwrap_or_else(|e| panic!("{what}: clean prompt: {e}"));
            let clean = s.states_to_host().unwrap();
            let bad = poisoned(&clean, POISONED_ROW);
            let next = ids(&s, 1, 2);

            s.set_states(&clean).unwrap();
            let logits = s.step(&next, 1, Keep::Last).unwrap();
            s.set_states(&clean).unwrap();
            let want: Vec<i64> = (0..BATCH).map(|b| mambac_runtime::argmax(logits.last(b)) as i64).collect();
            assert_eq!(s.step_greedy(&next, 1).unwrap(), want, "{what}: clean states");

            s.set_states(&bad).unwrap();
            let logits = s.step(&next, 1, Keep::Last).unwrap();
            for b in 0..BATCH {
                let finite = logits.last(b).iter().all(|x| x.is_finite());
                assert_eq!(finite, b != POISONED_ROW, "{what}: row {b}'s logits");
            }
            s.set_states(&bad).unwrap();
            assert_names_the_row(s.step_greedy(&next, 1).unwrap_err(), 0, &format!("{what}, one token"));
            // From the session's own buffers too (the path of every decode step after the first).
            s.set_states(&bad).unwrap();
            s.step(&next, 1, Keep::Last).unwrap();
            let e = s.step_greedy(&next, 1).unwrap_err();
            assert_names_the_row(e, 0, &format!("{what}, one token after another"));
            s.set_states(&bad).unwrap();
            let e = s.step_greedy(&ids(&s, 4, 3), 4).unwrap_err();
            assert_names_the_row(e, 3, &format!("{what}, four tokens"));
        }
    }
}
