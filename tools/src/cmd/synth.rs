//! `mambac synth --preset 130m OUT_DIR`: a random-weight checkpoint in the Hugging Face layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mambac_compiler::checkpoint::DType;
use mambac_compiler::synth::{limits, write_checkpoint, Preset, SynthOptions};

use super::inspect::DTypeArg;

fn ranged(lo: usize, hi: usize) -> clap::builder::RangedU64ValueParser<usize> {
    super::limits::ranged(lo as u64, hi as u64)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (or its nearest
/// existing ancestor, when it is yet to be made); None where that cannot be asked.
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing =
        dir.ancestors().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the struct statvfs fills.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types are u32 on some targets.
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// A preset as a clap value list (`mamba-130m` and any case also accepted).
#[derive(Debug, Clone, Copy)]
pub struct PresetArg(pub Preset);

impl clap::ValueEnum for PresetArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [PresetArg; 6] = [
            PresetArg(Preset::ALL[0]),
            PresetArg(Preset::ALL[1]),
            PresetArg(Preset::ALL[2]),
            PresetArg(Preset::ALL[3]),
            PresetArg(Preset::ALL[4]),
            PresetArg(Preset::ALL[5]),
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        // The Hub's model names, in Preset::ALL's order.
        const HUB_NAMES: [&str; 6] =
            ["mamba-tiny", "mamba-130m", "mamba-370m", "mamba-790m", "mamba-1.4b", "mamba-2.8b"];
        let i = Preset::ALL.iter().position(|&p| p == self.0)?;
        Some(clap::builder::PossibleValue::new(self.0.name()).alias(HUB_NAMES[i]))
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The standard Mamba shapes to use.
    #[arg(long, value_enum, ignore_case = true)]
    pub preset: PresetArg,
    /// Element type of the weights written.
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: DTypeArg,
    /// Seed of the random weights (the same seed writes the same bytes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SSM state size (1 to 1024).
    #[arg(long, value_parser = ranged(1, limits::MAX_STATE))]
    pub d_state: Option<usize>,
    /// Conv kernel width (1 to 64).
    #[arg(long, value_parser = ranged(1, limits::MAX_CONV_KERNEL))]
    pub conv_kernel: Option<usize>,
    /// Rank of dt_proj (1 to 65536).
    #[arg(long, value_parser = ranged(1, limits::MAX_DT_RANK))]
    pub dt_rank: Option<usize>,
    /// Layers (1 to 1024).
    #[arg(long, value_parser = ranged(1, limits::MAX_LAYERS))]
    pub layers: Option<usize>,
    /// Hidden size (1 to 65536).
    #[arg(long, value_parser = ranged(1, limits::MAX_HIDDEN))]
    pub hidden: Option<usize>,
    /// Vocabulary size (1 to 4194304).
    #[arg(long, value_parser = ranged(1, limits::MAX_VOCAB))]
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
    /// Write N safetensors shards with an index (1 to 1024).
    #[arg(long, value_parser = ranged(1, limits::MAX_SHARDS))]
    pub shards: Option<usize>,
    /// Folder to write the checkpoint to (config.json and the safetensors; made if missing).
    pub out_dir: PathBuf,
}

pub fn main(a: Args) -> Result<()> {
    let mut o = SynthOptions::new(a.preset.0);
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
    // Checked before the first byte is written: a checkpoint that does not fit would leave a
    // truncated file behind after minutes of writing.
    let bytes = o.total_bytes().with_context(|| format!("cannot write {}", a.out_dir.display()))?;
    if let Some(free) = free_bytes(&a.out_dir) {
        if bytes > free {
            anyhow::bail!(
                "cannot write {}: the checkpoint takes {bytes} bytes and its filesystem has {free} bytes free",
                a.out_dir.display()
            );
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn free_bytes_asks_the_nearest_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let free = super::free_bytes(&dir.path().join("not/yet/made")).expect("statvfs of the temp folder");
        assert!(free > 0);
        // A relative name with no folder part is asked of the working directory.
        assert!(super::free_bytes(std::path::Path::new("relative-and-missing")).is_some_and(|b| b > 0));
    }
}
