//! Token generation with a stateful export (`mambac export --stateful`).
//!
//! A Mamba model carries a fixed-size recurrent state per layer (the last K-1 conv inputs and
//! the SSM state h), so generation needs no KV cache and no attention mask: the exported graph
//! takes the states in and gives the updated states out, and one graph serves a prompt of any
//! length, a one-token decode step and a prompt fed in chunks.
//!
//! * [`signature`] — what the model's inputs and outputs say: layer count, state shapes, dtypes,
//!   vocabulary; rejects models without state inputs.
//! * [`session_state`] — one ORT session plus the states between steps, held in an IoBinding
//!   (on the CUDA EP they stay on the device; only the token ids go in and the logits come out).
//! * [`shared_weights`] — the weights a model and its decode graph share, loaded once on the
//!   device for both sessions.
//! * [`sampler`] — greedy and temperature / top-k / top-p sampling with a seeded RNG (no ORT).
//! * [`batch`] — several prompts of different lengths: each prompt is prefilled alone, the
//!   states are stacked into one batch, and the batch is decoded together (see there for why).

pub mod batch;
pub mod memory;
pub mod sampler;
pub mod session_state;
pub mod shared_weights;
pub mod signature;

#[cfg(test)]
mod tests;
