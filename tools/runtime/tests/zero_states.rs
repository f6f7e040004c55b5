//! Zero states made by the session's own EP (`StatefulSession::reset`, stateful/zeros.rs) on the
//! CPU EP: a sequence run from them is bitwise the sequence run from host zeros given with
//! `set_states` (the former path), on the Mamba-1 and Mamba-2 fixtures, at batch 1 and 5,
//! prefill then decode; a reset after use zeroes what the buffers held (same logits as a fresh
//! session); the states read back right after a reset are zeros; the host memory counted is the
//! two buffer sets, not a third copy for the zeros. Zeros from the host (the CUDA EP's fallback
//! where it cannot make them) run bitwise as the zeros written by the zero-state session.

mod common;

use common::{export, session};
use mambac_runtime::{Error, HostTensor, Keep, StatefulSession};
use ort::value::TensorElementType;
use rand::{Rng, SeedableRng};
use safetensors::Dtype;

const FIXTURES: [&str; 2] = ["mamba-tiny-hf", "mamba2-tiny-hf"];
const BATCHES: [usize; 2] = [1, 5];
const PREFILL: usize = 7;
const DECODE_STEPS: usize = 3;

/// Host zeros of every state at `batch`, made here from the signature (what `reset` once built).
fn host_zeros(s: &StatefulSession, batch: usize) -> Vec<HostTensor> {
    s.sig
        .states
        .iter()
        .map(|spec| {
            let (dtype, size) = match spec.ty {
                TensorElementType::Float16 => (Dtype::F16, 2),
                TensorElementType::Bfloat16 => (Dtype::BF16, 2),
                _ => (Dtype::F32, 4),
            };
            let shape = spec.shape(batch);
            HostTensor { dtype, bytes: vec![0; shape.iter().product::<usize>() * size], shape }
        })
        .collect()
}

/// Seeded token ids within the model's vocabulary, `[batch, len]` row-major.
fn ids(s: &StatefulSession, batch: usize, len: usize, seed: u64) -> Vec<i64> {
    let vocab = s.sig.vocab.expect("mambac exports state the vocabulary") as i64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..batch * len).map(|_| rng.gen_range(0..vocab)).collect()
}

/// A prefill of `PREFILL` tokens then `DECODE_STEPS` one-token steps from the current states:
/// every logit's bits, and the states after.
fn run(s: &mut StatefulSession, batch: usize, seed: u64) -> (Vec<u32>, Vec<HostTensor>) {
    let mut bits: Vec<u32> = Vec::new();
    let l = s.step(&ids(s, batch, PREFILL, seed), PREFILL, Keep::All).unwrap();
    bits.extend(l.data.iter().map(|x| x.to_bits()));
    for t in 0..DECODE_STEPS {
        let l = s.step(&ids(s, batch, 1, seed + 1 + t as u64), 1, Keep::All).unwrap();
        bits.extend(l.data.iter().map(|x| x.to_bits()));
    }
    (bits, s.states_to_host().unwrap())
}

fn all_zero(states: &[HostTensor]) -> bool {
    states.iter().all(|t| t.bytes.iter().all(|&b| b == 0))
}

/// The same sequence from host zeros (`set_states`), from `reset` after that run (the buffers
/// then hold its states), and from a fresh session's first `reset`: bitwise the same logits and
/// final states.
#[test]
fn a_reset_runs_bitwise_as_host_zeros_and_as_a_fresh_session() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let model = export(fixture, dir.path());
        let mut s = session(&model);
        for batch in BATCHES {
            let seed = 17 + batch as u64;
            s.set_states(&host_zeros(&s, batch)).unwrap();
            let (want_logits, want_states) = run(&mut s, batch, seed);
            // Both buffer sets now hold non-zero states (4 steps alternate between them): a
            // reset that left them would not reproduce the run.
            assert!(!all_zero(&want_states), "{fixture} batch {batch}: the run moved the states");
            s.reset(batch).unwrap();
            let (logits, states) = run(&mut s, batch, seed);
            assert!(logits == want_logits, "{fixture} batch {batch}: logits after reset differ from host zeros'");
            assert!(states == want_states, "{fixture} batch {batch}: states after reset differ from host zeros'");
            let mut fresh = session(&model);
            fresh.reset(batch).unwrap();
            let (logits, states) = run(&mut fresh, batch, seed);
            assert!(logits == want_logits, "{fixture} batch {batch}: a fresh session's logits differ");
            assert!(states == want_states, "{fixture} batch {batch}: a fresh session's states differ");
        }
    }
}

/// Right after a reset the states read back are zeros of the batch's shape, whatever the
/// buffers held and whether the batch size changed (1 -> 5 -> 5 -> 1 remakes the buffers twice).
#[test]
fn the_states_read_right_after_a_reset_are_zeros() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let mut s = session(&export(fixture, dir.path()));
        assert!(s.states_to_host().unwrap() == host_zeros(&s, 1), "{fixture}: a new session's states");
        for (i, batch) in [1, 5, 5, 1].into_iter().enumerate() {
            let before = s.batch();
            run(&mut s, before, i as u64);
            assert!(!all_zero(&s.states_to_host().unwrap()), "{fixture}: the run moved the states");
            s.reset(batch).unwrap();
            assert_eq!(s.batch(), batch);
            assert!(s.states_to_host().unwrap() == host_zeros(&s, batch), "{fixture}: reset({batch}) after use");
        }
    }
}

/// On the CPU EP the states take the two buffer sets of host memory and nothing more: the zeros
/// are written into one of them. (`reset` checked 3 copies when it made host zeros.)
#[test]
fn the_host_memory_counted_for_the_states_is_the_two_buffer_sets() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let mut s = session(&export(fixture, dir.path()));
        let per_sequence = s.sig.state_bytes_per_sequence();
        assert!(per_sequence > 0);
        assert_eq!(s.state_bytes(5), 2 * 5 * per_sequence, "{fixture}");
        // A batch no host can hold is refused before anything is allocated or let go of, with
        // the figure reset checks: two copies, and the first one-token step's ids and logits.
        let batch = 1usize << 40;
        let e = s.reset(batch).expect_err("more than any host has");
        let Error::OutOfMemory { need, .. } = &e else { panic!("{fixture}: {e:?}") };
        let step = s.step_bytes(batch, 1, Keep::Last);
        assert!(step > 0);
        assert_eq!(*need, 2 * per_sequence * (1u128 << 40) + step, "{fixture}");
        let layers = s.sig.layers;
        let msg = e.to_string();
        let head = format!(
            "the states of {batch} sequences ({layers} layers) and a one-token step's token ids and logits need "
        );
        assert!(msg.starts_with(&head) && msg.contains(" of memory, more than the "), "{fixture}: {msg}");
        // The session is as it was: batch 1, its states usable.
        assert_eq!(s.batch(), 1);
        run(&mut s, 1, 3);
    }
}

/// A session whose zeros come from the host (what the CUDA EP falls back to when it cannot run
/// the zero-state session) runs every sequence bitwise as one whose zeros are written on its EP,
/// says why in its warnings, and counts the host zeros: a third copy on the CPU EP.
#[test]
fn zeros_from_the_host_run_bitwise_as_zeros_written_on_the_ep() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in FIXTURES {
        let model = export(fixture, dir.path());
        let mut on_ep = session(&model);
        let mut from_host = session(&model);
        assert!(on_ep.warnings().is_empty(), "{fixture}");
        from_host.fall_back_to_host_zeros(Error::InvalidArgument("forced by the test".into()));
        let w: Vec<String> = from_host.warnings().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            w,
            ["zero states of new sequences will be made in host memory and copied to the device at each reset: \
              forced by the test"],
            "{fixture}"
        );
        let per_sequence = on_ep.sig.state_bytes_per_sequence();
        assert_eq!(from_host.state_bytes(5), 3 * 5 * per_sequence, "{fixture}");
        // 1 -> 5 -> 5 -> 1: buffers remade, and reused after holding a run's states.
        for (i, batch) in [5, 5, 1].into_iter().enumerate() {
            let seed = 40 + i as u64;
            on_ep.reset(batch).unwrap();
            from_host.reset(batch).unwrap();
            assert!(from_host.states_to_host().unwrap() == host_zeros(&from_host, batch), "{fixture}");
            let (want_logits, want_states) = run(&mut on_ep, batch, seed);
            let (logits, states) = run(&mut from_host, batch, seed);
            assert!(!all_zero(&want_states), "{fixture} batch {batch}: the run moved the states");
            assert!(logits == want_logits, "{fixture} batch {batch}: logits from host zeros differ");
            assert!(states == want_states, "{fixture} batch {batch}: states from host zeros differ");
        }
    }
}

#[test]
fn a_reset_to_no_sequences_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(&export("mamba2-tiny-hf", dir.path()));
    let e = s.reset(0).expect_err("refused");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(e.to_string(), "reset: a batch of 0 sequences (at least 1 is needed)");
    // Nothing was let go of.
    assert_eq!(s.batch(), 1);
    run(&mut s, 1, 5);
}
