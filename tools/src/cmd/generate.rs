//! `mambac generate MODEL.onnx (--prompt-ids 1,2,3 | --prompt TEXT --tokenizer tokenizer.json)
//! --max-new-tokens N [--greedy | --temperature T --top-k K --top-p P --seed S]`: streams the new
//! tokens as they are chosen; `--json` ends the output with `{"ids": [...]}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use mambac_runtime::{generate, GenerateOptions, Generated, Sampling, StatefulSession};

use super::limits::{self, ranged};
use super::model_files;
use super::session_args::{GraphArgs, SessionArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A stateful export (`mambac export --stateful`).
    pub model: PathBuf,
    /// Prompt token ids, comma-separated; several prompts separated by ';' or given by repeating
    /// the flag (they are generated together as one batch).
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub prompt_ids: Vec<String>,
    /// Prompt text, encoded by --tokenizer (default: tokenizer.json beside the model, as `mambac
    /// export` copies it); repeat for several prompts.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A Hugging Face tokenizer.json: encodes --prompt and prints the new tokens as text (with
    /// --prompt, tokenizer.json beside the model when not given).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens to generate per prompt (0 to 1048576).
    #[arg(long, default_value_t = 32, value_parser = ranged(0, limits::MAX_TOKENS))]
    pub max_new_tokens: usize,
    /// Stop a sequence after it produces this id (repeatable). Default: the EOS ids
    /// (`eos_token_id`) of generation_config.json, else config.json, beside the model.
    #[arg(long)]
    pub stop_id: Vec<i64>,
    /// Do not stop at the EOS ids of the model's config files.
    #[arg(long, conflicts_with = "stop_id")]
    pub ignore_eos: bool,
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
    pub session: SessionArgs,
    #[command(flatten)]
    pub graph: GraphArgs,
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

/// Prompts from `--prompt-ids` values: each value holds one or more prompts separated by `;`,
/// each a comma-separated list of token ids (`"1,2,3;4,5"` is two prompts).
pub fn parse_prompt_ids(values: &[String]) -> Result<Vec<Vec<i64>>> {
    let mut prompts = Vec::new();
    for value in values {
        for part in value.split(';') {
            let n = prompts.len() + 1;
            let ids = part
                .split(',')
                .map(|tok| {
                    let tok = tok.trim();
                    tok.parse::<i64>().with_context(|| format!("--prompt-ids: prompt {n}: '{tok}' is not a token id (expected comma-separated integers, prompts separated by ';', e.g. \"1,2,3;4,5\")"))
                })
                .collect::<Result<Vec<i64>>>()?;
            if let Some(bad) = ids.iter().find(|&&t| t < 0) {
                bail!("--prompt-ids: prompt {n}: token id {bad} is negative");
            }
            prompts.push(ids);
        }
    }
    if prompts.is_empty() {
        bail!("--prompt-ids: no prompt given");
    }
    Ok(prompts)
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
    let tokenizer_path = match &a.tokenizer {
        Some(p) => Some(p.clone()),
        // Ids in, ids out: a tokenizer beside the model is used only to encode text prompts.
        None if !a.prompt.is_empty() => Some(model_files::tokenizer_beside(&a.model).with_context(|| {
            format!(
                "--prompt needs a tokenizer: give --tokenizer, or put tokenizer.json beside {} (mambac export \
                 copies the checkpoint's)",
                a.model.display()
            )
        })?),
        None => None,
    };
    let tokenizer = match &tokenizer_path {
        Some(p) => Some(
            tokenizers::Tokenizer::from_file(p)
                .map_err(|e| anyhow!("cannot read the tokenizer {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let prompts: Vec<Vec<i64>> = if !a.prompt.is_empty() {
        let t = tokenizer.as_ref().expect("a tokenizer is found or given for --prompt above");
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
    let stops = stop_ids(&a)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: a.sampling(),
        seed: a.seed,
        prefill_chunk: a.prefill_chunk,
        stop_ids: stops.iter().map(|(id, _)| *id).collect(),
    };
    let mut sess =
        StatefulSession::open_reporting(&a.model, &a.session.with_graph(&a.graph), &mut |w| eprintln!("warning: {w}"))
            .with_context(|| format!("{} cannot generate", a.model.display()))?;
    let mut text = match tokenizer {
        Some(t) => Some(TextStream::new(t, &prompts)?),
        None => None,
    };

    let several = prompts.len() > 1;
    let stdout = std::io::stdout();
    let mut first_of_prompt = vec![true; prompts.len()];
    let result: Generated = generate::<anyhow::Error>(&mut sess, &prompts, &opts, |j, token| {
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
    if let Some(note) = eos_note(&stops, &result, a.max_new_tokens) {
        eprintln!("{note}");
    }
    Ok(())
}

/// `--stop-id`, else (unless `--ignore-eos`) the EOS ids of the config files beside the model,
/// with the file each came from.
fn stop_ids(a: &Args) -> Result<Vec<(i64, Option<PathBuf>)>> {
    if !a.stop_id.is_empty() || a.ignore_eos {
        return Ok(a.stop_id.iter().map(|&id| (id, None)).collect());
    }
    match model_files::eos_ids(model_files::folder_of(&a.model))? {
        Some((ids, from)) => Ok(ids.into_iter().map(|id| (id, Some(from.clone()))).collect()),
        None => Ok(Vec::new()),
    }
}

/// The closing line when a sequence ended at an EOS id read from a config file (a `--stop-id`
/// the user gave needs no note): "stopped at EOS 0 (eos_token_id of ...; --ignore-eos to go on)".
fn eos_note(stops: &[(i64, Option<PathBuf>)], r: &Generated, max_new: usize) -> Option<String> {
    let ended: Vec<i64> =
        r.ids.iter().filter(|ids| ids.len() < max_new).filter_map(|ids| ids.last().copied()).collect();
    stops.iter().find_map(|(id, from)| {
        let from = from.as_ref().filter(|_| ended.contains(id))?;
        Some(format!("stopped at EOS {id} (eos_token_id of {}; --ignore-eos to go on)", from.display()))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompts_split_by_semicolons_and_flags() {
        let p = parse_prompt_ids(&["1,2,3;4, 5".into(), "6".into()]).unwrap();
        assert_eq!(p, vec![vec![1, 2, 3], vec![4, 5], vec![6]]);
    }

    #[test]
    fn rejects_bad_prompt_ids() {
        for (arg, needle) in [
            ("1,x,3", "'x' is not a token id"),
            ("1,2;", "prompt 2: '' is not a token id"),
            ("1,,2", "'' is not"),
            ("3,-4", "negative"),
        ] {
            let e = format!("{:#}", parse_prompt_ids(&[arg.into()]).unwrap_err());
            assert!(e.contains(needle), "{arg}: {e}");
        }
        assert!(parse_prompt_ids(&[]).is_err());
    }
}
