//! The ranges of the numeric command-line arguments. Every number that sizes an allocation or a
//! loop is bounded here, so a typo or a hostile value (`--batch 1099511627776`) is refused by the
//! argument parser before a file is read or a byte allocated; clap's message names the argument
//! and the range (`invalid value '1099511627776' for '--batch <BATCH>': 1099511627776 is not in
//! 1..=65536`) and the exit status is 2. What fits these ranges may still not fit in memory: the
//! generation code checks the figure it needs against what the process can get
//! ([`mambac_runtime::memory`]).

use clap::builder::RangedU64ValueParser;

/// Sequences in one step (`bench --batch`).
pub const MAX_BATCH: u64 = 65_536;
/// Tokens in a prompt or generated per sequence (`--prompt-len`, `--decode-tokens`,
/// `--max-new-tokens`, `--prefill-chunk`): a million, beyond any Mamba context in use.
pub const MAX_TOKENS: u64 = 1 << 20;
/// Repetitions (`bench --warmup`, `--reps`).
pub const MAX_REPS: u64 = 10_000;
/// ONNX Runtime intra-op threads.
pub const MAX_THREADS: u64 = 1024;
/// Values per quantization block; the export also checks it against the rows it blocks.
pub const MAX_QUANT_BLOCK: u64 = 65_536;

/// A parser for a whole number in `lo..=hi` (as usize).
pub fn ranged(lo: u64, hi: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(lo..=hi)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::Cli;

    fn parse_error(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("mambac").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// Every bounded argument: the largest value parses, one more is refused with the argument
    /// and the range named.
    #[test]
    fn each_bound_is_enforced_with_its_argument_named() {
        let cases: &[(&[&str], &str, &str, u64)] = &[
            (&["bench", "m.onnx"], "--batch", "<BATCH>", super::MAX_BATCH),
            (&["bench", "m.onnx"], "--prompt-len", "<PROMPT_LEN>", super::MAX_TOKENS),
            (&["bench", "m.onnx"], "--decode-tokens", "<DECODE_TOKENS>", super::MAX_TOKENS),
            (&["bench", "m.onnx"], "--warmup", "<WARMUP>", super::MAX_REPS),
            (&["bench", "m.onnx"], "--reps", "<REPS>", super::MAX_REPS),
            (&["bench", "m.onnx"], "--threads", "<THREADS>", super::MAX_THREADS),
            (&["generate", "m.onnx", "--prompt-ids", "1"], "--max-new-tokens", "<MAX_NEW_TOKENS>", super::MAX_TOKENS),
            (&["generate", "m.onnx", "--prompt-ids", "1"], "--prefill-chunk", "<PREFILL_CHUNK>", super::MAX_TOKENS),
            (&["generate", "m.onnx", "--prompt-ids", "1"], "--threads", "<THREADS>", super::MAX_THREADS),
            (&["run", "m.onnx", "--input", "i", "-o", "o"], "--threads", "<THREADS>", super::MAX_THREADS),
            (
                &["export", "ckpt", "-o", "m.onnx", "--quantize", "int4"],
                "--quant-block",
                "<QUANT_BLOCK>",
                super::MAX_QUANT_BLOCK,
            ),
        ];
        for (base, flag, value_name, max) in cases {
            let ok: Vec<String> =
                base.iter().map(|s| s.to_string()).chain([flag.to_string(), max.to_string()]).collect();
            assert!(Cli::try_parse_from(std::iter::once("mambac".to_string()).chain(ok)).is_ok(), "{flag} {max}");
            let mut bad: Vec<&str> = base.to_vec();
            let over = (max + 1).to_string();
            bad.extend([*flag, over.as_str()]);
            let e = parse_error(&bad);
            assert!(e.contains(&format!("'{flag} {value_name}'")) && e.contains(&format!("..={max}")), "{flag}: {e}");
            // Far beyond usize on the way in, as a hostile user types it.
            let mut huge: Vec<&str> = base.to_vec();
            huge.extend([*flag, "4611686018427387904"]);
            assert!(parse_error(&huge).contains(&format!("..={max}")), "{flag}");
        }
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for (flag, name) in [("--batch", "<BATCH>"), ("--prompt-len", "<PROMPT_LEN>"), ("--reps", "<REPS>")] {
            let e = parse_error(&["bench", "m.onnx", flag, "0"]);
            assert!(e.contains(&format!("'{flag} {name}'")) && e.contains("0 is not in 1..="), "{e}");
        }
        let e = parse_error(&["generate", "m.onnx", "--prompt-ids", "1", "--prefill-chunk", "0"]);
        assert!(e.contains("'--prefill-chunk <PREFILL_CHUNK>'") && e.contains("0 is not in 1..="), "{e}");
    }

    #[test]
    fn threads_help_states_the_bound() {
        let e = parse_error(&["bench", "--help"]);
        assert!(e.contains("at most 1024"), "{e}");
    }
}
