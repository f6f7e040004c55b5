//! One ONNX Runtime session of a stateful export plus the recurrent states between its steps.
//!
//! Every step goes through one [`IoBinding`]: the token ids are bound from the host, the states
//! from wherever they live, and the updated states are written into a second set of buffers of
//! the same shapes, allocated once where the EP wants them (CPU memory, or CUDA device memory on
//! the CUDA EP). After the step the two sets swap roles ("ping-pong"), so a decode loop allocates
//! nothing and on the GPU the states never leave the device; only the ids go in and the logits
//! come out. Two sets rather than one because ORT may write a state output while the same layer's
//! kernel still reads its input: aliasing them is not allowed.
//!
//! The same code runs on the CPU EP (where the tests exercise it); the CUDA path differs only in
//! which allocator makes the buffers and in copying states to the host when asked for them.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{DynTensor, DynTensorValueType, Tensor, TensorElementType};
use safetensors::Dtype;

use super::memory;
use super::signature::ModelSignature;
use crate::generation::shared_weights::SharedWeights;
use crate::runtime::{decode_graph_for, open_generation_session, DecodeGraphChoice, Ep, GraphOptions, SessionOptions};
use crate::tensor_io::HostTensor;

/// Which positions' logits a step copies out (a 512-token prefill of a 50k vocabulary at batch 8
/// is 800 MB of logits, of which generation needs the last row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Last,
    // Every position: what the tests compare with the reference.
    #[cfg_attr(not(test), allow(dead_code))]
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

/// The two state buffer sets of one batch size, made once by the session's allocator: each step
/// reads one and writes the other. Keeping them for the session's life (rather than allocating a
/// spare per step) gives every buffer a fixed address, which a captured CUDA graph needs.
struct StateSets {
    batch: usize,
    sets: [Vec<DynTensor>; 2],
    /// Decode steps replayed as CUDA graphs (CUDA EP with graph capture on).
    graph: Option<GraphIo>,
}

/// The rest of a captured decode step's fixed addresses: the token ids and the logits live in
/// device buffers of their own, copied in and out around each replay; graph `first_id + s` is the
/// step that reads set `s`.
struct GraphIo {
    ids: Tensor<i64>,
    logits: DynTensor,
    runs: [RunOptions; 2],
    /// The replay bindings, made once: `bindings[s]` reads set `s`, writes set `1 - s`, the ids
    /// and the logits. Rebinding ~2 x layers tensors every step cost the host more than a
    /// replayed 2.8b step's whole GPU time at batch 8 (BENCHMARKS.md).
    bindings: [IoBinding; 2],
    /// Where the logits land on the host (one buffer, reused).
    host_logits: DynTensor,
}

/// Where the states the next step reads are.
enum Current {
    /// Given by the caller (zeros for new sequences, or stacked prefills), in host memory.
    Host(Vec<DynTensor>),
    /// Set `s` of [`StateSets`].
    Set(usize),
}

/// The decode graph's session (`mambac export --decode-graph`): runs the one-token steps, on the
/// same state buffers as the main session.
struct DecodeSession {
    session: Session,
    binding: IoBinding,
}

/// Largest batch whose one-token steps `--decode-graph auto` runs on the decode graph. Measured
/// on the H200 (2.8b float16, BENCHMARKS.md): batch 1 1.40-1.48x faster than the general graph,
/// batch 8 0.74-1.03x (its split-K GEMVs serve 8 rows at 1.1 TB/s); batches 2-7 are not measured
/// and 4 splits the difference.
pub const DECODE_GRAPH_MAX_BATCH: usize = 4;

pub struct StatefulSession {
    session: Session,
    /// One-token steps go here when set (see [`Self::decode_for`]); prompts stay on `session`.
    decode: Option<DecodeSession>,
    /// `--decode-graph on`: the decode graph at any batch size.
    decode_always: bool,
    pub sig: ModelSignature,
    binding: IoBinding,
    /// Makes the state buffers: CPU memory, or device memory on the CUDA EP.
    state_alloc: Allocator,
    /// Where the logits are copied to: the host.
    host_mem: MemoryInfo<'static>,
    /// The session was created with CUDA graph capture: one-token steps are captured once per
    /// direction of the ping-pong and replayed; every other step runs with `skip_graph`.
    cuda_graph: bool,
    skip_graph: Option<RunOptions>,
    /// Graph ids in use so far (each new [`StateSets`] takes two fresh ones: ORT keeps a captured
    /// graph per id, and a graph is only valid for the buffers it was captured with).
    next_graph_id: u32,
    batch: usize,
    current: Current,
    state_sets: Option<StateSets>,
    /// Device weights the sessions were given (decode graph on the CUDA EP); declared last so
    /// that it is dropped after both sessions.
    shared: SharedWeights,
}

impl StatefulSession {
    /// `cuda_graph`: the session was opened with the CUDA EP's graph capture on
    /// ([`crate::runtime::open_generation_session`] says whether it could).
    pub fn new(session: Session, ep: Ep, cuda_graph: bool) -> Result<StatefulSession> {
        let sig = ModelSignature::of_session(&session)?;
        let binding = session.create_binding().map_err(|e| anyhow!("cannot create an IoBinding: {e}"))?;
        let state_alloc = match ep {
            Ep::Cpu => Allocator::default(),
            Ep::Cuda => {
                let mem = MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default)
                    .map_err(|e| anyhow!("CUDA memory info: {e}"))?;
                Allocator::new(&session, mem)
                    .map_err(|e| anyhow!("cannot create a CUDA allocator for the states: {e}"))?
            }
        };
        let host_mem = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
            .map_err(|e| anyhow!("CPU memory info: {e}"))?;
        // Replays need the logits' size to allocate their fixed buffer; a model that does not
        // state it runs every step the ordinary way.
        let cuda_graph = cuda_graph && ep == Ep::Cuda && sig.vocab.is_some();
        let skip_graph = if cuda_graph { Some(graph_run_options(-1)?) } else { None };
        let mut s = StatefulSession {
            session,
            decode: None,
            decode_always: false,
            sig,
            binding,
            state_alloc,
            host_mem,
            cuda_graph,
            skip_graph,
            next_graph_id: 1,
            batch: 0,
            current: Current::Host(vec![]),
            state_sets: None,
            shared: SharedWeights::default(),
        };
        s.reset(1)?;
        Ok(s)
    }

    /// Runs one-token steps on `decode` (a session of the decode graph, opened like the main one,
    /// CUDA graph capture included), after checking it has the same states and logits. See
    /// [`open_stateful`].
    pub fn with_decode_session(mut self, decode: Session) -> Result<StatefulSession> {
        let sig = ModelSignature::of_session(&decode)?;
        let names =
            |s: &ModelSignature| s.states.iter().map(|t| (t.input.clone(), t.output.clone(), t.ty)).collect::<Vec<_>>();
        if names(&sig) != names(&self.sig) || sig.logits_ty != self.sig.logits_ty || sig.vocab != self.sig.vocab {
            bail!("the decode graph's states or logits differ from the model's (exported from another checkpoint or dtype?)");
        }
        let binding =
            decode.create_binding().map_err(|e| anyhow!("cannot create an IoBinding for the decode graph: {e}"))?;
        self.decode = Some(DecodeSession { session: decode, binding });
        // Replay bindings are made for the session that runs one-token steps: make them anew.
        if matches!(self.current, Current::Set(_)) {
            self.set_states(&self.states_to_host()?)?;
        }
        self.state_sets = None;
        Ok(self)
    }

    /// Whether one-token steps run on a decode graph (at the current batch size).
    pub fn has_decode_graph(&self) -> bool {
        self.decode_for(self.batch)
    }

    /// Whether one-token steps of `batch` sequences run on the decode graph: up to
    /// [`DECODE_GRAPH_MAX_BATCH`] unless it was asked for (`--decode-graph on`).
    fn decode_for(&self, batch: usize) -> bool {
        self.decode.is_some() && (self.decode_always || batch <= DECODE_GRAPH_MAX_BATCH)
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Host memory the states of `batch` sequences take: the zeros (or stacked prefills) given
    /// from the host, and on the CPU EP the two buffer sets as well.
    pub fn state_bytes(&self, batch: usize) -> u128 {
        let copies = if self.state_alloc.memory_info().is_cpu_accessible() { 3 } else { 1 };
        self.sig.state_bytes_per_sequence().saturating_mul(batch as u128).saturating_mul(copies)
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

    /// Zero states for `batch` new sequences.
    pub fn reset(&mut self, batch: usize) -> Result<()> {
        memory::check(self.state_bytes(batch), || {
            let s = if batch == 1 { "" } else { "s" };
            format!("the states of {batch} sequence{s} ({} layers) need", self.sig.layers)
        })?;
        let zeros: Vec<HostTensor> = self
            .sig
            .states
            .iter()
            .map(|s| {
                let n: usize = s.shape(batch).iter().product();
                HostTensor { dtype: dtype_of(s.ty), shape: s.shape(batch), bytes: vec![0u8; n * elem_size(s.ty)] }
            })
            .collect();
        self.set_states(&zeros)
    }

    /// Replaces the states (from the host; bound as inputs they are copied to the device by ORT
    /// on the next step, once). The batch size becomes theirs.
    pub fn set_states(&mut self, states: &[HostTensor]) -> Result<()> {
        if states.len() != self.sig.states.len() {
            bail!("expected {} state tensors, got {}", self.sig.states.len(), states.len());
        }
        let batch = states.first().map_or(0, |t| t.shape.first().copied().unwrap_or(0));
        if batch == 0 {
            bail!("states with an empty batch");
        }
        let mut current = Vec::with_capacity(states.len());
        for (spec, t) in self.sig.states.iter().zip(states) {
            if t.shape != spec.shape(batch) || t.dtype != dtype_of(spec.ty) {
                bail!(
                    "state '{}': expected {:?} {:?}, got {:?} {:?}",
                    spec.input,
                    dtype_of(spec.ty),
                    spec.shape(batch),
                    t.dtype,
                    t.shape
                );
            }
            let v = t.to_ort(&spec.input)?;
            current.push(v.downcast::<DynTensorValueType>().map_err(|e| anyhow!("state '{}': {e}", spec.input))?);
        }
        self.batch = batch;
        self.current = Current::Host(current);
        Ok(())
    }

    fn current_states(&self) -> &[DynTensor] {
        match &self.current {
            Current::Host(v) => v,
            Current::Set(s) => &self.state_sets.as_ref().expect("Current::Set implies state sets").sets[*s],
        }
    }

    /// The current states on the host, in `sig.states` order.
    pub fn states_to_host(&self) -> Result<Vec<HostTensor>> {
        self.sig
            .states
            .iter()
            .zip(self.current_states())
            .map(|(spec, v)| {
                if v.memory_info().is_cpu_accessible() {
                    host_of(&spec.input, v)
                } else {
                    let h = v
                        .to(AllocationDevice::CPU, 0)
                        .map_err(|e| anyhow!("copying state '{}' to the host: {e}", spec.input))?;
                    host_of(&spec.input, &h)
                }
            })
            .collect()
    }

    /// The state buffer sets for the current batch size, made on first use (and again when the
    /// batch size changes).
    fn ensure_state_sets(&mut self) -> Result<()> {
        let batch = self.batch;
        if self.state_sets.as_ref().is_some_and(|s| s.batch == batch) {
            return Ok(());
        }
        if matches!(self.current, Current::Set(_)) {
            // The states live in the sets about to be replaced: set_states always comes first
            // when the batch size changes, so this does not happen.
            bail!("internal error: the batch size changed while the states were in the session's buffers");
        }
        // Free the old sets before making the new ones (peak memory). Their graphs stay captured
        // in ORT under ids never used again. The sets come from the session's CUDA pool, as do
        // the graphs' own buffers: a captured graph stays valid because these sets are freed only
        // here, when its ids are retired.
        self.state_sets = None;
        // The per-step bindings still hold the old sets' values: let go of them too.
        self.binding.clear();
        if let Some(d) = self.decode.as_mut() {
            d.binding.clear();
        }
        let make_set = |alloc: &Allocator| -> Result<Vec<DynTensor>> {
            self.sig
                .states
                .iter()
                .map(|s| {
                    DynTensor::new(alloc, s.ty, s.shape(batch))
                        .map_err(|e| anyhow!("allocating state '{}': {e}", s.output))
                })
                .collect()
        };
        let mut sets = [make_set(&self.state_alloc)?, make_set(&self.state_alloc)?];
        let graph = if self.cuda_graph {
            let vocab =
                self.sig.vocab.context("CUDA graphs need the logits' vocabulary size in the model's signature")?;
            let first = self.next_graph_id;
            self.next_graph_id += 2;
            let ids = Tensor::<i64>::new(&self.state_alloc, [batch, 1])
                .map_err(|e| anyhow!("allocating the device token ids: {e}"))?;
            let mut logits = DynTensor::new(&self.state_alloc, self.sig.logits_ty, [batch, 1, vocab])
                .map_err(|e| anyhow!("allocating the device logits: {e}"))?;
            // One-token steps run on the decode graph's session when there is one.
            let session = match &self.decode {
                Some(d) if self.decode_for(batch) => &d.session,
                _ => &self.session,
            };
            let bind_err = |name: &str, e: ort::Error| anyhow!("binding '{name}': {e}");
            let mut bind = |s: usize| -> Result<IoBinding> {
                let mut b = session.create_binding().map_err(|e| anyhow!("cannot create an IoBinding: {e}"))?;
                let (lo, hi) = sets.split_at_mut(1);
                let (read, write) = if s == 0 { (&lo[0], &mut hi[0]) } else { (&hi[0], &mut lo[0]) };
                for (spec, v) in self.sig.states.iter().zip(read.iter()) {
                    b.bind_input(spec.input.as_str(), v).map_err(|e| bind_err(&spec.input, e))?;
                }
                for (spec, v) in self.sig.states.iter().zip(write.iter_mut()) {
                    b.bind_output(spec.output.as_str(), v).map_err(|e| bind_err(&spec.output, e))?;
                }
                b.bind_input("input_ids", &ids).map_err(|e| bind_err("input_ids", e))?;
                b.bind_output("logits", &mut logits).map_err(|e| bind_err("logits", e))?;
                Ok(b)
            };
            let bindings = [bind(0)?, bind(1)?];
            let host_logits = DynTensor::new(&Allocator::default(), self.sig.logits_ty, [batch, 1, vocab])
                .map_err(|e| anyhow!("allocating the host logits: {e}"))?;
            let runs = [graph_run_options(first as i64)?, graph_run_options(first as i64 + 1)?];
            Some(GraphIo { ids, logits, runs, bindings, host_logits })
        } else {
            None
        };
        self.state_sets = Some(StateSets { batch, sets, graph });
        Ok(())
    }

    /// Runs `len` tokens of each of the `batch` sequences (`ids` row-major `[batch, len]`) from the
    /// current states, keeps the updated states, and returns the logits asked for.
    pub fn step(&mut self, ids: &[i64], len: usize, keep: Keep) -> Result<Logits> {
        let batch = self.batch;
        if len == 0 || ids.len() != batch * len {
            bail!("a step needs batch {batch} × len {len} token ids, got {}", ids.len());
        }
        // Prompts (any length) and the first step at a batch size; later one-token steps reuse
        // what those allocated.
        if len > 1 || self.state_sets.as_ref().is_none_or(|s| s.batch != batch) {
            memory::check(self.step_bytes(batch, len, keep), || {
                format!("a step of {batch} sequences x {len} tokens (token ids and logits) needs")
            })?;
        }
        self.ensure_state_sets()?;
        let ids_t = Tensor::from_array(([batch, len], ids.to_vec())).map_err(|e| anyhow!("input_ids: {e}"))?;
        let (read, write) = match self.current {
            Current::Set(s) => (Some(s), 1 - s),
            Current::Host(_) => (None, 0),
        };
        // A one-token step from the session's own buffers has the fixed shape and addresses a
        // captured graph replays; a prompt (any length) or states just given from the host run
        // as ordinary steps.
        let replay = read.filter(|_| len == 1 && self.cuda_graph);
        // One-token steps run on the decode graph when there is one (its nodes need seqlen 1).
        let use_decode = len == 1 && self.decode_for(batch);
        let (session, binding) = match &mut self.decode {
            Some(d) if use_decode => (&mut d.session, &mut d.binding),
            _ => (&mut self.session, &mut self.binding),
        };

        let bind_err = |name: &str, e: ort::Error| anyhow!("binding '{name}': {e}");
        let sets = self.state_sets.as_mut().expect("made above");
        let logits = if let Some(s) = replay {
            let g = sets.graph.as_mut().expect("graph buffers exist when cuda_graph is on");
            ids_t.copy_into(&mut g.ids).map_err(|e| anyhow!("copying the token ids to the device: {e}"))?;
            run_bound(session, &g.bindings[s], &g.runs[s]).context("running the model (CUDA graph)")?;
            g.logits.copy_into(&mut g.host_logits).map_err(|e| anyhow!("copying the logits to the host: {e}"))?;
            extract_logits(&g.host_logits, self.sig.logits_ty, keep)?
        } else {
            for (spec, v) in self.sig.states.iter().zip(sets.sets[write].iter_mut()) {
                binding.bind_output(spec.output.as_str(), v).map_err(|e| bind_err(&spec.output, e))?;
            }
            let inputs: &[DynTensor] = match (&self.current, read) {
                (Current::Host(v), _) => v,
                (Current::Set(_), Some(s)) => &sets.sets[s],
                (Current::Set(_), None) => unreachable!(),
            };
            for (spec, v) in self.sig.states.iter().zip(inputs) {
                binding.bind_input(spec.input.as_str(), v).map_err(|e| bind_err(&spec.input, e))?;
            }
            binding.bind_input("input_ids", &ids_t).map_err(|e| bind_err("input_ids", e))?;
            // Bound afresh every step: ORT reuses an output it filled before, and the logits'
            // shape changes between a prefill and a decode step.
            binding.bind_output_to_device("logits", &self.host_mem).map_err(|e| bind_err("logits", e))?;
            let outs = match &self.skip_graph {
                Some(ro) => session.run_binding_with_options(binding, ro),
                None => session.run_binding(binding),
            }
            .map_err(|e| anyhow!("running the model: {e}"))?;
            let v = outs.get("logits").context("the model returned no 'logits'")?;
            extract_logits(v, self.sig.logits_ty, keep)?
        };
        self.current = Current::Set(write);
        if logits.batch != batch {
            bail!("the model returned logits for batch {}, expected {batch}", logits.batch);
        }
        Ok(logits)
    }
}

/// The stateful session of `model` for `generate` / `bench`: CUDA graphs as `graph` says, and the
/// decode graph beside the model for one-token steps when `graph.decode_graph` picks it (opened
/// with the same graph capture; if ORT cannot capture it while it can the model, the decode
/// graph is left out with a warning). On the CUDA EP the two sessions share the weights
/// ([`crate::generation::shared_weights`]). Returns the session and whether capture is on.
pub fn open_stateful(model: &Path, opts: &SessionOptions, graph: &GraphOptions) -> Result<(StatefulSession, bool)> {
    let decode_path = decode_graph_for(model, opts, graph)?;
    // On the CUDA EP both sessions get the large weights as one set of device values (else each
    // would load its own copy). If that fails, each session loads its own: more memory, same
    // results.
    if let Some(p) = decode_path.as_deref().filter(|_| opts.ep == Ep::Cuda) {
        match crate::generation::shared_weights::load_for_cuda(p) {
            Ok(w) => match open_stateful_with(model, opts, graph, decode_path.as_deref(), w) {
                // ORT refused a shared weight (SharedWeights::add_to names it): go on without.
                Err(e) if format!("{e:#}").contains("initializer '") => {
                    eprintln!("warning: the sessions will not share the weights: {e:#}")
                }
                r => return r,
            },
            Err(e) => eprintln!("warning: the sessions will not share the weights: {e:#}"),
        }
    }
    open_stateful_with(model, opts, graph, decode_path.as_deref(), SharedWeights::default())
}

fn open_stateful_with(
    model: &Path,
    opts: &SessionOptions,
    graph: &GraphOptions,
    decode_path: Option<&Path>,
    shared: SharedWeights,
) -> Result<(StatefulSession, bool)> {
    let (session, cuda_graph) = open_generation_session(model, opts, graph, &shared)?;
    let mut sess = StatefulSession::new(session, opts.ep, cuda_graph)?;
    // Held by the session from here on: its views must outlive both sessions, on every return.
    sess.shared = shared;
    let Some(path) = decode_path else {
        return Ok((sess, cuda_graph));
    };
    let decode_opts = GraphOptions { no_cuda_graph: !cuda_graph, ..graph.clone() };
    let (decode, decode_graph_capture) = open_generation_session(path, opts, &decode_opts, &sess.shared)?;
    // A decode graph is only valid for the export it was derived from (same weights, offsets).
    let id = |s: &Session| s.metadata().ok().and_then(|m| m.custom("mambac.export_id"));
    let main_id = id(&sess.session);
    let why = if main_id.is_none() || main_id != id(&decode) {
        Some(format!("it was not derived from this export of {} (re-export with --decode-graph)", model.display()))
    } else if decode_graph_capture != cuda_graph {
        Some("ORT cannot capture it as a CUDA graph while it can the model".to_string())
    } else {
        None
    };
    if let Some(why) = why {
        if graph.decode_graph == DecodeGraphChoice::On {
            bail!("--decode-graph on: {} cannot be used: {why}", path.display());
        }
        eprintln!("warning: {} is not used: {why}", path.display());
        return Ok((sess, cuda_graph));
    }
    let mut sess = sess.with_decode_session(decode).with_context(|| format!("decode graph {}", path.display()))?;
    sess.decode_always = graph.decode_graph == DecodeGraphChoice::On;
    Ok((sess, cuda_graph))
}

/// Runs `binding` with its outputs left where they are bound. (The ort crate's `run_binding`
/// also fetches every bound output back as a value, ~2 x layers of them, on each run.)
fn run_bound(session: &Session, binding: &IoBinding, ro: &RunOptions) -> Result<()> {
    use ort::AsPointer;
    let api = ort::api();
    // SAFETY: the three pointers are live ORT objects owned by their wrappers for the call.
    crate::runtime::status_result(unsafe { (api.RunWithBinding)(session.ptr().cast_mut(), ro.ptr(), binding.ptr()) })
}

/// Run options naming the CUDA graph a run captures or replays (`-1`: neither).
fn graph_run_options(id: i64) -> Result<RunOptions> {
    let mut ro = RunOptions::new().map_err(|e| anyhow!("run options: {e}"))?;
    ro.set("gpu_graph_id", id.to_string()).map_err(|e| anyhow!("run option gpu_graph_id: {e}"))?;
    Ok(ro)
}

fn extract_logits<V: ort::value::TensorValueTypeMarker + ?Sized>(
    v: &ort::value::Value<V>,
    ty: TensorElementType,
    keep: Keep,
) -> Result<Logits> {
    fn pick<T: Copy>(shape: &[i64], data: &[T], keep: Keep, f: impl Fn(T) -> f32) -> Result<Logits> {
        let [b, l, v] = shape else { bail!("logits have shape {shape:?}, expected [batch, seqlen, vocab]") };
        let (batch, len, vocab) = (*b as usize, *l as usize, *v as usize);
        if len == 0 || data.len() != batch * len * vocab {
            bail!("logits have shape {shape:?} but {} elements", data.len());
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
    let err = |e: ort::Error| anyhow!("reading the logits: {e}");
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
        t => bail!("logits of element type {t:?}"),
    }
}

fn host_of(name: &str, v: &DynTensor) -> Result<HostTensor> {
    fn bytes<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    let err = |e: ort::Error| anyhow!("state '{name}': {e}");
    let shape: Vec<usize> = v.shape().iter().map(|&d| d as usize).collect();
    let (dtype, bytes) = match v.data_type() {
        TensorElementType::Float32 => {
            (Dtype::F32, bytes(v.try_extract_tensor::<f32>().map_err(err)?.1, f32::to_le_bytes))
        }
        TensorElementType::Float16 => {
            (Dtype::F16, bytes(v.try_extract_tensor::<f16>().map_err(err)?.1, f16::to_le_bytes))
        }
        TensorElementType::Bfloat16 => {
            (Dtype::BF16, bytes(v.try_extract_tensor::<bf16>().map_err(err)?.1, bf16::to_le_bytes))
        }
        t => bail!("state '{name}' has element type {t:?}"),
    };
    Ok(HostTensor { dtype, shape, bytes })
}

fn dtype_of(t: TensorElementType) -> Dtype {
    match t {
        TensorElementType::Float16 => Dtype::F16,
        TensorElementType::Bfloat16 => Dtype::BF16,
        _ => Dtype::F32,
    }
}

fn elem_size(t: TensorElementType) -> usize {
    match t {
        TensorElementType::Float16 | TensorElementType::Bfloat16 => 2,
        _ => 4,
    }
}
