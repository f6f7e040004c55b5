//! `mambac`: export Mamba checkpoints to ONNX with fused ops, and run, inspect and measure them.

mod cmd;
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(a) => cmd::export::main(a),
        Command::Inspect(a) => cmd::inspect::main(a),
        Command::Synth(a) => cmd::synth::main(a),
        Command::Run(a) => cmd::run::main(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
