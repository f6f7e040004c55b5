"""libmambac_ops.so exports one symbol, ORT's entry point, and needs no ORT library at link time."""

import subprocess

from mambac_testing import ops_lib


def test_exports_only_register_custom_ops():
    out = subprocess.run(["nm", "-D", "--defined-only", str(ops_lib())], capture_output=True, text=True, check=True).stdout
    symbols = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert symbols == ["RegisterCustomOps"], symbols


def test_does_not_link_onnxruntime():
    out = subprocess.run(["readelf", "-d", str(ops_lib())], capture_output=True, text=True, check=True).stdout
    needed = [l.split("[")[1].rstrip("]") for l in out.splitlines() if "(NEEDED)" in l]
    assert not any("onnxruntime" in n for n in needed), needed
