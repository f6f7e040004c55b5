//! Constant tensors (weights). Checkpoint weights stay in the memory-mapped checkpoint until
//! emission, which converts them one at a time: a large model is never held twice in memory.

use std::sync::Arc;

use half::{bf16, f16};

use super::quant::BlockQuant;
use super::types::Elem;
use crate::checkpoint::{Checkpoint, CheckpointError};

/// How a checkpoint tensor is turned into the constant the graph uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstTransform {
    /// Used as stored.
    AsStored,
    /// A 2-D `[rows, cols]` weight stored as `[cols, rows]` (MatMul wants `W^T`).
    Transpose2d,
    /// Same data with another shape (e.g. the conv weight `[I, 1, K]` read as `[I, K]`).
    Reshape,
    /// A `[N, K]` weight as `MatMulNBits`' packed values `[N, blocks, bytes]` (uint8), rounded
    /// against scales stored as the given type.
    QuantValues(BlockQuant, Elem),
    /// The same weight's per-block scales `[N * blocks]`.
    QuantScales(BlockQuant),
}

/// An elementwise function folded into a constant (`A = -exp(A_log)` becomes `[Exp, Neg]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryFn {
    Exp,
    Neg,
}

impl UnaryFn {
    pub fn apply(self, x: f64) -> f64 {
        match self {
            UnaryFn::Exp => x.exp(),
            UnaryFn::Neg => -x,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConstSource {
    /// A checkpoint tensor, reshaped or transposed, then mapped through `map` (in order), all
    /// in float64 at materialisation.
    Checkpoint { tensor: String, transform: ConstTransform, map: Vec<UnaryFn> },
    /// Computed by a pass (small tensors only, e.g. `A = -exp(A_log)`).
    Computed(Arc<Vec<f64>>),
}

/// A constant: its initializer name, shape, element type in the graph, and where its data is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// Element type the graph uses; emission converts the source to it.
    pub elem: Elem,
    pub source: ConstSource,
}

impl ConstTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values in float64, in the graph's layout (for the reference interpreter and folding).
    pub fn values_f64(&self, ckpt: &Checkpoint) -> Result<Vec<f64>, CheckpointError> {
        match &self.source {
            ConstSource::Computed(v) => Ok(v.as_ref().clone()),
            ConstSource::Checkpoint { tensor, transform: ConstTransform::QuantValues(q, scale_elem), map } => {
                debug_assert!(map.is_empty(), "no function folds into a quantized weight");
                let view = ckpt.tensor(tensor)?;
                Ok(quantize_cached(ckpt, &view, *q, *scale_elem).0.iter().map(|&v| f64::from(v)).collect())
            }
            ConstSource::Checkpoint { tensor, transform: ConstTransform::QuantScales(q), map } => {
                debug_assert!(map.is_empty(), "no function folds into a quantized weight");
                let view = ckpt.tensor(tensor)?;
                Ok(quantize_cached(ckpt, &view, *q, self.elem).1.iter().map(|&v| f64::from(v)).collect())
            }
            ConstSource::Checkpoint { tensor, transform, map } => {
                let view = ckpt.tensor(tensor)?;
                let mut values = apply_transform(view.to_f64(), &view.shape, *transform);
                for f in map {
                    values.iter_mut().for_each(|v| *v = f.apply(*v));
                }
                Ok(values)
            }
        }
    }

    /// The values converted to `self.elem`, little-endian, in the graph's layout (for emission).
    pub fn to_bytes(&self, ckpt: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
        match &self.source {
            ConstSource::Computed(v) => Ok(encode_f64(v, self.elem)),
            ConstSource::Checkpoint { map, .. } if !map.is_empty() => {
                Ok(encode_f64(&self.values_f64(ckpt)?, self.elem))
            }
            ConstSource::Checkpoint { tensor, transform: ConstTransform::QuantValues(q, scale_elem), .. } => {
                let view = ckpt.tensor(tensor)?;
                Ok(quantize_cached(ckpt, &view, *q, *scale_elem).0.clone())
            }
            ConstSource::Checkpoint { tensor, transform: ConstTransform::QuantScales(q), .. } => {
                let view = ckpt.tensor(tensor)?;
                Ok(encode_f32(&quantize_cached(ckpt, &view, *q, self.elem).1, self.elem))
            }
            ConstSource::Checkpoint { tensor, transform, .. } => {
                let view = ckpt.tensor(tensor)?;
                // Same dtype: the stored bytes are what ONNX wants, at most reordered. No
                // float conversion, so a large weight costs one copy, not three.
                if Elem::from(view.dtype) == self.elem {
                    return Ok(match transform {
                        ConstTransform::Transpose2d => {
                            transpose_bytes(&view.bytes, view.shape[0], view.shape[1], self.elem.size())
                        }
                        _ => view.bytes.into_owned(),
                    });
                }
                let values = view.to_f32();
                let values = apply_transform(values, &view.shape, *transform);
                Ok(encode_f32(&values, self.elem))
            }
        }
    }
}

type Quantized = Arc<(Vec<u8>, Vec<f32>)>;
/// Which weight of which checkpoint (folder, tensor, and where its bytes are mapped: a folder
/// rewritten between two exports maps anew) in which format.
type QuantKey = (std::path::PathBuf, String, usize, usize, BlockQuant, Elem);

thread_local! {
    /// The last weight quantized on this thread. A quantized weight is two consts (values and
    /// scales) that emission and the interpreter ask for one after the other; keeping the last
    /// result quantizes each weight once instead of twice (on a 2.8b export, about half the
    /// export time). One entry: at most one weight's quantized copy is held.
    static LAST_QUANTIZED: std::cell::RefCell<Option<(QuantKey, Quantized)>> = const { std::cell::RefCell::new(None) };
}

/// The checkpoint tensor `tensor` (a stored `[N, K]` weight) quantized, scales rounded to
/// `scale_elem`, the type they are stored in.
fn quantize_cached(
    ckpt: &Checkpoint,
    view: &crate::checkpoint::TensorView<'_>,
    q: BlockQuant,
    scale_elem: Elem,
) -> Quantized {
    let key: QuantKey =
        (ckpt.dir.clone(), view.name.clone(), view.bytes.as_ptr() as usize, view.bytes.len(), q, scale_elem);
    if let Some(hit) = LAST_QUANTIZED.with(|c| c.borrow().as_ref().filter(|(k, _)| *k == key).map(|(_, v)| v.clone())) {
        return hit;
    }
    let store = move |s: f32| match scale_elem {
        Elem::F16 => f16::from_f32(s).to_f32(),
        Elem::BF16 => bf16::from_f32(s).to_f32(),
        _ => s,
    };
    let result: Quantized = Arc::new(q.quantize(&view.to_f32(), view.shape[0], view.shape[1], store));
    LAST_QUANTIZED.with(|c| *c.borrow_mut() = Some((key, result.clone())));
    result
}

fn apply_transform<T: Copy>(values: Vec<T>, stored_shape: &[usize], transform: ConstTransform) -> Vec<T> {
    match transform {
        ConstTransform::AsStored | ConstTransform::Reshape => values,
        ConstTransform::QuantValues(..) | ConstTransform::QuantScales(_) => {
            unreachable!("quantized consts are handled before")
        }
        ConstTransform::Transpose2d => {
            let (rows, cols) = (stored_shape[0], stored_shape[1]);
            let mut out = Vec::with_capacity(values.len());
            for c in 0..cols {
                for r in 0..rows {
                    out.push(values[r * cols + c]);
                }
            }
            out
        }
    }
}

/// Transposes a row-major `[rows, cols]` matrix of `size`-byte elements, in cache-sized tiles.
fn transpose_bytes(src: &[u8], rows: usize, cols: usize, size: usize) -> Vec<u8> {
    const TILE: usize = 32;
    let mut out = vec![0u8; src.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    let from = (r * cols + c) * size;
                    let to = (c * rows + r) * size;
                    out[to..to + size].copy_from_slice(&src[from..from + size]);
                }
            }
        }
    }
    out
}

/// Encodes float values as `elem` (a float type), little-endian.
pub fn encode_f32(values: &[f32], elem: Elem) -> Vec<u8> {
    match elem {
        Elem::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Elem::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        Elem::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        Elem::I64 => values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
        Elem::U8 => values.iter().map(|&v| v as u8).collect(),
    }
}

pub fn encode_f64(values: &[f64], elem: Elem) -> Vec<u8> {
    match elem {
        Elem::F32 => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        Elem::F16 => values.iter().flat_map(|&v| f16::from_f64(v).to_le_bytes()).collect(),
        Elem::BF16 => values.iter().flat_map(|&v| bf16::from_f64(v).to_le_bytes()).collect(),
        Elem::I64 => values.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
        Elem::U8 => values.iter().map(|&v| v as u8).collect(),
    }
}
