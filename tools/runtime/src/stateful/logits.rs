//! Values out of a step, as the host wants them: the logits as float32 (only the positions
//! asked for) and states as bytes.

use half::{bf16, f16};
use ort::value::TensorElementType;
use safetensors::Dtype;

use crate::error::{fail, Error, Result};

/// Which positions' logits a step copies out (a 512-token prefill of a 50k vocabulary at batch 8
/// is 800 MB of logits, of which generation needs the last row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Last,
    /// Every position (what the tests compare with the reference).
    All,
}

/// Logits as float32, `[batch, positions, vocab]`.
#[derive(Debug, Clone)]
pub struct Logits {
    pub batch: usize,
    pub positions: usize,
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl Logits {
    pub fn row(&self, b: usize, pos: usize) -> &[f32] {
        let start = (b * self.positions + pos) * self.vocab;
        &self.data[start..start + self.vocab]
    }

    /// The last kept position of sequence `b`.
    pub fn last(&self, b: usize) -> &[f32] {
        self.row(b, self.positions - 1)
    }
}

/// What a step hands back to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Logits(Keep),
    /// The greedy pick of each sequence's last position, from the graph's `next_token`.
    NextTokens,
}

/// A step's result, as [`Want`] asked.
pub(super) enum StepOut {
    Logits(Logits),
    Tokens(Vec<i64>),
}

/// The last position's ids of a `next_token` output `[batch, positions]`.
pub(super) fn extract_next_tokens<V: ort::value::TensorValueTypeMarker + ?Sized>(
    v: &ort::value::Value<V>,
) -> Result<Vec<i64>> {
    let (shape, data) = v.try_extract_tensor::<i64>().map_err(Error::ort("reading 'next_token'"))?;
    let [b, p] = shape[..] else { fail!(BadOutput, "'next_token' has shape {shape:?}, expected [batch, positions]") };
    let (batch, positions) = (b as usize, p as usize);
    if positions == 0 || data.len() != batch * positions {
        fail!(BadOutput, "'next_token' has shape {shape:?} but {} elements", data.len());
    }
    Ok((0..batch).map(|bi| data[(bi + 1) * positions - 1]).collect())
}

pub(super) fn extract_logits<V: ort::value::TensorValueTypeMarker + ?Sized>(
    v: &ort::value::Value<V>,
    ty: TensorElementType,
    keep: Keep,
) -> Result<Logits> {
    fn pick<T: Copy>(shape: &[i64], data: &[T], keep: Keep, f: impl Fn(T) -> f32) -> Result<Logits> {
        let [b, l, v] = shape else { fail!(BadOutput, "logits have shape {shape:?}, expected [batch, seqlen, vocab]") };
        let (batch, len, vocab) = (*b as usize, *l as usize, *v as usize);
        if len == 0 || data.len() != batch * len * vocab {
            fail!(BadOutput, "logits have shape {shape:?} but {} elements", data.len());
        }
        let (positions, out) = match keep {
            Keep::All => (len, data.iter().map(|&x| f(x)).collect()),
            Keep::Last => (
                1,
                (0..batch)
                    .flat_map(|bi| data[((bi + 1) * len - 1) * vocab..(bi + 1) * len * vocab].iter().map(|&x| f(x)))
                    .collect(),
            ),
        };
        Ok(Logits { batch, positions, vocab, data: out })
    }
    let err = Error::ort("reading the logits");
    match ty {
        TensorElementType::Float32 => {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(err)?;
            pick(s, d, keep, |x| x)
        }
        TensorElementType::Float16 => {
            let (s, d) = v.try_extract_tensor::<f16>().map_err(err)?;
            pick(s, d, keep, f16::to_f32)
        }
        TensorElementType::Bfloat16 => {
            let (s, d) = v.try_extract_tensor::<bf16>().map_err(err)?;
            pick(s, d, keep, bf16::to_f32)
        }
        t => fail!(BadOutput, "logits of element type {t:?}"),
    }
}

pub(super) fn dtype_of(t: TensorElementType) -> Dtype {
    match t {
        TensorElementType::Float16 => Dtype::F16,
        TensorElementType::Bfloat16 => Dtype::BF16,
        _ => Dtype::F32,
    }
}
