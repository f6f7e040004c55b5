//! One-token decode steps captured as CUDA graphs and replayed (CUDA EP with graph capture on).
//!
//! A captured graph replays fixed device addresses, so everything a step reads or writes lives in
//! buffers made once per batch size: the two state sets (see [`super::buffers`]), and here the
//! token ids and the logits, copied in and out around each replay. ORT keeps a captured graph
//! per `gpu_graph_id`; graph `first_id + s` is the step that reads set `s`.

use mambac_op_schema::graph;
use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{DynTensor, Tensor, TensorElementType};

use super::logits::{extract_logits, extract_next_tokens, StepOut, Want};
use crate::error::{Error, Result};
use crate::signature::ModelSignature;

/// The rest of a captured decode step's fixed addresses.
pub(super) struct GraphIo {
    ids: Tensor<i64>,
    logits: DynTensor,
    /// The graph's greedy pick `[batch, 1]` and its host copy, when the model has `next_token`.
    next_token: Option<(Tensor<i64>, Tensor<i64>)>,
    runs: [RunOptions; 2],
    /// The replay bindings, made once: `bindings[s]` reads set `s`, writes set `1 - s`, the ids
    /// and the logits. Rebinding ~2 x layers tensors every step cost the host more than a
    /// replayed 2.8b step's whole GPU time at batch 8 (BENCHMARKS.md).
    bindings: [IoBinding; 2],
    /// Where the logits land on the host (one buffer, reused).
    host_logits: DynTensor,
}

impl GraphIo {
    /// The buffers and bindings for `batch` sequences replaying on `session` (the one that runs
    /// one-token steps) over `sets`, under graph ids `first_id` and `first_id + 1`.
    pub(super) fn new(
        session: &Session,
        sig: &ModelSignature,
        alloc: &Allocator,
        sets: &mut [Vec<DynTensor>; 2],
        batch: usize,
        first_id: u32,
    ) -> Result<GraphIo> {
        let Some(vocab) = sig.vocab else {
            return Err(Error::Internal(
                "CUDA graphs need the logits' vocabulary size in the model's signature".into(),
            ));
        };
        let ids = Tensor::<i64>::new(alloc, [batch, 1]).map_err(Error::ort("allocating the device token ids"))?;
        let mut logits = DynTensor::new(alloc, sig.logits_ty, [batch, 1, vocab])
            .map_err(Error::ort("allocating the device logits"))?;
        let mut next_token = if sig.next_token {
            let dev =
                Tensor::<i64>::new(alloc, [batch, 1]).map_err(Error::ort("allocating the device 'next_token'"))?;
            let host = Tensor::<i64>::new(&Allocator::default(), [batch, 1])
                .map_err(Error::ort("allocating the host 'next_token'"))?;
            Some((dev, host))
        } else {
            None
        };
        let bind_err = |name: &str| Error::ort(format!("binding '{name}'"));
        let mut bind = |s: usize| -> Result<IoBinding> {
            let mut b = session.create_binding().map_err(Error::ort("cannot create an IoBinding"))?;
            let (lo, hi) = sets.split_at_mut(1);
            let (read, write) = if s == 0 { (&lo[0], &mut hi[0]) } else { (&hi[0], &mut lo[0]) };
            for (spec, v) in sig.states.iter().zip(read.iter()) {
                b.bind_input(spec.input.as_str(), v).map_err(bind_err(&spec.input))?;
            }
            for (spec, v) in sig.states.iter().zip(write.iter_mut()) {
                b.bind_output(spec.output.as_str(), v).map_err(bind_err(&spec.output))?;
            }
            b.bind_input(graph::INPUT_IDS, &ids).map_err(bind_err(graph::INPUT_IDS))?;
            b.bind_output(graph::LOGITS, &mut logits).map_err(bind_err(graph::LOGITS))?;
            if let Some((dev, _)) = next_token.as_mut() {
                b.bind_output(graph::NEXT_TOKEN, dev).map_err(bind_err(graph::NEXT_TOKEN))?;
            }
            Ok(b)
        };
        let bindings = [bind(0)?, bind(1)?];
        let host_logits = DynTensor::new(&Allocator::default(), sig.logits_ty, [batch, 1, vocab])
            .map_err(Error::ort("allocating the host logits"))?;
        let runs = [graph_run_options(first_id as i64)?, graph_run_options(first_id as i64 + 1)?];
        Ok(GraphIo { ids, logits, next_token, runs, bindings, host_logits })
    }

    /// Replays the step that reads set `s` on `session` with `ids`, and copies to the host what
    /// `want` asks for (`Want::NextTokens` only when the model has `next_token`).
    pub(super) fn replay(
        &mut self,
        session: &Session,
        s: usize,
        ids: &Tensor<i64>,
        ty: TensorElementType,
        want: Want,
    ) -> Result<StepOut> {
        ids.copy_into(&mut self.ids).map_err(Error::ort("copying the token ids to the device"))?;
        run_bound(session, &self.bindings[s], &self.runs[s]).map_err(Error::ort("running the model (CUDA graph)"))?;
        match (want, self.next_token.as_mut()) {
            (Want::NextTokens, Some((dev, host))) => {
                dev.copy_into(&mut *host).map_err(Error::ort("copying 'next_token' to the host"))?;
                Ok(StepOut::Tokens(extract_next_tokens(host)?))
            }
            (Want::NextTokens, None) => {
                Err(Error::Internal("a replay asked for next_token of a model without it".into()))
            }
            (Want::Logits(keep), _) => {
                self.logits.copy_into(&mut self.host_logits).map_err(Error::ort("copying the logits to the host"))?;
                Ok(StepOut::Logits(extract_logits(&self.host_logits, ty, keep)?))
            }
        }
    }
}

/// Runs `binding` with its outputs left where they are bound. (The ort crate's `run_binding`
/// also fetches every bound output back as a value, ~2 x layers of them, on each run.)
pub(super) fn run_bound(session: &Session, binding: &IoBinding, ro: &RunOptions) -> Result<(), ort::Error> {
    use ort::AsPointer;
    let api = ort::api();
    // SAFETY: the three pointers are live ORT objects owned by their wrappers for the call.
    crate::environment::status_result(unsafe {
        (api.RunWithBinding)(session.ptr().cast_mut(), ro.ptr(), binding.ptr())
    })
}

/// Run options naming the CUDA graph a run captures or replays (`-1`: neither).
pub(super) fn graph_run_options(id: i64) -> Result<RunOptions> {
    let mut ro = RunOptions::new().map_err(Error::ort("run options"))?;
    ro.set("gpu_graph_id", id.to_string()).map_err(Error::ort("run option gpu_graph_id"))?;
    Ok(ro)
}
