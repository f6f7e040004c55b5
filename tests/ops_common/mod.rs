//! Shared by the op library's Rust integration tests: one-node ONNX models (built with
//! onnx-protobuf) and ONNX Runtime sessions with `libmambac_ops.so` loaded through `ort`'s
//! `SessionBuilder::with_operator_library`.
//!
//! ONNX Runtime itself is loaded at run time (`ort`'s load-dynamic): `ORT_DYLIB_PATH`, else the
//! pip wheel in the workspace's `.venv`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use onnx_protobuf::{
    attribute_proto::AttributeType, type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto,
    OperatorSetIdProto, TypeProto, ValueInfoProto,
};
use ort::environment::Environment;
use ort::session::Session;

pub const FLOAT: i32 = 1;
pub const FLOAT16: i32 = 10;

/// `MAMBAC_OPS_LIB`, else the newer of target/{release,debug}/libmambac_ops.so. (`cargo test`
/// does not relink the cdylib, so run `cargo build --release -p mambac-ops` first.)
pub fn ops_lib() -> PathBuf {
    if let Ok(p) = std::env::var("MAMBAC_OPS_LIB") {
        return p.into();
    }
    let target = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("libmambac_ops.so"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no libmambac_ops.so: run cargo build --release -p mambac-ops")
}

/// Points `ort` at an ONNX Runtime library, once.
pub fn init_ort() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return;
        }
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
        let found = std::fs::read_dir(&venv).ok().and_then(|dirs| {
            dirs.flatten().find_map(|py| {
                let capi = py.path().join("site-packages/onnxruntime/capi");
                std::fs::read_dir(capi).ok()?.flatten().map(|e| e.path()).find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so."))
                })
            })
        });
        let path = found.expect("set ORT_DYLIB_PATH to libonnxruntime.so (e.g. the pip wheel's onnxruntime/capi/)");
        // SAFETY: set before any thread of this test binary reads the environment through ort.
        unsafe { std::env::set_var("ORT_DYLIB_PATH", path) };
    });
}

/// One input or output of the graph: name and ONNX element type (shape left open).
fn value_info(name: &str, elem: i32) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.to_string();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem;
    let mut t = TypeProto::new();
    t.value = Some(type_proto::Value::TensorType(tensor));
    v.type_ = Some(t).into();
    v
}

pub enum Attr {
    Int(&'static str, i64),
    Str(&'static str, &'static str),
}

/// A model with one `mambac` node. `slots`: every input in order, "" for absent, with its type.
pub fn one_node_model(op: &str, slots: &[(&str, i32)], outputs: &[(&str, i32)], attrs: &[Attr]) -> Vec<u8> {
    let mut node = NodeProto::new();
    node.op_type = op.to_string();
    node.domain = "mambac".to_string();
    node.input = slots.iter().map(|(n, _)| n.to_string()).collect();
    node.output = outputs.iter().map(|(n, _)| n.to_string()).collect();
    for a in attrs {
        let mut p = AttributeProto::new();
        match a {
            Attr::Int(name, v) => {
                p.name = name.to_string();
                p.type_ = AttributeType::INT.into();
                p.i = *v;
            }
            Attr::Str(name, v) => {
                p.name = name.to_string();
                p.type_ = AttributeType::STRING.into();
                p.s = v.as_bytes().to_vec();
            }
        }
        node.attribute.push(p);
    }
    let mut graph = GraphProto::new();
    graph.name = op.to_string();
    graph.node.push(node);
    graph.input = slots.iter().filter(|(n, _)| !n.is_empty()).map(|(n, t)| value_info(n, *t)).collect();
    graph.output = outputs.iter().map(|(n, t)| value_info(n, *t)).collect();
    let mut model = ModelProto::new();
    model.ir_version = 9;
    for (domain, version) in [("", 17), ("mambac", 1)] {
        let mut o = OperatorSetIdProto::new();
        o.domain = domain.to_string();
        o.version = version;
        model.opset_import.push(o);
    }
    model.graph = Some(graph).into();
    model.write_to_bytes().unwrap()
}

/// The process' one ORT environment (ort allows no second).
pub fn env() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        init_ort();
        ort::init().with_name("mambac-ops-tests").build().expect("ONNX Runtime environment")
    })
}

/// A session over `model` with the op library loaded. Sessions are made one at a time: ONNX
/// Runtime adds a custom op library's domain to ONNX's process-wide schema map unlocked, and two
/// threads registering `mambac` at once can fail with "Trying to add a domain to DomainToVersion
/// map, but the domain is already exist" (seen under load with cargo's parallel test threads).
pub fn session(model: &[u8]) -> ort::Result<Session> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Session::builder(env())?.with_operator_library(ops_lib())?.commit_from_memory(model)
}

/// Deterministic, never-zero test data.
pub fn data(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 1000.0 - 0.4995)
        .collect()
}
