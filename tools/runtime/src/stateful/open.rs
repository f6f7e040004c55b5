//! Opening a stateful session the way generation runs it: CUDA graphs as the options say, and
//! the decode graph beside the model for one-token steps when [`DecodeGraphChoice`] picks it
//! (opened with the same graph capture; if ORT cannot capture it while it can the model, the
//! decode graph is left out with a warning). On the CUDA EP the two sessions share the weights
//! ([`crate::shared_weights`]).

use std::path::Path;

use ort::session::Session;

use super::StatefulSession;
use crate::error::{Context, DecodeGraphMismatch, Error, Result, Warning};
use crate::options::{DecodeGraphChoice, Ep, SessionOptions};
use crate::session::{decode_graph_for, open_generation_session};
use crate::shared_weights::SharedWeights;

impl StatefulSession {
    /// The stateful session of `model` as `opts` says. What was left out on the way (CUDA graph
    /// capture, the decode graph, shared weights) is in [`StatefulSession::warnings`].
    pub fn open(model: &Path, opts: &SessionOptions) -> Result<StatefulSession> {
        let mut warnings = Vec::new();
        let mut sess = StatefulSession::open_reporting(model, opts, &mut |w| warnings.push(w))?;
        sess.warnings = warnings;
        Ok(sess)
    }

    /// [`StatefulSession::open`], handing each warning to `warn` as it happens (the CLI prints
    /// them) instead of keeping them.
    pub fn open_reporting(
        model: &Path,
        opts: &SessionOptions,
        warn: &mut dyn FnMut(Warning),
    ) -> Result<StatefulSession> {
        let mut sess = StatefulSession::open_sessions(model, opts, warn)?;
        // Those of the session that was kept ([`StatefulSession::new`]'s), once: a session
        // opened again without shared weights would say them twice.
        sess.warnings.drain(..).for_each(&mut *warn);
        Ok(sess)
    }

    fn open_sessions(model: &Path, opts: &SessionOptions, warn: &mut dyn FnMut(Warning)) -> Result<StatefulSession> {
        let decode_path = decode_graph_for(model, opts)?;
        // On the CUDA EP both sessions get the large weights as one set of device values (else
        // each would load its own copy). If that fails, each session loads its own: more memory,
        // same results.
        if let Some(p) = decode_path.as_deref().filter(|_| opts.ep == Ep::Cuda) {
            match crate::shared_weights::load_for_cuda(p) {
                Ok(w) => match open_with(model, opts, decode_path.as_deref(), w, warn) {
                    // ORT refused a shared weight: go on without.
                    Err(cause) if matches!(cause.root(), Error::SharedWeightRefused { .. }) => {
                        warn(Warning::WeightsNotShared { cause })
                    }
                    r => return r,
                },
                Err(cause) => warn(Warning::WeightsNotShared { cause }),
            }
        }
        open_with(model, opts, decode_path.as_deref(), SharedWeights::default(), warn)
    }
}

fn open_with(
    model: &Path,
    opts: &SessionOptions,
    decode_path: Option<&Path>,
    shared: SharedWeights,
    warn: &mut dyn FnMut(Warning),
) -> Result<StatefulSession> {
    let (session, cuda_graph) = open_generation_session(model, opts, &shared, warn)?;
    let mut sess = StatefulSession::new(session, opts.ep, cuda_graph)?;
    // Held by the session from here on: its views must outlive both sessions, on every return.
    sess.shared = shared;
    let Some(path) = decode_path else {
        return Ok(sess);
    };
    let decode_opts = SessionOptions { cuda_graph, ..opts.clone() };
    let (decode, decode_graph_capture) = open_generation_session(path, &decode_opts, &sess.shared, warn)?;
    // A decode graph is only valid for the export it was derived from (same weights, offsets).
    let id = |s: &Session| s.metadata().ok().and_then(|m| m.custom("mambac.export_id"));
    let main_id = id(&sess.session);
    let why = if main_id.is_none() || main_id != id(&decode) {
        Some(DecodeGraphMismatch::NotDerived { model: model.to_path_buf() })
    } else if decode_graph_capture != cuda_graph {
        Some(DecodeGraphMismatch::CaptureDiffers)
    } else {
        None
    };
    if let Some(reason) = why {
        if opts.decode_graph == DecodeGraphChoice::On {
            return Err(Error::DecodeGraphUnusable { path: path.to_path_buf(), reason });
        }
        warn(Warning::DecodeGraphUnused { path: path.to_path_buf(), reason });
        return Ok(sess);
    }
    let mut sess = sess.with_decode_session(decode).with_context(|| format!("decode graph {}", path.display()))?;
    sess.decode_always = opts.decode_graph == DecodeGraphChoice::On;
    Ok(sess)
}
