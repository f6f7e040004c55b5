//! `op(..., s = part k of SplitLast(p))` → `op(..., s = p, <s>_offset = start of part k)`: the
//! fused ops read their part of a packed last axis in place (docs/op-contract.md "Sliced inputs"),
//! so the split's copy goes. B and C come through `Unsqueeze(axis 2)` (Mamba-1's one group): the
//! op then reads `Unsqueeze(p, 2)`, a view in ONNX Runtime. A part some other op reads stays, as
//! a `SliceLast` of its own; with more than one such part the split stays whole (nothing saved).
//! SsdScan's x, B and C come through `Reshape(keep 2, [heads, head_dim])` and `Reshape(keep 2,
//! [ngroups, dstate])`: the op then reads the packed rank-3 tensor itself, the reshape's tail
//! becoming its `head_dim` (or `ngroups`, `dstate`) attributes.
//!
//! Mamba-1: `SplitLast([I, I], xz)` goes (the conv reads x, the scan z); `SplitLast([R, N, N],
//! x_proj)` becomes `SliceLast([0, R))` for dt_proj's MatMul, the scan reading B and C in place.
//! Mamba-2: `SplitLast([I, I + 2 G N, heads], in_proj)` goes: the fused gated norm reads z, the
//! conv xBC and SsdScan dt in place (where the gated norm is still the float32 primitive, as
//! `fuse_gated_norm_casts` leaves it when it cannot fire, z stays a `SliceLast`); the conv
//! output's `SplitLast([I, G N, G N])` goes, SsdScan reading x, B and C from it in place.
//! Only for `--ops mambac` graphs ([`super::SLICE_RULES`]): standard ONNX ops read whole tensors.

use super::Rule;
use crate::ir::{conv_slots, gated_norm_slots, scan_slots, ssd_slots};
use crate::ir::{Graph, NodeId, Op, ValueRef};

pub struct SplitToSlicedReads;

/// How a reader of a split part can take the packed tensor instead.
enum Reader {
    /// Slot `slot` of `node` reads a rank-3 slice (CausalConv1d's x, SelectiveScan's z).
    Direct(NodeId, usize),
    /// Through an `Unsqueeze(axis 2)` whose every reader, listed, is a rank-4 sliceable slot
    /// (SelectiveScan's B, C).
    Groups(Vec<(NodeId, usize)>),
    /// Through a `Reshape(keep 2, tail)` whose every reader, listed, is a slot that can read the
    /// packed rank-3 tensor with `tail` as its dim attributes (SsdScan's x, B, C).
    Packed(Vec<(NodeId, usize)>, [usize; 2]),
}

/// Whether slot `slot` of `node` can read a slice of a rank-`rank` packed tensor and does not yet.
fn sliceable(g: &Graph, node: NodeId, slot: usize, rank: usize) -> bool {
    match g.op(node) {
        Op::CausalConv1d(c) => rank == 3 && slot == conv_slots::X && c.slices.offset(slot).is_none(),
        Op::SelectiveScan(c) => {
            let ok = if rank == 3 { slot == scan_slots::Z } else { slot == scan_slots::B || slot == scan_slots::C };
            ok && c.slices.offset(slot).is_none()
        }
        Op::SsdScan(c) => rank == 3 && slot == ssd_slots::DT && c.slices.offset(slot).is_none(),
        Op::FusedGatedRmsNorm(c) => rank == 3 && slot == gated_norm_slots::Z && c.slices.offset(slot).is_none(),
        _ => false,
    }
}

/// Whether slot `slot` of `node` can read a packed rank-3 tensor where it reads `Reshape(keep 2,
/// tail)` of it (SsdScan's x: tail `[heads, head_dim]`; B, C: `[ngroups, dstate]`) and does not
/// yet; the dims it already has set must agree with the tail.
fn packable(g: &Graph, node: NodeId, slot: usize, tail: [usize; 2]) -> bool {
    let Op::SsdScan(c) = g.op(node) else { return false };
    let agrees = |have: Option<usize>, want: usize| have.is_none_or(|h| h == want);
    c.slices.offset(slot).is_none()
        && match slot {
            ssd_slots::X => agrees(c.dims.head_dim, tail[1]),
            ssd_slots::B | ssd_slots::C => agrees(c.dims.ngroups, tail[0]) && agrees(c.dims.dstate, tail[1]),
            _ => false,
        }
}

/// The readers of `value` (a node's output 0), if there are some and all satisfy `ok`; never a
/// graph output.
fn all_readers(g: &Graph, value: ValueRef, ok: impl Fn(NodeId, usize) -> bool) -> Option<Vec<(NodeId, usize)>> {
    let inner = g.users(value);
    let fits =
        !inner.is_empty() && !g.outputs().iter().any(|o| o.value == value) && inner.iter().all(|&(n, s)| ok(n, s));
    fits.then_some(inner)
}

/// The readers of `part`, if every one of them can read a slice (and there is one).
fn readers(g: &Graph, part: ValueRef) -> Option<Vec<Reader>> {
    if g.outputs().iter().any(|o| o.value == part) {
        return None;
    }
    let users = g.users(part);
    if users.is_empty() {
        return None;
    }
    users
        .into_iter()
        .map(|(node, slot)| match g.op(node) {
            Op::Unsqueeze { axis: 2 } => {
                all_readers(g, ValueRef { node, output: 0 }, |n, s| sliceable(g, n, s, 4)).map(Reader::Groups)
            }
            Op::Reshape { keep: 2, tail } if tail.len() == 2 => {
                let tail = [tail[0], tail[1]];
                let inner = all_readers(g, ValueRef { node, output: 0 }, |n, s| packable(g, n, s, tail))?;
                Some(Reader::Packed(inner, tail))
            }
            _ => sliceable(g, node, slot, 3).then_some(Reader::Direct(node, slot)),
        })
        .collect()
}

/// Sets `node`'s input `slot` to `v`, read from channel `offset` on.
fn read_slice(g: &mut Graph, node: NodeId, slot: usize, v: ValueRef, offset: usize) {
    let slices = match &mut g.node_mut(node).op {
        Op::CausalConv1d(c) => &mut c.slices,
        Op::SelectiveScan(c) => &mut c.slices,
        Op::SsdScan(c) => &mut c.slices,
        Op::FusedGatedRmsNorm(c) => &mut c.slices,
        _ => unreachable!("readers() admits only the sliceable ops"),
    };
    *slices = std::mem::take(slices).with(slot, offset);
    g.set_input(node, slot, Some(v));
}

/// Sets SsdScan `node`'s input `slot` to the packed `v`, read from channel `offset` on, its dims
/// (`tail` of the reshape it read before) as attributes.
fn read_packed(g: &mut Graph, node: NodeId, slot: usize, v: ValueRef, offset: usize, tail: [usize; 2]) {
    let Op::SsdScan(c) = &mut g.node_mut(node).op else { unreachable!("packable() admits only SsdScan") };
    if slot == ssd_slots::X {
        c.dims.head_dim = Some(tail[1]);
    } else {
        (c.dims.ngroups, c.dims.dstate) = (Some(tail[0]), Some(tail[1]));
    }
    read_slice(g, node, slot, v, offset);
}

impl Rule for SplitToSlicedReads {
    fn name(&self) -> &'static str {
        "split_to_sliced_reads"
    }

    fn apply(&self, g: &mut Graph, node: NodeId) -> bool {
        let Op::SplitLast { sizes } = g.op(node) else { return false };
        let sizes = sizes.clone();
        let Some(packed) = g.input(node, 0) else { return false };
        let parts: Vec<ValueRef> = (0..sizes.len()).map(|k| ValueRef { node, output: k }).collect();
        let read: Vec<Option<Vec<Reader>>> = parts.iter().map(|&p| readers(g, p)).collect();
        // Parts something else reads, a graph output included (unread parts need nothing).
        let used = |k: usize| !g.users(parts[k]).is_empty() || g.outputs().iter().any(|o| o.value == parts[k]);
        let kept: Vec<usize> = (0..parts.len()).filter(|&k| read[k].is_none() && used(k)).collect();
        if kept.len() > 1 || read.iter().all(Option::is_none) {
            return false;
        }
        let name = g.node(node).name.clone();
        let starts: Vec<usize> = sizes.iter().scan(0, |at, &s| Some(std::mem::replace(at, *at + s))).collect();
        let mut grouped: Option<ValueRef> = None;
        for (k, readers) in read.into_iter().enumerate() {
            for reader in readers.into_iter().flatten() {
                match reader {
                    Reader::Direct(n, slot) => read_slice(g, n, slot, packed, starts[k]),
                    Reader::Groups(inner) => {
                        let v = *grouped.get_or_insert_with(|| {
                            g.add_op(format!("{name}.packed_groups"), Op::Unsqueeze { axis: 2 }, &[packed]).into()
                        });
                        for (n, slot) in inner {
                            read_slice(g, n, slot, v, starts[k]);
                        }
                    }
                    Reader::Packed(inner, tail) => {
                        for (n, slot) in inner {
                            read_packed(g, n, slot, packed, starts[k], tail);
                        }
                    }
                }
            }
        }
        if let Some(&k) = kept.first() {
            let slice =
                g.add_op(format!("{name}.part{k}"), Op::SliceLast { start: starts[k], len: sizes[k] }, &[packed]);
            g.replace_uses(parts[k], slice.into());
        }
        true
    }
}
