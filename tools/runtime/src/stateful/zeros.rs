//! Zero states for new sequences, written straight into the buffers the next step reads.
//!
//! A new sequence starts from zero states. They used to be host tensors of zero bytes bound as
//! the next step's inputs, which on the CUDA EP ORT copied to the device in that step: for
//! mamba2-2.7b's shape at batch 64, 10.7 GB of host zeros, and a 16-token prefill of 1.9 s
//! (BENCHMARKS.md). ORT's C API has no call that fills or zero-allocates memory, so the zeros
//! come from a model of their own: one `ConstantOfShape` (value 0) a state, run in a second
//! session on the same EP and device, with its outputs bound (IoBinding) to the state buffers
//! ([`super::buffers`]). On the CUDA EP a fill kernel writes them in device memory; on the CPU EP
//! they are written into the host buffers, without the former extra copy. The buffers keep
//! their addresses, so captured CUDA graphs stay valid.
//!
//! The model is an in-memory helper of the runtime, never written out; it is built here, not
//! through the compiler's IR, which has no op that makes a tensor from a shape.

use mambac_compiler::emit::proto::{attr_tensor, node, tensor, value_info};
use mambac_compiler::ir::{Dim, Elem, ValueType};
use onnx_protobuf::{GraphProto, Message, ModelProto, OperatorSetIdProto};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::{DynTensor, Tensor, TensorElementType};

use super::cuda_graph::run_bound;
use crate::environment::init_ort;
use crate::error::{Error, Result};
use crate::options::Ep;
use crate::session::with_ep;
use crate::signature::ModelSignature;

/// `ConstantOfShape` takes a bfloat16 value from opset 20 on; 21 is what ORT 1.20 (the oldest
/// this crate loads) reads, with IR version 10.
const OPSET: i64 = 21;
const IR_VERSION: i64 = 10;

/// The zero-state session, as the messages about it name it.
const WHAT: &str = "the session that writes zero states";

/// The zero-state session of one model's states.
pub(super) struct ZeroStates {
    session: Session,
    /// The distinct dims after the batch among the states: the model's input `shape.{k}` is the
    /// full shape `[batch, shapes[k]...]` of the states with those dims.
    shapes: Vec<Vec<usize>>,
    run: RunOptions,
}

impl ZeroStates {
    /// The zero-state session of `sig`'s states, on `ep`.
    pub(super) fn new(sig: &ModelSignature, ep: Ep) -> Result<ZeroStates> {
        let shapes = distinct_dims(sig);
        ZeroStates::from_model(&model(sig, &shapes)?, shapes, ep)
    }

    fn from_model(bytes: &[u8], shapes: Vec<Vec<usize>>, ep: Ep) -> Result<ZeroStates> {
        let env = init_ort()?;
        let err = |e: ort::Error| Error::Ort { what: format!("cannot create {WHAT}"), source: e };
        // One thread: a fill is bound by memory, and the session needs no thread pool of its own.
        // No graph optimisation: constant folding or common-subexpression elimination would
        // turn fills into initializers copied into the outputs, or merge outputs.
        let b = Session::builder(env)
            .map_err(err)?
            .with_intra_threads(1)
            .map_err(|e| err(e.into()))?
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| err(e.into()))?;
        let session = with_ep(b, ep, false)?.commit_from_memory(bytes).map_err(err)?;
        let run = RunOptions::new().map_err(Error::ort("run options"))?;
        Ok(ZeroStates { session, shapes, run })
    }

    /// Writes zeros into `set`, the states of `batch` sequences in `sig.states` order (the
    /// signature this was made for). Returns once they are written (ORT synchronises the EP's
    /// stream at the end of a run), so the next step of any session reads zeros.
    pub(super) fn fill(&self, sig: &ModelSignature, batch: usize, set: &mut [DynTensor]) -> Result<()> {
        let mut b = self.session.create_binding().map_err(Error::ort(format!("{WHAT}: cannot create an IoBinding")))?;
        let shapes = self
            .shapes
            .iter()
            .map(|dims| {
                let full: Vec<i64> = std::iter::once(batch).chain(dims.iter().copied()).map(|d| d as i64).collect();
                let what = format!("{WHAT}: shape {full:?}");
                Tensor::from_array(([full.len()], full)).map_err(Error::ort(what))
            })
            .collect::<Result<Vec<_>>>()?;
        for (k, t) in shapes.iter().enumerate() {
            b.bind_input(shape_input(k), t).map_err(Error::ort(format!("{WHAT}: binding '{}'", shape_input(k))))?;
        }
        for (spec, v) in sig.states.iter().zip(set.iter_mut()) {
            b.bind_output(spec.input.as_str(), v)
                .map_err(Error::ort(format!("{WHAT}: binding state '{}'", spec.input)))?;
        }
        run_bound(&self.session, &b, &self.run)
            .map_err(Error::ort(format!("writing zero states into the {} state buffers", set.len())))
    }
}

/// The model's input `k`: an int64 shape `[rank]`.
fn shape_input(k: usize) -> String {
    format!("shape.{k}")
}

/// The distinct dims after the batch among `sig`'s states, first seen first (a Mamba model has
/// two: the conv state's and the SSM state's).
fn distinct_dims(sig: &ModelSignature) -> Vec<Vec<usize>> {
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for s in &sig.states {
        if !shapes.contains(&s.dims) {
            shapes.push(s.dims.clone());
        }
    }
    shapes
}

fn elem(t: TensorElementType) -> Elem {
    match t {
        TensorElementType::Float16 => Elem::F16,
        TensorElementType::Bfloat16 => Elem::BF16,
        // The signature admits float32, float16 and bfloat16 states only.
        _ => Elem::F32,
    }
}

/// The zero-state model of `sig`: inputs `shape.{k}` (int64 `[1 + shapes[k].len()]`), and for
/// each state one `ConstantOfShape` whose output is named after the state's input, of its type.
/// The shapes are inputs rather than constants so that nothing is folded, and so one model
/// serves every batch size.
fn model(sig: &ModelSignature, shapes: &[Vec<usize>]) -> Result<Vec<u8>> {
    let mut g = GraphProto::new();
    g.name = "mambac_zero_states".into();
    for (k, dims) in shapes.iter().enumerate() {
        g.input.push(value_info(&shape_input(k), &ValueType::new(Elem::I64, vec![Dim::Known(dims.len() + 1)])));
    }
    for s in &sig.states {
        let Some(k) = shapes.iter().position(|d| *d == s.dims) else {
            return Err(Error::Internal(format!("no shape input for state '{}'", s.input)));
        };
        let e = elem(s.ty);
        let mut n =
            node("ConstantOfShape", "", &format!("zeros:{}", s.input), vec![shape_input(k)], vec![s.input.clone()]);
        n.attribute.push(attr_tensor("value", tensor("value", e, &[1], vec![0u8; e.size()])));
        g.node.push(n);
        let shape = std::iter::once(Dim::sym("batch")).chain(s.dims.iter().map(|&d| Dim::Known(d))).collect();
        g.output.push(value_info(&s.input, &ValueType::new(e, shape)));
    }
    model_bytes(g)
}

/// `g` as a serialised model of the standard domain at [`OPSET`].
pub(super) fn model_bytes(g: GraphProto) -> Result<Vec<u8>> {
    let mut m = ModelProto::new();
    m.ir_version = IR_VERSION;
    m.producer_name = "mambac-runtime".into();
    let mut op = OperatorSetIdProto::new();
    op.version = OPSET;
    m.opset_import.push(op);
    let name = g.name.clone();
    m.graph = Some(g).into();
    m.write_to_bytes().map_err(|e| Error::Internal(format!("serialising the model '{name}': {e}")))
}

#[cfg(test)]
mod tests {
    //! On the CPU EP (ONNX Runtime from ORT_DYLIB_PATH, as tools/test.sh sets it); the model is
    //! standard ONNX, so no op library is needed.

    use super::*;
    use crate::signature::StateSpec;
    use crate::tensor::HostTensor;

    /// Two layers whose conv states share dims but not element types (float16, bfloat16), and
    /// Mamba-2-shaped float32 SSM states.
    fn signature() -> ModelSignature {
        let spec = |input: &str, ty, dims: &[usize]| StateSpec {
            input: input.into(),
            output: input.replacen('.', "_out.", 1),
            ty,
            dims: dims.to_vec(),
        };
        ModelSignature {
            layers: 2,
            states: vec![
                spec("conv_state.0", TensorElementType::Float16, &[6, 3]),
                spec("ssm_state.0", TensorElementType::Float32, &[4, 5, 2]),
                spec("conv_state.1", TensorElementType::Bfloat16, &[6, 3]),
                spec("ssm_state.1", TensorElementType::Float32, &[4, 5, 2]),
            ],
            logits_ty: TensorElementType::Float32,
            vocab: Some(8),
            logits_positions: None,
            next_token: false,
        }
    }

    /// Host buffers of `sig`'s states at `batch` (with `dims` for the first state when given),
    /// every byte 0xFF: NaN in all three float types.
    fn poisoned(sig: &ModelSignature, batch: usize, first_dims: Option<&[usize]>) -> Vec<DynTensor> {
        sig.states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let dims = first_dims.filter(|_| i == 0).unwrap_or(&s.dims);
                let shape: Vec<usize> = std::iter::once(batch).chain(dims.iter().copied()).collect();
                let size = if s.ty == TensorElementType::Float32 { 4 } else { 2 };
                // Made by an allocator, as the session's buffers are (ORT binds only such outputs).
                let mut buffer = DynTensor::new(&ort::memory::Allocator::default(), s.ty, shape.clone()).unwrap();
                let n = shape.iter().product::<usize>() * size;
                // SAFETY: a CPU tensor of exactly `n` bytes, owned here and not shared.
                unsafe { std::ptr::write_bytes(buffer.data_ptr_mut().cast::<u8>(), 0xFF, n) };
                buffer
            })
            .collect()
    }

    #[test]
    fn writes_zeros_of_every_type_over_what_the_buffers_held_at_any_batch() {
        let sig = signature();
        assert_eq!(distinct_dims(&sig), vec![vec![6, 3], vec![4, 5, 2]]);
        let z = ZeroStates::new(&sig, Ep::Cpu).unwrap();
        for batch in [3, 1] {
            let mut set = poisoned(&sig, batch, None);
            z.fill(&sig, batch, &mut set).unwrap();
            for (s, v) in sig.states.iter().zip(&set) {
                let h = HostTensor::from_ort(&s.input, v).unwrap();
                assert_eq!(h.shape, s.shape(batch), "{}", s.input);
                assert!(h.bytes.iter().all(|&b| b == 0), "{} at batch {batch}: not all zero", s.input);
            }
        }
    }

    #[test]
    fn a_buffer_of_another_shape_is_an_error_naming_the_write() {
        let sig = signature();
        let z = ZeroStates::new(&sig, Ep::Cpu).unwrap();
        let mut set = poisoned(&sig, 2, Some(&[6, 4]));
        let e = z.fill(&sig, 2, &mut set).expect_err("refused");
        assert!(matches!(e, Error::Ort { .. }), "{e:?}");
        assert_eq!(e.to_string(), "writing zero states into the 4 state buffers");
        let why = crate::error::report(&e);
        // ORT's cause names the state (the model's output is named after it).
        assert!(why.contains("conv_state.0"), "{why}");
    }

    #[test]
    fn a_model_ort_cannot_load_is_an_error_naming_the_zero_state_session() {
        let e = ZeroStates::from_model(b"not an onnx model", vec![], Ep::Cpu).err().expect("refused");
        assert!(matches!(e, Error::Ort { .. }), "{e:?}");
        assert_eq!(e.to_string(), "cannot create the session that writes zero states");
    }
}
