//! Shape and type inference of `SsdScan`: the rule of `cpp/shape_check.cpp` `check_ssd_scan`,
//! input for input in its order, so both name the same input (tests/shape_agreement.rs).
//!
//! x, B and C are whole (rank 4, defining their dims) or packed (rank 3 `[batch, seqlen, row]`,
//! their `<input>_offset` set): a packed x takes heads from A and head_dim from the node's
//! `head_dim`; a packed B takes ngroups and dstate from `ngroups` and `dstate` (docs/op-contract.md
//! "Sliced inputs").

use super::infer::{err, expect_elem, expect_float, expect_rank, expect_shape, expect_view, InferError};
use super::op::{ssd_slots, SsdScanConfig as Ssd};
use super::types::{Dim, Elem, ValueType};

/// The kernels index with 32-bit ints (the C++ check's bound on the dim attributes).
const MAX_DIM: usize = i32::MAX as usize;

/// `a * b` channels of a packed row: a number when `a` is known.
fn times(a: &Dim, b: usize) -> Dim {
    match a.known() {
        Some(a) => Dim::Known(a * b),
        None => Dim::Sym(format!("{a} * {b}")),
    }
}

pub(super) fn infer_ssd_scan<'a>(
    cfg: &Ssd,
    get: &dyn Fn(usize) -> Option<&'a ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    let req = |slot: usize| get(slot).ok_or_else(|| err(ssd_slots::INPUT_NAMES[slot], "is required but missing"));
    let packed = |slot: usize| cfg.slices.offset(slot);
    // Each dim attribute, when set, is checked before any input (as the C++ check does).
    for (value, input, name) in
        [(cfg.dims.head_dim, "x", "head_dim"), (cfg.dims.ngroups, "B", "ngroups"), (cfg.dims.dstate, "B", "dstate")]
    {
        if let Some(v) = value.filter(|&v| v == 0 || v > MAX_DIM) {
            return Err(err(input, format!("is read with attribute '{name}' = {v}, expected 1 to 2^31 - 1")));
        }
    }
    let missing = |input: &str, attr: &str| {
        let why = format!("'{input}_offset' needs attribute '{attr}'");
        err(input, format!("is read packed as [batch, seqlen, row], which has no {attr} axis: {why}"))
    };
    let (x_packed, b_packed) = (packed(ssd_slots::X).is_some(), packed(ssd_slots::B).is_some());
    if x_packed && cfg.dims.head_dim.is_none() {
        return Err(missing("x", "head_dim"));
    }
    if b_packed && cfg.dims.ngroups.is_none() {
        return Err(missing("B", "ngroups"));
    }
    if b_packed && cfg.dims.dstate.is_none() {
        return Err(missing("B", "dstate"));
    }

    let x = req(ssd_slots::X)?;
    expect_rank("x", x, if x_packed { 3 } else { 4 })?;
    expect_float("x", x)?;
    let t = x.elem;
    let (batch, seqlen) = (x.shape.0[0].clone(), x.shape.0[1].clone());
    let a = req(ssd_slots::A)?;
    let (heads, head_dim) = if x_packed {
        expect_elem("A", a, Elem::F32, "A is always float32")?;
        expect_rank("A", a, 1)?;
        let heads = a.shape.0[0].clone();
        let head_dim = cfg.dims.head_dim.expect("checked above");
        expect_view("x", x, &[batch.clone(), seqlen.clone(), times(&heads, head_dim)], packed(ssd_slots::X))?;
        (heads, Dim::Known(head_dim))
    } else {
        let head_dim = cfg.dims.head_dim.map_or_else(|| x.shape.0[3].clone(), Dim::Known);
        expect_shape("x", x, &[batch.clone(), seqlen.clone(), x.shape.0[2].clone(), head_dim.clone()])?;
        (x.shape.0[2].clone(), head_dim)
    };
    let dt = req(ssd_slots::DT)?;
    expect_elem("dt", dt, t, "same as 'x'")?;
    expect_view("dt", dt, &[batch.clone(), seqlen.clone(), heads.clone()], packed(ssd_slots::DT))?;
    if !x_packed {
        expect_elem("A", a, Elem::F32, "A is always float32")?;
        expect_shape("A", a, std::slice::from_ref(&heads))?;
    }

    let b = req(ssd_slots::B)?;
    expect_elem("B", b, t, "same as 'x'")?;
    let (ngroups, dstate) = if b_packed {
        let (g, n) = (cfg.dims.ngroups.expect("checked above"), cfg.dims.dstate.expect("checked above"));
        expect_view("B", b, &[batch.clone(), seqlen.clone(), Dim::Known(g * n)], packed(ssd_slots::B))?;
        (Dim::Known(g), Dim::Known(n))
    } else {
        expect_rank("B", b, 4)?;
        let ngroups = cfg.dims.ngroups.map_or_else(|| b.shape.0[2].clone(), Dim::Known);
        let dstate = cfg.dims.dstate.map_or_else(|| b.shape.0[3].clone(), Dim::Known);
        expect_shape("B", b, &[batch.clone(), seqlen.clone(), ngroups.clone(), dstate.clone()])?;
        (ngroups, dstate)
    };
    if let (Some(h), Some(g)) = (heads.known(), ngroups.known()) {
        if g == 0 || h % g != 0 {
            return Err(err("B", format!("has shape {}, ngroups {g} does not divide heads {h}", b.shape)));
        }
    }
    let c = req(ssd_slots::C)?;
    expect_elem("C", c, t, "same as 'x'")?;
    match packed(ssd_slots::C) {
        Some(offset) => {
            let count =
                ngroups.known().map_or_else(|| Dim::Sym(format!("{ngroups} * {dstate}")), |g| times(&dstate, g));
            expect_view("C", c, &[batch.clone(), seqlen.clone(), count], Some(offset))?;
        }
        None => expect_shape("C", c, &[batch.clone(), seqlen.clone(), ngroups, dstate.clone()])?,
    }
    for slot in [ssd_slots::D, ssd_slots::DT_BIAS] {
        if let Some(v) = get(slot) {
            let name = ssd_slots::INPUT_NAMES[slot];
            expect_elem(name, v, Elem::F32, "always float32")?;
            expect_shape(name, v, std::slice::from_ref(&heads))?;
        }
    }
    let state_dims = vec![batch.clone(), heads.clone(), head_dim.clone(), dstate];
    if let Some(s) = get(ssd_slots::INITIAL_STATE) {
        expect_elem("initial_state", s, Elem::F32, "the state is always float32")?;
        expect_shape("initial_state", s, &state_dims)?;
    }
    let mut outs = vec![ValueType::new(t, vec![batch, seqlen, heads, head_dim])];
    if cfg.final_state {
        outs.push(ValueType::new(Elem::F32, state_dims));
    }
    Ok(outs)
}
