//! Token generation with a stateful mambac export (`mambac export --stateful`) on ONNX Runtime.
//!
//! A Mamba model carries a fixed-size recurrent state per layer (the last K-1 conv inputs and
//! the SSM state h), so generation needs no KV cache and no attention mask: the exported graph
//! takes the states in and gives the updated states out, and one graph serves a prompt of any
//! length, a one-token decode step and a prompt fed in chunks.
//!
//! ```no_run
//! use mambac_runtime::{generate, Ep, GenerateOptions, Sampling, SessionOptions, StatefulSession};
//!
//! # fn main() -> Result<(), mambac_runtime::Error> {
//! let opts = SessionOptions { ep: Ep::Cuda, ..SessionOptions::default() };
//! let mut sess = StatefulSession::open("model.onnx".as_ref(), &opts)?;
//! for w in sess.warnings() {
//!     eprintln!("warning: {w}");
//! }
//! let gen = GenerateOptions {
//!     max_new_tokens: 32,
//!     sampling: Sampling::Random { temperature: 0.8, top_k: Some(40), top_p: None },
//!     seed: 0,
//!     prefill_chunk: None,
//!     stop_ids: vec![0],
//! };
//! let prompts = vec![vec![510, 3158, 8516], vec![2]];
//! let out = generate(&mut sess, &prompts, &gen, |prompt, token| {
//!     println!("[{prompt}] {token}");
//!     Ok::<(), mambac_runtime::Error>(())
//! })?;
//! println!("{:?}", out.ids);
//! # Ok(())
//! # }
//! ```
//!
//! ONNX Runtime is loaded at run time (see [`ort_search`] for where it is looked for) and the op
//! library `libmambac_ops.so` is registered with every session ([`SessionOptions::ops_lib`]).
//!
//! * [`signature`] — what the model's inputs and outputs say: layer count, state shapes, dtypes,
//!   vocabulary; rejects models without state inputs.
//! * [`StatefulSession`] — one ORT session plus the states between steps, held in an IoBinding
//!   (on the CUDA EP they stay on the device, and new sequences' zero states are made there;
//!   only the token ids go in and the logits come out), with CUDA-graph replay and the decode
//!   graph for one-token steps.
//! * [`shared_weights`] — the weights a model and its decode graph share, loaded once on the
//!   device for both sessions.
//! * [`sampler`] — greedy and temperature / top-k / top-p sampling with a seeded RNG (no ORT).
//! * [`batch`] — several prompts of different lengths: each prompt is prefilled alone, the
//!   states are stacked into one batch, and the batch is decoded together (see there for why).
//! * [`memory`] — what a step needs, checked against what the process can get before allocating.
//! * [`Error`] — every failure as a variant; [`Warning`] — what opening left out, and why.

pub mod batch;
mod environment;
mod error;
pub mod memory;
mod options;
pub mod ort_search;
pub mod sampler;
mod session;
pub mod shared_weights;
pub mod signature;
mod stateful;
mod tensor;

pub use batch::{generate, prefill, stack_batch, GenerateOptions, Generated};
pub use environment::{find_ops_lib, init_ort, OPS_LIB_NAME};
pub use error::{report, DecodeGraphMismatch, Error, Result, Warning};
pub use options::{DecodeGraphChoice, Ep, SessionOptions};
pub use ort_search::find_ort_library;
pub use sampler::{argmax, Sampler, Sampling};
pub use session::open_session;
pub use signature::ModelSignature;
pub use stateful::{
    decode_graph_max_batch, Keep, Logits, StatefulSession, DECODE_GRAPH_MAX_BATCH, MAMBA2_DECODE_GRAPH_MAX_BATCH,
};
pub use tensor::{check_token_ids, HostTensor};
