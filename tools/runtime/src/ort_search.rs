//! Where mambac finds the ONNX Runtime shared library. Only places the user chose or the install
//! fixed, never the working directory (a folder with a planted `.venv/bin/python` must not get its
//! code run):
//!
//! 1. `ORT_DYLIB_PATH`;
//! 2. the absolute path `tools/setup.sh` recorded in `mambac-ort.path` beside the executable;
//! 3. the `onnxruntime` package of the first `python3` in an absolute `PATH` directory, run from
//!    `/` with `PYTHONSAFEPATH=1` so that it imports nothing from the working directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{fail, Result};

/// The file beside the mambac executable that records the library's absolute path.
pub const RECORD_FILE: &str = "mambac-ort.path";

/// The search order as `--help` shows it.
pub const SEARCH_HELP: &str = "\
ONNX Runtime (libonnxruntime.so) is looked for, in this order, in:
  1. ORT_DYLIB_PATH;
  2. the absolute path recorded in mambac-ort.path beside the mambac executable (tools/setup.sh writes it);
  3. the onnxruntime package of the first python3 in an absolute PATH directory (run from / with
     PYTHONSAFEPATH=1). Nothing in the working directory is run or loaded.
The op library (libmambac_ops.so) is: --ops-lib, else MAMBAC_OPS_LIB, else beside the mambac executable,
else the mambac Python package's (pip install .) in the executable's prefix.";

/// What the search looks at, so that tests can give it their own.
pub struct SearchPlaces {
    pub env_path: Option<std::ffi::OsString>,
    pub exe_dir: Option<PathBuf>,
    pub path_var: Option<std::ffi::OsString>,
}

impl SearchPlaces {
    pub fn of_process() -> SearchPlaces {
        SearchPlaces {
            env_path: std::env::var_os("ORT_DYLIB_PATH"),
            exe_dir: std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)),
            path_var: std::env::var_os("PATH"),
        }
    }
}

pub fn find_ort_library() -> Result<PathBuf> {
    find_in(&SearchPlaces::of_process())
}

pub fn find_in(places: &SearchPlaces) -> Result<PathBuf> {
    let mut tried = Vec::new();
    match &places.env_path {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                fail!(Environment, "ORT_DYLIB_PATH is {}, which is not a file", p.display());
            }
            return Ok(p);
        }
        None => tried.push("ORT_DYLIB_PATH: not set".to_string()),
    }
    match &places.exe_dir {
        Some(dir) => {
            let record = dir.join(RECORD_FILE);
            match recorded(&record) {
                Ok(lib) => return Ok(lib),
                Err(why) => tried.push(format!("{}: {why}", record.display())),
            }
        }
        None => tried.push(format!("{RECORD_FILE}: the mambac executable's folder is unknown")),
    }
    match python3(places.path_var.as_deref()) {
        Some(py) => match from_python(&py) {
            Ok(lib) => return Ok(lib),
            Err(why) => tried.push(format!("{}: {why}", py.display())),
        },
        None => tried.push("python3: none in an absolute PATH directory".to_string()),
    }
    let tried: Vec<String> = tried.iter().enumerate().map(|(i, s)| format!("  {}. {s}", i + 1)).collect();
    fail!(
        Environment,
        "ONNX Runtime not found; looked at:\n{}\nSet ORT_DYLIB_PATH to libonnxruntime.so, run tools/setup.sh, or `pip install onnxruntime` for python3",
        tried.join("\n")
    )
}

/// The library named in the record file: an absolute path to a file.
fn recorded(record: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(record).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    let lib = PathBuf::from(text.trim_end_matches(['\n', '\r']));
    if !lib.is_absolute() {
        return Err(format!("records '{}', which is not an absolute path", lib.display()));
    }
    if !lib.is_file() {
        return Err(format!("records {}, which is not a file", lib.display()));
    }
    Ok(lib)
}

/// The first `python3` in an absolute directory of `path_var` (relative entries, the empty one
/// included, mean the working directory and are skipped).
fn python3(path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("python3"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Asks `py` where its onnxruntime package is and finds `capi/libonnxruntime.so*` there.
fn from_python(py: &Path) -> Result<PathBuf, String> {
    let out = Command::new(py)
        .args(["-c", "import onnxruntime, os; print(os.path.dirname(os.path.abspath(onnxruntime.__file__)))"])
        .env("PYTHONSAFEPATH", "1")
        .current_dir("/")
        .output()
        .map_err(|e| format!("cannot be run: {e}"))?;
    if !out.status.success() {
        return Err("cannot import onnxruntime".into());
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !dir.is_absolute() {
        return Err(format!("gave '{}' for onnxruntime, not an absolute path", dir.display()));
    }
    let capi = dir.join("capi");
    find_versioned_lib(&capi).ok_or_else(|| format!("has onnxruntime but no libonnxruntime.so* in {}", capi.display()))
}

fn find_versioned_lib(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    libs.sort();
    libs.pop()
}
