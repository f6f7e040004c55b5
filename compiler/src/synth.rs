//! Random-weight checkpoints.
