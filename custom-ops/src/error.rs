//! The op library's error type; every variant becomes an `OrtStatus` at the ORT boundary.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum OpError {
    /// The C++ shape/type check rejected the inputs; its message names the op and the input.
    #[error("{0}")]
    Check(String),
    /// A node attribute has a bad value or type, found at kernel creation.
    #[error("{op}: attribute '{name}' {problem}")]
    Attribute { op: &'static str, name: &'static str, problem: String },
    /// An ONNX Runtime API call failed.
    #[error("{op}: ONNX Runtime {call} failed: {message}")]
    Ort { op: &'static str, call: &'static str, message: String },
    /// A kernel failed (C++ exception other than a shape error, e.g. out of memory).
    #[error("{op}: kernel failed: {message}")]
    Kernel { op: &'static str, message: String },
    /// A Rust panic, caught at the boundary.
    #[error("{op}: internal error (panic): {message}")]
    Panic { op: &'static str, message: String },
}

impl OpError {
    /// The `OrtErrorCode` this error is reported with.
    pub fn code(&self) -> ort_sys::OrtErrorCode {
        match self {
            OpError::Check(_) | OpError::Attribute { .. } => ort_sys::OrtErrorCode::ORT_INVALID_ARGUMENT,
            _ => ort_sys::OrtErrorCode::ORT_FAIL,
        }
    }
}

/// The message of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
