//! Running an exported model from Rust with `ort` 2.0 and the op library registered: the
//! snippet of custom-ops/README.md, compiled in CI (`cargo clippy --all-targets`, `cargo test`)
//! and run by tests/python/test_readme_commands.py.
//!
//! ```sh
//! cargo build --release -p mambac-ops            # target/release/libmambac_ops.so
//! mambac export testdata/mamba-tiny-hf -o model.onnx
//! ORT_DYLIB_PATH=/path/to/libonnxruntime.so.1.32.0 \
//!     cargo run --release --example ort_session -- target/release/libmambac_ops.so model.onnx
//! ```
//!
//! With the workspace's `ort` (feature `load-dynamic`) the ONNX Runtime library is loaded at run
//! time from `ORT_DYLIB_PATH`; with ort's default features it is downloaded and linked instead.

use ort::session::Session;
use ort::value::Tensor;

fn main() -> ort::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(ops_lib), Some(model)) = (args.next(), args.next()) else {
        eprintln!("usage: ort_session LIBMAMBAC_OPS_SO MODEL_ONNX");
        std::process::exit(2);
    };
    // One environment for the process; sessions keep a reference to it.
    let environment = ort::init().with_name("mambac-example").build()?;
    let mut session = Session::builder(&environment)?.with_operator_library(&ops_lib)?.commit_from_file(&model)?;
    // Token ids [batch 1, seqlen 4], each below the model's vocabulary size.
    let input_ids = Tensor::from_array(([1usize, 4], vec![1i64, 2, 3, 4]))?;
    let outputs = session.run(ort::inputs!["input_ids" => input_ids])?;
    let (shape, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
    println!("logits {shape:?}, first {:?}", &logits[..3]);
    Ok(())
}
