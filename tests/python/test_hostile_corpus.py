"""Issue 11's hostile inputs through the CLI: every case of tools/hostile/make_corpus.py must end
with exit status 1 or 2 (never a signal, never 101 = a panic) within 30 s under a 4 GiB address
space limit, print its key phrase, and leave every input file as it was."""

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mambac_testing import ROOT, mambac_bin

LIMIT_AS = 4 << 30
TIMEOUT_S = 30


def _make_corpus():
    d = Path(tempfile.mkdtemp(prefix="mambac-hostile-"))
    subprocess.run([sys.executable, str(ROOT / "tools" / "hostile" / "make_corpus.py"), str(d)], check=True, capture_output=True)
    return d, json.loads((d / "cases.json").read_text())


CORPUS, CASES = _make_corpus()
# Where a changed input is restored from, so that one failing case does not spoil the next.
PRISTINE = Path(tempfile.mkdtemp(prefix="mambac-hostile-pristine-")) / "corpus"
shutil.copytree(CORPUS, PRISTINE, symlinks=True)


def teardown_module():
    shutil.rmtree(CORPUS, ignore_errors=True)
    shutil.rmtree(PRISTINE.parent, ignore_errors=True)


_hashes = {}


def file_hash(p: Path):
    st = p.stat()
    key = (str(p), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _hashes[key]


def restore(rel):
    dst, src = CORPUS / rel, PRISTINE / rel
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.exists():
        shutil.copy2(src, dst)


def snapshot(root: Path):
    """Every file under root but out/ (where cases write): content hash, or link target."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts[:1] == ("out",):
            continue
        for name in filenames + [n for n in dirnames if (Path(dirpath) / n).is_symlink()]:
            p = Path(dirpath) / name
            rel = str(rel_dir / name)
            if p.is_symlink():
                snap[rel] = "-> " + os.readlink(p)
            else:
                snap[rel] = file_hash(p)
    return snap


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def params():
    return [pytest.param(c, id=c["name"]) for c in CASES]


def test_corpus_covers_every_family():
    families = {c["family"] for c in CASES}
    assert families >= {"safetensors", "config", "pickle", "onnx-signature", "token-ids", "arguments", "outputs", "ort-search"}
    assert len(CASES) >= 100
    assert all(c["exit"] in (1, 2) for c in CASES)


@pytest.mark.parametrize("case", params())
def test_hostile_case(case):
    before = snapshot(CORPUS)
    env = dict(os.environ)
    for k in case.get("env_unset", []):
        env.pop(k, None)
    cwd = CORPUS / case.get("cwd", ".")
    started = time.monotonic()
    try:
        r = subprocess.run(
            [str(mambac_bin().resolve()), *case["args"]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case['name']}: still running after {TIMEOUT_S} s")
    finally:
        for p in case.get("absent_after", []):
            assert not (CORPUS / p).exists(), f"{case['name']}: {p} was created: something from the input ran"
    after = snapshot(CORPUS)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for rel in changed:
        restore(rel)
    assert not changed, f"{case['name']}: inputs changed: {changed}"
    assert r.returncode >= 0, f"{case['name']}: killed by signal {-r.returncode}\n{r.stderr[-2000:]}"
    assert r.returncode != 101, f"{case['name']}: panicked\n{r.stderr[-2000:]}"
    assert r.returncode == case["exit"], f"{case['name']}: exit {r.returncode}, expected {case['exit']}\n{r.stderr[-2000:]}"
    if "max_s" in case:
        took = time.monotonic() - started
        assert took < case["max_s"], f"{case['name']}: took {took:.1f} s, more than {case['max_s']} s"
    keys = case["key"] if isinstance(case["key"], list) else [case["key"]]
    assert any(k in r.stderr for k in keys), f"{case['name']}: none of {keys} in:\n{r.stderr[-2000:]}"
