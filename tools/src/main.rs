//! `mambac`: export Mamba checkpoints to ONNX with fused ops, and run, inspect and measure them.

mod cmd;
mod generation;
mod runtime;
mod tensor_io;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mambac", version, about = "Mamba checkpoints to fast ONNX (fused SelectiveScan / CausalConv1d)")]
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
    Run(cmd::run::Args),
    /// Generate tokens from prompts with a stateful export (streams them as they come).
    Generate(cmd::generate::Args),
    /// Prefill and decode throughput of a stateful export.
    Bench(cmd::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(a) => cmd::export::main(a),
        Command::Inspect(a) => cmd::inspect::main(a),
        Command::Synth(a) => cmd::synth::main(a),
        Command::Run(a) => cmd::run::main(a),
        Command::Generate(a) => cmd::generate::main(a),
        Command::Bench(a) => cmd::bench::main(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
