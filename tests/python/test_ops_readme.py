"""The Python snippet of custom-ops/README.md runs as written (library path swapped for the one
under test; test_wheel.py runs it unchanged with the installed package)."""

import re
from pathlib import Path

from mambac_testing import ROOT as REPO
from ops_reference import LIB


def test_readme_python_snippet_runs(capsys):
    text = (REPO / "custom-ops/README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "mambac.get_library_path()" in snippet
    exec(compile(snippet.replace("mambac.get_library_path()", repr(str(Path(LIB)))), "README.md", "exec"), {})
    assert "(1, 16, 64)" in capsys.readouterr().out
