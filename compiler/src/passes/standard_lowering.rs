//! What the `--ops standard` rules that replace a scan by `LinearAttention` share: adding the
//! replacement's nodes under the scan's name, casting float32 parameters to the scan's type, and
//! giving each attention head the group of B or C it reads.

use crate::ir::{Elem, Graph, Op, ValueRef};

/// Adds a replacement's nodes, named `<scan>.<what>`; `t` is the scan's element type.
pub(super) struct Lowering<'g> {
    pub g: &'g mut Graph,
    pub name: String,
    pub t: Elem,
}

impl Lowering<'_> {
    pub fn op(&mut self, what: &str, op: Op, inputs: &[ValueRef]) -> ValueRef {
        self.g.add_op(format!("{}.{what}", self.name), op, inputs).into()
    }

    /// A float32 parameter (A, D, a bias) in T: LinearAttention takes one element type.
    pub fn in_t(&mut self, what: &str, x: ValueRef) -> ValueRef {
        self.cast(what, x, Elem::F32, self.t)
    }

    /// `x` of element type `from` as `to` (no node when they are the same).
    pub fn cast(&mut self, what: &str, x: ValueRef, from: Elem, to: Elem) -> ValueRef {
        if from == to {
            x
        } else {
            self.op(what, Op::Cast { to }, &[x])
        }
    }

    /// `[B, L, groups, n]` → `[B, L, heads * n]`: head h gets group h / (heads / groups).
    pub fn per_head(&mut self, what: &str, x: ValueRef, groups: usize, heads: usize, n: usize) -> ValueRef {
        let x = self.op(&format!("{what}.unsqueeze"), Op::Unsqueeze { axis: 3 }, &[x]);
        let x = self.op(&format!("{what}.expand"), Op::Expand { shape: vec![groups, heads / groups, n] }, &[x]);
        self.op(what, Op::Reshape { keep: 2, tail: vec![heads * n] }, &[x])
    }

    /// LinearAttention's present state, float32 as the scan's final state is: the op gives it
    /// past_state's type, else T, so only a stateless half-precision graph needs the cast.
    pub fn state_f32(&mut self, state: ValueRef, has_past: bool) -> ValueRef {
        let from = if has_past { Elem::F32 } else { self.t };
        self.cast("final_state.cast", state, from, Elem::F32)
    }
}
