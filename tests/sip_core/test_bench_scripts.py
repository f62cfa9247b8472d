"""Every benchmark runs as documented from a fresh shell, whichever `python3` its shebang finds.

A script's shebang may find an older system Python, which must at least parse the script and reach
`bench/_interpreter.py`, which then starts it again on the project's Python (see bench/README.md).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The oldest python3 a shebang is likely to meet on a supported host (Debian 12's).
OLDEST = (3, 11)
SCRIPTS = sorted(
    path
    for path in BENCH.iterdir()
    if path.is_file()
    and os.access(path, os.X_OK)
    and path.read_text().startswith("#!")
    and "python" in path.read_text().splitlines()[0]
)


def test_the_benchmarks_are_found() -> None:
    names = {path.name for path in SCRIPTS}
    assert {"relay", "flip", "calls", "register", "soak", "fuzz", "loss", "playback"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_parses_on_an_older_python_and_reruns_itself(script: Path) -> None:
    source = script.read_text()
    tree = ast.parse(source, filename=str(script), feature_version=OLDEST)
    imported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            imported.append(node.module or "")
    assert "_interpreter" in imported, "the script never hands over to the project's Python"
    project = [name for name in imported if name.startswith(("sip_core", "_", "tests"))]
    assert project[0] == "_interpreter", f"{project[0]} is imported before _interpreter"


def test_newer_syntax_is_caught() -> None:
    with pytest.raises(SyntaxError):
        ast.parse("def within[T](value: T) -> T: ...", feature_version=OLDEST)
