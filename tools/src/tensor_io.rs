//! Named tensors between safetensors files and ONNX Runtime values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use safetensors::{Dtype, View};

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
            d => bail!("expected a float tensor, got {d:?}"),
        })
    }

    /// An ONNX Runtime value holding a copy of this tensor.
    pub fn to_ort(&self, name: &str) -> Result<DynValue> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let err = |e: ort::Error| anyhow!("input '{name}': {e}");
        Ok(match self.dtype {
            Dtype::F32 => Tensor::from_array((shape, decode(&self.bytes, f32::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::F16 => Tensor::from_array((shape, decode(&self.bytes, f16::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::BF16 => {
                Tensor::from_array((shape, decode(&self.bytes, bf16::from_le_bytes))).map_err(err)?.into_dyn()
            }
            Dtype::I64 => Tensor::from_array((shape, decode(&self.bytes, i64::from_le_bytes))).map_err(err)?.into_dyn(),
            Dtype::I32 => Tensor::from_array((shape, decode(&self.bytes, i32::from_le_bytes))).map_err(err)?.into_dyn(),
            d => bail!(
                "input '{name}' has dtype {d:?}, which mambac run does not feed (float32/16, bfloat16, int64, int32)"
            ),
        })
    }

    /// Copies an ONNX Runtime tensor out.
    pub fn from_ort(name: &str, v: &DynValue) -> Result<HostTensor> {
        let ValueType::Tensor { ty, shape, .. } = v.dtype() else {
            bail!("output '{name}' is not a tensor");
        };
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let err = |e: ort::Error| anyhow!("output '{name}': {e}");
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
            t => bail!("output '{name}' has element type {t:?}, which mambac cannot write"),
        };
        Ok(HostTensor { dtype, shape, bytes })
    }
}

/// Every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, HostTensor { dtype: v.dtype(), shape: v.shape().to_vec(), bytes: v.data().to_vec() }))
        .collect())
}

pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.clone(), v)), None, path)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}
