"""Shared helpers of the Python tests that drive the CLI and exported models: paths, the binary,
the op library, sessions and the fixtures' reference logits. The tolerance tiers and the error
metric are in ops_reference.py, their one home; the ops' float64 references in
python/mambac/reference.py (the Python package's), which ops_reference.py re-exports."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
MAMBA1_FIXTURES = ["mamba-tiny-hf", "mamba-tiny-ssm"]
# What `export` copies from the checkpoint folder beside the model (tools/src/cmd/model_files.rs).
SIDE_FILES = {"config.json", "generation_config.json", "tokenizer.json"}


def export_files(folder):
    """The names in `folder` other than the side files an export copies: the models and data."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in SIDE_FILES)


def mambac_bin() -> Path:
    return Path(os.environ.get("MAMBAC_BIN", ROOT / "target" / "release" / "mambac"))


def ops_lib() -> Path:
    return Path(os.environ.get("MAMBAC_OPS_LIB", ROOT / "target" / "release" / "libmambac_ops.so"))


def model_session(model, threads=2):
    """A stock onnxruntime CPU session of an exported model with libmambac_ops.so registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_lib()))
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def mambac(*args, check=True):
    """Runs the mambac CLI; returns the CompletedProcess (text mode)."""
    return subprocess.run([str(mambac_bin()), *map(str, args)], capture_output=True, text=True, check=check)


def load_reference(fixture="mamba-tiny-hf"):
    from safetensors.numpy import load_file

    # mamba-tiny-ssm holds the same weights as mamba-tiny-hf and has no reference of its own.
    return load_file(str(TESTDATA / "mamba-tiny-hf" / "reference.safetensors"))
