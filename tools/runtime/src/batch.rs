//! Generating for several prompts of different lengths at once.
//!
//! A transformer batches prompts of different lengths by left-padding them and masking the pad
//! tokens out of attention. A state-space model has no mask to hide them behind: every token that
//! enters the graph is folded into the conv and SSM states (h_t = exp(dt·A)·h_{t-1} + dt·B·u_t), so
//! pad tokens would change the state every later token sees. Right-padding does not work either:
//! the state after the pads is not the state after the prompt.
//!
//! So each prompt is prefilled alone, at batch 1 from zero states, which gives exactly its own
//! states; the per-prompt states are then stacked along the batch dimension (they are `[1, ...]`
//! each and the graph is batch-agnostic) and the whole batch is decoded together, one token per
//! sequence per step. Prefill is compute-bound and gains little from batching; decode is where
//! batching pays, and every sequence is at the same step there whatever its prompt length.
//! The price is one copy of the states to the host per prompt, once, not per token.

use std::time::{Duration, Instant};

use crate::error::{fail, Error, Result};
use crate::memory;
use crate::sampler::{Sampler, Sampling};
use crate::stateful::{Keep, StatefulSession};
use crate::tensor::HostTensor;

/// What [`generate`] does after the prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Prompt `j` draws from its own RNG seeded with `seed + j`, so a prompt's tokens do not
    /// depend on which other prompts share its batch.
    pub seed: u64,
    /// Feed a prompt in pieces of at most this many tokens (bounds the logits a step returns,
    /// which the graph computes for every position). None: the whole prompt in one step.
    pub prefill_chunk: Option<usize>,
    /// A sequence ends after producing one of these ids (kept as its last token), e.g. EOS;
    /// the others go on.
    pub stop_ids: Vec<i64>,
}

/// The tokens [`generate`] chose, and how long prefill and decode took.
impl Default for GenerateOptions {
    /// 32 greedy tokens per prompt (the CLI's defaults), whole prompts, no stop id.
    fn default() -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            seed: 0,
            prefill_chunk: None,
            stop_ids: vec![],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The new tokens of each prompt (not the prompt itself).
    pub ids: Vec<Vec<i64>>,
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    pub decode_tokens: usize,
    pub decode_time: Duration,
}

/// Prefills `prompt` at batch 1 from zero states and returns the last position's logits.
pub fn prefill(sess: &mut StatefulSession, prompt: &[i64], chunk: Option<usize>) -> Result<Vec<f32>> {
    sess.reset(1)?;
    let chunk = chunk.unwrap_or(prompt.len()).max(1);
    let mut last = None;
    for piece in prompt.chunks(chunk) {
        last = Some(sess.step(piece, piece.len(), Keep::Last)?);
    }
    let Some(logits) = last else { fail!(InvalidArgument, "an empty prompt") };
    Ok(logits.last(0).to_vec())
}

/// Generates `max_new_tokens` for every prompt, calling `on_token(prompt_index, token)` as each
/// token is chosen (prompt order within a step). An error `on_token` returns ends generation and
/// is returned as it is; this crate's errors become `E` through `From`.
pub fn generate<E: From<Error>>(
    sess: &mut StatefulSession,
    prompts: &[Vec<i64>],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, i64) -> Result<(), E>,
) -> Result<Generated, E> {
    for (j, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "prompt {} is empty: generation starts from at least one token",
                j + 1
            ))
            .into());
        }
        sess.sig.check_ids(p, &format!("prompt {}", j + 1))?;
    }
    // Each prompt's states are kept on the host until all are prefilled, then stacked into one
    // batch (a second copy) and given to the session (a third, until the first decode step):
    // three host copies on top of the session's own buffers.
    if prompts.len() > 1 {
        let n = prompts.len();
        let host_copies = sess.sig.state_bytes_per_sequence().saturating_mul(n as u128).saturating_mul(3);
        memory::check(host_copies.saturating_add(sess.state_bytes(n)), || {
            format!("{n} prompts decoded as one batch: their states need")
        })?;
    }
    let mut samplers = (0..prompts.len())
        .map(|j| Sampler::new(opts.sampling, opts.seed.wrapping_add(j as u64)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Generated { ids: vec![Vec::new(); prompts.len()], ..Generated::default() };
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }

    // Prefill: each prompt alone, exact states; its first new token comes from its own logits.
    let mut per_prompt_states: Vec<Vec<HostTensor>> = Vec::with_capacity(prompts.len());
    let mut done = vec![false; prompts.len()];
    let started = Instant::now();
    for (j, p) in prompts.iter().enumerate() {
        let logits = prefill(sess, p, opts.prefill_chunk)?;
        let t = samplers[j].sample(&logits)? as i64;
        out.ids[j].push(t);
        done[j] = opts.stop_ids.contains(&t);
        out.prefill_tokens += p.len();
        if prompts.len() > 1 {
            per_prompt_states.push(sess.states_to_host()?);
        }
        on_token(j, t)?;
    }
    out.prefill_time = started.elapsed();
    if opts.max_new_tokens == 1 {
        return Ok(out);
    }
    if prompts.len() > 1 {
        sess.set_states(&stack_batch(&per_prompt_states)?)?;
    }

    let greedy_in_graph = opts.sampling == Sampling::Greedy && sess.greedy_in_graph();
    // Decode: the whole batch, one token per sequence per step. A finished sequence stays in
    // the batch (its rows are computed and ignored) so the states keep their layout.
    let started = Instant::now();
    for _ in 1..opts.max_new_tokens {
        if done.iter().all(|&d| d) {
            break;
        }
        let ids: Vec<i64> = out.ids.iter().map(|s| *s.last().expect("one token per prompt after prefill")).collect();
        // Greedy decoding takes the graph's own pick: `batch` ids leave the device, not
        // `batch` x vocab logits. Finished sequences draw nothing (their samplers' RNGs stay put).
        let next: Vec<Option<i64>> = if greedy_in_graph {
            sess.step_greedy(&ids, 1).map_err(|e| name_the_prompt(e, &out.ids))?.into_iter().map(Some).collect()
        } else {
            let logits = sess.step(&ids, 1, Keep::Last)?;
            let sample = |(j, s): (usize, &mut Sampler)| -> Result<Option<i64>> {
                Ok(if done[j] { None } else { Some(s.sample(logits.last(j))? as i64) })
            };
            samplers.iter_mut().enumerate().map(sample).collect::<Result<_>>()?
        };
        for (j, t) in next.into_iter().enumerate() {
            let Some(t) = t.filter(|_| !done[j]) else { continue };
            out.ids[j].push(t);
            done[j] = opts.stop_ids.contains(&t);
            out.decode_tokens += 1;
            on_token(j, t)?;
        }
    }
    out.decode_time = started.elapsed();
    Ok(out)
}

/// A step's error about one sequence of the batch, with the prompt it is (numbered from 1, as
/// the caller numbers them) and the new token that was being picked.
fn name_the_prompt(e: Error, generated: &[Vec<i64>]) -> Error {
    match e {
        Error::NonFiniteLogits { row, .. } => {
            let token = generated.get(row).map_or(0, Vec::len) + 1;
            Error::Context { context: format!("prompt {}, new token {token}", row + 1), source: Box::new(e) }
        }
        e => e,
    }
}

/// Stacks per-sequence states (`[1, ...]` each, same order of tensors) into `[n, ...]`.
pub fn stack_batch(per_seq: &[Vec<HostTensor>]) -> Result<Vec<HostTensor>> {
    let Some(first) = per_seq.first() else { fail!(InvalidArgument, "no states to stack") };
    let mut stacked = Vec::with_capacity(first.len());
    for (k, t0) in first.iter().enumerate() {
        let mut bytes = Vec::with_capacity(t0.bytes.len() * per_seq.len());
        let mut batch = 0;
        for seq in per_seq {
            let Some(t) = seq.get(k) else {
                fail!(InvalidArgument, "sequences with different numbers of state tensors")
            };
            if t.dtype != t0.dtype || t.shape[1..] != t0.shape[1..] {
                fail!(
                    InvalidArgument,
                    "state {k}: cannot stack {:?} {:?} onto {:?} {:?}",
                    t.dtype,
                    t.shape,
                    t0.dtype,
                    t0.shape
                );
            }
            batch += t.shape[0];
            bytes.extend_from_slice(&t.bytes);
        }
        let mut shape = t0.shape.clone();
        shape[0] = batch;
        stacked.push(HostTensor { dtype: t0.dtype, shape, bytes });
    }
    Ok(stacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generation says which prompt (from 1) and which of its new tokens met non-finite logits;
    /// other errors pass unchanged.
    #[test]
    fn non_finite_logits_name_the_prompt_and_its_new_token() {
        let generated = vec![vec![4, 9], vec![3, 8]];
        let e = name_the_prompt(Error::NonFiniteLogits { row: 1, position: 0 }, &generated);
        assert!(matches!(e.root(), Error::NonFiniteLogits { row: 1, position: 0 }), "{e:?}");
        assert_eq!(
            crate::error::report(&e),
            "prompt 2, new token 3: the logits of batch row 1 are not finite (NaN or infinity) at position 0 of \
             this step: the model produced no usable token"
        );
        let other = name_the_prompt(Error::InvalidArgument("x".into()), &generated);
        assert!(matches!(other, Error::InvalidArgument(ref m) if m == "x"), "{other:?}");
    }

    #[test]
    fn stacks_states_along_the_batch() {
        let a = HostTensor::from_f32(vec![1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = HostTensor::from_f32(vec![1, 2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let s = stack_batch(&[vec![a.clone()], vec![b]]).unwrap();
        assert_eq!(s[0].shape, vec![2, 2, 2]);
        assert_eq!(s[0].to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let c = HostTensor::from_f32(vec![1, 4], &[0.0; 4]);
        assert!(stack_batch(&[vec![a], vec![c]]).is_err());
    }
}
