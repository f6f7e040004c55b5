"""The PEP 517 backend of the `mambac` wheel (pyproject.toml; docs/python-package.md).

maturin builds the `mambac` command (`bindings = "bin"`) and writes the wheel, but it builds one
crate and its bin bindings take no cdylib. So `build_wheel` first builds the op library
(`mambac-ops`, the workspace's root crate) with cargo-zigbuild, for the same glibc as maturin's
`--zig` build of the command, strips it and puts it in the Python package (python/mambac/), whose
files maturin packs. zig links both against glibc 2.28's symbol versions (manylinux_2_28) and
links the C++ standard library (libc++) into the op library statically, so the wheel needs no
newer glibc or libstdc++ than the systems that tag allows.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import maturin
# PEP 517 hooks taken from maturin as they are. No sdist (maturin's would hold the CLI crate's
# sources, not the op library's) and no editable install (untested).
from maturin import get_requires_for_build_wheel, prepare_metadata_for_build_wheel  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "mambac"
LIBRARY = "libmambac_ops.so"
# manylinux_2_28: the glibc the wheel's tag promises (pyproject.toml's `compatibility`).
GLIBC = "2.28"
WHEEL_TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "wheel"


def _prepare_environment() -> None:
    """What every hook needs (pip runs this module in a process of its own)."""
    # cargo-zigbuild and maturin's zig support both run `python -m ziglang`: with this
    # interpreter, the one that has the build requirements (pip's isolated build environment).
    os.environ["CARGO_ZIGBUILD_PYTHON_PATH"] = sys.executable
    # Target folders of their own: zig becomes the linker of the host's units too (build scripts,
    # proc macros; the host is the target), and cargo's fingerprints count the linker, so a
    # folder shared with the plain cargo build would rebuild everything in each, turn about. The
    # same holds between maturin's zig wrapper (the command) and cargo-zigbuild's (the library).
    os.environ["CARGO_TARGET_DIR"] = str(WHEEL_TARGET / "cli")
    # maturin's hooks run `maturin` from PATH, as this runs cargo-zigbuild: pip's isolated build
    # puts them there; without isolation they are in this interpreter's scripts folder (a venv's
    # bin/, not on PATH unless the venv is active). Last, so an isolated build keeps its own.
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), sysconfig.get_path("scripts")])


_prepare_environment()


def build_op_library() -> Path:
    """Builds libmambac_ops.so against glibc GLIBC, stripped, into python/mambac/; returns it."""
    triple = f"{platform.machine()}-unknown-linux-gnu"
    cmd = [
        shutil.which("cargo-zigbuild") or "cargo-zigbuild",
        "rustc",
        "--release",
        "--manifest-path",
        str(ROOT / "Cargo.toml"),
        "-p",
        "mambac-ops",
        "--lib",
        "--target",
        f"{triple}.{GLIBC}",
        "--message-format=json-render-diagnostics",
        "--",
        "-C",
        "strip=symbols",
    ]
    print("mambac wheel: building the op library:", " ".join(cmd), file=sys.stderr, flush=True)
    env = {**os.environ, "CARGO_TARGET_DIR": str(WHEEL_TARGET / "ops")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    built = None
    for line in proc.stdout.splitlines():
        msg = json.loads(line) if line.startswith("{") else {}
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "mambac_ops":
            built = next((f for f in msg["filenames"] if f.endswith(".so")), built)
    if proc.returncode != 0 or built is None:
        raise RuntimeError(f"mambac wheel: building {LIBRARY} failed (cargo-zigbuild exit status {proc.returncode})")
    dest = PACKAGE / LIBRARY
    shutil.copyfile(built, dest)
    return dest


def _with_zig(config_settings):
    """maturin's build arguments plus `--zig` (the command links against the same glibc) and the
    tag: maturin's PEP 517 hook passes `--compatibility off` (a plain linux tag) unless told."""
    settings = {k: v for k, v in (config_settings or {}).items() if k != "build-args"}
    tag = maturin.get_config()["compatibility"]
    args = maturin.get_maturin_pep517_args(config_settings)
    settings["maturin.build-args"] = [*args, "--zig", "--compatibility", tag]
    return settings


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build_op_library()
    return maturin.build_wheel(wheel_directory, _with_zig(config_settings), metadata_directory)
