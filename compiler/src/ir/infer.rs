//! Shape and type inference, one function per op. This is the Rust half of the op contract's
//! shape rules (the C++ half is `cpp/include/mambac/shape_check.h`; a test checks they agree).

use super::op::{CausalConv1dConfig as Conv, Op, SelectiveScanConfig as Scan};
use super::types::{Dim, Elem, Shape, ValueType};

/// Why a node's inputs do not fit its op. `input` names the slot at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("input '{input}' {problem}")]
pub struct InferError {
    pub input: String,
    pub problem: String,
}

fn err(input: &str, problem: impl Into<String>) -> InferError {
    InferError { input: input.to_string(), problem: problem.into() }
}

type Inputs<'a> = [Option<&'a ValueType>];

fn required<'a>(op: &Op, inputs: &Inputs<'a>, slot: usize) -> Result<&'a ValueType, InferError> {
    let name = op.input_names()[slot];
    inputs.get(slot).copied().flatten().ok_or_else(|| err(name, "is required but missing"))
}

fn expect_rank(name: &str, t: &ValueType, rank: usize) -> Result<(), InferError> {
    if t.shape.rank() != rank {
        return Err(err(name, format!("has shape {}, expected rank {rank}", t.shape)));
    }
    Ok(())
}

fn expect_elem(name: &str, t: &ValueType, elem: Elem, why: &str) -> Result<(), InferError> {
    if t.elem != elem {
        return Err(err(name, format!("has element type {}, expected {elem} ({why})", t.elem)));
    }
    Ok(())
}

fn expect_float(name: &str, t: &ValueType) -> Result<(), InferError> {
    if !t.elem.is_float() {
        return Err(err(name, format!("has element type {}, expected a float type", t.elem)));
    }
    Ok(())
}

/// Checks `t`'s shape equals `want` dim by dim (symbols compare by name).
fn expect_shape(name: &str, t: &ValueType, want: &[Dim]) -> Result<(), InferError> {
    if t.shape.0 != want {
        return Err(err(name, format!("has shape {}, expected {}", t.shape, Shape(want.to_vec()))));
    }
    Ok(())
}

/// Infers the output types of `op` from its input types (one entry per slot, `None` = absent).
pub fn infer_node(op: &Op, inputs: &Inputs<'_>) -> Result<Vec<ValueType>, InferError> {
    let names = op.input_names();
    for (slot, present) in inputs.iter().enumerate() {
        if slot >= names.len() && present.is_some() {
            return Err(err(&format!("#{slot}"), format!("is not an input of {}", op.kind())));
        }
    }
    for slot in 0..names.len() {
        if !op.input_is_optional(slot) {
            required(op, inputs, slot)?;
        }
    }
    let get = |slot: usize| inputs.get(slot).copied().flatten();
    match op {
        Op::Input { ty, .. } => Ok(vec![ty.clone()]),
        Op::Const(c) => Ok(vec![ValueType::new(c.elem, c.shape.iter().map(|&d| Dim::Known(d)).collect())]),
        Op::Gather { axis } => {
            let (table, ids) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_elem("ids", ids, Elem::I64, "token ids")?;
            if *axis >= table.shape.rank() {
                return Err(err("table", format!("has shape {}, no axis {axis}", table.shape)));
            }
            let mut dims = table.shape.0[..*axis].to_vec();
            dims.extend(ids.shape.0.iter().cloned());
            dims.extend(table.shape.0[axis + 1..].iter().cloned());
            Ok(vec![ValueType::new(table.elem, dims)])
        }
        Op::Transpose { perm } => {
            let x = required(op, inputs, 0)?;
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.shape.rank()).collect::<Vec<_>>() {
                return Err(err("x", format!("has shape {}, not permutable by {perm:?}", x.shape)));
            }
            Ok(vec![ValueType::new(x.elem, perm.iter().map(|&p| x.shape.0[p].clone()).collect())])
        }
        Op::RmsNorm { .. } => {
            let (x, w) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_float("x", x)?;
            let last = x.shape.last().cloned().ok_or_else(|| err("x", "is a scalar"))?;
            expect_float("weight", w)?;
            expect_shape("weight", w, &[last])?;
            Ok(vec![ValueType { elem: w.elem, shape: x.shape.clone() }])
        }
        Op::MatMul => {
            let (x, w) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_float("x", x)?;
            expect_rank("w", w, 2)?;
            expect_elem("w", w, x.elem, "same as 'x'")?;
            let k = x.shape.last().ok_or_else(|| err("x", "is a scalar"))?;
            if *k != w.shape.0[0] {
                return Err(err("w", format!("has shape {}, expected [{k}, N] to match 'x' {}", w.shape, x.shape)));
            }
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank checked") = w.shape.0[1].clone();
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::MatMulNBits(cfg) => {
            let (x, values, scales) = (required(op, inputs, 0)?, required(op, inputs, 1)?, required(op, inputs, 2)?);
            expect_float("x", x)?;
            let k = x.shape.last().ok_or_else(|| err("x", "is a scalar"))?;
            if *k != Dim::Known(cfg.k) {
                return Err(err("x", format!("has shape {}, expected [..., {}] (the weight's K)", x.shape, cfg.k)));
            }
            let blocks = cfg.quant.blocks(cfg.k);
            expect_elem("values", values, Elem::U8, "uint8")?;
            expect_shape(
                "values",
                values,
                &[Dim::Known(cfg.n), Dim::Known(blocks), Dim::Known(cfg.quant.blob_bytes())],
            )?;
            expect_elem("scales", scales, x.elem, "same as 'x'")?;
            expect_shape("scales", scales, &[Dim::Known(cfg.n * blocks)])?;
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank checked") = Dim::Known(cfg.n);
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::Add | Op::Mul => {
            let (a, b) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_elem("b", b, a.elem, "same as 'a'")?;
            Ok(vec![ValueType::new(a.elem, broadcast(&a.shape, &b.shape)?)])
        }
        Op::Silu | Op::Softplus | Op::Exp | Op::Neg => {
            let x = required(op, inputs, 0)?;
            expect_float("x", x)?;
            Ok(vec![x.clone()])
        }
        Op::Cast { to } => {
            let x = required(op, inputs, 0)?;
            expect_float("x", x)?;
            Ok(vec![ValueType { elem: *to, shape: x.shape.clone() }])
        }
        Op::SplitLast { sizes } => {
            let x = required(op, inputs, 0)?;
            let total: usize = sizes.iter().sum();
            if x.shape.last() != Some(&Dim::Known(total)) {
                return Err(err(
                    "x",
                    format!("has shape {}, expected last dim {total} to split into {sizes:?}", x.shape),
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut dims = x.shape.0.clone();
                    *dims.last_mut().expect("rank >= 1") = Dim::Known(s);
                    ValueType::new(x.elem, dims)
                })
                .collect())
        }
        Op::LastPosition => {
            let x = required(op, inputs, 0)?;
            if x.shape.rank() < 2 {
                return Err(err("x", format!("has shape {}, expected [batch, seqlen, ...]", x.shape)));
            }
            let mut dims = x.shape.0.clone();
            dims[1] = Dim::Known(1);
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::Unsqueeze { axis } => {
            let x = required(op, inputs, 0)?;
            if *axis > x.shape.rank() {
                return Err(err("x", format!("has shape {}, cannot insert axis {axis}", x.shape)));
            }
            let mut dims = x.shape.0.clone();
            dims.insert(*axis, Dim::Known(1));
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::CausalConv1d(cfg) => infer_causal_conv1d(
            cfg,
            required(op, inputs, Conv::X)?,
            required(op, inputs, Conv::WEIGHT)?,
            get(Conv::BIAS),
            get(Conv::INITIAL_STATE),
        ),
        Op::SelectiveScan(cfg) => infer_selective_scan(cfg, &|s| get(s)),
    }
}

fn broadcast(a: &Shape, b: &Shape) -> Result<Vec<Dim>, InferError> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| &b.0[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Known(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Known(1))) => x.clone(),
            _ => return Err(err("b", format!("has shape {b}, which does not broadcast with 'a' {a}"))),
        };
        out.push(d);
    }
    Ok(out)
}

fn infer_causal_conv1d(
    cfg: &Conv,
    x: &ValueType,
    w: &ValueType,
    bias: Option<&ValueType>,
    state: Option<&ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    expect_rank("x", x, 3)?;
    expect_float("x", x)?;
    let (batch, dim) = (x.shape.0[0].clone(), x.shape.0[2].clone());
    expect_rank("weight", w, 2)?;
    expect_elem("weight", w, x.elem, "same as 'x'")?;
    if w.shape.0[0] != dim {
        return Err(err("weight", format!("has shape {}, expected [{dim}, width]", w.shape)));
    }
    let width = w.shape.0[1].known().ok_or_else(|| err("weight", "must have a known width"))?;
    if width < 1 {
        return Err(err("weight", format!("has shape {}, width must be at least 1", w.shape)));
    }
    if let Some(b) = bias {
        expect_elem("bias", b, x.elem, "same as 'x'")?;
        expect_shape("bias", b, std::slice::from_ref(&dim))?;
    }
    let state_dims = vec![batch, dim, Dim::Known(width - 1)];
    if let Some(s) = state {
        expect_elem("initial_state", s, x.elem, "same as 'x'")?;
        expect_shape("initial_state", s, &state_dims)?;
    }
    let mut outs = vec![x.clone()];
    if cfg.final_state {
        outs.push(ValueType::new(x.elem, state_dims));
    }
    Ok(outs)
}

fn infer_selective_scan<'a>(
    cfg: &Scan,
    get: &dyn Fn(usize) -> Option<&'a ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    let req = |slot: usize| get(slot).ok_or_else(|| err(Scan::INPUT_NAMES[slot], "is required but missing"));
    let u = req(Scan::U)?;
    expect_rank("u", u, 3)?;
    expect_float("u", u)?;
    let (batch, seqlen, dim) = (u.shape.0[0].clone(), u.shape.0[1].clone(), u.shape.0[2].clone());
    let t = u.elem;
    let delta = req(Scan::DELTA)?;
    expect_elem("delta", delta, t, "same as 'u'")?;
    expect_shape("delta", delta, &u.shape.0)?;
    let a = req(Scan::A)?;
    expect_elem("A", a, Elem::F32, "A is always float32")?;
    expect_rank("A", a, 2)?;
    if a.shape.0[0] != dim {
        return Err(err("A", format!("has shape {}, expected [{dim}, dstate]", a.shape)));
    }
    let dstate = a.shape.0[1].clone();
    let b = req(Scan::B)?;
    expect_elem("B", b, t, "same as 'u'")?;
    expect_rank("B", b, 4)?;
    let ngroups = b.shape.0[2].clone();
    expect_shape("B", b, &[batch.clone(), seqlen.clone(), ngroups.clone(), dstate.clone()])?;
    if let (Some(d), Some(g)) = (dim.known(), ngroups.known()) {
        if g == 0 || d % g != 0 {
            return Err(err("B", format!("has shape {}, ngroups {g} does not divide dim {d}", b.shape)));
        }
    }
    let c = req(Scan::C)?;
    expect_elem("C", c, t, "same as 'u'")?;
    expect_shape("C", c, &b.shape.0)?;
    // Optional inputs in slot order, as the C++ check does (tests/shape_agreement.rs).
    let vector_f32 = |name: &str, v: &ValueType| -> Result<(), InferError> {
        expect_elem(name, v, Elem::F32, "always float32")?;
        expect_shape(name, v, std::slice::from_ref(&dim))
    };
    if let Some(v) = get(Scan::D) {
        vector_f32("D", v)?;
    }
    if let Some(z) = get(Scan::Z) {
        expect_elem("z", z, t, "same as 'u'")?;
        expect_shape("z", z, &u.shape.0)?;
    }
    if let Some(v) = get(Scan::DELTA_BIAS) {
        vector_f32("delta_bias", v)?;
    }
    let state_dims = vec![batch, dim, dstate];
    if let Some(s) = get(Scan::INITIAL_STATE) {
        expect_elem("initial_state", s, Elem::F32, "the state is always float32")?;
        expect_shape("initial_state", s, &state_dims)?;
    }
    let mut outs = vec![u.clone()];
    if cfg.final_state {
        outs.push(ValueType::new(Elem::F32, state_dims));
    }
    Ok(outs)
}
