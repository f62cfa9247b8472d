"""Feature codes: which digits a device dials are a code for the PBX, and which are the far end's.

`FeatureCodeCollector` sits on one leg of one of our users' devices (call control hands it every
digit of that leg, whichever way it came). It decides which digits are feature codes (`*0` = flip,
optionally followed by a device number) and which belong to the far end, which gets them in order,
including the ones held back while they still looked like the start of a code. It is a feature's
piece, not call control's: call control only knows "a digit sink on this leg".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from sip_core.clock import Clock, TimerHandle
from sip_core.dtmf import DIGITS, event_for_digit

__all__ = [
    "DEFAULT_FEATURE_CODES",
    "FeatureCode",
    "FeatureCodeCollector",
    "FeatureMatch",
]


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """A code to catch. With `argument`, digits may follow it (`*0` then a device number)."""

    code: str
    name: str
    argument: bool = False
    max_argument_digits: int | None = None

    def __post_init__(self) -> None:
        if not self.code or any(c not in DIGITS[:16] for c in self.code):
            raise ValueError(f"feature code must be DTMF digits: {self.code!r}")


@dataclass(frozen=True, slots=True)
class FeatureMatch:
    """A feature code was dialled; `argument` holds the digits after it ("" when none)."""

    name: str
    code: str
    argument: str = ""


DEFAULT_FEATURE_CODES: Final = (FeatureCode("*0", "flip", argument=True),)
_ARGUMENT_DIGITS: Final = frozenset("0123456789")
_TERMINATOR: Final = "#"


class FeatureCodeCollector:
    """Collects digits from one caller and splits them into feature codes and pass-through.

    After each digit, the buffered digits are either a complete code that nothing longer could
    extend (reported at once), a possible start of something longer (held, and an inter-digit timer
    started), or a dead end. At a dead end the longest complete code at the start of the buffer is
    reported, or else the first digit is passed through, and the rest is looked at again: `**0`
    sends `*` on and keeps `*0`. When the timer fires, whatever is held is decided without waiting:
    the longest complete code wins, the rest passes through. `#` ends an argument early and is
    consumed.
    """

    def __init__(
        self,
        clock: Clock,
        on_match: Callable[[FeatureMatch], None],
        on_passthrough: Callable[[str], None],
        codes: Sequence[FeatureCode] = DEFAULT_FEATURE_CODES,
        *,
        inter_digit_timeout: float = 2.0,
    ) -> None:
        self._clock = clock
        self._on_match = on_match
        self._on_passthrough = on_passthrough
        self._codes = tuple(codes)
        self._timeout = inter_digit_timeout
        self._buffer = ""
        self._timer: TimerHandle | None = None

    @property
    def pending(self) -> str:
        """Digits held back while they may still become a code."""
        return self._buffer

    def feed(self, digit: str) -> None:
        event_for_digit(digit)
        self._cancel_timer()
        self._buffer += digit.upper()
        self._process(final=False)

    def close(self) -> None:
        """Forget held digits and the timer (the call ended)."""
        self._cancel_timer()
        self._buffer = ""

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._process(final=True)

    def _classify(self, digits: str) -> tuple[FeatureMatch | None, bool, bool]:
        """(complete match, could grow, ended by the terminator) for a run of digits."""
        match: FeatureMatch | None = None
        grow = False
        terminated = False
        for code in self._codes:
            if len(code.code) > len(digits) and code.code.startswith(digits):
                grow = True
            if not digits.startswith(code.code):
                continue
            rest = digits[len(code.code) :]
            candidate: FeatureMatch | None = None
            if not rest:
                candidate = FeatureMatch(code.name, code.code)
                grow = grow or code.argument
            elif code.argument:
                ended = rest.endswith(_TERMINATOR)
                argument = rest[:-1] if ended else rest
                limit = code.max_argument_digits
                if set(argument) <= _ARGUMENT_DIGITS and (limit is None or len(argument) <= limit):
                    candidate = FeatureMatch(code.name, code.code, argument)
                    terminated = terminated or ended
                    if not ended and (limit is None or len(argument) < limit):
                        grow = True
            if candidate is not None and (match is None or len(candidate.code) > len(match.code)):
                match = candidate
        return match, grow, terminated

    def _consumed(self, match: FeatureMatch, digits: str) -> int:
        length = len(match.code) + len(match.argument)
        if digits[length : length + 1] == _TERMINATOR:
            length += 1
        return length

    def _process(self, *, final: bool) -> None:
        while self._buffer:
            digits = self._buffer
            match, grow, terminated = self._classify(digits)
            if match is not None and (terminated or final or not grow):
                self._buffer = digits[self._consumed(match, digits) :]
                self._on_match(match)
                continue
            if grow and not final:
                self._timer = self._clock.call_later(self._timeout, self._expired)
                return
            for end in range(len(digits) - 1, 0, -1):
                prefix_match = self._classify(digits[:end])[0]
                if prefix_match is not None:
                    self._buffer = digits[self._consumed(prefix_match, digits[:end]) :]
                    self._on_match(prefix_match)
                    break
            else:
                self._buffer = digits[1:]
                self._on_passthrough(digits[0])
