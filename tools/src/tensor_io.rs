//! Named tensors between safetensors files and the model's inputs (`mambac run`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use mambac_runtime::HostTensor;
use ort::value::{TensorElementType, ValueType};
use safetensors::Dtype;

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
