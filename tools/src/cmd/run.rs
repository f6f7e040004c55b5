//! `mambac run MODEL.onnx --input IN.safetensors -o OUT.safetensors`: feeds every tensor of IN by
//! name, writes every output by name.

use mambac_op_schema::graph;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use mambac_compiler::atomic_file::check_not_an_input;
use mambac_compiler::emit::external_data::external_data_files;

use mambac_runtime::{check_token_ids, open_session, HostTensor};

use super::session_args::SessionArgs;
use crate::tensor_io::{read_safetensors, write_safetensors, InputSpec};

/// The input that holds token ids, checked against the vocabulary before ORT sees it.
const TOKEN_IDS: &str = graph::INPUT_IDS;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to run (any model; mambac exports' token ids are checked against the vocabulary).
    pub model: PathBuf,
    /// Inputs by name (safetensors); each must have the element type and shape the model takes.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors; written whole or not at all, never over the
    /// model, its data or the input).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub session: SessionArgs,
}

pub fn main(a: Args) -> Result<()> {
    let mut inputs_read = vec![a.model.clone(), a.input.clone()];
    // A model ORT cannot parse fails to load below, with ORT's message.
    inputs_read.extend(external_data_files(&a.model).unwrap_or_default());
    check_not_an_input(&a.output, &inputs_read)?;
    let inputs = read_safetensors(&a.input)?;
    let mut session = open_session(&a.model, &a.session.options())?;
    let wanted: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
    for name in &wanted {
        if !inputs.contains_key(name) {
            bail!(
                "{} has no tensor '{name}', an input of {} (inputs: {})",
                a.input.display(),
                a.model.display(),
                wanted.join(", ")
            );
        }
    }
    for name in inputs.keys() {
        if !wanted.contains(name) {
            bail!(
                "{} holds '{name}', which is not an input of {} (inputs: {})",
                a.input.display(),
                a.model.display(),
                wanted.join(", ")
            );
        }
    }
    for outlet in session.inputs() {
        InputSpec::of(outlet.dtype()).check(outlet.name(), &inputs[outlet.name()], &a.input)?;
    }
    if let Some(ids) = inputs.get(TOKEN_IDS) {
        // mambac exports give logits [batch, seqlen, vocab] with vocab fixed.
        let vocab = session.outputs().iter().find(|o| o.name() == graph::LOGITS).and_then(|o| {
            let spec = InputSpec::of(o.dtype());
            spec.dims.last().and_then(|d| d.0).filter(|&v| v > 0)
        });
        let values = ids.to_i64()?;
        check_token_ids(&values, &ids.shape, vocab, &format!("input '{TOKEN_IDS}' of {}", a.input.display()))?;
    }
    let values = inputs.iter().map(|(k, v)| Ok((k.clone(), v.to_ort(k)?))).collect::<Result<Vec<_>>>()?;
    let outputs = session.run(values).map_err(|e| anyhow!("running {} failed: {e}", a.model.display()))?;
    let mut out = BTreeMap::new();
    for (name, v) in &outputs {
        out.insert(name.to_string(), HostTensor::from_ort(&format!("output '{name}'"), &v)?);
    }
    write_safetensors(&a.output, &out)?;
    eprintln!("wrote {} ({} outputs)", a.output.display(), out.len());
    Ok(())
}
