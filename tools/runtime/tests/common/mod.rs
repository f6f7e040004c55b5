//! What the runtime's integration tests share: where ONNX Runtime and the op library are, the
//! fixtures exported as the CLI exports them, and CPU sessions of them.

#![allow(dead_code)] // Each test file uses its own part.

use std::path::{Path, PathBuf};
use std::sync::Once;

use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::lower::LowerOptions;
use mambac_compiler::pipeline::{export as compile_export, CompileOptions, ExportOptions};
use mambac_runtime::{open_session, Ep, SessionOptions, StatefulSession};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// ORT from ORT_DYLIB_PATH, else the repository's venv; the op library from MAMBAC_OPS_LIB,
/// else target/release (what tools/test.sh builds first).
pub fn ops_lib() -> PathBuf {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            let lib = std::fs::read_dir(root().join(".venv/lib"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|py| py.path().join("site-packages/onnxruntime/capi"))
                .flat_map(|capi| std::fs::read_dir(capi).into_iter().flatten().flatten().map(|e| e.path()))
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")));
            if let Some(lib) = lib {
                // Set once, before any test thread loads ORT.
                std::env::set_var("ORT_DYLIB_PATH", lib);
            }
        }
    });
    let lib = std::env::var_os("MAMBAC_OPS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/libmambac_ops.so"));
    assert!(lib.is_file(), "{} not found: build it (cargo build --release) or set MAMBAC_OPS_LIB", lib.display());
    lib
}

/// `mambac export FIXTURE -o DIR/FIXTURE.onnx --stateful [--decode-graph]`, through the
/// compiler's API (what the command runs).
pub fn export_with(fixture: &str, out: &Path, decode_graph: bool) -> PathBuf {
    let ckpt = Checkpoint::open(&root().join("testdata").join(fixture)).expect("fixture checkpoint");
    let opts = ExportOptions {
        compile: CompileOptions {
            lower: LowerOptions { stateful: true, ..LowerOptions::default() },
            ..CompileOptions::default()
        },
        decode_graph,
        ..ExportOptions::default()
    };
    compile_export(&ckpt, out, &opts, &mut |_, _| {}).expect("export");
    out.to_path_buf()
}

pub fn export(fixture: &str, dir: &Path) -> PathBuf {
    export_with(fixture, &dir.join(format!("{fixture}.onnx")), false)
}

pub fn options() -> SessionOptions {
    SessionOptions { ops_lib: Some(ops_lib()), threads: Some(1), ep: Ep::Cpu, ..SessionOptions::default() }
}

pub fn session(model: &Path) -> StatefulSession {
    let s = open_session(model, &options()).expect("session");
    StatefulSession::new(s, Ep::Cpu, false).expect("stateful model")
}
