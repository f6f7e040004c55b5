//! `mambac inspect CHECKPOINT_DIR [--no-fuse] [--dot]`: the IR with every value's type.

use std::path::PathBuf;

use anyhow::{Context, Result};
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::ir::{print, validate, Elem};
use mambac_compiler::lower::LowerOptions;
use mambac_compiler::pipeline::{compile, CompileOptions};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DTypeArg {
    Float32,
    Float16,
    Bfloat16,
}

impl From<DTypeArg> for Elem {
    fn from(d: DTypeArg) -> Elem {
        match d {
            DTypeArg::Float32 => Elem::F32,
            DTypeArg::Float16 => Elem::F16,
            DTypeArg::Bfloat16 => Elem::BF16,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint: a folder (Hugging Face or original state-spaces layout), one of its files
    /// (config.json, model.safetensors, pytorch_model.bin), or a Hugging Face model id (org/name)
    /// in the local Hugging Face cache (never downloaded).
    pub checkpoint: PathBuf,
    /// Show the graph before fusion.
    #[arg(long)]
    pub no_fuse: bool,
    /// Print Graphviz DOT instead of text.
    #[arg(long)]
    pub dot: bool,
    /// Show the stateful graph (conv/ssm state inputs and outputs).
    #[arg(long)]
    pub stateful: bool,
    /// Precision the graph is lowered for.
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: DTypeArg,
    /// Stop fusing after N rewrites (to bisect a bad rewrite).
    #[arg(long)]
    pub max_rewrites: Option<usize>,
}

pub fn main(a: Args) -> Result<()> {
    let dir = super::checkpoint_path::checkpoint_dir(&a.checkpoint)?;
    let ckpt = Checkpoint::open(&dir).with_context(|| format!("cannot read checkpoint {}", a.checkpoint.display()))?;
    let opts = CompileOptions {
        lower: LowerOptions { dtype: a.dtype.into(), stateful: a.stateful, ..Default::default() },
        fuse: !a.no_fuse,
        max_rewrites: a.max_rewrites,
    };
    let compiled = compile(&ckpt, &opts)?;
    let vg = validate(&compiled.graph)?;
    if a.dot {
        print!("{}", print::to_dot(&vg));
    } else {
        let c = &ckpt.config;
        // Mamba-2 has heads and groups where Mamba-1 has a dt projection.
        let block = match &c.mamba2 {
            None => format!("dt_rank {}", c.time_step_rank),
            Some(m) => format!(
                "Mamba-2: {} heads of {}, {} groups, chunk {}, time_step_limit ({}, {})",
                m.num_heads, m.head_dim, m.n_groups, m.chunk_size, m.time_step_limit.0, m.time_step_limit.1
            ),
        };
        println!(
            "# {} ({:?}): hidden {}, {} layers, d_state {}, conv {}, expand {}, {block}, vocab {}, {}",
            ckpt.dir.display(),
            ckpt.layout,
            c.hidden_size,
            c.num_hidden_layers,
            c.state_size,
            c.conv_kernel,
            c.expand,
            c.vocab_size,
            if c.tie_word_embeddings { "tied lm_head" } else { "untied lm_head" },
        );
        println!("# {} nodes; rewrites: {}", compiled.graph.node_count(), compiled.passes.rewrites.len());
        for r in &compiled.passes.rewrites {
            println!("#   {r}");
        }
        print!("{}", print::to_text(&vg));
    }
    Ok(())
}
