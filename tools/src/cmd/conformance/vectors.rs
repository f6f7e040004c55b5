//! A case in ONNX's test-data layout (as onnx's backend tests and onnx_test_runner read it):
//! `DIR/model.onnx`, `DIR/test_data_set_0/input_K.pb` (graph input K, a TensorProto named as
//! the input) and `output_K.pb` (the float64 reference rounded to output K's type).

use std::path::Path;

use anyhow::Result;
use mambac_compiler::atomic_file::AtomicFile;
use mambac_compiler::emit::proto;
use onnx_protobuf::{Message, ModelProto};

use super::case::{Prepared, Tensor};

/// `SelectiveScan float16 [2,37,24,16,1] opt+init` -> `SelectiveScan_float16_2x37x24x16x1_opt+init`.
pub fn slug(s: &str) -> String {
    s.replace(['[', ']'], "").replace(',', "x").replace(' ', "_")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.commit()?;
    Ok(())
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(proto::tensor(&t.name, t.elem, &t.shape, t.bytes()).write_to_bytes()?)
}

pub fn write(dir: &Path, model: &ModelProto, p: &Prepared) -> Result<()> {
    let data = dir.join("test_data_set_0");
    std::fs::create_dir_all(&data)?;
    write_file(&dir.join("model.onnx"), &model.write_to_bytes()?)?;
    for (k, t) in p.inputs.iter().flatten().enumerate() {
        write_file(&data.join(format!("input_{k}.pb")), &tensor_bytes(t)?)?;
    }
    for (k, ((name, elem, shape), values)) in p.outputs.iter().zip(&p.reference).enumerate() {
        let t = Tensor { name: name.clone(), elem: *elem, shape: shape.clone(), values: values.clone() };
        write_file(&data.join(format!("output_{k}.pb")), &tensor_bytes(&t)?)?;
    }
    Ok(())
}
