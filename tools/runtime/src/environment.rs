//! Finding and starting ONNX Runtime (loaded at run time) and the mambac op library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{fail, Error, Result};
use crate::ort_search::find_ort_library;

pub const OPS_LIB_NAME: &str = "libmambac_ops.so";

/// Loads ONNX Runtime once per process.
pub fn init_ort() -> Result<&'static ort::environment::Environment> {
    // ort keeps only a weak reference to the environment: it lives here for the process.
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_ort_library().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&lib).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?;
        builder.with_name("mambac").build().map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| Error::Environment(e.clone()))
}

/// An `OrtStatus` from a raw ORT C API call as a `Result` (the status is released).
pub(crate) fn status_result(status: ort::sys::OrtStatusPtr) -> Result<(), ort::Error> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from ORT, read then released once.
    let msg = unsafe {
        let m = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        m
    };
    Err(ort::Error::new(msg))
}

/// The op library: `explicit` (`--ops-lib`), else `MAMBAC_OPS_LIB`, else beside the executable,
/// else the `mambac` Python package's copy in the executable's prefix (the wheel, below).
pub fn find_ops_lib(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            fail!(Environment, "--ops-lib {} is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MAMBAC_OPS_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            fail!(Environment, "MAMBAC_OPS_LIB is {}, which is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe()
        .map_err(|source| Error::Io { what: "cannot locate the mambac executable".into(), source })?;
    let beside = exe.with_file_name(OPS_LIB_NAME);
    if beside.is_file() {
        return Ok(beside);
    }
    let prefix = exe.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
    if let Some(lib) = python_package_lib(prefix) {
        return Ok(lib);
    }
    fail!(
        Environment,
        "the mambac op library was not found: pass --ops-lib PATH or set MAMBAC_OPS_LIB \
         (looked for {} beside the executable, and for {}/{PACKAGE_LIB_GLOB}; `cargo build --release` \
         builds it, `pip install .` installs it)",
        beside.display(),
        prefix.display()
    )
}

/// Where the wheel (docs/python-package.md) puts the library, relative to the prefix whose `bin/`
/// holds the command: a venv's, `pip install --user`'s and `--prefix`'s layout alike.
const PACKAGE_LIB_GLOB: &str = "lib/python3*/site-packages/mambac/libmambac_ops.so";

/// The `mambac` Python package's library under `prefix`, the first Python version's by name.
fn python_package_lib(prefix: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(prefix.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/mambac").join(OPS_LIB_NAME))
        .filter(|p| p.is_file())
        .collect();
    pythons.sort();
    pythons.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_package_library_is_found_under_the_prefix_only_when_there() {
        let prefix = tempfile::tempdir().unwrap();
        assert_eq!(python_package_lib(prefix.path()), None, "no lib/ folder");
        let other = prefix.path().join("lib/perl5/site-packages/mambac");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(OPS_LIB_NAME), b"").unwrap();
        assert_eq!(python_package_lib(prefix.path()), None, "not a python3 folder");
        let package = prefix.path().join("lib/python3.12/site-packages/mambac");
        std::fs::create_dir_all(&package).unwrap();
        assert_eq!(python_package_lib(prefix.path()), None, "the package without its library");
        std::fs::write(package.join(OPS_LIB_NAME), b"").unwrap();
        let older = prefix.path().join("lib/python3.11/site-packages/mambac");
        std::fs::create_dir_all(&older).unwrap();
        std::fs::write(older.join(OPS_LIB_NAME), b"").unwrap();
        assert_eq!(python_package_lib(prefix.path()), Some(older.join(OPS_LIB_NAME)), "the first by name");
    }
}
