"""The audio shipped with sip_core: voice prompts and a music-on-hold loop, at 8 and 16 kHz.

They are made by ``scripts/make-prompts`` (speech from espeak-ng, resampled by sox; the music is
synthesised by the script itself) and stored as package data in ``sip_core/audio/data``: raw G.711
µ-law, one byte per sample (half the size of 16-bit PCM, decoded exactly with a table), compressed
with xz (``prompts/<rate>/<name>.ul.xz``, ``music/<rate>.ul.xz``). Files are read on first use and
kept, one copy per process.
"""

from __future__ import annotations

import functools
import lzma
from array import array
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from .clip import SUPPORTED_RATES, Clip
from .g711 import ulaw_decode

__all__ = ["PROMPT_NAMES", "PROMPT_TEXTS", "bundled_music", "prompt"]


def _data() -> Traversable:
    return resources.files(__package__ or "sip_core.audio").joinpath("data")


#: What each bundled prompt says, by name: the digits "0"-"9", "press", "for", "your", the
#: device types of ``sip_core.config.DeviceType`` ("desk", "mobile", ...), "flip_cancelled",
#: "not_available", "please_hold" and "transferring". ``scripts/make-prompts`` speaks these texts.
PROMPT_TEXTS: Final[dict[str, str]] = {
    **{digit: digit for digit in "0123456789"},
    "press": "press",
    "for": "for",
    "your": "your",
    "desk": "desk phone",
    "mobile": "mobile",
    "softphone": "soft phone",
    "home": "home phone",
    "conference": "conference phone",
    "flip_cancelled": "flip cancelled",
    "not_available": "not available",
    "please_hold": "please hold",
    "transferring": "transferring",
}
PROMPT_NAMES: Final = tuple(PROMPT_TEXTS)


def _check_rate(rate: int) -> None:
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"rate must be one of {SUPPORTED_RATES}, not {rate}")


@functools.cache
def prompt(name: str, rate: int) -> Clip:
    """The bundled prompt ``name`` at ``rate``; KeyError naming the known prompts if unknown."""
    _check_rate(rate)
    if name not in PROMPT_TEXTS:
        raise KeyError(f"no prompt {name!r}; known: {', '.join(PROMPT_NAMES)}")
    return Clip(name, rate, _read("prompts", str(rate), f"{name}.ul.xz"))


@functools.cache
def bundled_music(rate: int) -> Clip:
    """The bundled music-on-hold loop at ``rate``."""
    _check_rate(rate)
    return Clip("music", rate, _read("music", f"{rate}.ul.xz"))


def _read(*parts: str) -> array[int]:
    return ulaw_decode(lzma.decompress(_data().joinpath(*parts).read_bytes()))
