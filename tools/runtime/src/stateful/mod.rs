//! One ONNX Runtime session of a stateful export plus the recurrent states between its steps.
//!
//! Every step goes through one [`IoBinding`]: the token ids are bound from the host, the states
//! from wherever they live, and the updated states are written into the other of two buffer sets
//! ([`buffers`]), so on the GPU the states never leave the device; only the ids go in and the
//! logits come out. One-token steps may be replayed as CUDA graphs ([`cuda_graph`]) and may run
//! on the decode graph's session ([`decode_route`]); [`open`] sets all of that up from
//! [`SessionOptions`](crate::SessionOptions). New sequences' zero states are written into the
//! buffers where they are, by a one-op-a-state session of their own on the same EP ([`zeros`]),
//! or, where the CUDA EP cannot run that session, given from the host with a warning.
//!
//! The same code runs on the CPU EP (where the tests exercise it); the CUDA path differs only in
//! which allocator makes the buffers, the EP the zeros are written by, and in copying states to
//! the host when asked for them.

mod buffers;
mod cuda_graph;
mod decode_route;
mod logits;
mod open;
mod zeros;

use mambac_op_schema::graph;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{DynTensor, DynTensorValueType, Tensor};

use self::buffers::{Current, StateSets};
use self::cuda_graph::graph_run_options;
pub use self::decode_route::{decode_graph_max_batch, DECODE_GRAPH_MAX_BATCH, MAMBA2_DECODE_GRAPH_MAX_BATCH};
use self::decode_route::{route, DecodeSession};
use self::logits::{dtype_of, extract_logits, extract_next_tokens, StepOut, Want};
pub use self::logits::{Keep, Logits};
use self::zeros::{host_zeros, ZeroStates};
use crate::error::{fail, Error, Result, Warning};
use crate::memory;
use crate::options::Ep;
use crate::shared_weights::SharedWeights;
use crate::signature::ModelSignature;
use crate::tensor::HostTensor;

/// A stateful export's session (and its decode graph's, if any) with the states of a batch of
/// sequences: [`reset`](Self::reset) or [`set_states`](Self::set_states), then
/// [`step`](Self::step) as many times as needed.
pub struct StatefulSession {
    session: Session,
    /// One-token steps go here when set (see [`Self::decode_for`]); prompts stay on `session`.
    decode: Option<DecodeSession>,
    /// `DecodeGraphChoice::On`: the decode graph at any batch size.
    decode_always: bool,
    pub sig: ModelSignature,
    binding: IoBinding,
    /// Makes the state buffers: CPU memory, or device memory on the CUDA EP.
    state_alloc: Allocator,
    /// Writes the zero states of new sequences into those buffers, on the same EP (or makes
    /// them on the host where it cannot).
    zeros: ZeroStates,
    /// Where the logits are copied to: the host.
    host_mem: MemoryInfo<'static>,
    /// The session was opened with CUDA graph capture (what [`Self::cuda_graph_capture`] says).
    opened_with_capture: bool,
    /// Capture is used: one-token steps are captured once per direction of the ping-pong and
    /// replayed; every other step runs with `skip_graph`.
    cuda_graph: bool,
    skip_graph: Option<RunOptions>,
    /// Graph ids in use so far (each new [`StateSets`] takes two fresh ones: ORT keeps a captured
    /// graph per id, and a graph is only valid for the buffers it was captured with).
    next_graph_id: u32,
    batch: usize,
    current: Current,
    state_sets: Option<StateSets>,
    /// What [`Self::open`] left out, and why.
    warnings: Vec<Warning>,
    /// Device weights the sessions were given (decode graph on the CUDA EP); declared last so
    /// that it is dropped after both sessions.
    shared: SharedWeights,
}

impl StatefulSession {
    /// A stateful session around `session` (opened by the caller, e.g. with
    /// [`crate::open_session`]) on `ep`; `cuda_graph`: it was opened with the CUDA EP's graph
    /// capture on. [`StatefulSession::open`] opens and sets up everything instead.
    pub fn new(session: Session, ep: Ep, cuda_graph: bool) -> Result<StatefulSession> {
        let sig = ModelSignature::of_session(&session)?;
        let zeros = ZeroStates::new(&sig, ep)?;
        StatefulSession::with_zeros(session, sig, ep, cuda_graph, zeros)
    }

    /// [`Self::new`] with the zero states' source (and the warning, if any, that came with it)
    /// made already.
    fn with_zeros(
        session: Session,
        sig: ModelSignature,
        ep: Ep,
        cuda_graph: bool,
        (zeros, warning): (ZeroStates, Option<Warning>),
    ) -> Result<StatefulSession> {
        let binding = session.create_binding().map_err(Error::ort("cannot create an IoBinding"))?;
        let state_alloc = match ep {
            Ep::Cpu => Allocator::default(),
            Ep::Cuda => {
                let mem = MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)
                    .map_err(Error::ort("CUDA memory info"))?;
                Allocator::new(&session, mem).map_err(Error::ort("cannot create a CUDA allocator for the states"))?
            }
        };
        let host_mem = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
            .map_err(Error::ort("CPU memory info"))?;
        // Replays need the logits' size to allocate their fixed buffer; a model that does not
        // state it runs every step the ordinary way.
        let opened_with_capture = cuda_graph;
        let cuda_graph = cuda_graph && ep == Ep::Cuda && sig.vocab.is_some();
        let skip_graph = if cuda_graph { Some(graph_run_options(-1)?) } else { None };
        let mut s = StatefulSession {
            session,
            decode: None,
            decode_always: false,
            sig,
            binding,
            state_alloc,
            zeros,
            host_mem,
            opened_with_capture,
            cuda_graph,
            skip_graph,
            next_graph_id: 1,
            batch: 0,
            current: Current::Host(vec![]),
            state_sets: None,
            warnings: warning.into_iter().collect(),
            shared: SharedWeights::default(),
        };
        s.reset(1)?;
        Ok(s)
    }

    /// What [`Self::new`] does on the CUDA EP when the zero-state session cannot be created
    /// there (`cause`): zeros from the host from now on, and a warning. For tests, which run on
    /// the CPU EP, where that session is always created; not part of the API.
    #[doc(hidden)]
    pub fn fall_back_to_host_zeros(&mut self, cause: Error) {
        let (zeros, warning) = ZeroStates::from_host(cause);
        self.zeros = zeros;
        self.warnings.extend(warning);
    }

    /// Whether the session was opened with CUDA graph capture on.
    pub fn cuda_graph_capture(&self) -> bool {
        self.opened_with_capture
    }

    /// What [`StatefulSession::open`] (or [`Self::new`]) left out, and why.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The number of sequences the states are for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Host memory the session's own states of `batch` sequences take: on the CPU EP the two
    /// ping-pong buffer sets (stateful/buffers.rs), which [`Self::reset`] writes its zeros
    /// into; on the CUDA EP none (the buffers and the zeros are device memory), except the
    /// zeros of a reset where they are made on the host (see [`Warning::ZerosFromHost`]).
    /// States given to [`Self::set_states`] take a host copy more until the next step.
    pub fn state_bytes(&self, batch: usize) -> u128 {
        host_state_bytes(
            self.sig.state_bytes_per_sequence(),
            batch,
            self.state_alloc.memory_info().is_cpu_accessible(),
            matches!(self.zeros, ZeroStates::FromHost),
        )
    }

    /// Host memory one step of `batch` x `len` tokens takes beyond the states: the ids, the
    /// graph's logits and the float32 copy of the positions kept.
    pub fn step_bytes(&self, batch: usize, len: usize, keep: Keep) -> u128 {
        let tokens = (batch as u128).saturating_mul(len as u128);
        let kept = match keep {
            Keep::Last => batch,
            Keep::All => batch.saturating_mul(len),
        } as u128;
        let vocab = self.sig.vocab.unwrap_or(0) as u128;
        tokens.saturating_mul(8).saturating_add(self.sig.logits_bytes(batch, len)).saturating_add(kept * vocab * 4)
    }

    /// Zero states for `batch` new sequences, written into the buffers the next step reads by
    /// the zero-state session on the session's own EP (stateful/zeros.rs): on the CUDA EP they
    /// are made on the device, and no host memory is used or copied (unless they cannot be,
    /// see [`Warning::ZerosFromHost`]).
    pub fn reset(&mut self, batch: usize) -> Result<()> {
        if batch == 0 {
            fail!(InvalidArgument, "reset: a batch of 0 sequences (at least 1 is needed)");
        }
        self.check_reset(batch, memory::available())?;
        if matches!(self.zeros, ZeroStates::FromHost) {
            return self.set_states(&host_zeros(&self.sig, batch));
        }
        // The states being replaced may live in the buffers about to be remade (another batch
        // size): let go of them first. Until the zeros are written there are no states, and a
        // step says so.
        self.current = Current::Host(Vec::new());
        self.batch = batch;
        self.ensure_state_sets()?;
        let sets = self.state_sets.as_mut().expect("made above");
        let ZeroStates::OnEp(z) = &self.zeros else {
            return Err(Error::Internal("zeros from the host are given above".into()));
        };
        z.fill(&self.sig, batch, &mut sets.sets[0])?;
        self.current = Current::Set(0);
        Ok(())
    }

    /// Whether `avail` (see [`memory::available`]) holds `batch` sequences' states and the
    /// first one-token step's token ids and logits: a reset makes the buffers of a new batch
    /// size, so that step does not check its own (see [`Self::run_step`]).
    fn check_reset(&self, batch: usize, avail: Option<memory::Available>) -> Result<()> {
        let need = self.state_bytes(batch).saturating_add(self.step_bytes(batch, 1, Keep::Last));
        memory::check_against(need, avail, || {
            let (s, layers) = (if batch == 1 { "" } else { "s" }, self.sig.layers);
            let ls = if layers == 1 { "" } else { "s" };
            format!("the states of {batch} sequence{s} ({layers} layer{ls}) and a one-token step's token ids and logits need")
        })
    }

    /// Replaces the states (from the host; bound as inputs they are copied to the device by ORT
    /// on the next step, once). The batch size becomes theirs.
    pub fn set_states(&mut self, states: &[HostTensor]) -> Result<()> {
        if states.len() != self.sig.states.len() {
            fail!(InvalidArgument, "expected {} state tensors, got {}", self.sig.states.len(), states.len());
        }
        let batch = states.first().map_or(0, |t| t.shape.first().copied().unwrap_or(0));
        if batch == 0 {
            fail!(InvalidArgument, "states with an empty batch");
        }
        let mut current = Vec::with_capacity(states.len());
        for (spec, t) in self.sig.states.iter().zip(states) {
            if t.shape != spec.shape(batch) || t.dtype != dtype_of(spec.ty) {
                fail!(
                    InvalidArgument,
                    "state '{}': expected {:?} {:?}, got {:?} {:?}",
                    spec.input,
                    dtype_of(spec.ty),
                    spec.shape(batch),
                    t.dtype,
                    t.shape
                );
            }
            let v = t.to_ort(&spec.input)?;
            current.push(v.downcast::<DynTensorValueType>().map_err(Error::ort(format!("state '{}'", spec.input)))?);
        }
        self.batch = batch;
        self.current = Current::Host(current);
        Ok(())
    }

    /// The current states on the host, in `sig.states` order.
    pub fn states_to_host(&self) -> Result<Vec<HostTensor>> {
        self.sig
            .states
            .iter()
            .zip(self.current_states())
            .map(|(spec, v)| {
                let what = format!("state '{}'", spec.input);
                if v.memory_info().is_cpu_accessible() {
                    HostTensor::from_ort(&what, v)
                } else {
                    let h =
                        v.to(AllocationDevice::CPU, 0).map_err(Error::ort(format!("copying {what} to the host")))?;
                    HostTensor::from_ort(&what, &h)
                }
            })
            .collect()
    }

    /// Runs `len` tokens of each of the `batch` sequences (`ids` row-major `[batch, len]`) from the
    /// current states, keeps the updated states, and returns the logits asked for.
    pub fn step(&mut self, ids: &[i64], len: usize, keep: Keep) -> Result<Logits> {
        match self.run_step(ids, len, Want::Logits(keep))? {
            StepOut::Logits(l) => Ok(l),
            StepOut::Tokens(_) => Err(Error::Internal("a step asked for logits returned token ids".into())),
        }
    }

    /// Like [`Self::step`], but returns each sequence's greedy next token (the most likely at
    /// its last position, the first on ties). A model with the `next_token` output picks it in
    /// the graph and only `batch` ids leave the device; an older export's logits are copied out
    /// and picked on the host. The graph picks -1 for a sequence whose logits hold a NaN or an
    /// infinity: that is [`Error::NonFiniteLogits`] naming the sequence (an export from before
    /// the check picks some index instead; the host pick of one without `next_token` does not
    /// look, as before).
    pub fn step_greedy(&mut self, ids: &[i64], len: usize) -> Result<Vec<i64>> {
        if !self.sig.next_token {
            let logits = self.step(ids, len, Keep::Last)?;
            return Ok((0..logits.batch).map(|b| crate::argmax(logits.last(b)) as i64).collect());
        }
        match self.run_step(ids, len, Want::NextTokens)? {
            StepOut::Tokens(t) => picked_tokens(t, len),
            StepOut::Logits(_) => Err(Error::Internal("a step asked for token ids returned logits".into())),
        }
    }

    /// Whether [`Self::step_greedy`] picks on the device (the model has `next_token`).
    pub fn greedy_in_graph(&self) -> bool {
        self.sig.next_token
    }

    fn run_step(&mut self, ids: &[i64], len: usize, want: Want) -> Result<StepOut> {
        let batch = self.batch;
        if matches!(&self.current, Current::Host(v) if v.is_empty()) {
            fail!(
                InvalidArgument,
                "no states to run from: the last reset or set_states failed; call one of them again"
            );
        }
        if len == 0 || ids.len() != batch * len {
            fail!(InvalidArgument, "a step needs batch {batch} × len {len} token ids, got {}", ids.len());
        }
        let keep = match want {
            Want::Logits(k) => k,
            // The logits stay where the graph made them; only the ids are copied.
            Want::NextTokens => Keep::Last,
        };
        // Prompts (any length) and the first step at a batch size; later one-token steps reuse
        // what those allocated. A reset checks its batch's first one-token step itself.
        if len > 1 || self.state_sets.as_ref().is_none_or(|s| s.batch != batch) {
            memory::check(self.step_bytes(batch, len, keep), || {
                format!("a step of {batch} sequences x {len} tokens (token ids and logits) needs")
            })?;
        }
        self.ensure_state_sets()?;
        let ids_t = Tensor::from_array(([batch, len], ids.to_vec())).map_err(Error::ort(graph::INPUT_IDS))?;
        let (read, write) = match self.current {
            Current::Set(s) => (Some(s), 1 - s),
            Current::Host(_) => (None, 0),
        };
        // A one-token step from the session's own buffers has the fixed shape and addresses a
        // captured graph replays; a prompt (any length) or states just given from the host run
        // as ordinary steps.
        let replay = read.filter(|_| len == 1 && self.cuda_graph);
        let use_decode = len == 1 && self.decode_for(batch);
        let (session, binding) = route(&mut self.decode, &mut self.session, &mut self.binding, use_decode);

        let bind_err = |name: &str| Error::ort(format!("binding '{name}'"));
        let sets = self.state_sets.as_mut().expect("made above");
        let out = if let Some(s) = replay {
            let g = sets.graph.as_mut().expect("graph buffers exist when cuda_graph is on");
            g.replay(session, s, &ids_t, self.sig.logits_ty, want)?
        } else {
            for (spec, v) in self.sig.states.iter().zip(sets.sets[write].iter_mut()) {
                binding.bind_output(spec.output.as_str(), v).map_err(bind_err(&spec.output))?;
            }
            let inputs: &[DynTensor] = match (&self.current, read) {
                (Current::Host(v), _) => v,
                (Current::Set(_), Some(s)) => &sets.sets[s],
                (Current::Set(_), None) => unreachable!(),
            };
            for (spec, v) in self.sig.states.iter().zip(inputs) {
                binding.bind_input(spec.input.as_str(), v).map_err(bind_err(&spec.input))?;
            }
            binding.bind_input(graph::INPUT_IDS, &ids_t).map_err(bind_err(graph::INPUT_IDS))?;
            // Bound afresh every step: ORT reuses an output it filled before, and the logits'
            // shape changes between a prefill and a decode step.
            // The output not asked for stays where the graph made it (the device on the CUDA
            // EP); `next_token` is bound too when the model has it, so that no earlier step's
            // value of it (of another shape) is reused.
            let (logits_mem, next_mem) = match want {
                Want::Logits(_) => (&self.host_mem, self.state_alloc.memory_info()),
                Want::NextTokens => (self.state_alloc.memory_info(), &self.host_mem),
            };
            binding.bind_output_to_device(graph::LOGITS, logits_mem).map_err(bind_err(graph::LOGITS))?;
            if self.sig.next_token {
                binding.bind_output_to_device(graph::NEXT_TOKEN, next_mem).map_err(bind_err(graph::NEXT_TOKEN))?;
            }
            let outs = match &self.skip_graph {
                Some(ro) => session.run_binding_with_options(binding, ro),
                None => session.run_binding(binding),
            }
            .map_err(Error::ort("running the model"))?;
            match want {
                Want::Logits(keep) => {
                    let Some(v) = outs.get(graph::LOGITS) else { fail!(BadOutput, "the model returned no 'logits'") };
                    StepOut::Logits(extract_logits(v, self.sig.logits_ty, keep)?)
                }
                Want::NextTokens => {
                    let Some(v) = outs.get(graph::NEXT_TOKEN) else {
                        fail!(BadOutput, "the model returned no 'next_token'")
                    };
                    StepOut::Tokens(extract_next_tokens(v)?)
                }
            }
        };
        self.current = Current::Set(write);
        let returned = match &out {
            StepOut::Logits(l) => l.batch,
            StepOut::Tokens(t) => t.len(),
        };
        if returned != batch {
            fail!(BadOutput, "the model returned outputs for batch {returned}, expected {batch}");
        }
        Ok(out)
    }
}

/// The graph's picks of a step of `len` tokens, each sequence's last: a -1 (the graph's mark of
/// non-finite logits) is the error naming its sequence.
fn picked_tokens(picks: Vec<i64>, len: usize) -> Result<Vec<i64>> {
    match picks.iter().position(|&t| t < 0) {
        Some(row) => Err(Error::NonFiniteLogits { row, position: len - 1 }),
        None => Ok(picks),
    }
}

/// [`StatefulSession::state_bytes`]: `per_sequence` bytes of states for each of `batch`
/// sequences, twice (the buffer sets) when they are host memory (`on_host`), and once more when
/// a reset's zeros are made on the host (`zeros_from_host`).
fn host_state_bytes(per_sequence: u128, batch: usize, on_host: bool, zeros_from_host: bool) -> u128 {
    let copies = if on_host { 2 } else { 0 } + u128::from(zeros_from_host);
    per_sequence.saturating_mul(batch as u128).saturating_mul(copies)
}

#[cfg(test)]
mod tests {
    use mambac_compiler::emit::proto::{attr_int, i64_tensor, node, value_info};
    use mambac_compiler::ir::{Dim, Elem, ValueType};
    use onnx_protobuf::GraphProto;

    use super::*;

    /// A stateful model in standard ONNX (no op library): each state output is its input, and
    /// every logit of a token is its id. States `[batch, 2, 3]` and `[batch, 2, 4]`, vocab 4.
    fn toy_session() -> StatefulSession {
        let ty = |e, dims: &[Dim]| ValueType::new(e, dims.to_vec());
        let (b, t) = (Dim::sym("batch"), Dim::sym("seqlen"));
        let mut g = GraphProto::new();
        g.input.push(value_info(graph::INPUT_IDS, &ty(Elem::I64, &[b.clone(), t.clone()])));
        g.output.push(value_info(graph::LOGITS, &ty(Elem::F32, &[b.clone(), t, Dim::Known(4)])));
        for (kind, w) in [("conv_state", 3), ("ssm_state", 4)] {
            let state = ty(Elem::F32, &[b.clone(), Dim::Known(2), Dim::Known(w)]);
            g.input.push(value_info(&format!("{kind}.0"), &state));
            g.output.push(value_info(&format!("{kind}_out.0"), &state));
            g.node.push(node("Identity", "", kind, vec![format!("{kind}.0")], vec![format!("{kind}_out.0")]));
        }
        g.initializer.push(i64_tensor("axes", &[2]));
        g.initializer.push(i64_tensor("to_vocab", &[1, 1, 4]));
        let mut cast = node("Cast", "", "cast", vec![graph::INPUT_IDS.into()], vec!["ids_f".into()]);
        cast.attribute.push(attr_int("to", 1));
        g.node.push(cast);
        g.node.push(node("Unsqueeze", "", "unsqueeze", vec!["ids_f".into(), "axes".into()], vec!["ids_3d".into()]));
        g.node.push(node("Expand", "", "expand", vec!["ids_3d".into(), "to_vocab".into()], vec![graph::LOGITS.into()]));
        let env = crate::environment::init_ort().unwrap();
        let session = Session::builder(env).unwrap().commit_from_memory(&zeros::model_bytes(g, 19).unwrap()).unwrap();
        StatefulSession::new(session, Ep::Cpu, false).unwrap()
    }

    /// A reset whose zeros cannot be written (here: the zero-state session of other state
    /// shapes) leaves no states, and a step says so instead of running from what was there;
    /// the next reset that works makes the session usable again.
    #[test]
    fn a_step_after_a_failed_reset_says_there_are_no_states() {
        let mut s = toy_session();
        let mut other = s.sig.clone();
        other.states[0].dims = vec![2, 5];
        let other = ZeroStates::OnEp(zeros::ZeroSession::new(&other, Ep::Cpu).unwrap());
        let good = std::mem::replace(&mut s.zeros, other);
        s.step(&[2], 1, Keep::Last).expect("a step from the states new() made");
        let e = s.reset(2).expect_err("zeros of another shape");
        assert_eq!(e.to_string(), "writing zero states into the 2 state buffers");
        let e = s.step(&[1, 3], 1, Keep::Last).expect_err("no states");
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(e.to_string(), "no states to run from: the last reset or set_states failed; call one of them again");
        s.zeros = good;
        s.reset(2).unwrap();
        assert!(s.states_to_host().unwrap().iter().all(|t| t.bytes.iter().all(|&b| b == 0)));
        let l = s.step(&[1, 3], 1, Keep::Last).unwrap();
        assert_eq!((l.last(0), l.last(1)), (&[1.0; 4][..], &[3.0; 4][..]));
    }

    /// The zeros of a reset are written into a buffer set: no copy of their own, on either EP;
    /// zeros from the host are one copy more (on the CUDA EP the only one).
    /// The graph's -1 (non-finite logits) is the error naming the first such row and the
    /// step's last position; ids of 0 and up pass as they are.
    #[test]
    fn a_minus_one_pick_is_the_error_naming_its_row() {
        assert_eq!(picked_tokens(vec![0, 7, 1023], 1).unwrap(), vec![0, 7, 1023]);
        let e = picked_tokens(vec![5, -1, -1], 4).unwrap_err();
        assert!(matches!(e, Error::NonFiniteLogits { row: 1, position: 3 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the logits of batch row 1 are not finite (NaN or infinity) at position 3 of this step: the model \
             produced no usable token"
        );
    }

    #[test]
    fn host_state_memory_is_the_two_buffer_sets_on_the_host_and_none_on_the_device() {
        assert_eq!(host_state_bytes(1000, 5, true, false), 2 * 5 * 1000);
        assert_eq!(host_state_bytes(1000, 5, false, false), 0);
        assert_eq!(host_state_bytes(1000, 5, false, true), 5 * 1000);
        assert_eq!(host_state_bytes(1000, 5, true, true), 3 * 5 * 1000);
        assert_eq!(host_state_bytes(u128::MAX / 2, 3, true, false), u128::MAX);
    }

    /// A reset at a new batch size counts the first one-token step's ids and logits with the
    /// states (that step, on buffers the reset made, checks nothing itself): refused with 1
    /// byte less than both need, though the states alone fit.
    #[test]
    fn a_reset_checks_the_states_and_the_first_one_token_step() {
        let mut s = toy_session();
        let batch = 6;
        // States [6, 2, 3] and [6, 2, 4] float32, two host buffer sets: 2 * 6 * 56 bytes.
        let states = 2 * 6 * (6 + 8) * 4;
        assert_eq!(s.state_bytes(batch), states);
        // Ids 6 * 8, logits [6, 1, 4] float32 twice (the graph's and the copy kept).
        let step = 6 * 8 + 2 * 6 * 4 * 4;
        assert_eq!(s.step_bytes(batch, 1, Keep::Last), step);
        let avail = |bytes| Some(memory::Available { bytes, source: "a test's figure".into() });
        let e = s.check_reset(batch, avail(states + step - 1)).expect_err("1 byte short");
        assert_eq!(
            e.to_string(),
            "the states of 6 sequences (1 layer) and a one-token step's token ids and logits need 912 B of memory, \
             more than the 911 B available (a test's figure)"
        );
        let Error::OutOfMemory { need, .. } = e else { unreachable!() };
        assert_eq!(need, states + step);
        s.check_reset(batch, avail(states + step)).unwrap();
        // With zeros from the host, their copy counts too.
        s.fall_back_to_host_zeros(Error::Internal("forced".into()));
        let e = s.check_reset(1, avail(3 * 56 + 8 + 2 * 4 * 4 - 1)).expect_err("1 byte short");
        assert_eq!(
            e.to_string(),
            "the states of 1 sequence (1 layer) and a one-token step's token ids and logits need 208 B of memory, \
             more than the 207 B available (a test's figure)"
        );
    }
}
