//! `mambac export CHECKPOINT_DIR -o model.onnx`

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mambac_compiler::checkpoint::{Checkpoint, MambaConfig};
use mambac_compiler::emit::decode_graph::decode_graph_path;
use mambac_compiler::emit::ExternalData;
use mambac_compiler::ir::BlockQuant;
use mambac_compiler::lower::{LogitsOutput, LowerOptions, OpSet, WeightQuant};
use mambac_compiler::pipeline::{export, CompileOptions, ExportOptions};

use super::inspect::DTypeArg;
use super::limits::{self, ranged};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: a folder (Hugging Face or original state-spaces layout), one of its files
    /// (config.json, model.safetensors, pytorch_model.bin), or a Hugging Face model id (org/name)
    /// in the local Hugging Face cache (never downloaded).
    pub checkpoint: PathBuf,
    /// Output ONNX file (written whole or not at all; never one of the checkpoint's files); its
    /// folder is made if missing.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Precision of the exported weights and activations. A, D, dt bias, the residual stream and
    /// the ssm states stay float32; the conv states are in this dtype. bfloat16 models run on
    /// ONNX Runtime's CUDA EP (its CPU EP has no bfloat16 MatMul).
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: DTypeArg,
    /// Add per-layer conv/ssm state inputs and outputs (prefill, decode and chunked prefill).
    #[arg(long)]
    pub stateful: bool,
    /// Logits for every position, or only the last (for generation: skips the lm_head on the
    /// rest of the prompt).
    #[arg(long, value_enum, default_value = "all")]
    pub logits: LogitsArg,
    /// Store the linear layers' weights (in/x/dt/out_proj, lm_head) block-quantized, as ONNX
    /// Runtime's `MatMulNBits` (com.microsoft) reads them: 4x (int8) or 8x (int4) fewer bytes than
    /// float32, for memory-bound decoding. The model then needs ONNX Runtime.
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeArg>,
    /// Values per quantization block (a scale each): a power of two from 16 to 65536, and no
    /// larger than the widest row it blocks rounded up to a power of two.
    #[arg(long, default_value_t = 32, requires = "quantize", value_parser = ranged(0, limits::MAX_QUANT_BLOCK))]
    pub quant_block: usize,
    /// `MatMulNBits` accuracy_level: 4 lets ONNX Runtime's CPU kernels quantize the activations
    /// to int8 per block (its fast path); 0 computes in the activations' type.
    #[arg(long, default_value_t = 4, requires = "quantize")]
    pub accuracy_level: i64,
    /// Also write `<output stem>.decode.onnx`: one-token decode steps with each layer one fused
    /// `mambac.MambaLayerStep` node (Mamba-2: `mambac.Mamba2LayerStep`), reading the same weights
    /// (and external-data file). `mambac generate` and `bench` use a Mamba-1 one for decode steps on
    /// the CUDA EP (`--decode-graph on` on any EP). Needs --stateful, float weights.
    #[arg(long, requires = "stateful", conflicts_with_all = ["quantize", "no_fuse"])]
    pub decode_graph: bool,
    /// The ops of the exported layers: mambac's custom ops (needs libmambac_ops), or standard ONNX
    /// only (opset 27's CausalConvWithState and LinearAttention: any ONNX Runtime 1.32 or newer,
    /// no library; slower, and more memory in prefill: docs/standard-onnx.md).
    #[arg(long, value_enum, default_value = "mambac")]
    pub ops: OpsArg,
    /// Skip the fusion passes (the unfused graph still uses the ops, with no options folded in).
    #[arg(long)]
    pub no_fuse: bool,
    /// Weights in a side file `<output>.<export id>.data`: auto (over 2 GB), always, never. The
    /// model and its data file replace an earlier export together or not at all; the earlier
    /// data file is removed after.
    #[arg(long, value_enum, default_value = "auto")]
    pub external_data: ExternalDataArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A block wider than every row it blocks is all padding: each row of every quantized weight
/// would take `block` values (a 2^62 block asks for exabytes). The widest rows are x_proj's and
/// out_proj's, `intermediate_size` values each.
fn check_quant_block(block: usize, c: &MambaConfig) -> anyhow::Result<()> {
    let widest = c.intermediate_size.max(c.hidden_size);
    let max = widest.next_power_of_two();
    if block > max {
        let name = if c.intermediate_size >= c.hidden_size {
            "backbone.layers.0.mixer.out_proj.weight"
        } else {
            "backbone.layers.0.mixer.in_proj.weight"
        };
        anyhow::bail!(
            "--quant-block {block} is larger than any row it blocks: the widest quantized weight, '{name}', has rows of \
             {widest} values, so the block may be at most {max}"
        );
    }
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogitsArg {
    All,
    Last,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OpsArg {
    Mambac,
    Standard,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum QuantizeArg {
    Int8,
    Int4,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExternalDataArg {
    Auto,
    Always,
    Never,
}

pub fn main(a: Args) -> Result<()> {
    let quant = match a.quantize {
        None => None,
        Some(q) => {
            let bits = match q {
                QuantizeArg::Int8 => 8,
                QuantizeArg::Int4 => 4,
            };
            let quant = BlockQuant::new(bits, a.quant_block).map_err(|e| anyhow::anyhow!("--quant-block: {e}"))?;
            if matches!(a.dtype, DTypeArg::Bfloat16) {
                // ORT 1.32's CPU EP has no bfloat16 MatMulNBits kernel: such a model would not load.
                anyhow::bail!("--quantize needs --dtype float32 or float16 (ONNX Runtime's CPU MatMulNBits has no bfloat16 kernel)");
            }
            if !(0..=4).contains(&a.accuracy_level) {
                anyhow::bail!("--accuracy-level {} is not one of ONNX Runtime's levels 0 to 4", a.accuracy_level);
            }
            Some(WeightQuant { quant, accuracy_level: a.accuracy_level })
        }
    };
    if matches!(a.ops, OpsArg::Standard) && matches!(a.dtype, DTypeArg::Bfloat16) {
        // ORT 1.32's CPU EP has no bfloat16 LinearAttention kernel: such a model would not run.
        anyhow::bail!(
            "--ops standard needs --dtype float32 or float16 (ONNX Runtime's CPU LinearAttention has no bfloat16 kernel)"
        );
    }
    let dir = super::checkpoint_path::checkpoint_dir(&a.checkpoint)?;
    let ckpt = Checkpoint::open(&dir).with_context(|| format!("cannot read checkpoint {}", a.checkpoint.display()))?;
    if let Some(parent) = a.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot make the folder {}", parent.display()))?;
    }
    if let Some(q) = &quant {
        check_quant_block(q.quant.block, &ckpt.config)?;
    }
    let opts = ExportOptions {
        compile: CompileOptions {
            lower: LowerOptions {
                dtype: a.dtype.into(),
                stateful: a.stateful,
                logits: match a.logits {
                    LogitsArg::All => LogitsOutput::All,
                    LogitsArg::Last => LogitsOutput::Last,
                },
                quant,
                decode_step: false,
                ops: match a.ops {
                    OpsArg::Mambac => OpSet::Mambac,
                    OpsArg::Standard => OpSet::Standard,
                },
            },
            fuse: !a.no_fuse,
            max_rewrites: None,
        },
        external_data: match a.external_data {
            ExternalDataArg::Auto => ExternalData::Auto,
            ExternalDataArg::Always => ExternalData::Always,
            ExternalDataArg::Never => ExternalData::Never,
        },
        decode_graph: a.decode_graph,
    };
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_message("writing weights");
        b
    };
    let started = std::time::Instant::now();
    let report = export(&ckpt, &a.output, &opts, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot export {}", a.checkpoint.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} nodes, {} initializers, {:.1} MB of weights{}) in {:.2}s; passes: {}",
        report.output.display(),
        report.emit.nodes,
        report.emit.initializers,
        report.emit.weight_bytes as f64 / 1e6,
        report.emit.external_data.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default(),
        started.elapsed().as_secs_f64(),
        if report.passes.rules_applied.is_empty() {
            "none".to_string()
        } else {
            report.passes.rules_applied.join(", ")
        },
    );
    let path = decode_graph_path(&a.output);
    if !a.decode_graph && path.is_file() {
        // A decode graph of an earlier export would read this export's weights at its own offsets.
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale decode graph {}", path.display()))?;
        eprintln!("removed {} (the decode graph of an earlier export)", path.display());
    }
    if matches!(a.dtype, DTypeArg::Bfloat16) {
        eprintln!(
            "note: bfloat16 models run on ONNX Runtime's CUDA EP; its CPU EP has no bfloat16 MatMul kernel \
             (export with --dtype float32 for the CPU)"
        );
    }
    if let Some(d) = &report.decode {
        eprintln!("wrote {} (decode graph: one {} node a layer, same weights)", d.output.display(), d.step_op);
    }
    let out_dir = super::model_files::folder_of(&a.output);
    let copied = super::model_files::copy_side_files(&dir, out_dir)?;
    if !copied.is_empty() {
        eprintln!("copied {} beside {}", copied.join(", "), a.output.display());
    }
    // Only now does nothing read the earlier export's weights (its model and decode graph are
    // both replaced).
    report.remove_previous_data().context("cannot remove the external data of an earlier export")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mambac_compiler::synth::{Preset, SynthOptions};

    #[test]
    fn quant_block_is_checked_against_the_widest_row() {
        let tiny = SynthOptions::new(Preset::Tiny).config().unwrap();
        assert_eq!(tiny.intermediate_size, 128);
        assert!(super::check_quant_block(128, &tiny).is_ok());
        let e = super::check_quant_block(256, &tiny).unwrap_err().to_string();
        assert_eq!(
            e,
            "--quant-block 256 is larger than any row it blocks: the widest quantized weight, \
             'backbone.layers.0.mixer.out_proj.weight', has rows of 128 values, so the block may be at most 128"
        );
        let m130 = SynthOptions::new(Preset::M130).config().unwrap();
        assert!(super::check_quant_block(2048, &m130).is_ok());
        assert!(super::check_quant_block(4096, &m130).unwrap_err().to_string().contains("rows of 1536 values"));
    }
}
