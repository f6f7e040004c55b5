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
            mamba2: None,
        };
        let err = |message: String| Err(CheckpointError::Synth { message });
        for (what, v, max) in [
            ("hidden_size", c.hidden_size, limits::MAX_HIDDEN),
            ("state_size", c.state_size, limits::MAX_STATE),
            ("num_hidden_layers", c.num_hidden_layers, limits::MAX_LAYERS),
            ("conv_kernel", c.conv_kernel, limits::MAX_CONV_KERNEL),
            ("time_step_rank", c.time_step_rank, limits::MAX_DT_RANK),
            ("vocab_size", c.vocab_size, limits::MAX_VOCAB),
        ] {
            if v == 0 {
                return err(format!("{what} must be positive"));
            }
            if v > max {
                return err(format!("{what} {v} is more than synth writes (at most {max})"));
            }
        }
        match self.shards {
            Some(0) => return err("shards must be positive".into()),
            Some(n) if n > limits::MAX_SHARDS => {
                return err(format!("{n} shards is more than synth writes (at most {})", limits::MAX_SHARDS))
            }
            _ => {}
        }
        let bytes = self.total_bytes_of(&c);
        if bytes > limits::MAX_BYTES {
            return err(format!(
                "the checkpoint would take {bytes} bytes, more than synth writes (at most {} bytes, 64 GiB)",
                limits::MAX_BYTES
            ));
        }
        Ok(c)
    }

    /// Bytes of all the tensors' values in `c` (what the weight files hold, less headers).
    fn total_bytes_of(&self, c: &MambaConfig) -> u64 {
        shapes::expected_tensors(c)
            .iter()
            .map(|(_, shape)| shape.iter().fold(self.dtype.size() as u64, |n, &d| n.saturating_mul(d as u64)))
            .fold(0, u64::saturating_add)
    }

    /// Bytes of the weights [`write_checkpoint`] writes for these options (checked to be within
    /// [`limits::MAX_BYTES`]).
    pub fn total_bytes(&self) -> Result<u64, CheckpointError> {
        Ok(self.total_bytes_of(&self.config()?))
    }
}

/// The largest sizes synth writes, checked before any tensor list is built or byte written
/// (`--layers 1000000000000` would otherwise ask for a list of 10^13 tensors). Well above the
/// standard models: 2.8b is hidden 2560, 64 layers, vocabulary 50280, 11 GB in float32.
pub mod limits {
    pub const MAX_HIDDEN: usize = 65_536;
    pub const MAX_STATE: usize = 1024;
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_CONV_KERNEL: usize = 64;
    pub const MAX_DT_RANK: usize = 65_536;
    pub const MAX_VOCAB: usize = 1 << 22;
    pub const MAX_SHARDS: usize = 1024;
    /// Weight bytes of one checkpoint: 64 GiB.
    pub const MAX_BYTES: u64 = 64 << 30;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(o: &SynthOptions) -> String {
        o.config().unwrap_err().to_string()
    }

    #[test]
    fn bounds_each_dimension_before_listing_tensors() {
        let mut o = SynthOptions::new(Preset::Tiny);
        o.num_hidden_layers = Some(1_000_000_000_000);
        assert!(error(&o).ends_with("num_hidden_layers 1000000000000 is more than synth writes (at most 1024)"));
        let mut o = SynthOptions::new(Preset::Tiny);
        o.vocab_size = Some(usize::MAX);
        assert!(error(&o).ends_with(&format!("vocab_size {} is more than synth writes (at most 4194304)", usize::MAX)));
        let mut o = SynthOptions::new(Preset::Tiny);
        o.shards = Some(1025);
        assert!(error(&o).ends_with("1025 shards is more than synth writes (at most 1024)"));
        let mut o = SynthOptions::new(Preset::Tiny);
        o.num_hidden_layers = Some(limits::MAX_LAYERS);
        assert!(o.config().is_ok());
    }

    #[test]
    fn bounds_the_total_bytes() {
        // Each dimension within its bound, together 1024 layers of hidden 65536: terabytes.
        let mut o = SynthOptions::new(Preset::Tiny);
        o.hidden_size = Some(limits::MAX_HIDDEN);
        o.num_hidden_layers = Some(limits::MAX_LAYERS);
        let e = error(&o);
        assert!(
            e.contains("the checkpoint would take ")
                && e.ends_with("more than synth writes (at most 68719476736 bytes, 64 GiB)"),
            "{e}"
        );
        // The largest standard model fits, in float32.
        let big = SynthOptions::new(Preset::B2_8);
        let bytes = big.total_bytes().unwrap();
        assert!(bytes > 10_000_000_000 && bytes < limits::MAX_BYTES, "{bytes}");
        assert_eq!(SynthOptions::new(Preset::Tiny).total_bytes().unwrap(), {
            let c = SynthOptions::new(Preset::Tiny).config().unwrap();
            shapes::expected_tensors(&c).iter().map(|(_, s)| 4 * s.iter().product::<usize>() as u64).sum::<u64>()
        });
    }
}
