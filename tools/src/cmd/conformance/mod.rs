//! `mambac conformance`: the op grid (every op, optional input and output, dtype, odd sizes,
//! decode steps) run through ONNX Runtime with the op library, each output compared whole with
//! the float64 reference of the same inputs under docs/op-contract.md's tier; a table, and exit
//! status 1 if any case fails. `--write-vectors DIR` also writes each case in ONNX's test-data
//! layout (`model.onnx`, `test_data_set_0/input_K.pb`, `output_K.pb`), so other runtimes and
//! tools (onnx_test_runner, polygraphy, a vendor's EP) can run the same cases.

mod case;
mod grid;
mod vectors;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mambac_compiler::ir::Elem;
use mambac_op_schema::{mamba2_layer_step as step2, mamba_layer_step as step};
use mambac_runtime::{open_session, HostTensor};
use safetensors::Dtype;

use self::grid::OpName;
use super::session_args::SessionArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    Float32,
    Float16,
    Bfloat16,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which ops to run (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub ops: Vec<OpName>,
    /// Which element types T to run (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub dtypes: Vec<DtypeArg>,
    /// Also write every case as ONNX test data into this folder (one subfolder a case: model.onnx
    /// and test_data_set_0/ with input_K.pb and the float64 reference rounded to each output's
    /// type as output_K.pb). Written even for the cases that fail here.
    #[arg(long)]
    pub write_vectors: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

struct Row {
    case: String,
    /// (output name, worst relative error, within the tier)
    outputs: Vec<(String, f64, bool)>,
    error: Option<String>,
}

pub fn main(a: Args) -> Result<()> {
    let ops = if a.ops.is_empty() {
        vec![OpName::SelectiveScan, OpName::CausalConv1d, OpName::MambaLayerStep, OpName::Mamba2LayerStep]
    } else {
        a.ops.clone()
    };
    let elems: Vec<Elem> = if a.dtypes.is_empty() {
        vec![Elem::F32, Elem::F16, Elem::BF16]
    } else {
        a.dtypes
            .iter()
            .map(|d| match d {
                DtypeArg::Float32 => Elem::F32,
                DtypeArg::Float16 => Elem::F16,
                DtypeArg::Bfloat16 => Elem::BF16,
            })
            .collect()
    };
    let scratch = std::env::temp_dir().join(format!("mambac-conformance-{}", std::process::id()));
    let root = a.write_vectors.clone().unwrap_or_else(|| scratch.clone());
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let opts = a.session.options();
    // A library that is not there fails once here, not once a case.
    mambac_runtime::find_ops_lib(opts.ops_lib.as_deref())?;
    let mut rows = Vec::new();
    for (k, c) in grid::cases(&ops, &elems).iter().enumerate() {
        let p = case::prepare(c);
        let dir = root.join(format!("{k:03}_{}", vectors::slug(&c.to_string())));
        vectors::write(&dir, &case::model(&p), &p).with_context(|| format!("cannot write {}", dir.display()))?;
        rows.push(match run_case(&dir.join("model.onnx"), &p, c.elem, &opts) {
            Ok(outputs) => Row { case: c.to_string(), outputs, error: None },
            Err(e) => Row { case: c.to_string(), outputs: vec![], error: Some(format!("{e:#}")) },
        });
    }
    if a.write_vectors.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    print_table(&rows, &a.session);
    let failed = rows.iter().filter(|r| r.error.is_some() || r.outputs.iter().any(|o| !o.2)).count();
    if let Some(dir) = &a.write_vectors {
        println!("test vectors: {} ({} cases)", dir.display(), rows.len());
    }
    if failed > 0 {
        bail!("{failed} of {} cases outside the tier or failed to run", rows.len());
    }
    Ok(())
}

fn run_case(
    model: &Path,
    p: &case::Prepared,
    elem: Elem,
    opts: &mambac_runtime::SessionOptions,
) -> Result<Vec<(String, f64, bool)>> {
    let mut session = open_session(model, opts)?;
    let mut feeds = Vec::new();
    for t in p.inputs.iter().flatten() {
        let dtype = match t.elem {
            Elem::F16 => Dtype::F16,
            Elem::BF16 => Dtype::BF16,
            _ => Dtype::F32,
        };
        let host = HostTensor { dtype, shape: t.shape.clone(), bytes: t.bytes() };
        feeds.push((t.name.clone(), host.to_ort(&t.name)?));
    }
    let outs = session.run(feeds).context("ONNX Runtime run")?;
    let mut result = Vec::new();
    for (k, (name, _, _)) in p.outputs.iter().enumerate() {
        let got = HostTensor::from_ort(&format!("output '{name}'"), &outs[name.as_str()])?;
        let mut got: Vec<f64> = got.to_f32()?.into_iter().map(f64::from).collect();
        let mut want = p.reference[k].clone();
        if got.len() != want.len() {
            bail!("output '{name}' has {} elements, the reference {}", got.len(), want.len());
        }
        // The layer's contribution, not residual_out: the residual itself would hide its error.
        if [step::OP.str, step2::OP.str].contains(&p.op_type) && k == 0 {
            let slot = if p.op_type == step::OP.str { step::RESIDUAL } else { step2::RESIDUAL };
            let r = &p.inputs[slot].as_ref().expect("residual").values;
            got.iter_mut().zip(r).for_each(|(g, r)| *g -= r);
            want.iter_mut().zip(r).for_each(|(w, r)| *w -= r);
        }
        let (worst, ok) = case::compare(&got, &want, elem);
        result.push((name.clone(), worst, ok));
    }
    Ok(result)
}

fn print_table(rows: &[Row], s: &SessionArgs) {
    println!(
        "mambac conformance ({:?} EP): worst |out - ref| / max|ref| per output, tier of docs/op-contract.md",
        s.ep
    );
    println!("{:<58} {:<44} result", "case", "outputs");
    for r in rows {
        let (outs, verdict) = match &r.error {
            Some(e) => (String::new(), format!("ERROR {e}")),
            None => {
                let outs: Vec<String> = r.outputs.iter().map(|(n, w, _)| format!("{n} {w:.2e}")).collect();
                let pass = r.outputs.iter().all(|o| o.2);
                (outs.join(", "), if pass { "pass" } else { "FAIL" }.to_string())
            }
        };
        println!("{:<58} {:<44} {verdict}", r.case, outs);
    }
    let failed = rows.iter().filter(|r| r.error.is_some() || r.outputs.iter().any(|o| !o.2)).count();
    println!("{} cases, {} pass, {failed} fail", rows.len(), rows.len() - failed);
}
