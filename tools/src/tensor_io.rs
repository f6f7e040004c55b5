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

    /// Values as i64 (integer tensors only).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        Ok(match self.dtype {
            Dtype::I64 => decode(&self.bytes, i64::from_le_bytes),
            Dtype::I32 => decode(&self.bytes, |b| i32::from_le_bytes(b) as i64),
            d => bail!("expected an integer tensor, got {d:?}"),
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

/// Token ids must index the embedding. ORT's Gather would take -1 as the last row (it wraps
/// negative indices) and fail on one past the end with a message that names neither the input nor
/// the limit. `shape` locates the first bad id; `vocab` is None when the model does not state it
/// (then only negative ids are caught).
pub fn check_token_ids(ids: &[i64], shape: &[usize], vocab: Option<usize>, what: &str) -> Result<()> {
    let Some(i) = ids.iter().position(|&t| t < 0 || vocab.is_some_and(|v| t as u64 >= v as u64)) else {
        return Ok(());
    };
    let (bad, pos) = (ids[i], position(i, shape));
    match vocab {
        Some(v) => bail!(
            "{what}: token id {bad} at position {pos} is out of range: the model's vocabulary has {v} entries (ids 0..={})",
            v.saturating_sub(1)
        ),
        None => bail!("{what}: token id {bad} at position {pos} is negative"),
    }
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

/// What a model takes at one input: element type and dims (None where symbolic, with its name).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub ty: Option<TensorElementType>,
    pub dims: Vec<(Option<usize>, String)>,
}

impl InputSpec {
    pub fn of(ty: &ValueType) -> InputSpec {
        match ty {
            ValueType::Tensor { ty, shape, dimension_symbols } => InputSpec {
                ty: Some(*ty),
                dims: shape
                    .iter()
                    .enumerate()
                    .map(|(k, &d)| {
                        let sym = dimension_symbols.get(k).cloned().unwrap_or_default();
                        (usize::try_from(d).ok(), if sym.is_empty() { "?".into() } else { sym })
                    })
                    .collect(),
            },
            _ => InputSpec { ty: None, dims: vec![] },
        }
    }

    fn describe(&self) -> String {
        let ty = self.ty.map_or("a non-tensor".to_string(), element_name);
        let dims: Vec<String> = self.dims.iter().map(|(d, s)| d.map_or(s.clone(), |d| d.to_string())).collect();
        format!("{ty} [{}]", dims.join(", "))
    }

    /// The tensor fed as input `name` has this input's element type, rank and fixed dims.
    pub fn check(&self, name: &str, t: &HostTensor, source: &Path) -> Result<()> {
        let same_ty = self.ty.is_some() && self.ty == element_type(t.dtype);
        let same_shape = self.dims.len() == t.shape.len()
            && self.dims.iter().zip(&t.shape).all(|((d, _), &got)| d.is_none_or(|d| d == got));
        if !same_ty || !same_shape {
            let got: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            bail!(
                "input '{name}': {} holds {} [{}]; the model takes {}",
                source.display(),
                dtype_name(t.dtype),
                got.join(", "),
                self.describe()
            );
        }
        Ok(())
    }
}

fn element_type(d: Dtype) -> Option<TensorElementType> {
    Some(match d {
        Dtype::F32 => TensorElementType::Float32,
        Dtype::F16 => TensorElementType::Float16,
        Dtype::BF16 => TensorElementType::Bfloat16,
        Dtype::I64 => TensorElementType::Int64,
        Dtype::I32 => TensorElementType::Int32,
        _ => return None,
    })
}

fn element_name(t: TensorElementType) -> String {
    match t {
        TensorElementType::Float32 => "float32".into(),
        TensorElementType::Float16 => "float16".into(),
        TensorElementType::Bfloat16 => "bfloat16".into(),
        TensorElementType::Int64 => "int64".into(),
        TensorElementType::Int32 => "int32".into(),
        t => format!("{t:?}").to_lowercase(),
    }
}

fn dtype_name(d: Dtype) -> String {
    match element_type(d) {
        Some(t) => element_name(t),
        None => format!("{d:?}").to_lowercase(),
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

/// Writes `tensors` to `path` whole or not at all (an earlier file stays as it was on failure).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), None)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    mambac_compiler::atomic_file::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
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

    #[test]
    fn inputs_are_checked_against_the_model() {
        let spec = InputSpec {
            ty: Some(TensorElementType::Float32),
            dims: vec![(None, "batch".into()), (Some(128), String::new()), (Some(3), String::new())],
        };
        let src = Path::new("in.safetensors");
        assert!(spec.check("s", &HostTensor::from_f32(vec![2, 128, 3], &[0.5; 768]), src).is_ok());
        let want = "the model takes float32 [batch, 128, 3]";
        let e = spec.check("s", &HostTensor::from_f32(vec![2, 128, 4], &[0.5; 1024]), src).unwrap_err().to_string();
        assert_eq!(e, format!("input 's': in.safetensors holds float32 [2, 128, 4]; {want}"));
        let e = spec.check("s", &HostTensor::from_f32(vec![256, 3], &[0.5; 768]), src).unwrap_err().to_string();
        assert_eq!(e, format!("input 's': in.safetensors holds float32 [256, 3]; {want}"));
        let e = spec.check("s", &HostTensor::from_i64(vec![2, 128, 3], &[1; 768]), src).unwrap_err().to_string();
        assert_eq!(e, format!("input 's': in.safetensors holds int64 [2, 128, 3]; {want}"));
    }
}
