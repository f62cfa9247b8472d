"""Run a benchmark on the project's Python, whichever `python3` the shebang found.

Every script in bench/ starts with ``#!/usr/bin/env python3`` and imports this module before
anything of the project. The first `python3` on PATH may be an older system Python (sip_core needs
3.13): then, and whenever the project's virtual environment exists and is not the one running,
the script is started again, with the same arguments, on the first of

1. ``$CALLFLIP_PYTHON``, if set;
2. the project's virtual environment, ``.venv/bin/python`` at the repository root
   (`scripts/setup` makes it);
3. ``python3.13`` on PATH.

It stays on the running interpreter when that is already the project's environment (or any
environment, or any 3.13 without one to prefer). This file keeps to syntax old Pythons can parse.
"""

import os
import subprocess
import sys
from pathlib import Path

MINIMUM = (3, 13)
REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
_GUARD = "CALLFLIP_BENCH_INTERPRETER"  # set once we re-ran: never loop


def _version_of(python):
    """(major, minor) of an interpreter, or None when it does not run."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None
    return int(parts[0]), int(parts[1])


def _candidates():
    chosen = os.environ.get("CALLFLIP_PYTHON")
    if chosen:
        yield chosen
    if VENV_PYTHON.exists():
        yield str(VENV_PYTHON)
    yield "python3.13"


def _wanted():
    """Whether to start again on another interpreter."""
    if os.environ.get(_GUARD):
        return False
    if sys.version_info[:2] < MINIMUM:
        return True
    if os.environ.get("CALLFLIP_PYTHON"):
        return Path(os.environ["CALLFLIP_PYTHON"]).resolve() != Path(sys.executable).resolve()
    in_venv = sys.prefix != sys.base_prefix
    return VENV_PYTHON.exists() and not in_venv


def reexec():
    """Replace this process with the script on the right interpreter (returns if already on it)."""
    if not _wanted():
        return
    for python in _candidates():
        version = _version_of(python)
        if version is None or version < MINIMUM:
            continue
        os.environ[_GUARD] = python
        os.execvp(python, [python, sys.argv[0], *sys.argv[1:]])
    if sys.version_info[:2] < MINIMUM:
        sys.exit(
            f"bench: needs Python {MINIMUM[0]}.{MINIMUM[1]}: create the project's .venv "
            "(scripts/setup), put python3.13 on PATH, or set CALLFLIP_PYTHON"
        )


reexec()
