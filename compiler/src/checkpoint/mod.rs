//! Checkpoint readers (owned by the readers work; see the brief in the commit history).
