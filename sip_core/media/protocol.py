"""The control protocol between the SIP process and its media engine process.

Why a protocol of its own: the engine is a child process (so nothing the SIP side or Home Assistant
does can stall a call's audio), and the two talk over one AF_UNIX SOCK_SEQPACKET socketpair. The
socket type does the framing: one datagram is one message (or one batch of them), never split or
merged. A message is a two-byte header (protocol version, message kind) and the message's fields
as a JSON array; bound
sockets travel beside it as SCM_RIGHTS ancillary data (a message kind says how many it carries).
Every message carries the version, and the engine's first message (`Hello`) says which version it
speaks: a parent and an engine of different releases refuse each other instead of misreading.

Commands go from the SIP side to the engine, several in one datagram when they were given in
the same turn of its event loop (a batch: see `encode_batch`; a call's set-up gives a few at
once, and every datagram wakes the engine); events (`Hello`, `Digit`, `Latched`, `LegClosed`,
`Stats`, `PlayEnded`, `MediaTimeout`, `Refused`, `Synced`) come back. Legs and sessions are
named by integers the SIP side chooses.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Final

__all__ = [
    "BATCH_ENTRY_OVERHEAD",
    "BATCH_KIND",
    "BATCH_OVERHEAD",
    "MAX_BATCH_FDS",
    "MAX_FDS",
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "CloseSession",
    "CodecSpec",
    "Digit",
    "DiscardSpare",
    "Hello",
    "Kind",
    "Latched",
    "LegClosed",
    "MediaTimeout",
    "Message",
    "OpenSession",
    "OpenSpare",
    "PayloadPairs",
    "Play",
    "PlayEnded",
    "PlayKind",
    "Prepare",
    "ProtocolError",
    "QueryStats",
    "Refused",
    "SendDtmf",
    "SetCodecs",
    "SetMuted",
    "SetOnHold",
    "SetPayloadMap",
    "SetRemote",
    "SetSwallow",
    "Shutdown",
    "Stats",
    "StopPlay",
    "Switch",
    "Sync",
    "Synced",
    "decode",
    "decode_all",
    "encode",
    "encode_batch",
    "receive",
    "receive_all",
]

PROTOCOL_VERSION: Final = 2  # 2: batches of commands; Hello says the packet path and scheduling
MAX_MESSAGE: Final = 65536  # far above any message here (a codec list is the longest)
MAX_FDS: Final = 4  # the most one message carries
MAX_BATCH_FDS: Final = 16  # the most one batch carries (a sender starts another batch first)
BATCH_KIND: Final = 32
"""The kind in a batch's header: not a message, but several (see `encode_batch`)."""
_HEADER: Final = struct.Struct("!BB")
_LENGTH: Final = struct.Struct("!I")
_CUT_SHORT: Final = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)  # once: enum flag arithmetic is slow
BATCH_OVERHEAD: Final = _HEADER.size
"""Bytes a batch adds: its header, and before each message its length."""
BATCH_ENTRY_OVERHEAD: Final = _LENGTH.size

type CodecSpec = tuple[int, str, int]
"""A far end's payload format as the relay needs it: payload type, encoding name, clock rate."""
type PayloadPairs = tuple[tuple[int, int], ...]
"""A payload type map as pairs (JSON objects have string keys only)."""


class ProtocolError(Exception):
    """Not one of our messages: wrong version, unknown kind, bad fields or number of sockets."""


class Kind(IntEnum):
    """The message kinds: commands below 64, events from 64 up."""

    OPEN_SESSION = 1
    OPEN_SPARE = 2
    SET_REMOTE = 3
    SET_CODECS = 4
    SET_SWALLOW = 5
    SET_PAYLOAD_MAP = 6
    SEND_DTMF = 7
    SWITCH = 8
    CLOSE_SESSION = 9
    DISCARD_SPARE = 10
    QUERY_STATS = 11
    SHUTDOWN = 12
    SYNC = 13
    PLAY = 14
    STOP_PLAY = 15
    SET_MUTED = 16
    SET_ON_HOLD = 17
    PREPARE = 18
    HELLO = 64
    DIGIT = 65
    LATCHED = 66
    LEG_CLOSED = 67
    STATS = 68
    REFUSED = 69
    SYNCED = 70
    PLAY_ENDED = 71
    MEDIA_TIMEOUT = 72


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; `KIND` names it on the wire, `FDS` is how many sockets go with it."""

    KIND: ClassVar[Kind]
    FDS: ClassVar[int] = 0


# -- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenSession(Message):
    """A call's two legs; sockets: a's RTP, a's RTCP, b's RTP, b's RTCP (bound by the SIP side)."""

    KIND = Kind.OPEN_SESSION
    FDS = 4
    session: int
    call_id: str
    a: int
    b: int


@dataclass(frozen=True, slots=True)
class OpenSpare(Message):
    """A socket pair for a device that may take over `side` (a flip target); sockets: RTP, RTCP."""

    KIND = Kind.OPEN_SPARE
    FDS = 2
    session: int
    leg: int
    side: str


@dataclass(frozen=True, slots=True)
class SetRemote(Message):
    """Where a leg sends before anything arrives (from SDP); no host: forget the far end."""

    KIND = Kind.SET_REMOTE
    leg: int
    rtp_host: str | None
    rtp_port: int
    rtcp_host: str | None
    rtcp_port: int
    latch: bool


@dataclass(frozen=True, slots=True)
class SetCodecs(Message):
    KIND = Kind.SET_CODECS
    leg: int
    codecs: tuple[CodecSpec, ...]


@dataclass(frozen=True, slots=True)
class SetSwallow(Message):
    """Whether a leg's far end's telephone-events stop at the relay (digits are still reported)."""

    KIND = Kind.SET_SWALLOW
    leg: int
    swallow: bool


@dataclass(frozen=True, slots=True)
class SetPayloadMap(Message):
    KIND = Kind.SET_PAYLOAD_MAP
    leg: int
    pairs: PayloadPairs


@dataclass(frozen=True, slots=True)
class SendDtmf(Message):
    """One key press for a leg's far end, as RFC 4733 events on the stream it receives."""

    KIND = Kind.SEND_DTMF
    leg: int
    digit: str


@dataclass(frozen=True, slots=True)
class Switch(Message):
    """Give `side` of a session to the spare `leg` (opened before); the old leg closes."""

    KIND = Kind.SWITCH
    session: int
    side: str
    leg: int
    rtp_host: str | None
    rtp_port: int
    rtcp_host: str | None
    rtcp_port: int
    latch: bool
    codecs: tuple[CodecSpec, ...] | None
    map_in: PayloadPairs
    map_out: PayloadPairs


@dataclass(frozen=True, slots=True)
class CloseSession(Message):
    KIND = Kind.CLOSE_SESSION
    session: int


@dataclass(frozen=True, slots=True)
class DiscardSpare(Message):
    KIND = Kind.DISCARD_SPARE
    session: int
    leg: int


@dataclass(frozen=True, slots=True)
class QueryStats(Message):
    KIND = Kind.QUERY_STATS
    request: int
    leg: int


class PlayKind(StrEnum):
    """What a `Play` command plays (see `sip_core.audio.Playback`)."""

    SILENCE = "silence"
    TONE = "tone"
    PROMPTS = "prompts"
    MUSIC = "music"
    FILE = "file"
    SEQUENCE = "sequence"  # names: "prompt:<name>" or "file:<path>" per part


@dataclass(frozen=True, slots=True)
class Play(Message):
    """Generated audio to a leg's far end instead of the other side's: `names` is the tone's
    name (TONE), the prompts' (PROMPTS), the WAV file's path (FILE) or each part as
    ``prompt:<name>`` / ``file:<path>`` (SEQUENCE); `duration_ms` bounds
    SILENCE (None: until stopped)."""

    KIND = Kind.PLAY
    leg: int
    play: int
    kind: str
    names: tuple[str, ...]
    duration_ms: int | None
    ptime_ms: int


@dataclass(frozen=True, slots=True)
class Prepare(Message):
    """Read and convert what a later `Play` of this kind and names will need (a sequence's
    files), for G.711 and G.722 at `ptime_ms`, off the packet loop, so that it starts at once."""

    KIND = Kind.PREPARE
    kind: str
    names: tuple[str, ...]
    ptime_ms: int


@dataclass(frozen=True, slots=True)
class StopPlay(Message):
    """End a playback (if `play` is still the leg's current one); the other side's audio resumes."""

    KIND = Kind.STOP_PLAY
    leg: int
    play: int


@dataclass(frozen=True, slots=True)
class SetMuted(Message):
    """Hold a leg's far end (True): what it sends is received and dropped."""

    KIND = Kind.SET_MUTED
    leg: int
    muted: bool


@dataclass(frozen=True, slots=True)
class SetOnHold(Message):
    """A leg's far end described a hold (sendonly, inactive or no address in its SDP): while it
    or its session's other leg is on hold, silence on the session is no reason to end it."""

    KIND = Kind.SET_ON_HOLD
    leg: int
    on_hold: bool


@dataclass(frozen=True, slots=True)
class Sync(Message):
    """Answered with `Synced` once every command before it is carried out (and reported)."""

    KIND = Kind.SYNC
    request: int


@dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """Close every socket and exit."""

    KIND = Kind.SHUTDOWN


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """The engine's first message: the protocol it speaks, its process id, how it forwards
    plain RTP (a `FastPathState` value: compiled, or pure Python and why) and how its packet
    loop is scheduled (a `Scheduling` value)."""

    KIND = Kind.HELLO
    version: int
    pid: int
    packet_path: str
    scheduling: str


@dataclass(frozen=True, slots=True)
class Digit(Message):
    """A key press seen in a leg's far end's telephone-events (reported once per press)."""

    KIND = Kind.DIGIT
    session: int
    side: str
    digit: str
    timestamp: int | None
    duration: int
    volume: int
    end: bool


@dataclass(frozen=True, slots=True)
class Latched(Message):
    """A leg took the source of its first valid packet as its far end."""

    KIND = Kind.LATCHED
    leg: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LegClosed(Message):
    """A leg's sockets are closed in the engine: its ports may be bound again."""

    KIND = Kind.LEG_CLOSED
    leg: int


@dataclass(frozen=True, slots=True)
class Stats(Message):
    KIND = Kind.STATS
    request: int
    leg: int
    received: int
    forwarded: int
    dropped_source: int
    dropped_invalid: int
    dropped_no_peer: int
    dtmf_swallowed: int
    dtmf_sent: int
    dropped_held: int
    generated: int


@dataclass(frozen=True, slots=True)
class PlayEnded(Message):
    """A playback ended: "finished", "stopped", "replaced", "closed", or why it never started."""

    KIND = Kind.PLAY_ENDED
    leg: int
    play: int
    reason: str


@dataclass(frozen=True, slots=True)
class MediaTimeout(Message):
    """A latched leg of a session heard no RTP or RTCP for `seconds`: its far end is gone
    (reported once per session; the SIP side ends the call)."""

    KIND = Kind.MEDIA_TIMEOUT
    session: int
    side: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Refused(Message):
    """A command the engine could not carry out (logged by the SIP side)."""

    KIND = Kind.REFUSED
    reason: str


@dataclass(frozen=True, slots=True)
class Synced(Message):
    KIND = Kind.SYNCED
    request: int


_BY_KIND: Final[dict[int, type[Message]]] = {
    cls.KIND: cls
    for cls in (
        OpenSession,
        OpenSpare,
        SetRemote,
        SetCodecs,
        SetSwallow,
        SetPayloadMap,
        SendDtmf,
        Switch,
        CloseSession,
        DiscardSpare,
        QueryStats,
        Shutdown,
        Sync,
        Play,
        Prepare,
        StopPlay,
        SetMuted,
        SetOnHold,
        Hello,
        Digit,
        Latched,
        LegClosed,
        Stats,
        Refused,
        Synced,
        PlayEnded,
        MediaTimeout,
    )
}


# Per kind: the field names in order, and how many (computed once: `dataclasses.fields` and
# `astuple` walk the class and deep-copy the values for every message, and the SIP side sends
# several commands per call).
_FIELD_NAMES: Final[dict[type[Message], tuple[str, ...]]] = {
    cls: tuple(field.name for field in fields(cls)) for cls in _BY_KIND.values()
}
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def encode(message: Message) -> bytes:
    """The datagram for `message` (its sockets go separately, as ancillary data).

    The body is a JSON array of the fields in declaration order; the values are JSON types
    and tuples of them (which JSON writes as arrays), so they need no conversion first."""
    names = _FIELD_NAMES.get(type(message))
    if names is None:  # a message class outside the protocol's table (never sent as such)
        names = tuple(field.name for field in fields(message))
    values = [getattr(message, name) for name in names]
    return _HEADER.pack(PROTOCOL_VERSION, message.KIND) + _ENCODER.encode(values).encode()


def _tuples(value: Any) -> Any:
    """JSON arrays back into the tuples the dataclasses hold (frozen, hashable)."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def decode(data: bytes, fd_count: int = 0) -> Message:
    """The message in one datagram; `ProtocolError` for anything that is not a valid one."""
    if len(data) < _HEADER.size:
        raise ProtocolError(f"a message of {len(data)} bytes has no header")
    version, kind = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind}")
    if fd_count != cls.FDS:
        raise ProtocolError(f"{cls.__name__} came with {fd_count} sockets, expected {cls.FDS}")
    try:
        values = json.loads(data[_HEADER.size :])
    except ValueError as exc:
        raise ProtocolError(f"{cls.__name__}: fields are not JSON: {exc}") from exc
    count = len(_FIELD_NAMES[cls])
    if not isinstance(values, list) or len(values) != count:
        raise ProtocolError(f"{cls.__name__}: expected {count} fields")
    return cls(*[_tuples(value) if isinstance(value, list) else value for value in values])


def encode_batch(datagrams: list[bytes]) -> bytes:
    """One datagram carrying several `encode`d messages, in order: the header (with
    `BATCH_KIND`), then each message's length (four bytes) and datagram. Their sockets travel
    together as the batch's ancillary data, in the same order."""
    parts = [_HEADER.pack(PROTOCOL_VERSION, BATCH_KIND)]
    for data in datagrams:
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_all(data: bytes, fd_count: int = 0) -> list[Message]:
    """The messages in one datagram (a batch, or one message) in order; `ProtocolError` for
    anything that is not valid, as a whole (nothing of a bad batch is carried out)."""
    if len(data) < _HEADER.size or data[1] != BATCH_KIND:
        return [decode(data, fd_count)]
    if data[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data[0]}, expected {PROTOCOL_VERSION}")
    messages: list[Message] = []
    sockets = 0
    offset = _HEADER.size
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ProtocolError("a batch ends inside a message's length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        part = data[offset : offset + length]
        offset += length
        if len(part) != length or length < _HEADER.size:
            raise ProtocolError("a batch ends inside a message")
        cls = _BY_KIND.get(part[1])
        fds = cls.FDS if cls is not None else 0
        messages.append(decode(part, fds))
        sockets += fds
    if not messages:
        raise ProtocolError("an empty batch")
    if sockets != fd_count:
        raise ProtocolError(f"a batch came with {fd_count} sockets, its messages take {sockets}")
    return messages


def receive_all(sock: socket.socket) -> list[tuple[Message, list[socket.socket]]] | None:
    """`receive` for a datagram that may be a batch: each message with its own sockets."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_BATCH_FDS)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    if not data and not fds:
        return None
    try:
        if flags & _CUT_SHORT:
            raise ProtocolError("a message was cut short")
        messages = decode_all(data, len(sockets))
    except ProtocolError:
        for item in sockets:
            item.close()
        raise
    received: list[tuple[Message, list[socket.socket]]] = []
    for message in messages:
        received.append((message, sockets[: message.FDS]))
        del sockets[: message.FDS]
    return received


def receive(sock: socket.socket) -> tuple[Message, list[socket.socket]] | None:
    """Read one message (non-blocking socket); None at end of stream (the peer is gone).

    Sockets that came with it are returned as socket objects (owned by the caller, closed here if
    the message is refused). `BlockingIOError` when nothing is waiting; `ProtocolError` for junk.
    """
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    sockets = [socket.socket(fileno=fd) for fd in fds]
    if not data and not fds:
        return None
    if flags & _CUT_SHORT:
        for item in sockets:
            item.close()
        raise ProtocolError("a message was cut short")
    try:
        return decode(data, len(sockets)), sockets
    except ProtocolError:
        for item in sockets:
            item.close()
        raise
