//! `mambac`: export Mamba checkpoints to ONNX with fused ops, and run, inspect and measure them.

mod cmd;
mod tensor_io;

use mambac_runtime::ort_search;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mambac",
    version,
    about = "Mamba checkpoints to fast ONNX (fused SelectiveScan / CausalConv1d)",
    after_help = ort_search::SEARCH_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a checkpoint folder to ONNX.
    Export(cmd::export::Args),
    /// Show the IR (before or after fusion), as text or Graphviz DOT.
    Inspect(cmd::inspect::Args),
    /// Write a random-weight checkpoint with standard Mamba shapes.
    Synth(cmd::synth::Args),
    /// Run an exported model on inputs from a safetensors file.
    #[command(after_help = ort_search::SEARCH_HELP)]
    Run(cmd::run::Args),
    /// Generate tokens from prompts with a stateful export (streams them as they come).
    #[command(after_help = ort_search::SEARCH_HELP)]
    Generate(cmd::generate::Args),
    /// Prefill and decode throughput of a stateful export.
    #[command(after_help = ort_search::SEARCH_HELP)]
    Bench(cmd::bench::Args),
    /// Run the op grid against float64 references (and write it as ONNX test vectors).
    #[command(after_help = ort_search::SEARCH_HELP)]
    Conformance(cmd::conformance::Args),
}

fn main() -> std::process::ExitCode {
    // A write past `ulimit -f` then fails with EFBIG, which the writers report (and clean up
    // after), instead of killing the process and leaving a temporary file behind.
    // SAFETY: setting a signal's disposition to ignore, before any thread is started.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(a) => cmd::export::main(a),
        Command::Inspect(a) => cmd::inspect::main(a),
        Command::Synth(a) => cmd::synth::main(a),
        Command::Run(a) => cmd::run::main(a),
        Command::Generate(a) => cmd::generate::main(a),
        Command::Bench(a) => cmd::bench::main(a),
        Command::Conformance(a) => cmd::conformance::main(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the subcommand)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "mambac", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn synth_presets_are_a_value_list() {
        let cmd = super::Cli::command();
        let synth = cmd.find_subcommand("synth").unwrap();
        let preset = synth.get_arguments().find(|a| a.get_id() == "preset").unwrap();
        let names: Vec<String> = preset.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
        assert_eq!(names, ["tiny", "130m", "370m", "790m", "1.4b", "2.8b"]);
    }
}
