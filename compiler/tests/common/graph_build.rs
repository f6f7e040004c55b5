//! Hand-built graphs of the rewrite tests: seeded values, inputs, float32 constants and feeds.

use std::collections::HashMap;

use mambac_compiler::interp::Tensor64;
use mambac_compiler::ir::{ConstSource, ConstTensor, Dim, Elem, Graph, Op, ValueRef, ValueType};

/// Seeded values in [-1, 1) (xorshift: the tests need no crate).
pub fn random(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

pub fn input(g: &mut Graph, name: &str, elem: Elem, dims: &[usize]) -> ValueRef {
    let ty = ValueType::new(elem, dims.iter().map(|&d| Dim::Known(d)).collect());
    g.add_op(name, Op::Input { name: name.into(), ty }, &[]).into()
}

pub fn constant(g: &mut Graph, name: &str, values: Vec<f64>, shape: &[usize]) -> ValueRef {
    let source = ConstSource::Computed(std::sync::Arc::new(values));
    let c = ConstTensor { name: name.into(), shape: shape.to_vec(), elem: Elem::F32, source };
    g.add_op(name, Op::Const(c), &[]).into()
}

/// Seeded random feeds: (input name, shape, seed) each.
pub fn random_feeds(specs: &[(&str, Vec<usize>, u64)]) -> HashMap<String, Tensor64> {
    specs
        .iter()
        .map(|(name, shape, seed)| {
            let len = shape.iter().product();
            (name.to_string(), Tensor64::new(shape.clone(), random(len, *seed)))
        })
        .collect()
}
