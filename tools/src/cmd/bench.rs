//! `mambac bench MODEL.onnx`: prefill and decode throughput of a stateful export, through the
//! same session code `generate` uses (states bound in place, only the last logits copied out).
//!
//! One repetition = prefill `batch` random prompts of `prompt-len` tokens from zero states in one
//! step, then `decode-tokens` one-token steps of the whole batch, each feeding back the greedy
//! token (so the argmax over the vocabulary and the logits copy are in the decode time, as they
//! are in generation). Warm-up repetitions are run first and not counted. The reset to zero
//! states before each prefill is timed on its own (`reset`): it is not part of the prefill.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};

use mambac_runtime::{memory, Keep, StatefulSession};

use super::limits::{self, ranged};
use super::session_args::{GraphArgs, SessionArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A stateful export (`mambac export --stateful`).
    pub model: PathBuf,
    /// Sequences per step (1 to 65536).
    #[arg(long, default_value_t = 1, value_parser = ranged(1, limits::MAX_BATCH))]
    pub batch: usize,
    /// Prompt tokens per sequence, prefilled in one step (1 to 1048576).
    #[arg(long, default_value_t = 128, value_parser = ranged(1, limits::MAX_TOKENS))]
    pub prompt_len: usize,
    /// Decode steps after the prompt (0 to 1048576).
    #[arg(long, default_value_t = 64, value_parser = ranged(0, limits::MAX_TOKENS))]
    pub decode_tokens: usize,
    /// Repetitions run first and not measured (0 to 10000).
    #[arg(long, default_value_t = 1, value_parser = ranged(0, limits::MAX_REPS))]
    pub warmup: usize,
    /// Measured repetitions; the table shows their median, min and max (1 to 10000).
    #[arg(long, default_value_t = 5, value_parser = ranged(1, limits::MAX_REPS))]
    pub reps: usize,
    /// Seed of the random prompt ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One line of JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub graph: GraphArgs,
}

/// Median, min and max of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stats { median, min: v[0], max: v[n - 1] })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

struct Rep {
    reset_s: f64,
    prefill_s: f64,
    decode_s: f64,
}

fn one_rep(sess: &mut StatefulSession, a: &Args, prompt: &[i64]) -> Result<Rep> {
    let t0 = Instant::now();
    sess.reset(a.batch)?;
    let reset_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Greedy, picked in the graph when the model has `next_token` (only the ids come back).
    let mut next = sess.step_greedy(prompt, a.prompt_len)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for _ in 0..a.decode_tokens {
        next = sess.step_greedy(&next, 1)?;
    }
    Ok(Rep { reset_s, prefill_s, decode_s: t0.elapsed().as_secs_f64() })
}

pub fn main(a: Args) -> Result<()> {
    let mut sess =
        StatefulSession::open_reporting(&a.model, &a.session.with_graph(&a.graph), &mut |w| eprintln!("warning: {w}"))
            .with_context(|| format!("{} cannot be benchmarked", a.model.display()))?;
    let cuda_graph = sess.cuda_graph_capture();
    // The prompt, the states and the prefill step's logits, before any of them is allocated.
    let prompt_bytes = (a.batch as u128) * (a.prompt_len as u128) * 8;
    let need = prompt_bytes + sess.state_bytes(a.batch) + sess.step_bytes(a.batch, a.prompt_len, Keep::Last);
    memory::check(need, || format!("--batch {} --prompt-len {}: the prefill step needs", a.batch, a.prompt_len))?;
    let vocab = sess.sig.vocab.unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let prompt: Vec<i64> = (0..a.batch * a.prompt_len).map(|_| rng.gen_range(0..vocab) as i64).collect();

    for _ in 0..a.warmup {
        one_rep(&mut sess, &a, &prompt).context("warm-up")?;
    }
    let mut reps = Vec::with_capacity(a.reps);
    for r in 0..a.reps {
        reps.push(one_rep(&mut sess, &a, &prompt).with_context(|| format!("repetition {}", r + 1))?);
    }
    let prefill_tokens = (a.batch * a.prompt_len) as f64;
    let decode_tokens = (a.batch * a.decode_tokens) as f64;
    let prefill_tps = Stats::of(&reps.iter().map(|r| prefill_tokens / r.prefill_s).collect::<Vec<_>>());
    let prefill_ms = Stats::of(&reps.iter().map(|r| r.prefill_s * 1e3).collect::<Vec<_>>());
    let decode_tps = Stats::of(&reps.iter().map(|r| decode_tokens / r.decode_s).collect::<Vec<_>>());
    let decode_ms = Stats::of(&reps.iter().map(|r| r.decode_s * 1e3 / a.decode_tokens as f64).collect::<Vec<_>>());
    let reset_ms = Stats::of(&reps.iter().map(|r| r.reset_s * 1e3).collect::<Vec<_>>());

    let threads = a.session.threads.map_or("ORT default".to_string(), |n| n.to_string());
    let ep = format!("{:?}", a.session.ep).to_lowercase();
    if a.json {
        let phase = |tps: Option<Stats>, ms: Option<Stats>, tokens: f64| match (tps, ms) {
            (Some(t), Some(m)) => serde_json::json!({ "tokens": tokens, "tokens_per_s": t.json(), "ms": m.json() }),
            _ => serde_json::Value::Null,
        };
        let j = serde_json::json!({
            "model": a.model.display().to_string(),
            "ep": ep, "cuda_graph": cuda_graph, "decode_graph": sess.has_decode_graph(), "threads": a.session.threads, "layers": sess.sig.layers, "vocab": sess.sig.vocab,
            "batch": a.batch, "prompt_len": a.prompt_len, "decode_tokens": a.decode_tokens,
            "warmup": a.warmup, "reps": a.reps,
            "prefill": phase(prefill_tps, prefill_ms, prefill_tokens),
            // "ms" of decode is per step (one token for each sequence of the batch).
            "decode": phase(decode_tps, decode_ms, decode_tokens),
            // Zero states for the batch, before each prefill (not in its time).
            "reset": reset_ms.map_or(serde_json::Value::Null, |m| serde_json::json!({ "ms": m.json() })),
        });
        println!("{j}");
        return Ok(());
    }
    println!(
        "model    {} ({} layers, vocab {})",
        a.model.display(),
        sess.sig.layers,
        sess.sig.vocab.map_or("?".into(), |v| v.to_string())
    );
    let graph = match (cuda_graph, sess.has_decode_graph()) {
        (true, true) => " (decode steps on the decode graph, replayed as CUDA graphs)",
        (true, false) => " (decode steps replayed as CUDA graphs)",
        (false, true) => " (decode steps on the decode graph)",
        (false, false) => "",
    };
    println!(
        "setup    ep {ep}{graph}, threads {threads}, batch {}, prompt {} tokens, {} decode steps, {} warm-up, {} reps",
        a.batch, a.prompt_len, a.decode_tokens, a.warmup, a.reps
    );
    println!();
    println!("{:<8} {:>12} {:>12} {:>12} {:>14}", "phase", "tok/s median", "tok/s min", "tok/s max", "ms median");
    let row = |name: &str, tps: Option<Stats>, ms: Option<Stats>, what: &str| match (tps, ms) {
        (Some(t), Some(m)) => println!(
            "{name:<8} {:>12.1} {:>12.1} {:>12.1} {:>14}",
            t.median,
            t.min,
            t.max,
            format!("{:.2} {what}", m.median)
        ),
        _ => println!("{name:<8} {:>12}", "-"),
    };
    row("prefill", prefill_tps, prefill_ms, "/prompt");
    row("decode", decode_tps, decode_ms, "/step");
    if let Some(m) = reset_ms {
        println!("{:<8} {:>12} {:>12} {:>12} {:>14}", "reset", "-", "-", "-", format!("{:.2} /batch", m.median));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn median_min_max() {
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]), Some(Stats { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stats::of(&[f64::INFINITY]), None);
    }
}
