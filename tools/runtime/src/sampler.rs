//! Picking the next token from a row of logits: greedy (argmax), or a draw from the softmax at a
//! temperature, restricted to the `top_k` most likely tokens and then to the smallest set whose
//! probability reaches `top_p` (nucleus sampling). The RNG is seeded, so a seed gives the same
//! tokens on every run and machine (rand's `StdRng` is a fixed algorithm per rand release).

use crate::error::{fail, Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is picked: the sampler's options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// The most likely token (the first on ties).
    #[default]
    Greedy,
    /// A draw from the softmax at `temperature` (> 0), among the `top_k` most likely tokens, then
    /// among the fewest whose probability reaches `top_p` (in (0, 1]).
    Random { temperature: f32, top_k: Option<usize>, top_p: Option<f32> },
}

/// Picks tokens as its [`Sampling`] says, from an RNG seeded at creation.
pub struct Sampler {
    mode: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// Fails on a temperature that is not positive, `top_k` 0 or `top_p` outside (0, 1].
    pub fn new(mode: Sampling, seed: u64) -> Result<Sampler> {
        if let Sampling::Random { temperature, top_k, top_p } = mode {
            if !(temperature.is_finite() && temperature > 0.0) {
                fail!(
                    InvalidArgument,
                    "--temperature must be a positive number, got {temperature} (use --greedy for argmax)"
                );
            }
            if top_k == Some(0) {
                fail!(InvalidArgument, "--top-k must be at least 1");
            }
            if let Some(p) = top_p {
                if !(p > 0.0 && p <= 1.0) {
                    fail!(InvalidArgument, "--top-p must be in (0, 1], got {p}");
                }
            }
        }
        Ok(Sampler { mode, rng: StdRng::seed_from_u64(seed) })
    }

    /// The token picked from one row of logits; a NaN or +infinity logit is an error (it makes
    /// the softmax NaN and the argmax meaningless), -infinity a token that cannot be picked.
    pub fn sample(&mut self, logits: &[f32]) -> Result<usize> {
        if logits.is_empty() {
            fail!(InvalidArgument, "cannot sample from an empty row of logits");
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
            let what = if logits[i].is_nan() { "NaN" } else { "+infinity" };
            return Err(Error::UnusableLogits { token: i, what });
        }
        match self.mode {
            Sampling::Greedy => Ok(argmax(logits)),
            Sampling::Random { temperature, top_k, top_p } => Ok(self.draw(logits, temperature, top_k, top_p)),
        }
    }

    fn draw(&mut self, logits: &[f32], temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> usize {
        // Candidates most likely first; ties keep the lower id first so results do not depend on
        // the sort's internals. Without top-k/top-p no order is needed.
        let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        let mut cand: Vec<usize> = (0..logits.len()).collect();
        if let Some(k) = top_k.filter(|&k| k < cand.len()) {
            cand.select_nth_unstable_by(k - 1, by_logit);
            cand.truncate(k);
        }
        if top_k.is_some() || top_p.is_some() {
            cand.sort_unstable_by(by_logit);
        }
        // Softmax in float64 over the candidates, shifted by the largest logit so exp cannot overflow.
        let max = cand.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max) as f64;
        if max == f64::NEG_INFINITY {
            return cand[0];
        }
        let t = temperature as f64;
        let mut weights: Vec<f64> = cand.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
        if let Some(p) = top_p {
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let mut keep = weights.len();
            for (n, w) in weights.iter().enumerate() {
                acc += w / total;
                if acc >= p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            weights.truncate(keep);
        }
        let total: f64 = weights.iter().sum();
        let mut u = self.rng.gen::<f64>() * total;
        for (n, w) in weights.iter().enumerate() {
            if u < *w {
                return cand[n];
            }
            u -= w;
        }
        // Rounding can leave u a hair above the last weight: the last candidate it is.
        cand[weights.len() - 1]
    }
}

/// Index of the largest value; the first one on ties (so greedy matches numpy's argmax).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Sampling {
        Sampling::Random { temperature, top_k, top_p }
    }

    fn counts(mode: Sampling, logits: &[f32], n: usize, seed: u64) -> Vec<usize> {
        let mut s = Sampler::new(mode, seed).unwrap();
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits).unwrap()] += 1;
        }
        c
    }

    fn ln(p: &[f64]) -> Vec<f32> {
        p.iter().map(|x| x.ln() as f32).collect()
    }

    #[test]
    fn greedy_is_argmax_with_first_index_on_ties() {
        let mut s = Sampler::new(Sampling::Greedy, 0).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
        assert_eq!(s.sample(&[5.0, 1.0, 5.0]).unwrap(), 0);
        assert_eq!(s.sample(&[f32::NEG_INFINITY, -1e30, f32::NEG_INFINITY]).unwrap(), 1);
    }

    #[test]
    fn nan_and_positive_infinity_logits_are_errors_naming_the_token() {
        for mode in [Sampling::Greedy, random(1.0, None, None), random(0.7, Some(2), Some(0.9))] {
            let mut s = Sampler::new(mode, 0).unwrap();
            let e = s.sample(&[0.0, f32::NAN, 1.0]).unwrap_err().to_string();
            assert_eq!(e, "the model produced a NaN logit (token 1): no usable token");
            let e = s.sample(&[0.0, 2.0, f32::INFINITY]).unwrap_err().to_string();
            assert_eq!(e, "the model produced a +infinity logit (token 2): no usable token");
            // -infinity is a token that cannot be picked, not an error.
            assert_eq!(s.sample(&[f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY]).unwrap(), 1);
        }
    }

    #[test]
    fn a_seed_gives_the_same_tokens_and_another_seed_others() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let mode = random(0.9, Some(20), Some(0.95));
        let run = |seed| {
            let mut s = Sampler::new(mode, seed).unwrap();
            (0..64).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let c = counts(random(1.0, None, None), &ln(&[0.6, 0.3, 0.1]), 20_000, 1);
        for (got, want) in c.iter().zip([0.6, 0.3, 0.1]) {
            let f = *got as f64 / 20_000.0;
            assert!((f - want).abs() < 0.015, "{c:?}");
        }
    }

    #[test]
    fn top_k_keeps_exactly_the_k_most_likely() {
        let logits = [0.5, 2.0, -1.0, 1.5, 1.9, 0.0];
        let c = counts(random(1.0, Some(3), None), &logits, 5_000, 2);
        assert_eq!(c[0] + c[2] + c[5], 0, "{c:?}");
        assert!(c[1] > 0 && c[3] > 0 && c[4] > 0, "{c:?}");
        // k = 1 is greedy whatever the temperature.
        assert_eq!(counts(random(50.0, Some(1), None), &logits, 500, 3)[1], 500);
        // k larger than the vocabulary keeps everything.
        assert!(counts(random(1.0, Some(100), None), &logits, 5_000, 4).iter().all(|&n| n > 0));
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let logits = ln(&[0.15, 0.5, 0.05, 0.3]);
        // 0.5 + 0.3 = 0.8 >= 0.75: only ids 1 and 3, in proportion 5:3.
        let c = counts(random(1.0, None, Some(0.75)), &logits, 8_000, 5);
        assert_eq!(c[0] + c[2], 0, "{c:?}");
        let f = c[1] as f64 / 8_000.0;
        assert!((f - 0.625).abs() < 0.02, "{c:?}");
        // 0.85 needs the third most likely (0.15) too, never the fourth.
        let c = counts(random(1.0, None, Some(0.85)), &logits, 8_000, 6);
        assert!(c[0] > 0 && c[2] == 0, "{c:?}");
        // A tiny p still keeps the most likely token.
        assert_eq!(counts(random(1.0, None, Some(1e-6)), &logits, 300, 7)[1], 300);
        // top-k applies first: k = 2 then p = 0.9 is ids 1 and 3 only.
        let c = counts(random(1.0, Some(2), Some(0.9)), &logits, 3_000, 8);
        assert_eq!(c[0] + c[2], 0, "{c:?}");
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0, 1.5, 0.0];
        assert_eq!(counts(random(0.01, None, None), &logits, 1_000, 9)[1], 1_000);
        let c = counts(random(1000.0, None, None), &logits, 9_000, 10);
        assert!(c.iter().all(|&n| (n as f64 / 9_000.0 - 1.0 / 3.0).abs() < 0.03), "{c:?}");
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for (mode, needle) in [
            (random(0.0, None, None), "--temperature"),
            (random(f32::NAN, None, None), "--temperature"),
            (random(1.0, Some(0), None), "--top-k"),
            (random(1.0, None, Some(0.0)), "--top-p"),
            (random(1.0, None, Some(1.5)), "--top-p"),
        ] {
            let e = Sampler::new(mode, 0).err().expect("rejected").to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
