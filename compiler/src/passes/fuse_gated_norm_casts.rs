//! `Cast(GatedRmsNorm(Cast(y: T -> f32), Cast(z: T -> f32), w: f32) -> T)` →
//! `mambac.GatedRmsNorm(y, z, w)` (`Op::FusedGatedRmsNorm`): Mamba-2's gated norm as one kernel
//! that reads y and z in T and writes T, computing in float32 in between, instead of the ~12
//! standard ops over float32 copies the primitive expands to (docs/decisions.md "Mamba-2's gated
//! norm as one op"). The rounding points stay those of the unfused graph: the Casts to float32
//! are exact, the one back to T is the op's final rounding. A float32 export has no Casts: its
//! float32 primitive becomes the op as it is.
//!
//! `--ops mambac` only, and first of [`super::SLICE_RULES`]: the decode graph's
//! `fuse_mamba2_layer_step` (in `RULES`, before) has already matched the primitive and its Casts
//! there; `split_to_sliced_reads` (after) then lets the op read z from in_proj's output in place.

use super::{types_of, Rule};
use crate::ir::{Elem, FusedGatedRmsNormConfig, Graph, NodeId, Op, ValueRef};

pub struct FuseGatedNormCasts;

/// The value a `Cast(to f32)` reads, or `v` itself when it is no such Cast.
fn before_cast_to_f32(g: &Graph, v: ValueRef) -> ValueRef {
    match g.op(v.node) {
        Op::Cast { to: Elem::F32 } => g.input(v.node, 0).unwrap_or(v),
        _ => v,
    }
}

impl Rule for FuseGatedNormCasts {
    fn name(&self) -> &'static str {
        "fuse_gated_norm_casts"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::GatedRmsNorm(norm) = g.op(node) else { return false };
        let norm = norm.clone();
        let (Some(y32), Some(z32), Some(w)) = (g.input(node, 0), g.input(node, 1), g.input(node, 2)) else {
            return false;
        };
        // The primitive in float32 (the exports' norm), read from y and z in one T.
        let (y, z) = (before_cast_to_f32(g, y32), before_cast_to_f32(g, z32));
        let Some(types) = types_of(g, &[y32, z32, w, y, z]) else { return false };
        if types[..3].iter().any(|t| t.elem != Elem::F32) || types[3].elem != types[4].elem {
            return false;
        }
        let t = types[3].elem;
        if !matches!(t, Elem::F32 | Elem::F16 | Elem::BF16) || types[3].shape.rank() != 3 {
            return false;
        }
        let out = ValueRef { node, output: 0 };
        // In T the result must be read through one Cast back to T, which the op's output replaces.
        let replaced = if t == Elem::F32 {
            out
        } else {
            let users = g.users(out);
            match users[..] {
                [(cast, 0)] if g.is_single_use(out) && matches!(g.op(cast), Op::Cast { to } if *to == t) => {
                    ValueRef { node: cast, output: 0 }
                }
                _ => return false,
            }
        };
        let name = g.node(node).name.clone();
        let cfg = FusedGatedRmsNormConfig { norm, slices: Default::default() };
        let fused = g.add(name, Op::FusedGatedRmsNorm(cfg), &[Some(y), Some(z), Some(w)]);
        g.replace_uses(replaced, fused.into());
        true
    }
}
