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
