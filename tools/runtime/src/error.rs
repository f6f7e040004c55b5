//! What can go wrong, as types: callers (and this crate's own fallbacks) decide by variant, never
//! by message text. Each message names the thing at fault; where an error has a cause (an ORT
//! error, an I/O error, an inner [`Error`]) the cause is its `source()`, so that
//! `anyhow`'s `{:#}` or [`report`] prints `what: cause: ...`.

use std::path::PathBuf;

use crate::memory::{human, Available};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// ONNX Runtime or the op library cannot be found or started (the message says where it was
    /// looked for).
    #[error("{0}")]
    Environment(String),
    /// The model file does not exist.
    #[error("model {} does not exist", .0.display())]
    ModelNotFound(PathBuf),
    /// The CUDA EP was asked for and the ONNX Runtime library has none.
    #[error("the CUDA execution provider is not available in {} (install onnxruntime-gpu)", .ort_lib.display())]
    CudaUnavailable { ort_lib: PathBuf },
    /// An ONNX Runtime call failed; `what` says which.
    #[error("{what}")]
    Ort { what: String, source: ort::Error },
    /// ORT refused to load a model with CUDA graph capture on (a node outside the CUDA EP). The
    /// session can be opened without capture.
    #[error("cannot load {}", .model.display())]
    GraphCaptureRefused { model: PathBuf, source: ort::Error },
    /// A bfloat16 export on the CPU EP, which has no bfloat16 MatMul kernel (ORT 1.32): the
    /// model is meant for the CUDA EP; a float32 export is the CPU's.
    #[error(
        "{} is a bfloat16 export, which ONNX Runtime's CPU execution provider cannot run (it has no bfloat16 \
         MatMul kernel): export with --dtype float32 to run on the CPU, or run this model with --ep cuda",
        .model.display()
    )]
    Bfloat16OnCpu { model: PathBuf, source: ort::Error },
    /// ORT refused a shared weight (`AddInitializer`); the sessions can load their own weights.
    #[error("initializer '{name}'")]
    SharedWeightRefused { name: String, source: ort::Error },
    /// The decode graph's initializers cannot be read for sharing.
    #[error("reading the initializers of {}", .path.display())]
    Initializers { path: PathBuf, source: mambac_compiler::emit::decode_graph::DecodeGraphError },
    /// A weight's bytes do not match its declaration.
    #[error("{0}")]
    BadWeight(String),
    /// Reading a file failed; `what` names the file and what was read.
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    /// The model's inputs and outputs are not those of a stateful mambac export.
    #[error("{0}")]
    Signature(String),
    /// `DecodeGraphChoice::On` and no decode graph beside the model.
    #[error(
        "--decode-graph on: {} does not exist (export it with `mambac export --stateful --decode-graph`)",
        .0.display()
    )]
    DecodeGraphMissing(PathBuf),
    /// `DecodeGraphChoice::On` and the decode graph cannot serve this model.
    #[error("--decode-graph on: {} cannot be used: {reason}", .path.display())]
    DecodeGraphUnusable { path: PathBuf, reason: DecodeGraphMismatch },
    /// The decode graph's states or logits are not the model's.
    #[error(
        "the decode graph's states or logits differ from the model's (exported from another checkpoint or dtype?)"
    )]
    DecodeGraphSignature,
    /// A token id outside the vocabulary (or negative); `what` names the prompt or input.
    #[error("{}", token_message(what, *id, position, *vocab))]
    TokenOutOfRange { what: String, id: i64, position: String, vocab: Option<usize> },
    /// An argument out of its range (sampling parameters, a step's ids, states given).
    #[error("{0}")]
    InvalidArgument(String),
    /// More memory than the process can get; checked before allocating.
    #[error("{what} {} of memory, more than the {} available ({})", human(*need), human(available.bytes), available.source)]
    OutOfMemory { what: String, need: u128, available: Available },
    /// The model produced a NaN or +infinity logit (at this token of the row): no softmax or
    /// argmax over the row means anything. (-infinity is a token that cannot be picked.)
    #[error("the model produced a {what} logit (token {token}): no usable token")]
    UnusableLogits { token: usize, what: &'static str },
    /// The graph's greedy pick (`next_token`) found NaN or infinite logits in batch row `row`
    /// (from 0) at `position` of the step's tokens, and gave -1 instead of a token.
    #[error(
        "the logits of batch row {row} are not finite (NaN or infinity) at position {position} of this step: the \
         model produced no usable token"
    )]
    NonFiniteLogits { row: usize, position: usize },
    /// The model returned an output of another shape or type than its signature says.
    #[error("{0}")]
    BadOutput(String),
    /// A state of the session's own that cannot happen; a bug if seen.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error with what was being done when it happened.
    #[error("{context}")]
    Context { context: String, source: Box<Error> },
}

/// Why a decode graph cannot run a model's one-token steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeGraphMismatch {
    #[error("it was not derived from this export of {} (re-export with --decode-graph)", .model.display())]
    NotDerived { model: PathBuf },
    #[error("ORT cannot capture it as a CUDA graph while it can the model")]
    CaptureDiffers,
}

fn token_message(what: &str, id: i64, position: &str, vocab: Option<usize>) -> String {
    match vocab {
        Some(v) => format!(
            "{what}: token id {id} at position {position} is out of range: the model's vocabulary has {v} entries (ids 0..={})",
            v.saturating_sub(1)
        ),
        None => format!("{what}: token id {id} at position {position} is negative"),
    }
}

impl Error {
    /// The error under any [`Error::Context`] layers: what decisions match on.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    pub(crate) fn ort(what: impl Into<String>) -> impl FnOnce(ort::Error) -> Error {
        let what = what.into();
        move |source| Error::Ort { what, source }
    }
}

/// Something the session left out or changed while opening, with the reason; the work goes on
/// (slower, or with more memory). [`crate::StatefulSession::open_reporting`] hands each to the
/// caller as it happens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// ORT cannot capture the model as a CUDA graph: every step runs the ordinary way.
    #[error("CUDA graph capture is off for {}: {}", .model.display(), report(.cause))]
    CudaGraphOff { model: PathBuf, cause: Error },
    /// The model and its decode graph load a copy of the weights each.
    #[error("the sessions will not share the weights: {}", report(.cause))]
    WeightsNotShared { cause: Error },
    /// The decode graph beside the model is not used (`DecodeGraphChoice::Auto`).
    #[error("{} is not used: {reason}", .path.display())]
    DecodeGraphUnused { path: PathBuf, reason: DecodeGraphMismatch },
    /// The zero states of new sequences cannot be made on the CUDA EP (an ONNX Runtime whose
    /// CUDA EP lacks the fill kernel for the model's opset): they are made in host memory and
    /// copied to the device by the first step after each reset, as before zero states were
    /// made on the device.
    #[error(
        "zero states of new sequences will be made in host memory and copied to the device at each reset: {}",
        report(.cause)
    )]
    ZerosFromHost { cause: Error },
}

/// `e` and its causes, `": "` between them (as anyhow's `{:#}` prints them).
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Adds what was being done to an error of this crate.
pub(crate) trait Context<T> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context { context: context(), source: Box::new(e) })
    }
}

/// `return Err(Error::$variant(format!(...)))`.
macro_rules! fail {
    ($variant:ident, $($fmt:tt)+) => {
        return Err($crate::Error::$variant(format!($($fmt)+)))
    };
}
pub(crate) use fail;

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused shared weight under context layers is still found by its variant (the
    /// fallback to per-session weights decides on it), and prints as `what: cause`.
    #[test]
    fn root_sees_through_context_and_report_prints_the_causes() {
        let refused = Error::SharedWeightRefused {
            name: "backbone.embeddings.weight".into(),
            source: ort::Error::new("duplicate initializer"),
        };
        let e = Error::Context { context: "decode graph m.decode.onnx".into(), source: Box::new(refused) };
        assert!(matches!(e.root(), Error::SharedWeightRefused { name, .. } if name == "backbone.embeddings.weight"));
        assert_eq!(e.to_string(), "decode graph m.decode.onnx");
        assert_eq!(
            report(&e),
            "decode graph m.decode.onnx: initializer 'backbone.embeddings.weight': duplicate initializer"
        );
        let w = Warning::WeightsNotShared { cause: e };
        assert_eq!(
            w.to_string(),
            "the sessions will not share the weights: decode graph m.decode.onnx: \
             initializer 'backbone.embeddings.weight': duplicate initializer"
        );
    }

    #[test]
    fn a_token_out_of_range_names_the_prompt_position_and_vocabulary() {
        let e = Error::TokenOutOfRange { what: "prompt 2".into(), id: 9, position: "[0, 3]".into(), vocab: Some(8) };
        assert_eq!(
            e.to_string(),
            "prompt 2: token id 9 at position [0, 3] is out of range: the model's vocabulary has 8 entries (ids 0..=7)"
        );
        let e = Error::TokenOutOfRange { what: "prompt 1".into(), id: -2, position: "0".into(), vocab: None };
        assert_eq!(e.to_string(), "prompt 1: token id -2 at position 0 is negative");
    }
}
