//! `mambac run MODEL.onnx --input IN.safetensors -o OUT.safetensors`: feeds every tensor of IN by
//! name, writes every output by name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use crate::runtime::{open_session, SessionOptions};
use crate::tensor_io::{read_safetensors, write_safetensors, HostTensor};

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    /// Inputs by name (safetensors).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub session: SessionOptions,
}

pub fn main(a: Args) -> Result<()> {
    let inputs = read_safetensors(&a.input)?;
    let mut session = open_session(&a.model, &a.session)?;
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
    let values = inputs.iter().map(|(k, v)| Ok((k.clone(), v.to_ort(k)?))).collect::<Result<Vec<_>>>()?;
    let outputs = session.run(values).map_err(|e| anyhow!("running {} failed: {e}", a.model.display()))?;
    let mut out = BTreeMap::new();
    for (name, v) in &outputs {
        out.insert(name.to_string(), HostTensor::from_ort(name, &v)?);
    }
    write_safetensors(&a.output, &out)?;
    eprintln!("wrote {} ({} outputs)", a.output.display(), out.len());
    Ok(())
}
