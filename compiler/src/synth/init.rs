//! Initial values per tensor, at the scales Hugging Face's `MambaPreTrainedModel._init_weights`
//! and torch's layer defaults give, with noise on the terms HF initialises to constants so a
//! kernel that drops or mis-indexes one cannot match by luck:
//!
//! - embeddings: N(0, 0.02)
//! - in_proj, x_proj, out_proj, untied lm_head (and their biases): U(±1/sqrt(fan_in))
//! - conv1d weight and bias: U(±1/sqrt(K)) (depthwise: fan_in = K)
//! - dt_proj.weight: U(±R^-0.5); dt_proj.bias: softplus⁻¹(dt), dt log-uniform in [1e-3, 1e-1]
//! - A_log[d, n] = ln(n + 1) + N(0, 0.05); D = 1 + N(0, 0.1); norms = 1 + N(0, 0.05)

use rand_distr::{Distribution, StandardNormal};

use super::rng::{fnv1a, Xoshiro256pp};
use crate::checkpoint::MambaConfig;

#[derive(Debug, Clone, Copy)]
enum Init {
    Normal {
        mean: f32,
        std: f32,
    },
    Uniform {
        bound: f32,
    },
    /// ln(col + 1) + noise, col = element index mod cols.
    ALog {
        cols: usize,
    },
    DtBias,
}

fn init_for(c: &MambaConfig, name: &str) -> Init {
    let fan = |n: usize| Init::Uniform { bound: 1.0 / (n as f32).sqrt() };
    let suffix = name.rsplit_once(".mixer.").map(|(_, s)| s).unwrap_or(name);
    match suffix {
        "backbone.embeddings.weight" => Init::Normal { mean: 0.0, std: 0.02 },
        "lm_head.weight" => fan(c.hidden_size),
        "A_log" => Init::ALog { cols: c.state_size },
        "D" => Init::Normal { mean: 1.0, std: 0.1 },
        "in_proj.weight" | "in_proj.bias" => fan(c.hidden_size),
        "conv1d.weight" | "conv1d.bias" => fan(c.conv_kernel),
        "x_proj.weight" | "out_proj.weight" | "out_proj.bias" => fan(c.intermediate_size),
        "dt_proj.weight" => fan(c.time_step_rank),
        "dt_proj.bias" => Init::DtBias,
        // norm.weight, norm_f.weight
        _ => Init::Normal { mean: 1.0, std: 0.05 },
    }
}

/// Generates one tensor's values in order, in chunks of any size.
pub(crate) struct TensorGen {
    init: Init,
    rng: Xoshiro256pp,
    /// Elements generated so far (A_log needs the column).
    done: usize,
}

impl TensorGen {
    pub(crate) fn new(c: &MambaConfig, name: &str, _shape: &[usize], seed: u64) -> TensorGen {
        // Seeded by name, so a tensor's values do not depend on which others are written.
        TensorGen { init: init_for(c, name), rng: Xoshiro256pp::seed(seed ^ fnv1a(name)), done: 0 }
    }

    /// Appends the next `n` values to `out`.
    pub(crate) fn fill(&mut self, out: &mut Vec<f32>, n: usize) {
        out.reserve(n);
        let rng = &mut self.rng;
        match self.init {
            Init::Normal { mean, std } => out.extend(
                (0..n).map(|_| mean + std * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)),
            ),
            Init::Uniform { bound } => out.extend((0..n).map(|_| (2.0 * rng.unit_f32() - 1.0) * bound)),
            Init::ALog { cols } => {
                let start = self.done;
                out.extend((0..n).map(|i| {
                    let col = (start + i) % cols;
                    let noise: f32 = StandardNormal.sample(rng);
                    ((col + 1) as f32).ln() + 0.05 * noise
                }))
            }
            Init::DtBias => out.extend((0..n).map(|_| {
                let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
                let dt = (lo + f64::from(rng.unit_f32()) * (hi - lo)).exp().max(1e-4);
                // softplus⁻¹(dt) = dt + ln(1 - e^-dt), so that softplus(bias) = dt.
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })),
        }
        self.done += n;
    }
}
