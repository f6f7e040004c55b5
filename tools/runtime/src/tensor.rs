//! Tensors on the host as bytes (what safetensors reads and writes, and what the states are
//! between sessions), to and from ONNX Runtime values; the token-id check every path makes.

use std::borrow::Cow;

use half::{bf16, f16};
use ort::value::{DynValue, Tensor, TensorElementType, TensorValueTypeMarker, Value, ValueType};
use safetensors::{Dtype, View};

use crate::error::{fail, Error, Result};

/// A tensor as bytes: what safetensors reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn decode<T: Copy, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
}

impl HostTensor {
    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> HostTensor {
        HostTensor { dtype: Dtype::F32, shape, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    pub fn from_i64(shape: Vec<usize>, v: &[i64]) -> HostTensor {
        HostTensor { dtype: Dtype::I64, shape, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    /// Values as f32 (float tensors only).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            Dtype::F32 => decode(&self.bytes, f32::from_le_bytes),
            Dtype::F16 => decode(&self.bytes, |b| f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => decode(&self.bytes, |b| bf16::from_le_bytes(b).to_f32()),
            d => fail!(InvalidArgument, "expected a float tensor, got {d:?}"),
        })
    }

    /// Values as i64 (integer tensors only).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            Dtype::I64 => decode(&self.bytes, i64::from_le_bytes),
            Dtype::I32 => decode(&self.bytes, |b| i32::from_le_bytes(b) as i64),
            d => fail!(InvalidArgument, "expected an integer tensor, got {d:?}"),
        })
    }

    /// An ONNX Runtime value holding a copy of this tensor.
    pub fn to_ort(&self, name: &str) -> Result<DynValue> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let err = Error::ort(format!("input '{name}'"));
        Ok(match self.dtype {
            Dtype::F32 => Tensor::from_array((shape, decode(&self.bytes, f32::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::F16 => Tensor::from_array((shape, decode(&self.bytes, f16::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::BF16 => {
                Tensor::from_array((shape, decode(&self.bytes, bf16::from_le_bytes))).map_err(err)?.into_dyn()
            }
            Dtype::I64 => Tensor::from_array((shape, decode(&self.bytes, i64::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::I32 => Tensor::from_array((shape, decode(&self.bytes, i32::from_le_bytes))).map_err(err)?.into_dyn(),
            d => fail!(
                InvalidArgument,
                "input '{name}' has dtype {d:?}, which mambac run does not feed (float32/16, bfloat16, int64, int32)"
            ),
        })
    }

    /// Copies an ONNX Runtime tensor (a run's output or a session's state) out; `what` names it
    /// in errors, e.g. "output 'logits'" or "state 'ssm_state.0'".
    pub fn from_ort<V: TensorValueTypeMarker + ?Sized>(what: &str, v: &Value<V>) -> Result<HostTensor> {
        let ValueType::Tensor { ty, shape, .. } = v.dtype() else {
            fail!(BadOutput, "{what} is not a tensor");
        };
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let err = |e: ort::Error| Error::Ort { what: what.to_string(), source: e };
        fn bytes<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        let (dtype, bytes) = match ty {
            TensorElementType::Float32 => {
                (Dtype::F32, bytes(v.try_extract_tensor::<f32>().map_err(err)?.1, f32::to_le_bytes))
            }
            TensorElementType::Float16 => {
                (Dtype::F16, bytes(v.try_extract_tensor::<f16>().map_err(err)?.1, f16::to_le_bytes))
            }
            TensorElementType::Bfloat16 => {
                (Dtype::BF16, bytes(v.try_extract_tensor::<bf16>().map_err(err)?.1, bf16::to_le_bytes))
            }
            TensorElementType::Int64 => {
                (Dtype::I64, bytes(v.try_extract_tensor::<i64>().map_err(err)?.1, i64::to_le_bytes))
            }
            t => fail!(BadOutput, "{what} has element type {t:?}, which mambac cannot write"),
        };
        Ok(HostTensor { dtype, shape, bytes })
    }
}

/// Token ids must index the embedding. ORT's Gather would take -1 as the last row (it wraps
/// negative indices) and fail on one past the end with a message that names neither the input nor
/// the limit. `shape` locates the first bad id; `vocab` is None when the model does not state it
/// (then only negative ids are caught).
pub fn check_token_ids(ids: &[i64], shape: &[usize], vocab: Option<usize>, what: &str) -> Result<()> {
    let Some(i) = ids.iter().position(|&t| t < 0 || vocab.is_some_and(|v| t as u64 >= v as u64)) else {
        return Ok(());
    };
    Err(Error::TokenOutOfRange { what: what.to_string(), id: ids[i], position: position(i, shape), vocab })
}

/// Flat index `i` of a row-major tensor of `shape` as `[i0, i1, ...]` (just `i` for 1-D).
fn position(i: usize, shape: &[usize]) -> String {
    if shape.len() <= 1 {
        return i.to_string();
    }
    let mut idx = vec![0; shape.len()];
    let mut rest = i;
    for (k, &d) in shape.iter().enumerate().rev() {
        let d = d.max(1);
        idx[k] = rest % d;
        rest /= d;
    }
    format!("[{}]", idx.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_checked_with_their_position() {
        assert!(check_token_ids(&[0, 5, 9], &[3], Some(10), "prompt 1").is_ok());
        let e = check_token_ids(&[0, 5, -1], &[3], Some(10), "prompt 2").unwrap_err().to_string();
        assert_eq!(
            e,
            "prompt 2: token id -1 at position 2 is out of range: the model's vocabulary has 10 entries (ids 0..=9)"
        );
        let e = check_token_ids(&[1, 2, 3, 4, 10, 5], &[2, 3], Some(10), "input 'input_ids'").unwrap_err().to_string();
        assert_eq!(
            e,
            "input 'input_ids': token id 10 at position [1, 1] is out of range: the model's vocabulary has 10 entries (ids 0..=9)"
        );
        let e = check_token_ids(&[7, i64::MIN], &[1, 2], None, "input 'input_ids'").unwrap_err().to_string();
        assert_eq!(e, format!("input 'input_ids': token id {} at position [0, 1] is negative", i64::MIN));
        assert!(check_token_ids(&[i64::MAX], &[1], None, "x").is_ok());
    }
}
