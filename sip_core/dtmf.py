"""DTMF in its three transports, and the feature-code collector that listens to it.

Devices send key presses as RFC 4733 telephone-event RTP packets (most), as SIP INFO with an
`application/dtmf-relay` or `application/dtmf` body (some), or in-band as audio (not handled: the
relay never decodes audio). Everything here turns them into one thing, a digit character from
`DIGITS`, so the collector does not care which way a digit came.

RFC 4733 sends each event many times: packets every few tens of milliseconds while the key is down,
all with the event's start timestamp, then the final packet repeated three times. `DtmfDecoder`
reports each event once, at the first packet of it that arrives, keyed by that timestamp.

`FeatureCodeCollector` decides which digits are feature codes (`*0` = flip, optionally followed by
a device number) and which belong to the far end, which gets them in order, including the ones held
back while they still looked like the start of a code.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from .clock import Clock, TimerHandle

__all__ = [
    "DEFAULT_FEATURE_CODES",
    "DIGITS",
    "DtmfDecoder",
    "DtmfDigit",
    "DtmfError",
    "FeatureCode",
    "FeatureCodeCollector",
    "FeatureMatch",
    "InfoDigit",
    "TelephoneEvent",
    "build_telephone_event",
    "format_dtmf_relay",
    "parse_dtmf_info",
    "parse_telephone_event",
]

# Event codes 0-16 (RFC 4733 §3.2) as characters; 16 is hook flash.
DIGITS: Final = "0123456789*#ABCD!"
_EVENT: Final = struct.Struct("!BBH")


class DtmfError(ValueError):
    """A DTMF payload or body that cannot be read."""


def digit_for_event(event: int) -> str | None:
    """The character for an RFC 4733 DTMF event code, None for non-DTMF events (tones etc.)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def event_for_digit(digit: str) -> int:
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return index


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 payload: event code, end bit, volume (0 to -63 dBm0 as 0-63), duration."""

    event: int
    end: bool
    volume: int
    duration: int  # in RTP timestamp units since the event's start

    @property
    def digit(self) -> str | None:
        return digit_for_event(self.event)


def parse_telephone_event(payload: bytes | bytearray | memoryview) -> TelephoneEvent:
    """Read the first event block of a telephone-event payload (redundant blocks follow it)."""
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, needs 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_telephone_event(event: TelephoneEvent) -> bytes:
    return _EVENT.pack(
        event.event & 0xFF,
        (0x80 if event.end else 0) | (event.volume & 0x3F),
        event.duration & 0xFFFF,
    )


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press, reported once; `timestamp` is its RTP start timestamp (None from SIP INFO)."""

    digit: str
    timestamp: int | None = None
    duration: int = 0
    volume: int = 0
    end: bool = False


class DtmfDecoder:
    """Turns a stream of telephone-event payloads into one `DtmfDigit` per key press.

    An event is identified by its RTP timestamp (all of its packets share it). A few recent
    timestamps are remembered so that a late repeat of an earlier event is not a new press. A long
    press that overflows the 16-bit duration restarts with a new timestamp exactly where the last
    segment ended (RFC 4733 §2.5.1.3); that continuation is not a new press either.
    """

    __slots__ = ("_last_end", "_recent")

    def __init__(self, memory: int = 8) -> None:
        self._recent: deque[int] = deque(maxlen=memory)
        self._last_end: tuple[int, int] | None = None  # (event, timestamp where it would resume)

    def reset(self) -> None:
        """Forget history (a new stream: after a flip the new device starts its own timestamps)."""
        self._recent.clear()
        self._last_end = None

    def feed(self, payload: bytes | bytearray | memoryview, timestamp: int) -> DtmfDigit | None:
        """The digit if this packet starts a press not seen before; None for repeats and junk."""
        try:
            event = parse_telephone_event(payload)
        except DtmfError:
            return None
        digit = event.digit
        if digit is None or timestamp in self._recent:
            return None
        self._recent.append(timestamp)
        continuation = self._last_end == (event.event, timestamp)
        self._last_end = (event.event, (timestamp + event.duration) & 0xFFFFFFFF)
        if continuation:
            return None
        return DtmfDigit(digit, timestamp, event.duration, event.volume, event.end)


@dataclass(frozen=True, slots=True)
class InfoDigit:
    """A digit from a SIP INFO body; duration in milliseconds when the body says."""

    digit: str
    duration_ms: int | None = None


def _info_signal(value: str) -> str:
    value = value.strip()
    if len(value) == 1 and value.upper() in DIGITS:
        return value.upper()
    if value.isdigit() and 0 <= int(value) < len(DIGITS):
        return DIGITS[int(value)]
    raise DtmfError(f"not a DTMF signal: {value[:20]!r}")


def parse_dtmf_info(content_type: str, body: bytes | str) -> InfoDigit:
    """The digit of an INFO request's body (`application/dtmf-relay` or `application/dtmf`)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise DtmfError("DTMF body is not UTF-8") from None
    else:
        text = body
    if media_type == "application/dtmf":
        return InfoDigit(_info_signal(text))
    if media_type != "application/dtmf-relay":
        raise DtmfError(f"not a DTMF content type: {content_type[:60]!r}")
    signal: str | None = None
    duration: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise DtmfError(f"dtmf-relay line without '=': {line[:40]!r}")
        name = name.strip().lower()
        if name == "signal":
            signal = _info_signal(value)
        elif name == "duration":
            value = value.strip()
            if not value.isdigit() or len(value) > 9:
                raise DtmfError(f"dtmf-relay duration is not a number: {value[:20]!r}")
            duration = int(value)
    if signal is None:
        raise DtmfError("dtmf-relay body has no Signal line")
    return InfoDigit(signal, duration)


def format_dtmf_relay(digit: str, duration_ms: int = 160) -> bytes:
    """An `application/dtmf-relay` body, for passing a digit on by INFO."""
    event_for_digit(digit)
    return f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n".encode("ascii")


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
