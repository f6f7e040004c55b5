//! The state buffers a session's steps read and write ("ping-pong").
//!
//! The updated states of a step are written into a second set of buffers of the same shapes,
//! allocated once where the EP wants them (CPU memory, or CUDA device memory on the CUDA EP);
//! after the step the two sets swap roles, so a decode loop allocates nothing and on the GPU the
//! states never leave the device. Two sets rather than one because ORT may write a state output
//! while the same layer's kernel still reads its input: aliasing them is not allowed.

use ort::memory::Allocator;
use ort::value::DynTensor;

use super::cuda_graph::GraphIo;
use super::StatefulSession;
use crate::error::{Error, Result};

/// The two state buffer sets of one batch size, made once by the session's allocator: each step
/// reads one and writes the other. Keeping them for the session's life (rather than allocating a
/// spare per step) gives every buffer a fixed address, which a captured CUDA graph needs.
pub(super) struct StateSets {
    pub(super) batch: usize,
    pub(super) sets: [Vec<DynTensor>; 2],
    /// Decode steps replayed as CUDA graphs (CUDA EP with graph capture on).
    pub(super) graph: Option<GraphIo>,
}

/// Where the states the next step reads are.
pub(super) enum Current {
    /// Given by the caller ([`StatefulSession::set_states`]: stacked prefills, states of its
    /// own), in host memory; none while a reset is under way, or after one failed.
    Host(Vec<DynTensor>),
    /// Set `s` of [`StateSets`].
    Set(usize),
}

impl StatefulSession {
    pub(super) fn current_states(&self) -> &[DynTensor] {
        match &self.current {
            Current::Host(v) => v,
            Current::Set(s) => &self.state_sets.as_ref().expect("Current::Set implies state sets").sets[*s],
        }
    }

    /// The state buffer sets for the current batch size, made on first use (and again when the
    /// batch size changes).
    pub(super) fn ensure_state_sets(&mut self) -> Result<()> {
        let batch = self.batch;
        if self.state_sets.as_ref().is_some_and(|s| s.batch == batch) {
            return Ok(());
        }
        if matches!(self.current, Current::Set(_)) {
            // The states live in the sets about to be replaced: reset and set_states let go of
            // them first when the batch size changes, so this does not happen.
            return Err(Error::Internal(
                "the batch size changed while the states were in the session's buffers".into(),
            ));
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
                        .map_err(Error::ort(format!("allocating state '{}'", s.output)))
                })
                .collect()
        };
        let mut sets = [make_set(&self.state_alloc)?, make_set(&self.state_alloc)?];
        let graph = if self.cuda_graph {
            let first = self.next_graph_id;
            self.next_graph_id += 2;
            // One-token steps run on the decode graph's session when there is one.
            let session = match &self.decode {
                Some(d) if self.decode_for(batch) => &d.session,
                _ => &self.session,
            };
            Some(GraphIo::new(session, &self.sig, &self.state_alloc, &mut sets, batch, first)?)
        } else {
            None
        };
        self.state_sets = Some(StateSets { batch, sets, graph });
        Ok(())
    }
}
