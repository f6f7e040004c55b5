//! CUDA part of the native build, used by the root `build.rs` under the `cuda` feature
//! (`#[path = "cpp/cuda/build_support.rs"] mod cuda_build;`, then `cuda_build::build()`).
//!
//! Compiles the `cpp/cuda/*.cu` files of `CU_SOURCES` (all but the harness's `harness_api.cu`) with nvcc for Hopper (`sm_90` machine code plus `compute_90`
//! PTX, which the driver compiles for later GPUs), archives them into `libmambac_cuda.a`, and
//! links it with the static CUDA runtime, so the op library needs only libc, libstdc++ and the
//! NVIDIA driver at run time.
//!
//! nvcc is found, in this order, at `$NVCC`, `$CUDA_HOME/bin/nvcc` (or `$CUDA_PATH`), on `PATH`,
//! and in the `nvidia/cu13` folder of a pip install (the active virtual environment, `.venv`
//! beside this workspace, or `python3`'s site-packages). Without one the build stops and says
//! what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The toolchain the H200 machines' driver (CUDA 13.0) accepts; see README "Building with CUDA".
const PIP_INSTALL: &str = "pip install nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85";

/// Translation units, one per op and element type so they compile in parallel. Not
/// `harness_api.cu`: the benchmark harness's entry points stay out of the shipped library.
const CU_SOURCES: &[&str] = &[
    "c_api.cu",
    "selective_scan.cu",
    "selective_scan_f32.cu",
    "selective_scan_f16.cu",
    "selective_scan_bf16.cu",
    "ssd_scan.cu",
    "ssd_scan_f32.cu",
    "ssd_scan_f16.cu",
    "ssd_scan_bf16.cu",
    "causal_conv1d.cu",
    "causal_conv1d_f32.cu",
    "causal_conv1d_f16.cu",
    "causal_conv1d_bf16.cu",
    "decode_layer.cu",
    "mamba2_decode_layer.cu",
    "add_rms_norm.cu",
    "gated_rms_norm.cu",
];

const HEADERS: &[&str] = &[
    "abi.h",
    "common.cuh",
    "selective_scan.h",
    "selective_scan_impl.cuh",
    "selective_scan_launch.cuh",
    "selective_scan_step.cuh",
    "selective_scan_token.cuh",
    "selective_scan_ws.cuh",
    "ssd_scan.h",
    "ssd_scan_impl.cuh",
    "ssd_chunk_impl.cuh",
    "ssd_chunk_tile.cuh",
    "ssd_token_impl.cuh",
    "causal_conv1d.h",
    "causal_conv1d_impl.cuh",
    "decode_layer.h",
    "decode_gemv.cuh",
    "mamba2_decode_layer.h",
    "add_rms_norm.h",
    "gated_rms_norm.h",
    "row_vectors.cuh",
];

pub fn build() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let src_dir = manifest.join("cpp/cuda");
    for f in CU_SOURCES.iter().chain(HEADERS) {
        println!("cargo:rerun-if-changed={}", src_dir.join(f).display());
    }
    println!("cargo:rerun-if-changed={}", src_dir.join("build_support.rs").display());
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH", "VIRTUAL_ENV", "MAMBAC_NVCC_FLAGS"] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let nvcc = find_nvcc(&manifest).unwrap_or_else(|| {
        panic!(
            "\n\nThe `cuda` feature needs nvcc (CUDA 13.0) and none was found.\n\
             Install the pinned toolchain with\n    {PIP_INSTALL}\n\
             (into the active virtual environment or python3's), or point NVCC at an nvcc \
             binary, or set CUDA_HOME.\n\n"
        )
    });
    let cuda_root = nvcc.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();

    // cxx's generated headers (kernel_abi.rs.h, rust/cxx.h); the root build.rs ran the bridge.
    let cxx_include = out_dir.join("cxxbridge/include");
    let obj_dir = out_dir.join("cuda");
    std::fs::create_dir_all(&obj_dir).expect("create OUT_DIR/cuda");

    let jobs: usize = std::env::var("NUM_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(2).max(1);
    let extra: Vec<String> = std::env::var("MAMBAC_NVCC_FLAGS")
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut objects = Vec::new();
    let mut pending: Vec<(String, std::process::Child)> = Vec::new();
    for src in CU_SOURCES {
        let obj = obj_dir.join(src.replace(".cu", ".o"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg("-std=c++17")
            .arg("-O3")
            .args(["-gencode", "arch=compute_90,code=sm_90"])
            .args(["-gencode", "arch=compute_90,code=compute_90"])
            .args(["-Xcompiler", "-fPIC"])
            .arg("-cudart=static")
            .arg(format!("-I{}", cxx_include.display()))
            .arg(format!("-I{}", manifest.join("cpp/include").display()))
            .arg(format!("-I{}", src_dir.display()))
            .args(&extra)
            .arg("-c")
            .arg(src_dir.join(src))
            .arg("-o")
            .arg(&obj);
        if pending.len() >= jobs {
            let (name, child) = pending.remove(0);
            wait_ok(&name, child);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
        pending.push((src.to_string(), child));
        objects.push(obj);
    }
    for (name, child) in pending {
        wait_ok(&name, child);
    }

    let lib = out_dir.join("libmambac_cuda.a");
    let _ = std::fs::remove_file(&lib);
    let status = Command::new(&nvcc).arg("--lib").arg("-o").arg(&lib).args(&objects).status().expect("run nvcc --lib");
    assert!(status.success(), "nvcc --lib failed");

    println!("cargo:rustc-link-search=native={}", out_dir.display());
    println!("cargo:rustc-link-lib=static=mambac_cuda");
    for libdir in ["lib64", "lib", "lib/x64"] {
        let p = cuda_root.join(libdir);
        if p.join("libcudart_static.a").exists() {
            println!("cargo:rustc-link-search=native={}", p.display());
        }
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    for l in ["dl", "rt", "pthread"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
}

fn wait_ok(name: &str, child: std::process::Child) {
    let out = child.wait_with_output().expect("wait for nvcc");
    assert!(out.status.success(), "nvcc failed on cpp/cuda/{name}");
}

fn is_file(p: &Path) -> bool {
    p.is_file()
}

/// Where nvcc is, if anywhere (see the module docs for the order).
fn find_nvcc(manifest: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC").map(PathBuf::from) {
        return is_file(&p).then_some(p);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            let p = PathBuf::from(root).join("bin/nvcc");
            if is_file(&p) {
                return Some(p);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nvcc");
            if is_file(&p) {
                return Some(p);
            }
        }
    }
    // pip's wheels: <site-packages>/nvidia/cu13/bin/nvcc.
    let mut site_dirs: Vec<PathBuf> = Vec::new();
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(PathBuf::from(v));
    }
    venvs.push(manifest.join(".venv"));
    for venv in venvs {
        for lib in ["lib", "lib64"] {
            if let Ok(rd) = std::fs::read_dir(venv.join(lib)) {
                for e in rd.flatten() {
                    site_dirs.push(e.path().join("site-packages"));
                }
            }
        }
    }
    if let Ok(out) = Command::new("python3")
        .args(["-c", "import site,sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            site_dirs.push(PathBuf::from(line.trim()));
        }
    }
    site_dirs.into_iter().map(|d| d.join("nvidia/cu13/bin/nvcc")).find(|p| is_file(p))
}
