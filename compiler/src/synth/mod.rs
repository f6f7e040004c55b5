//! Random-weight Mamba-1 checkpoints with the standard shapes, for tests and benchmarks of
//! models we do not have weights for (up to the 2.8b size).
//!
//! Values follow Hugging Face's initialisation scales (see [`init`]), so a forward pass through
//! a synthetic model is numerically sane. Every tensor's values depend only on the seed and the
//! tensor's name ([`tensor_bytes`] regenerates them), so sharding and dtype do not change them
//! beyond rounding.
//!
//! Writers: [`write_checkpoint`] (Hugging Face layout, streamed tensor by tensor so a 5.6 GB
//! checkpoint never sits in memory) and [`write_state_spaces_checkpoint`] (mamba_ssm layout, a
//! torch.save-compatible zip; small models only, for testing the pickle reader).

mod init;
mod rng;
mod safetensors_writer;
mod torch_writer;

use crate::checkpoint::{shapes, CheckpointError, DType, MambaConfig};

pub use safetensors_writer::write_checkpoint;
pub use torch_writer::write_state_spaces_checkpoint;

/// Standard Mamba-1 sizes (state-spaces/mamba-*), plus a tiny one for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    M130,
    M370,
    M790,
    B1_4,
    B2_8,
}

impl Preset {
    pub const ALL: [Preset; 6] = [Preset::Tiny, Preset::M130, Preset::M370, Preset::M790, Preset::B1_4, Preset::B2_8];

    /// "tiny", "130m", "370m", "790m", "1.4b", "2.8b" (case-insensitive, "mamba-" prefix allowed).
    pub fn parse(s: &str) -> Option<Preset> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_prefix("mamba-").unwrap_or(&s);
        Preset::ALL.into_iter().find(|p| p.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::M130 => "130m",
            Preset::M370 => "370m",
            Preset::M790 => "790m",
            Preset::B1_4 => "1.4b",
            Preset::B2_8 => "2.8b",
        }
    }

    /// (hidden_size, num_hidden_layers, vocab_size).
    fn dims(self) -> (usize, usize, usize) {
        match self {
            Preset::Tiny => (64, 2, 1024),
            Preset::M130 => (768, 24, 50280),
            Preset::M370 => (1024, 48, 50280),
            Preset::M790 => (1536, 48, 50280),
            Preset::B1_4 => (2048, 48, 50280),
            Preset::B2_8 => (2560, 64, 50280),
        }
    }
}

/// What to write. `None` overrides keep the preset's value.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    pub preset: Preset,
    pub dtype: DType,
    pub seed: u64,
    pub state_size: Option<usize>,
    pub conv_kernel: Option<usize>,
    pub time_step_rank: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub hidden_size: Option<usize>,
    pub vocab_size: Option<usize>,
    pub use_bias: Option<bool>,
    pub use_conv_bias: Option<bool>,
    pub tie_word_embeddings: Option<bool>,
    /// Write this many `model-0000N-of-0000M.safetensors` shards plus the index.
    pub shards: Option<usize>,
}

impl SynthOptions {
    /// The preset in float32, seed 0, no overrides, one file.
    pub fn new(preset: Preset) -> SynthOptions {
        SynthOptions {
            preset,
            dtype: DType::F32,
            seed: 0,
            state_size: None,
            conv_kernel: None,
            time_step_rank: None,
            num_hidden_layers: None,
            hidden_size: None,
            vocab_size: None,
            use_bias: None,
            use_conv_bias: None,
            tie_word_embeddings: None,
            shards: None,
        }
    }

    /// The config these options describe (expand 2, time_step_rank ceil(hidden/16) unless given).
    pub fn config(&self) -> Result<MambaConfig, CheckpointError> {
        let (h0, l0, v0) = self.preset.dims();
        let hidden = self.hidden_size.unwrap_or(h0);
        let c = MambaConfig {
            hidden_size: hidden,
            state_size: self.state_size.unwrap_or(16),
            num_hidden_layers: self.num_hidden_layers.unwrap_or(l0),
            expand: 2,
            conv_kernel: self.conv_kernel.unwrap_or(4),
            time_step_rank: self.time_step_rank.unwrap_or(hidden.div_ceil(16)),
            intermediate_size: 2 * hidden,
            use_bias: self.use_bias.unwrap_or(false),
            use_conv_bias: self.use_conv_bias.unwrap_or(true),
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(true),
            vocab_size: self.vocab_size.unwrap_or(v0),
        };
        for (what, v) in [
            ("hidden_size", c.hidden_size),
            ("state_size", c.state_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("conv_kernel", c.conv_kernel),
            ("time_step_rank", c.time_step_rank),
            ("vocab_size", c.vocab_size),
        ] {
            if v == 0 {
                return Err(CheckpointError::Synth { message: format!("{what} must be positive") });
            }
        }
        if self.shards == Some(0) {
            return Err(CheckpointError::Synth { message: "shards must be positive".into() });
        }
        Ok(c)
    }
}

/// The bytes [`write_checkpoint`] writes for tensor `name` (canonical name) under `opts`:
/// little-endian, in `opts.dtype`. Holds the whole tensor; meant for tests and small models.
pub fn tensor_bytes(opts: &SynthOptions, name: &str) -> Result<Vec<u8>, CheckpointError> {
    let config = opts.config()?;
    let shape = shapes::expected_tensors(&config)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| CheckpointError::Synth { message: format!("the model has no tensor '{name}'") })?;
    let numel: usize = shape.iter().product();
    let mut g = init::TensorGen::new(&config, name, &shape, opts.seed);
    let mut vals = Vec::with_capacity(numel);
    g.fill(&mut vals, numel);
    let mut out = Vec::with_capacity(numel * opts.dtype.size());
    for v in vals {
        opts.dtype.push_f32(v, &mut out);
    }
    Ok(out)
}
