//! Shared by the compiler's integration tests: fixture paths, reference tensors, error metrics.
#![allow(dead_code)]

pub mod forward;
pub mod graph_build;

use std::collections::HashMap;
use std::path::PathBuf;

use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::interp::{interpret, Tensor64};
use mambac_compiler::ir::validate;
use mambac_compiler::pipeline::{compile, CompileOptions};

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

/// The message of the error `Checkpoint::open(dir)` must give.
pub fn open_err(dir: &std::path::Path) -> String {
    match Checkpoint::open(dir) {
        Ok(_) => panic!("{} opened, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Every tensor of a fixture's `reference.safetensors`, as float64.
pub fn reference(name: &str) -> HashMap<String, Tensor64> {
    let bytes = std::fs::read(testdata(name).join("reference.safetensors")).expect("reference file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference parses");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F64 => {
                    v.data().chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
                }
                safetensors::Dtype::F32 => {
                    v.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::I64 => {
                    v.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                d => panic!("unexpected dtype {d:?} in reference"),
            };
            (k, Tensor64::new(v.shape().to_vec(), data))
        })
        .collect()
}

/// docs/op-contract.md's model-level metric: max|out - ref| / max|ref|. NaN anywhere gives infinity.
pub fn worst_rel(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "compared tensors differ in size");
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (o, r) in out.iter().zip(reference) {
        let d = (o - r).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    worst / scale
}

/// Runs the float64 interpreter on a compiled checkpoint.
pub fn run_interp(
    ckpt: &Checkpoint,
    opts: &CompileOptions,
    inputs: HashMap<String, Tensor64>,
) -> HashMap<String, Tensor64> {
    let compiled = compile(ckpt, opts).expect("compiles");
    let vg = validate(&compiled.graph).expect("valid");
    interpret(&vg, ckpt, &inputs).expect("interprets")
}

pub fn ids_input(ids: &Tensor64) -> HashMap<String, Tensor64> {
    HashMap::from([("input_ids".to_string(), ids.clone())])
}

/// Zero conv and ssm states of every layer (a new sequence), by graph input name, in the model's
/// shapes (Mamba-2: the conv over x, B and C; the ssm state `[batch, heads, head_dim, state]`).
pub fn zero_states(cfg: &mambac_compiler::checkpoint::MambaConfig, batch: usize) -> HashMap<String, Tensor64> {
    let (conv_dim, ssm) = match &cfg.mamba2 {
        Some(m) => (m.conv_dim(cfg), vec![batch, m.num_heads, m.head_dim, cfg.state_size]),
        None => (cfg.intermediate_size, vec![batch, cfg.intermediate_size, cfg.state_size]),
    };
    let mut states = HashMap::new();
    for i in 0..cfg.num_hidden_layers {
        states.insert(format!("conv_state.{i}"), Tensor64::zeros(vec![batch, conv_dim, cfg.conv_kernel - 1]));
        states.insert(format!("ssm_state.{i}"), Tensor64::zeros(ssm.clone()));
    }
    states
}

/// Slices `[b, t0..t1, ...]` out of a `[B, L, ...]` tensor.
pub fn slice_seq(t: &Tensor64, t0: usize, t1: usize) -> Tensor64 {
    let (b, l) = (t.shape[0], t.shape[1]);
    let inner: usize = t.shape[2..].iter().product();
    let mut data = Vec::new();
    for bi in 0..b {
        data.extend_from_slice(&t.data[(bi * l + t0) * inner..(bi * l + t1) * inner]);
    }
    let mut shape = t.shape.clone();
    shape[1] = t1 - t0;
    Tensor64::new(shape, data)
}
