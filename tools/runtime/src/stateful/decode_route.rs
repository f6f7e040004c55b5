//! Which session runs a step: one-token steps go to the decode graph's session (`mambac export
//! --decode-graph`: one fused MambaLayerStep node a layer, seqlen 1 only) when there is one and
//! the batch is small enough for it to be faster; prompts and everything else stay on the
//! model's own session. Both read and write the same state buffers.

use ort::session::{IoBinding, Session};

use super::buffers::Current;
use super::StatefulSession;
use crate::error::{Error, Result};
use crate::signature::ModelSignature;

/// The decode graph's session and its per-step binding.
pub(super) struct DecodeSession {
    pub(super) session: Session,
    pub(super) binding: IoBinding,
}

/// Largest batch whose one-token steps [`crate::DecodeGraphChoice::Auto`] runs on a Mamba-1
/// decode graph (MambaLayerStep). Measured on the H200 (2.8b float16, BENCHMARKS.md): batch 1
/// 1.40-1.48x faster than the general graph; batch 8 1.07x since its GEMVs run on tensor cores
/// (0.74-1.03x before); batch 64 0.80x (the general graph's cuBLAS GEMMs read each weight once
/// for all 64 rows).
pub const DECODE_GRAPH_MAX_BATCH: usize = 8;

/// The same for a Mamba-2 decode graph (Mamba2LayerStep). Measured on the H200 (mamba2-2.7b
/// float16, one call, BENCHMARKS.md): batch 1 2.54 ms a step against the general graph's 2.97
/// (1.17x); batch 8 4.46 against 3.99 (0.89x: the 42 MB of float32 states a layer dominate, and
/// the general graph's one-token SsdScan kernel streams them faster than the fused layer's
/// scan). Batches 2-7 are not measured and take the general graph.
pub const MAMBA2_DECODE_GRAPH_MAX_BATCH: usize = 1;

/// The largest batch [`crate::DecodeGraphChoice::Auto`] runs on the decode graph of a model with
/// this signature: Mamba-2's SSM states are `[batch, heads, head_dim, dstate]`, Mamba-1's
/// `[batch, d_inner, dstate]`.
pub fn decode_graph_max_batch(sig: &ModelSignature) -> usize {
    let mamba2 = sig.states.iter().any(|s| s.dims.len() == 3);
    if mamba2 {
        MAMBA2_DECODE_GRAPH_MAX_BATCH
    } else {
        DECODE_GRAPH_MAX_BATCH
    }
}

impl StatefulSession {
    /// Runs one-token steps on `decode` (a session of the decode graph, opened like the main one,
    /// CUDA graph capture included), after checking it has the same states and logits.
    /// [`StatefulSession::open`] attaches the decode graph beside the model this way.
    pub fn with_decode_session(mut self, decode: Session) -> Result<StatefulSession> {
        let sig = ModelSignature::of_session(&decode)?;
        let names =
            |s: &ModelSignature| s.states.iter().map(|t| (t.input.clone(), t.output.clone(), t.ty)).collect::<Vec<_>>();
        if names(&sig) != names(&self.sig) || sig.logits_ty != self.sig.logits_ty || sig.vocab != self.sig.vocab {
            return Err(Error::DecodeGraphSignature);
        }
        let binding = decode.create_binding().map_err(Error::ort("cannot create an IoBinding for the decode graph"))?;
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
    /// [`decode_graph_max_batch`] unless it was asked for (`DecodeGraphChoice::On`).
    pub(super) fn decode_for(&self, batch: usize) -> bool {
        self.decode.is_some() && (self.decode_always || batch <= decode_graph_max_batch(&self.sig))
    }
}

/// The session and binding a step runs on: the decode graph's when `use_decode` (see
/// [`StatefulSession::decode_for`]), else the model's own. Takes the fields, not the session, so
/// that the step can use the state buffers meanwhile.
pub(super) fn route<'a>(
    decode: &'a mut Option<DecodeSession>,
    session: &'a mut Session,
    binding: &'a mut IoBinding,
    use_decode: bool,
) -> (&'a mut Session, &'a mut IoBinding) {
    match decode {
        Some(d) if use_decode => (&mut d.session, &mut d.binding),
        _ => (session, binding),
    }
}
