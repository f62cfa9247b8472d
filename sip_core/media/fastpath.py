"""The compiled packet path of the media engine, when it was built, and the switch to leave it out.

Why it exists: at 500 calls the engine forwards 50,000 packets a second, and per packet the
Python handler (`MediaLeg._rtp_from_peer`) costs about as much in the interpreter as its two
system calls cost in the kernel. `_fastpath.c` does the same work for the common case (both legs
connected to their latched far ends, packets passed on unchanged) without the interpreter;
everything else (latching, RTCP, RFC 4733 events, renumbering after a flip, generated audio,
hold) stays in Python, which registers and unregisters legs with it as their state changes.

It is optional: the extension is built where a C compiler and Python's headers are at hand
(`setup.py`), and where it is missing the engine forwards in pure Python as before. Setting
`CALLFLIP_MEDIA_FASTPATH=0` in the environment leaves it out even where it was built, which is
how the tests run the pure-Python path too.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Final

_compiled: type[FastPath] | None
try:
    from ._fastpath import FastPath
except ImportError:  # not built here: see the module doc
    _compiled = None
else:
    _compiled = FastPath

__all__ = ["ENVIRONMENT_SWITCH", "FastPathState", "load_fast_path"]

ENVIRONMENT_SWITCH: Final = "CALLFLIP_MEDIA_FASTPATH"
_OFF: Final = frozenset({"0", "off", "false", "no"})


class FastPathState(StrEnum):
    """How the engine forwards plain RTP (said once in its log)."""

    COMPILED = "compiled"
    NOT_BUILT = "pure Python (the compiled packet path was not built)"
    SWITCHED_OFF = f"pure Python ({ENVIRONMENT_SWITCH} is off)"


def load_fast_path() -> tuple[FastPath | None, FastPathState]:
    """A new compiled packet path, or None and why not."""
    if os.environ.get(ENVIRONMENT_SWITCH, "").strip().lower() in _OFF:
        return None, FastPathState.SWITCHED_OFF
    if _compiled is None:
        return None, FastPathState.NOT_BUILT
    return _compiled(), FastPathState.COMPILED
