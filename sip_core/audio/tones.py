"""Telephony tone patterns: what each one sounds like, and why it is the one chosen.

A pattern is a list of segments (frequencies, or silence, for a duration) played once or repeated.
The cadences follow the common European (CEPT / ETSI EG 201 118) and ITU-T E.180 conventions, so
they sound like what a caller expects from a telephone network; the comfort tone is our own,
deliberately quiet and sparse, for a caller held while a transfer is set up.

- ``beep`` (once): 1000 Hz for 200 ms, -10 dBm0;
- ``error`` (once): the special information tone of ITU-T E.180, 950, 1400 and 1800 Hz for 330 ms
  each, then 1 s of silence (so a playlist after it does not run into it);
- ``ringback`` (repeats): 425 Hz, 1 s on, 4 s off (CEPT);
- ``ringback_us`` (repeats): 440 + 480 Hz, 2 s on, 4 s off (North America);
- ``busy`` (repeats): 425 Hz, 0.5 s on, 0.5 s off (CEPT);
- ``comfort`` (repeats): 440 Hz for 250 ms at -24 dBm0, then 4.75 s of silence: it tells a held
  caller the call is still there without being in the way;
- ``confirm`` (once): three 1200 Hz bursts of 160 ms, 100 ms apart, then 400 ms of silence: a
  feature code did what was asked (Group Presence). Short bursts of one high tone read as
  "done" and cannot be mistaken for ringback, busy or the three rising notes of ``error``; the
  silence lets the last burst reach the phone before the PBX hangs up.

Levels are in dBm0 (0 dBm0 is a sine with peak 22 739 in 16-bit PCM, the G.711 reference); a
tone of two frequencies splits its level between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["TONES", "Tone", "TonePattern", "ToneSegment", "level_amplitude"]

#: Peak amplitude of a 0 dBm0 sine in 16-bit PCM (G.711: +3.17 dBm0 is full scale).
_DBM0_PEAK: Final = 32767 / 10 ** (3.17 / 20)


def level_amplitude(dbm0: float) -> float:
    """The peak amplitude of a sine at ``dbm0``."""
    return _DBM0_PEAK * 10 ** (dbm0 / 20)


@dataclass(frozen=True, slots=True)
class ToneSegment:
    """``frequencies`` (Hz; empty for silence) for ``duration_ms`` at ``level_dbm0`` in total."""

    duration_ms: int
    frequencies: tuple[float, ...] = ()
    level_dbm0: float = -13.0


@dataclass(frozen=True, slots=True)
class TonePattern:
    """Segments played in order; ``repeat`` starts over after the last (an endless source)."""

    name: str
    segments: tuple[ToneSegment, ...]
    repeat: bool

    @property
    def period_ms(self) -> int:
        """The length of one pass through the segments."""
        return sum(segment.duration_ms for segment in self.segments)

    def render(self, rate: int) -> list[int]:
        """One pass as 16-bit samples at ``rate``.

        Each segment starts at phase zero (a tone burst begins at a zero crossing, so no click),
        and every frequency component carries an equal share of the segment's power.
        """
        out: list[int] = []
        for segment in self.segments:
            count = rate * segment.duration_ms // 1000
            if not segment.frequencies:
                out.extend([0] * count)
                continue
            share = len(segment.frequencies)
            amplitude = level_amplitude(segment.level_dbm0) / math.sqrt(share)
            steps = [2 * math.pi * frequency / rate for frequency in segment.frequencies]
            out.extend(
                round(amplitude * sum(math.sin(step * n) for step in steps)) for n in range(count)
            )
        return out


class Tone(StrEnum):
    """The tone patterns by name (see the module docstring for what each sounds like)."""

    BEEP = "beep"
    ERROR = "error"
    RINGBACK = "ringback"
    RINGBACK_US = "ringback_us"
    BUSY = "busy"
    COMFORT = "comfort"
    CONFIRM = "confirm"

    @property
    def pattern(self) -> TonePattern:
        """The pattern this name stands for."""
        return TONES[self]


TONES: Final[dict[Tone, TonePattern]] = {
    Tone.BEEP: TonePattern("beep", (ToneSegment(200, (1000.0,), -10.0),), repeat=False),
    Tone.ERROR: TonePattern(
        "error",
        (
            ToneSegment(330, (950.0,), -13.0),
            ToneSegment(330, (1400.0,), -13.0),
            ToneSegment(330, (1800.0,), -13.0),
            ToneSegment(1000),
        ),
        repeat=False,
    ),
    Tone.RINGBACK: TonePattern(
        "ringback", (ToneSegment(1000, (425.0,)), ToneSegment(4000)), repeat=True
    ),
    Tone.RINGBACK_US: TonePattern(
        "ringback_us", (ToneSegment(2000, (440.0, 480.0), -16.0), ToneSegment(4000)), repeat=True
    ),
    Tone.BUSY: TonePattern("busy", (ToneSegment(500, (425.0,)), ToneSegment(500)), repeat=True),
    Tone.COMFORT: TonePattern(
        "comfort", (ToneSegment(250, (440.0,), -24.0), ToneSegment(4750)), repeat=True
    ),
    Tone.CONFIRM: TonePattern(
        "confirm",
        (
            ToneSegment(160, (1200.0,), -13.0),
            ToneSegment(100),
            ToneSegment(160, (1200.0,), -13.0),
            ToneSegment(100),
            ToneSegment(160, (1200.0,), -13.0),
            ToneSegment(400),
        ),
        repeat=False,
    ),
}
