//! `mambac generate MODEL.onnx (--prompt-ids 1,2,3 | --prompt TEXT --tokenizer tokenizer.json)
//! --max-new-tokens N [--greedy | --temperature T --top-k K --top-p P --seed S]`: streams the new
//! tokens as they are chosen; `--json` ends the output with `{"ids": [...]}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use super::limits::{self, ranged};
use crate::generation::batch::{generate, parse_prompt_ids, GenerateOptions, Generated};
use crate::generation::sampler::Sampling;
use crate::generation::session_state::open_stateful;
use crate::runtime::{GraphOptions, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// A stateful export (`mambac export --stateful`).
    pub model: PathBuf,
    /// Prompt token ids, comma-separated; several prompts separated by ';' or given by repeating
    /// the flag (they are generated together as one batch).
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub prompt_ids: Vec<String>,
    /// Prompt text (needs --tokenizer); repeat for several prompts.
    #[arg(long, requires = "tokenizer")]
    pub prompt: Vec<String>,
    /// A Hugging Face tokenizer.json: encodes --prompt and prints the new tokens as text.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens to generate per prompt (0 to 1048576).
    #[arg(long, default_value_t = 32, value_parser = ranged(0, limits::MAX_TOKENS))]
    pub max_new_tokens: usize,
    /// Stop a sequence after it produces this id (e.g. the tokenizer's EOS; repeatable).
    #[arg(long)]
    pub stop_id: Vec<i64>,
    /// Always take the most likely token (the default unless a sampling option is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// Sample at this temperature (default 1 when --top-k or --top-p is given).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sample among the K most likely tokens only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample from the smallest set of tokens whose probability reaches P.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// RNG seed; prompt j uses seed + j.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feed prompts in pieces of at most this many tokens (the graph returns logits for every
    /// position, so this bounds memory on long prompts; 1 to 1048576).
    #[arg(long, value_parser = ranged(1, limits::MAX_TOKENS))]
    pub prefill_chunk: Option<usize>,
    /// End with one line of JSON: {"ids": [...]} ([[...], ...] for several prompts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub session: SessionOptions,
    #[command(flatten)]
    pub graph: GraphOptions,
}

impl Args {
    fn sampling(&self) -> Sampling {
        if self.greedy || (self.temperature.is_none() && self.top_k.is_none() && self.top_p.is_none()) {
            Sampling::Greedy
        } else {
            Sampling::Random { temperature: self.temperature.unwrap_or(1.0), top_k: self.top_k, top_p: self.top_p }
        }
    }
}

/// Turns token ids into text as they arrive. Each prompt's text so far is decoded again with its
/// prompt in front, and only what is new is printed: tokenizers whose pieces depend on their
/// neighbours (a leading-space marker, bytes of one UTF-8 character split over tokens) come out
/// right, and an incomplete character waits for the token that finishes it.
struct TextStream {
    tokenizer: tokenizers::Tokenizer,
    /// Per prompt: prompt ids + generated ids, and how much of the decoded text is printed.
    ids: Vec<Vec<u32>>,
    printed: Vec<usize>,
}

impl TextStream {
    fn new(tokenizer: tokenizers::Tokenizer, prompts: &[Vec<i64>]) -> Result<TextStream> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().map(|&t| t as u32).collect()).collect();
        let mut printed = Vec::with_capacity(ids.len());
        for p in &ids {
            printed.push(decode(&tokenizer, p)?.len());
        }
        Ok(TextStream { tokenizer, ids, printed })
    }

    /// The new text after `token`, if it completes any.
    fn push(&mut self, j: usize, token: i64) -> Result<String> {
        self.ids[j].push(token as u32);
        let text = decode(&self.tokenizer, &self.ids[j])?;
        if text.ends_with('\u{FFFD}') || text.len() < self.printed[j] || !text.is_char_boundary(self.printed[j]) {
            return Ok(String::new());
        }
        let new = text[self.printed[j]..].to_string();
        self.printed[j] = text.len();
        Ok(new)
    }

    fn generated_text(&self, j: usize, n_generated: usize) -> Result<String> {
        let ids = &self.ids[j];
        decode(&self.tokenizer, &ids[ids.len() - n_generated..])
    }
}

fn decode(t: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String> {
    t.decode(ids, false).map_err(|e| anyhow!("the tokenizer cannot decode {ids:?}: {e}"))
}

pub fn main(a: Args) -> Result<()> {
    let tokenizer = match &a.tokenizer {
        Some(p) => Some(
            tokenizers::Tokenizer::from_file(p)
                .map_err(|e| anyhow!("cannot read the tokenizer {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let prompts: Vec<Vec<i64>> = if !a.prompt.is_empty() {
        let t = tokenizer.as_ref().context("--prompt needs --tokenizer")?;
        a.prompt
            .iter()
            .enumerate()
            .map(|(j, text)| {
                let enc =
                    t.encode(text.as_str(), true).map_err(|e| anyhow!("cannot tokenize prompt {}: {e}", j + 1))?;
                Ok(enc.get_ids().iter().map(|&x| x as i64).collect())
            })
            .collect::<Result<_>>()?
    } else {
        parse_prompt_ids(&a.prompt_ids)?
    };
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: a.sampling(),
        seed: a.seed,
        prefill_chunk: a.prefill_chunk,
        stop_ids: a.stop_id.clone(),
    };
    let (mut sess, _cuda_graph) = open_stateful(&a.model, &a.session, &a.graph)
        .with_context(|| format!("{} cannot generate", a.model.display()))?;
    let mut text = match tokenizer {
        Some(t) => Some(TextStream::new(t, &prompts)?),
        None => None,
    };

    let several = prompts.len() > 1;
    let stdout = std::io::stdout();
    let mut first_of_prompt = vec![true; prompts.len()];
    let result: Generated = generate(&mut sess, &prompts, &opts, |j, token| {
        let mut out = stdout.lock();
        let piece = match &mut text {
            Some(ts) => ts.push(j, token)?,
            None if first_of_prompt[j] || several => token.to_string(),
            None => format!(" {token}"),
        };
        first_of_prompt[j] = false;
        // One prompt: a running line of text (or ids). Several: one line per token, tagged with
        // the prompt's number, since their tokens interleave.
        if several {
            writeln!(out, "[{}] {piece}", j + 1)?;
        } else {
            write!(out, "{piece}")?;
        }
        out.flush()?;
        Ok(())
    })?;
    let mut out = stdout.lock();
    if !several && a.max_new_tokens > 0 {
        writeln!(out)?;
    }
    if several {
        if let Some(ts) = &text {
            for (j, ids) in result.ids.iter().enumerate() {
                writeln!(out, "[{}] {}", j + 1, ts.generated_text(j, ids.len())?)?;
            }
        }
    }
    if a.json {
        let ids = if several { serde_json::json!(result.ids) } else { serde_json::json!(result.ids[0]) };
        writeln!(out, "{}", serde_json::json!({ "ids": ids }))?;
    }
    out.flush()?;
    eprintln!("{}", summary(&result));
    Ok(())
}

fn summary(r: &Generated) -> String {
    let rate = |n: usize, d: std::time::Duration| if d.as_secs_f64() > 0.0 { n as f64 / d.as_secs_f64() } else { 0.0 };
    format!(
        "prefill: {} tokens in {:.1} ms ({:.1} tok/s); decode: {} tokens in {:.1} ms ({:.1} tok/s)",
        r.prefill_tokens,
        r.prefill_time.as_secs_f64() * 1e3,
        rate(r.prefill_tokens, r.prefill_time),
        r.decode_tokens,
        r.decode_time.as_secs_f64() * 1e3,
        rate(r.decode_tokens, r.decode_time)
    )
}
