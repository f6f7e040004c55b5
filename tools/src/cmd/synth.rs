//! `mambac synth --preset 130m OUT_DIR`: a random-weight checkpoint in the Hugging Face layout.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use mambac_compiler::checkpoint::DType;
use mambac_compiler::synth::{write_checkpoint, Preset, SynthOptions};

use super::inspect::DTypeArg;

#[derive(clap::Args)]
pub struct Args {
    /// tiny, 130m, 370m, 790m, 1.4b or 2.8b (the standard Mamba shapes).
    #[arg(long)]
    pub preset: String,
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: DTypeArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub d_state: Option<usize>,
    #[arg(long)]
    pub conv_kernel: Option<usize>,
    #[arg(long)]
    pub dt_rank: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Biases on in_proj and out_proj.
    #[arg(long)]
    pub use_bias: bool,
    /// No bias on the conv.
    #[arg(long)]
    pub no_conv_bias: bool,
    /// Store a separate lm_head.
    #[arg(long)]
    pub untied: bool,
    /// Write N safetensors shards with an index.
    #[arg(long)]
    pub shards: Option<usize>,
    pub out_dir: PathBuf,
}

pub fn main(a: Args) -> Result<()> {
    let preset = Preset::parse(&a.preset)
        .ok_or_else(|| anyhow!("unknown preset '{}' (tiny, 130m, 370m, 790m, 1.4b, 2.8b)", a.preset))?;
    let mut o = SynthOptions::new(preset);
    o.dtype = match a.dtype {
        DTypeArg::Float32 => DType::F32,
        DTypeArg::Float16 => DType::F16,
        DTypeArg::Bfloat16 => DType::BF16,
    };
    o.seed = a.seed;
    o.state_size = a.d_state;
    o.conv_kernel = a.conv_kernel;
    o.time_step_rank = a.dt_rank;
    o.num_hidden_layers = a.layers;
    o.hidden_size = a.hidden;
    o.vocab_size = a.vocab;
    o.use_bias = a.use_bias.then_some(true);
    o.use_conv_bias = a.no_conv_bias.then_some(false);
    o.tie_word_embeddings = a.untied.then_some(false);
    o.shards = a.shards;
    let cfg = write_checkpoint(&o, &a.out_dir).with_context(|| format!("cannot write {}", a.out_dir.display()))?;
    eprintln!(
        "wrote {} (hidden {}, {} layers, vocab {}, {})",
        a.out_dir.display(),
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.vocab_size,
        o.dtype.name()
    );
    Ok(())
}
