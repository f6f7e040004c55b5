//! The glue between two layers → one `AddRmsNorm` (docs/op-contract.md "AddRmsNorm"). The
//! anchor is the `RmsNorm` of the float32 residual stream `s`:
//!
//! ```text
//! s = Add(r, Cast(m: T -> f32))   or, the first layer, s = Cast(m: T -> f32)
//! v = Cast(RmsNorm(s, w): f32 -> T)
//!   → v, s' = AddRmsNorm(x = m, residual = r (absent for the first layer), w)
//! ```
//!
//! A float32 export has no casts: `s = Add(r, m)` becomes `AddRmsNorm(m, r, w)` (its first layer
//! keeps its plain RmsNorm: without a cast to fold, fusing it would only add a copy). Every other
//! reader of `s` (the next residual `Add`) reads `s'` instead; the final norm's `s` has none, so
//! its node has no `residual_out`. Only for `--ops mambac` graphs ([`super::NORM_RULES`]), after
//! the layer-step rules: the decode graph's layers have folded their norms into
//! `MambaLayerStep` (and `Mamba2LayerStep`), whose final norm then reads the step's output and
//! stays as it is.

use super::{types_of, Rule};
use crate::ir::{AddRmsNormConfig, Elem, Graph, NodeId, Op, ValueRef, ValueType};

pub struct FuseAddRmsNorm;

impl Rule for FuseAddRmsNorm {
    fn name(&self) -> &'static str {
        "fuse_add_rms_norm"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::RmsNorm { eps } = *g.op(node) else { return false };
        let (Some(s), Some(w)) = (g.input(node, 0), g.input(node, 1)) else { return false };
        let normed = ValueRef { node, output: 0 };
        let Some([s_ty, w_ty, normed_ty]) =
            types_of(g, &[s, w, normed]).and_then(|t| <[ValueType; 3]>::try_from(t).ok())
        else {
            return false;
        };
        if s_ty.elem != Elem::F32 || w_ty.elem != Elem::F32 || s_ty.shape.rank() != 3 {
            return false;
        }
        // y: the cast of the norm to T, or (float32 exports) the norm itself.
        let (y, t) = match single_reader(g, normed) {
            Some(c) if matches!(g.op(c), Op::Cast { to } if *to != Elem::F32) => {
                let Op::Cast { to } = *g.op(c) else { unreachable!("matched above") };
                (ValueRef { node: c, output: 0 }, to)
            }
            _ if normed_ty.elem == Elem::F32 && !g.outputs().iter().any(|o| o.value == normed) => (normed, Elem::F32),
            _ => return false,
        };
        let Some((x, residual)) = stream_parts(g, s, t) else { return false };

        let others = g.users(s).into_iter().any(|(u, _)| u != node) || g.outputs().iter().any(|o| o.value == s);
        let fused = g.add(
            format!("{}.add_rms_norm", g.node(node).name),
            Op::AddRmsNorm(AddRmsNormConfig { eps, residual_out: others }),
            &[Some(x), residual, Some(w)],
        );
        g.replace_uses(y, ValueRef { node: fused, output: 0 });
        if others {
            g.replace_uses(s, ValueRef { node: fused, output: 1 });
        }
        true
    }
}

/// The one node reading `v` when `v` has a single reader and is no graph output.
fn single_reader(g: &Graph, v: ValueRef) -> Option<NodeId> {
    g.is_single_use(v).then(|| g.users(v)[0].0)
}

/// `(x, residual)` of the stream value `s` whose mixer output is of type `t`: `Add(r, Cast(m))`
/// gives `(m, Some(r))`, `Cast(m)` alone (the first layer) `(m, None)`; with `t` float32, `Add(r,
/// m)` gives `(m, Some(r))` (the lowering's operand order; the sum is the same either way). The
/// cast must be read by this stream alone: it goes with the fusion.
fn stream_parts(g: &Graph, s: ValueRef, t: Elem) -> Option<(ValueRef, Option<ValueRef>)> {
    if s.output != 0 {
        return None;
    }
    match g.op(s.node) {
        Op::Add if t == Elem::F32 => Some((g.input(s.node, 1)?, Some(g.input(s.node, 0)?))),
        Op::Add => {
            let (a, b) = (g.input(s.node, 0)?, g.input(s.node, 1)?);
            let (cast, r) = if is_cast_from(g, b, t) { (b, a) } else { (a, b) };
            (is_cast_from(g, cast, t) && g.is_single_use(cast)).then_some(())?;
            Some((g.input(cast.node, 0)?, Some(r)))
        }
        Op::Cast { to: Elem::F32 } if t != Elem::F32 && is_cast_from(g, s, t) => Some((g.input(s.node, 0)?, None)),
        _ => None,
    }
}

/// Whether `v` is a `Cast` to float32 of a value of type `t`.
fn is_cast_from(g: &Graph, v: ValueRef, t: Elem) -> bool {
    let Op::Cast { to: Elem::F32 } = g.op(v.node) else { return false };
    let Some(src) = g.input(v.node, 0) else { return false };
    v.output == 0 && types_of(g, &[src]).is_some_and(|ty| ty[0].elem == t)
}
