//! Native build of the op library's kernels.
//!
//! * The cxx bridge (`custom-ops/src/kernel_abi.rs`) plus the ISA-independent C++ (shape checks,
//!   CPU dispatch) are compiled for the portable baseline.
//! * The CPU kernels are compiled once per instruction set from the same source
//!   (`cpp/cpu/isa_*.cpp`), each with its own `-m` flags, and `cpp/cpu/dispatch.cpp` picks one at
//!   run time with `__builtin_cpu_supports`. Nothing is built with `-march=native`, so the library
//!   runs on any x86-64 (and the generic build on any other target).
//! * With the `cuda` feature, `cpp/cuda/build_support.rs` (owned by the CUDA side) adds its part;
//!   see the hook at the end of `main`.

use std::path::Path;

/// Every C++ file and header, for `rerun-if-changed`.
const CPP_SOURCES: &[&str] = &[
    "cpp/shape_check.cpp",
    "cpp/shape_check_cxx.cpp",
    "cpp/cpu/dispatch.cpp",
    "cpp/cpu/ssd_scan.cpp",
    "cpp/cpu/isa_generic.cpp",
    "cpp/cpu/isa_avx2.cpp",
    "cpp/cpu/isa_avx512.cpp",
    "cpp/cpu/kernels_impl.h",
    "cpp/cpu/add_rms_norm_impl.h",
    "cpp/cpu/gated_rms_norm_impl.h",
    "cpp/cpu/isa_entry.h",
    "cpp/cpu/simd.h",
    "cpp/include/mambac/shape_check.h",
    "cpp/include/mambac/cpu_kernels.h",
];

/// `MAMBAC_SANITIZE=1` (tools/sanitize.sh): every C++ file under AddressSanitizer and UBSan, and
/// the library and test binaries linked with their runtimes. Never for a release.
const SANITIZE_FLAGS: &[&str] =
    &["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"];

/// The wheel build (docs/python-package.md) links through zig (maturin/cargo-zigbuild), whose
/// linker has no `--exclude-libs`.
fn zig_linker() -> bool {
    std::env::var("RUSTC_LINKER").is_ok_and(|l| l.contains("zig"))
}

fn sanitize() -> bool {
    std::env::var("MAMBAC_SANITIZE").is_ok_and(|v| v == "1")
}

fn main() {
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let x86 = target_arch == "x86_64";

    let mut bridge = cxx_build::bridge("custom-ops/src/kernel_abi.rs");
    if sanitize() {
        for f in SANITIZE_FLAGS {
            bridge.flag(f);
        }
    }
    bridge
        .file("cpp/shape_check.cpp")
        .file("cpp/shape_check_cxx.cpp")
        .file("cpp/cpu/dispatch.cpp")
        .file("cpp/cpu/ssd_scan.cpp")
        .include("cpp/include")
        .std("c++17")
        .flag_if_supported("-Wall")
        .define("MAMBAC_HAVE_X86_ISAS", if x86 { "1" } else { "0" })
        .compile("mambac_kernels");

    // One static library per instruction set: cc applies flags per Build, not per file.
    isa_build("cpp/cpu/isa_generic.cpp", &[], "mambac_cpu_generic");
    if x86 {
        isa_build("cpp/cpu/isa_avx2.cpp", &["-mavx2", "-mfma", "-mf16c"], "mambac_cpu_avx2");
        isa_build("cpp/cpu/isa_avx512.cpp", &["-mavx512f", "-mfma", "-mf16c"], "mambac_cpu_avx512");
    }

    // Export RegisterCustomOps alone. rustc's version script for a cdylib also exports every
    // `#[no_mangle]` function of upstream crates, which brings in the cxx runtime's
    // `cxxbridge1$*` helpers (rust-lang/rust#73958). Those come from rlibs, which the linker
    // reads as archives, so hiding archive symbols leaves only this crate's entry point.
    if zig_linker() {
        // zig's linker has no --exclude-libs, and of several version scripts it keeps the last:
        // this one, after rustc's (which would also export the cxx helpers).
        let map = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("custom-ops/exports.map");
        println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={}", map.display());
        println!("cargo:rerun-if-changed=custom-ops/exports.map");
    } else {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    }
    println!("cargo:rerun-if-changed=custom-ops/src/kernel_abi.rs");
    for f in CPP_SOURCES {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    println!("cargo:rerun-if-env-changed=MAMBAC_SANITIZE");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if sanitize() {
        // rustc links with -nodefaultlibs, so -fsanitize brings no runtime: name both, from the
        // compiler's own library folder.
        let out = std::process::Command::new("c++").arg("-print-file-name=libasan.so").output();
        let asan = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        if let Some(dir) = Path::new(&asan).parent() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        println!("cargo:rustc-link-lib=dylib=asan");
        println!("cargo:rustc-link-lib=dylib=ubsan");
    }

    // --- CUDA hook (owned by cpp/cuda) -------------------------------------------------------
    // With `--features cuda`, cpp/cuda/build_support.rs provides `cuda_build::build()`, which
    // compiles the CUDA kernels and emits its own link lines. Until that file exists the default
    // build must not depend on it, hence the cfg gate set below.
    cuda_hook();
}

#[cfg(feature = "cuda")]
#[path = "cpp/cuda/build_support.rs"]
mod cuda_build;

#[cfg(feature = "cuda")]
fn cuda_hook() {
    cuda_build::build();
}

#[cfg(not(feature = "cuda"))]
fn cuda_hook() {}

/// Compiles one ISA translation unit of the CPU kernels into its own static library.
fn isa_build(source: &str, flags: &[&str], lib: &str) {
    // `bridges` with no files gives a Build that already knows where cxx's generated headers
    // (kernel_abi.rs.h, rust/cxx.h) live, without compiling the bridge a second time.
    let mut build = cxx_build::bridges(std::iter::empty::<&Path>());
    build
        .file(source)
        .include("cpp/include")
        .include("cpp/cpu")
        .std("c++17")
        .opt_level(3)
        // Contract a*b+c into FMA where the ISA has it; the kernels' tolerances allow it.
        .flag_if_supported("-ffp-contract=fast")
        .flag_if_supported("-fno-math-errno")
        .flag_if_supported("-Wall")
        // GCC 12's own AVX-512 intrinsics headers trip this (their `__Y = __Y` idiom).
        .flag_if_supported("-Wno-maybe-uninitialized");
    for f in flags {
        build.flag(f);
    }
    if sanitize() {
        for f in SANITIZE_FLAGS {
            build.flag(f);
        }
    }
    build.compile(lib);
}
