"""The README's commands run as written on the bundled tiny checkpoint: each command of the
"Generating" block (CHECKPOINT_DIR = testdata/mamba-tiny-hf, `[...]` optional parts left out)
in a fresh folder, in order, and custom-ops/README.md's Rust example (built by `cargo test
--release` as target/release/examples/ort_session; its README excerpt must be the example's code)."""

import os
import re
import shlex
import subprocess

import pytest

from mambac_testing import ROOT, TESTDATA, mambac_bin, ops_lib


def sh_block_after(markdown, heading):
    """The first ```sh block after `heading`, as commands (continuations joined, comments cut)."""
    text = markdown[markdown.index(heading) :]
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def generating_commands():
    return sh_block_after((ROOT / "README.md").read_text(), "## Generating")


def as_argv(command):
    command = re.sub(r"\s\[[^\]]*\]", "", command)  # optional parts, e.g. [--json]
    argv = shlex.split(command.replace("CHECKPOINT_DIR", str(TESTDATA / "mamba-tiny-hf")))
    assert argv[0] == "mambac", command
    return [str(mambac_bin()), *argv[1:]]


def test_the_generating_block_runs_on_the_tiny_checkpoint(tmp_path):
    commands = generating_commands()
    assert len(commands) == 5 and commands[0].startswith("mambac export CHECKPOINT_DIR")
    for command in commands:
        r = subprocess.run(as_argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{command}\n{r.stderr}"
        if "--json" in command and "generate" in command:
            assert r.stdout.strip().splitlines()[-1].startswith('{"ids":')


EXAMPLE = ROOT / "target" / "release" / "examples" / "ort_session"


def test_the_rust_excerpt_is_the_example():
    readme = (ROOT / "custom-ops" / "README.md").read_text()
    excerpt = re.search(r"```rust\n(.*?)```", readme, re.S).group(1)
    code = " ".join((ROOT / "custom-ops" / "examples" / "ort_session.rs").read_text().split())
    for line in excerpt.strip().splitlines():
        assert " ".join(line.split()) in code, line


@pytest.mark.skipif(not EXAMPLE.exists(), reason="built by `cargo test --release` (CI runs it first)")
def test_the_rust_example_runs_a_model(tmp_path):
    model = tmp_path / "model.onnx"
    subprocess.run([str(mambac_bin()), "export", TESTDATA / "mamba-tiny-hf", "-o", model, "-q"], check=True)
    r = subprocess.run([str(EXAMPLE), str(ops_lib()), str(model)], capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("logits [1, 4, 1024], first [")
