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
//!
//! Its opset is the lowest whose `ConstantOfShape` makes the states' types ([`opset`]): ORT
//! releases before microsoft/onnxruntime PR #27728 register the CUDA kernel as "version 9 and
//! later", which their version matching rejects for a node of a later version (20, 21), and such
//! a node would run on the CPU EP instead. So the session is created on the CUDA EP with CPU
//! fallback disabled: a node it cannot take fails creation rather than filling host memory in
//! silence. Then ([`ZeroStates::new`]) the zeros come from the host as before this module, with a
//! warning, and [`super::StatefulSession::state_bytes`] counts them.

use mambac_compiler::emit::proto::{attr_tensor, node, tensor, value_info};
use mambac_compiler::ir::{Dim, Elem, ValueType};
use onnx_protobuf::{GraphProto, Message, ModelProto, OperatorSetIdProto};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::{DynTensor, Tensor, TensorElementType};

use super::cuda_graph::run_bound;
use super::logits::dtype_of;
use crate::environment::init_ort;
use crate::error::{Error, Result, Warning};
use crate::options::Ep;
use crate::session::with_ep;
use crate::signature::ModelSignature;
use crate::tensor::HostTensor;

/// `ConstantOfShape`-9 (resolved from opsets 9 to 19) makes float32 and float16 tensors, and has
/// a CUDA kernel of that exact version in every ORT release; bfloat16 needs `ConstantOfShape`-20.
/// ORT's CPU EP registers versions 9-19 and 20 since 1.16, so both load on ORT 1.20 (the oldest
/// this crate loads).
const OPSET_F32_F16: i64 = 19;
const OPSET_BF16: i64 = 20;
/// The IR version of ONNX 1.15, the first with opset 20; ORT 1.20 reads up to 10.
const IR_VERSION: i64 = 9;

/// The zero-state session, as the messages about it name it.
const WHAT: &str = "the session that writes zero states";

/// Where new sequences' zero states come from.
pub(super) enum ZeroStates {
    /// Written into the state buffers by a session of their own on the session's EP.
    OnEp(ZeroSession),
    /// Host zeros given as the next step's inputs ([`host_zeros`]), copied by ORT in that step:
    /// the CUDA EP when the zero-state session cannot be created there.
    FromHost,
}

impl ZeroStates {
    /// Zeros made on `ep` for `sig`'s states when the zero-state session can be created there;
    /// else, on the CUDA EP, zeros from the host and the warning saying why.
    pub(super) fn new(sig: &ModelSignature, ep: Ep) -> Result<(ZeroStates, Option<Warning>)> {
        ZeroStates::choose(ep, ZeroSession::new(sig, ep))
    }

    /// What [`Self::new`] makes of the attempt `made` on `ep`. On the CPU EP a failure is the
    /// caller's: host zeros would be no better there (the buffers are host memory), and the
    /// model is one ORT's CPU EP always takes.
    pub(super) fn choose(ep: Ep, made: Result<ZeroSession>) -> Result<(ZeroStates, Option<Warning>)> {
        match made {
            Ok(z) => Ok((ZeroStates::OnEp(z), None)),
            Err(cause) if ep == Ep::Cuda => Ok(ZeroStates::from_host(cause)),
            Err(e) => Err(e),
        }
    }

    /// Zeros from the host because the zero-state session could not be created (`cause`).
    pub(super) fn from_host(cause: Error) -> (ZeroStates, Option<Warning>) {
        (ZeroStates::FromHost, Some(Warning::ZerosFromHost { cause }))
    }
}

/// Host zeros of every state of `sig` at `batch`.
pub(super) fn host_zeros(sig: &ModelSignature, batch: usize) -> Vec<HostTensor> {
    sig.states
        .iter()
        .map(|s| {
            let n: usize = s.shape(batch).iter().product();
            HostTensor { dtype: dtype_of(s.ty), shape: s.shape(batch), bytes: vec![0u8; n * elem(s.ty).size()] }
        })
        .collect()
}

/// The zero-state session of one model's states.
pub(super) struct ZeroSession {
    session: Session,
    /// The distinct dims after the batch among the states: the model's input `shape.{k}` is the
    /// full shape `[batch, shapes[k]...]` of the states with those dims.
    shapes: Vec<Vec<usize>>,
    run: RunOptions,
}

impl ZeroSession {
    /// The zero-state session of `sig`'s states, on `ep`.
    pub(super) fn new(sig: &ModelSignature, ep: Ep) -> Result<ZeroSession> {
        let shapes = distinct_dims(sig);
        ZeroSession::from_model(&model(sig, &shapes)?, shapes, ep)
    }

    fn from_model(bytes: &[u8], shapes: Vec<Vec<usize>>, ep: Ep) -> Result<ZeroSession> {
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
        let mut b = with_ep(b, ep, false)?;
        if ep == Ep::Cuda {
            // A fill the CUDA EP does not take fails here (see the module's doc) instead of
            // running on the CPU EP into host memory that no memory check counted.
            b = b.with_disable_cpu_fallback().map_err(|e| err(e.into()))?;
        }
        let session = b.commit_from_memory(bytes).map_err(err)?;
        let run = RunOptions::new().map_err(Error::ort("run options"))?;
        Ok(ZeroSession { session, shapes, run })
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
    model_bytes(g, opset(sig))
}

/// The lowest opset whose `ConstantOfShape` makes every state type of `sig` (see
/// [`OPSET_F32_F16`]).
fn opset(sig: &ModelSignature) -> i64 {
    if sig.states.iter().any(|s| s.ty == TensorElementType::Bfloat16) {
        OPSET_BF16
    } else {
        OPSET_F32_F16
    }
}

/// `g` as a serialised model of the standard domain at `opset`.
pub(super) fn model_bytes(g: GraphProto, opset: i64) -> Result<Vec<u8>> {
    let mut m = ModelProto::new();
    m.ir_version = IR_VERSION;
    m.producer_name = "mambac-runtime".into();
    let mut op = OperatorSetIdProto::new();
    op.version = opset;
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
        let z = ZeroSession::new(&sig, Ep::Cpu).unwrap();
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

    /// The opset of the zero-state model of `sig`, read back from its bytes.
    fn opset_of(sig: &ModelSignature) -> i64 {
        let m = ModelProto::parse_from_bytes(&model(sig, &distinct_dims(sig)).unwrap()).unwrap();
        assert_eq!(m.opset_import.len(), 1);
        assert_eq!(m.opset_import[0].domain, "", "the standard domain");
        m.opset_import[0].version
    }

    /// Opset 19 (ConstantOfShape-9, which every ORT's CUDA EP matches) unless a state is
    /// bfloat16, which needs ConstantOfShape-20; each loads on the CPU EP and writes zeros.
    #[test]
    fn the_opset_is_19_for_float32_and_float16_states_and_20_with_bfloat16() {
        let mixed = signature();
        let mut f32_only = mixed.clone();
        f32_only.states.retain(|s| s.ty == TensorElementType::Float32);
        let mut no_bf16 = mixed.clone();
        no_bf16.states.retain(|s| s.ty != TensorElementType::Bfloat16);
        let mut bf16_only = mixed.clone();
        bf16_only.states.retain(|s| s.ty == TensorElementType::Bfloat16);
        for (sig, want) in [(&f32_only, 19), (&no_bf16, 19), (&bf16_only, 20), (&mixed, 20)] {
            let types: Vec<_> = sig.states.iter().map(|s| s.ty).collect();
            assert_eq!(opset_of(sig), want, "{types:?}");
            let z = ZeroSession::new(sig, Ep::Cpu).unwrap();
            let mut set = poisoned(sig, 2, None);
            z.fill(sig, 2, &mut set).unwrap();
            for (s, v) in sig.states.iter().zip(&set) {
                let h = HostTensor::from_ort(&s.input, v).unwrap();
                assert!(h.bytes.iter().all(|&b| b == 0), "{} of {types:?}: not all zero", s.input);
            }
        }
    }

    /// On the CUDA EP a zero-state session that cannot be created means zeros from the host,
    /// with a warning giving the cause; on the CPU EP it is the caller's error.
    #[test]
    fn a_failed_zero_session_falls_back_to_host_zeros_on_cuda_only() {
        let failed = || ZeroSession::from_model(b"not an onnx model", vec![], Ep::Cpu);
        let (z, w) = ZeroStates::choose(Ep::Cuda, failed()).unwrap();
        assert!(matches!(z, ZeroStates::FromHost));
        let w = w.expect("a warning").to_string();
        let head = "zero states of new sequences will be made in host memory and copied to the device at each \
                    reset: cannot create the session that writes zero states: ";
        assert!(w.starts_with(head) && w.len() > head.len(), "{w}");
        let e = ZeroStates::choose(Ep::Cpu, failed()).err().expect("refused");
        assert_eq!(e.to_string(), "cannot create the session that writes zero states");
        let (z, w) = ZeroStates::choose(Ep::Cuda, ZeroSession::new(&signature(), Ep::Cpu)).unwrap();
        assert!(matches!(z, ZeroStates::OnEp(_)) && w.is_none());
    }

    #[test]
    fn host_zeros_are_every_state_s_zero_bytes_at_the_batch() {
        let sig = signature();
        let z = host_zeros(&sig, 3);
        assert_eq!(z.len(), 4);
        for (s, t) in sig.states.iter().zip(&z) {
            assert_eq!((t.dtype, &t.shape), (dtype_of(s.ty), &s.shape(3)), "{}", s.input);
            let size = if s.ty == TensorElementType::Float32 { 4 } else { 2 };
            assert_eq!(t.bytes, vec![0u8; s.shape(3).iter().product::<usize>() * size], "{}", s.input);
        }
    }

    #[test]
    fn a_buffer_of_another_shape_is_an_error_naming_the_write() {
        let sig = signature();
        let z = ZeroSession::new(&sig, Ep::Cpu).unwrap();
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
        let e = ZeroSession::from_model(b"not an onnx model", vec![], Ep::Cpu).err().expect("refused");
        assert!(matches!(e, Error::Ort { .. }), "{e:?}");
        assert_eq!(e.to_string(), "cannot create the session that writes zero states");
    }
}
