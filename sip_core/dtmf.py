"""DTMF in its three transports, turned into one digit alphabet.

Devices send key presses as RFC 4733 telephone-event RTP packets (most), as SIP INFO with an
`application/dtmf-relay` or `application/dtmf` body (some), or in-band as audio (not handled: the
relay never decodes audio). Everything here turns them into one thing, a digit character from
`DIGITS`, so whoever listens (the feature-code collector, `sip_core.features.codes`) does not care
which way a digit came.

RFC 4733 sends each event many times: packets every few tens of milliseconds while the key is down,
all with the event's start timestamp, then the final packet repeated three times. `DtmfDecoder`
reports each event once, at the first packet of it that arrives, keyed by that timestamp.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIGITS",
    "DtmfDecoder",
    "DtmfDigit",
    "DtmfError",
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
