"""Where `mambac` finds ONNX Runtime (issue 11, family 1): ORT_DYLIB_PATH, then the absolute path
recorded in mambac-ort.path beside the executable, then the onnxruntime package of the first
python3 in an absolute PATH directory (run from / with PYTHONSAFEPATH=1). Nothing in the working
directory is ever run or loaded: a folder with a planted `.venv/bin/python`, `python3` or
`onnxruntime` package gets none of its code run.

Each test runs a copy of the mambac executable in its own folder (the record file lives beside the
executable) with a PATH and environment it fully controls."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from mambac_testing import TESTDATA, mambac, mambac_bin, ops_lib

MARKER_SCRIPT = """#!/bin/sh
echo ran >> {marker}
{body}
"""


def real_ort_lib():
    import onnxruntime

    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    return os.path.join(capi, sorted(n for n in os.listdir(capi) if n.startswith("libonnxruntime.so"))[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort_search_model")
    out = d / "m.onnx"
    mambac("export", TESTDATA / "mamba-tiny-hf", "-o", out, "-q")
    rng = np.random.default_rng(11)
    save_file({"input_ids": rng.integers(0, 1024, (1, 5), dtype=np.int64)}, str(d / "in.safetensors"))
    return out, d / "in.safetensors"


def write_script(path, marker, body=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MARKER_SCRIPT.format(marker=marker, body=body))
    path.chmod(0o755)


@pytest.fixture
def setup(tmp_path):
    """A private mambac, a working directory full of traps, and the marker they would write."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "mambac"
    shutil.copy2(mambac_bin(), exe)
    cwd = tmp_path / "cwd"
    marker = tmp_path / "trap-ran"
    # The old search ran ./.venv/bin/python and loaded the library it printed.
    fake_capi = cwd / "fakeort" / "capi"
    fake_capi.mkdir(parents=True)
    (fake_capi / "libonnxruntime.so.1.99.0").write_bytes(b"not a library")
    write_script(cwd / ".venv" / "bin" / "python", marker, f"echo {cwd / 'fakeort'}")
    write_script(cwd / "python3", marker, f"echo {cwd / 'fakeort'}")
    write_script(cwd / "rel" / "python3", marker, f"echo {cwd / 'fakeort'}")
    # An onnxruntime package a python3 run from here would import first.
    (cwd / "onnxruntime").mkdir()
    (cwd / "onnxruntime" / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('imported\\n')\n")
    return exe, cwd, marker


def run(exe, cwd, model, env_path, out_name="o.safetensors", **env):
    m, inp = model
    full_env = {"PATH": env_path, "MAMBAC_OPS_LIB": str(ops_lib()), **env}
    return subprocess.run(
        [str(exe), "run", str(m), "--input", str(inp), "-o", str(cwd / out_name)],
        capture_output=True, text=True, cwd=cwd, env=full_env,
    )


def test_a_planted_working_directory_is_never_run(setup, model, tmp_path):
    exe, cwd, marker = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    # Relative PATH entries (the empty one and "." and "rel") all mean the working directory.
    r = run(exe, cwd, model, f":.:rel:{empty}")
    assert r.returncode == 1
    assert not marker.exists(), "code from the working directory ran"
    assert "panicked" not in r.stderr


def test_nothing_found_lists_the_places_tried(setup, model, tmp_path):
    exe, cwd, marker = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(exe, cwd, model, str(empty))
    assert r.returncode == 1
    assert r.stderr == (
        "error: ONNX Runtime not found; looked at:\n"
        "  1. ORT_DYLIB_PATH: not set\n"
        f"  2. {exe.parent / 'mambac-ort.path'}: does not exist\n"
        "  3. python3: none in an absolute PATH directory\n"
        "Set ORT_DYLIB_PATH to libonnxruntime.so, run tools/setup.sh, or `pip install onnxruntime` for python3\n"
    )
    assert not marker.exists()


def test_1_ort_dylib_path_comes_first(setup, model, tmp_path):
    exe, cwd, marker = setup
    # A record that would fail shows that the variable is taken before it is read.
    (exe.parent / "mambac-ort.path").write_text("/nonexistent/libonnxruntime.so\n")
    r = run(exe, cwd, model, str(tmp_path), ORT_DYLIB_PATH=real_ort_lib())
    assert r.returncode == 0, r.stderr
    r = run(exe, cwd, model, str(tmp_path), ORT_DYLIB_PATH="/nonexistent/ort.so")
    assert r.stderr == "error: ORT_DYLIB_PATH is /nonexistent/ort.so, which is not a file\n"
    assert not marker.exists()


def test_2_the_recorded_absolute_path(setup, model, tmp_path):
    exe, cwd, marker = setup
    record = exe.parent / "mambac-ort.path"
    record.write_text(real_ort_lib() + "\n")
    r = run(exe, cwd, model, str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (cwd / "o.safetensors").is_file()
    # A relative record would be resolved against the working directory: it is not used.
    record.write_text("fakeort/capi/libonnxruntime.so.1.99.0\n")
    r = run(exe, cwd, model, str(tmp_path))
    assert (
        f"  2. {record}: records 'fakeort/capi/libonnxruntime.so.1.99.0', which is not an absolute path\n" in r.stderr
    ), r.stderr
    record.write_text("/nonexistent/libonnxruntime.so\n")
    r = run(exe, cwd, model, str(tmp_path))
    assert f"  2. {record}: records /nonexistent/libonnxruntime.so, which is not a file\n" in r.stderr, r.stderr
    assert not marker.exists()


def test_3_python3_in_an_absolute_path_directory(setup, model, tmp_path):
    exe, cwd, marker = setup
    log = tmp_path / "python-log"
    pybin = tmp_path / "pybin"
    # A python3 that notes where and how it was started, then is the test's own interpreter
    # (which has onnxruntime).
    write_script(pybin / "python3", log, f'echo "cwd=$(pwd) safe=$PYTHONSAFEPATH" >> {log}\nexec {sys.executable} "$@"')
    r = run(exe, cwd, model, f"rel:{pybin}")
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert lines == ["ran", "cwd=/ safe=1"], lines
    assert not marker.exists(), "the working directory's onnxruntime package or python3 ran"


def test_3_python3_without_onnxruntime_is_named(setup, model, tmp_path):
    exe, cwd, marker = setup
    pybin = tmp_path / "pybin"
    write_script(pybin / "python3", tmp_path / "log", "exit 1")
    r = run(exe, cwd, model, str(pybin))
    assert f"  3. {pybin / 'python3'}: cannot import onnxruntime\n" in r.stderr, r.stderr
    assert not marker.exists()


def test_help_states_the_order():
    for args in [["--help"], ["run", "--help"], ["generate", "--help"], ["bench", "--help"]]:
        out = mambac(*args).stdout
        assert "1. ORT_DYLIB_PATH;" in out, args
        assert "2. the absolute path recorded in mambac-ort.path beside the mambac executable" in out
        assert "3. the onnxruntime package of the first python3 in an absolute PATH directory" in out
        assert "--ops-lib, else MAMBAC_OPS_LIB, else beside the mambac executable" in out
