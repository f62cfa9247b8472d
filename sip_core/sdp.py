"""SDP session descriptions (RFC 4566) and the offer/answer helpers the B2BUA needs (RFC 3264).

Why a model rather than string surgery: the B2BUA rewrites every description that passes through it
(media must flow through the relay), and it must do so without losing what it does not understand.
So the parser keeps every line it does not interpret, in order, and `to_bytes()` writes them back;
only the fields the relay cares about (connection address, port, codecs, direction, rtcp, ptime)
are typed. Codecs are negotiated end to end and never transcoded, so the codec helpers only compare
and filter, keyed by encoding name and clock rate (payload type numbers differ between devices).

Any malformed input raises `SdpError` (a `ValueError`), never another exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

__all__ = [
    "KNOWN_CODECS",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "add_codec",
    "answer_for_new_device",
    "common_codecs",
    "offer_for_new_device",
    "parse_sdp",
    "payload_type_map",
    "restrict_codecs",
    "rewrite_for_relay",
]

MAX_SDP_BYTES: Final = 65536


class SdpError(ValueError):
    """The body is not a session description we can work with; `reason` says why."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"SDP line {line}: {reason}" if line is not None else f"SDP: {reason}")


class Direction(StrEnum):
    """The media direction attributes; hold is `sendonly`/`inactive` on the holding side."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """What the answerer says back to an offer with this direction."""
        if self is Direction.SENDONLY:
            return Direction.RECVONLY
        if self is Direction.RECVONLY:
            return Direction.SENDONLY
        return self


_DIRECTIONS: Final = frozenset(d.value for d in Direction)
# Attributes that describe how to reach the far end directly; after a relay rewrite they would
# point media around the relay, so the rewrite removes them.
_DIRECT_PATH_ATTRIBUTES: Final = frozenset(
    {"candidate", "remote-candidates", "end-of-candidates", "ice-ufrag", "ice-pwd", "ice-lite",
     "ice-options", "ice-mismatch", "rtcp-mux"}
)  # fmt: skip


@dataclass(slots=True)
class Connection:
    """A `c=` line: network type, address type and address (with any /ttl/count suffix kept)."""

    address: str
    address_type: str = "IP4"
    network_type: str = "IN"
    suffix: str = ""  # "/127" or "/127/3" for multicast, kept as written

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"c= needs three fields, got {value!r}", line)
        network_type, address_type, address = parts
        address, slash, suffix = address.partition("/")
        if not address:
            raise SdpError("c= has an empty address", line)
        return cls(address, address_type, network_type, slash + suffix)

    @classmethod
    def for_host(cls, host: str) -> Connection:
        return cls(host, "IP6" if ":" in host else "IP4")

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}{self.suffix}"


@dataclass(slots=True)
class Origin:
    """The `o=` line. `session_version` must grow with every changed offer in a dialog."""

    username: str
    session_id: str
    session_version: int
    network_type: str
    address_type: str
    address: str

    @classmethod
    def parse(cls, value: str, line: int | None = None) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(f"o= needs six fields, got {value!r}", line)
        if not parts[2].isdigit() or len(parts[2]) > 20:
            raise SdpError(f"o= session version is not a number: {parts[2]!r}", line)
        return cls(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


@dataclass(slots=True)
class Attribute:
    """An `a=` line: `a=name` (value None, a flag) or `a=name:value`."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, colon, value = text.partition(":")
        return cls(name, value if colon else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload format of a media line, resolved through rtpmap (or the static table)."""

    payload_type: int
    encoding: str  # as written: "PCMU", "opus", "telephone-event"
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        """What identifies the codec across devices: name (any case), clock rate, channels."""
        return (self.encoding.lower(), self.clock_rate, self.channels)

    @property
    def rtpmap(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return f"{text}/{self.channels}" if self.channels != 1 else text


# The static payload types (RFC 3551) that devices send without an rtpmap line.
_STATIC: Final[dict[int, tuple[str, int, int]]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # 16 kHz audio, but an 8 kHz RTP clock for historical reasons
    13: ("CN", 8000, 1),
    18: ("G729", 8000, 1),
}

# The codecs callflip's devices are expected to use (keys of `Codec.key`).
KNOWN_CODECS: Final = frozenset(
    {
        ("pcmu", 8000, 1),
        ("pcma", 8000, 1),
        ("g722", 8000, 1),
        ("opus", 48000, 2),
        ("telephone-event", 8000, 1),
        ("telephone-event", 48000, 1),
    }
)

# Line order inside a description (RFC 4566 §5); unknown letters go after the known ones.
_SESSION_ORDER: Final = "vosiuepcbtrzka"
_MEDIA_ORDER: Final = "icbka"


@dataclass(slots=True)
class MediaDescription:
    """An `m=` section. Lines other than c= and a= are kept as (letter, value) in order."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)

    # attributes

    def get(self, name: str) -> str | None:
        """The first value of attribute `name` ("" for a flag), or None when absent."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None

    def get_all(self, name: str) -> list[str]:
        return [a.value or "" for a in self.attributes if a.name == name]

    def set(self, name: str, value: str | None) -> None:
        """Replace every `a=name` with one (where the first was, else at the end)."""
        index = next((i for i, a in enumerate(self.attributes) if a.name == name), None)
        self.remove(name)
        new = Attribute(name, value)
        if index is None:
            self.attributes.append(new)
        else:
            self.attributes.insert(index, new)

    def remove(self, name: str) -> None:
        self.attributes = [a for a in self.attributes if a.name != name]

    # typed views

    @property
    def direction(self) -> Direction | None:
        """This media line's own direction attribute, None when it has none (see `effective`)."""
        for attribute in self.attributes:
            if attribute.value is None and attribute.name in _DIRECTIONS:
                return Direction(attribute.name)
        return None

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        index = next(
            (i for i, a in enumerate(self.attributes) if a.name in _DIRECTIONS),
            len(self.attributes),
        )
        self.attributes = [a for a in self.attributes if a.name not in _DIRECTIONS]
        if value is not None:
            self.attributes.insert(min(index, len(self.attributes)), Attribute(value.value))

    @property
    def ptime(self) -> int | None:
        value = self.get("ptime")
        if value is None:
            return None
        try:
            return int(float(value))
        except ValueError:
            raise SdpError(f"a=ptime is not a number: {value!r}") from None

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """The `a=rtcp` port (RFC 3605) and optional address; None when absent."""
        value = self.get("rtcp")
        if value is None:
            return None
        port_text, _, rest = value.strip().partition(" ")
        port = _port(port_text, "a=rtcp")
        return port, (Connection.parse(rest) if rest.strip() else None)

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is declined or removed (RFC 3264 §6)."""
        return self.port == 0

    def codecs(self) -> list[Codec]:
        """The formats in preference order, resolved with a=rtpmap, a=fmtp and the static table.

        A dynamic payload type without an rtpmap is skipped: nothing can be said about it.
        """
        if not self.proto.upper().startswith("RTP/"):
            return []
        rtpmaps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[int, str] = {}
        for attribute in self.attributes:
            if attribute.name == "rtpmap" and attribute.value:
                pt, parsed = _parse_rtpmap(attribute.value)
                rtpmaps.setdefault(pt, parsed)
            elif attribute.name == "fmtp" and attribute.value:
                pt_text, _, params = attribute.value.partition(" ")
                if pt_text.isdigit():
                    fmtps.setdefault(int(pt_text), params.strip())
        result: list[Codec] = []
        for fmt in self.formats:
            if not fmt.isdigit() or int(fmt) > 127:
                raise SdpError(f"RTP payload type is not 0-127: {fmt!r}")
            pt = int(fmt)
            found = rtpmaps.get(pt) or _STATIC.get(pt)
            if found is not None:
                result.append(Codec(pt, found[0], found[1], found[2], fmtps.get(pt)))
        return result

    def telephone_event_payload_type(self, clock_rate: int | None = None) -> int | None:
        """The RFC 4733 payload type offered here (optionally at one clock rate), if any."""
        for codec in self.codecs():
            if codec.encoding.lower() == "telephone-event" and (
                clock_rate is None or codec.clock_rate == clock_rate
            ):
                return codec.payload_type
        return None

    def effective_connection(self, session: SessionDescription) -> Connection | None:
        return self.connection or session.connection

    def effective_direction(self, session: SessionDescription) -> Direction:
        return self.direction or session.direction or Direction.SENDRECV

    def copy(self) -> MediaDescription:
        """A deep copy (see `SessionDescription.copy`)."""
        connection = self.connection
        return MediaDescription(
            self.media,
            self.port,
            self.proto,
            list(self.formats),
            self.port_count,
            None if connection is None else _copy_connection(connection),
            [Attribute(a.name, a.value) for a in self.attributes],
            list(self.other_lines),
        )

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        for letter in _MEDIA_ORDER:
            if letter == "c":
                if self.connection is not None:
                    out.append(f"c={self.connection}")
            elif letter == "a":
                out.extend(f"a={a}" for a in self.attributes)
            else:
                out.extend(f"{k}={v}" for k, v in self.other_lines if k == letter)
        out.extend(f"{k}={v}" for k, v in self.other_lines if k not in _MEDIA_ORDER)
        return out


@dataclass(slots=True)
class SessionDescription:
    """A whole description: the session part and its media sections, in order."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)  # i u e p b t r z k ...
    media: list[MediaDescription] = field(default_factory=list)
    version: int = 0

    @property
    def direction(self) -> Direction | None:
        for attribute in self.attributes:
            if attribute.value is None and attribute.name in _DIRECTIONS:
                return Direction(attribute.name)
        return None

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        self.attributes = [a for a in self.attributes if a.name not in _DIRECTIONS]
        if value is not None:
            self.attributes.append(Attribute(value.value))

    def audio(self) -> MediaDescription | None:
        """The first audio stream that is not rejected (a PBX call has one)."""
        return next((m for m in self.media if m.media == "audio" and not m.rejected), None)

    def copy(self) -> SessionDescription:
        """A deep copy, field by field: every leaf is an immutable str or int, so this equals
        `copy.deepcopy` at a fraction of its cost (it ran twice per call set-up)."""
        connection = self.connection
        return SessionDescription(
            Origin(*_origin_fields(self.origin)),
            self.session_name,
            None if connection is None else _copy_connection(connection),
            [Attribute(a.name, a.value) for a in self.attributes],
            list(self.other_lines),
            [media.copy() for media in self.media],
            self.version,
        )

    def to_text(self) -> str:
        out = [f"v={self.version}"]
        for letter in _SESSION_ORDER[1:]:
            if letter == "o":
                out.append(f"o={self.origin}")
            elif letter == "s":
                out.append(f"s={self.session_name}")
            elif letter == "c":
                if self.connection is not None:
                    out.append(f"c={self.connection}")
            elif letter == "t":
                times = [(k, v) for k, v in self.other_lines if k == "t"]
                out.extend(f"t={v}" for _, v in times or [("t", "0 0")])
            elif letter == "a":
                out.extend(f"a={a}" for a in self.attributes)
            else:
                out.extend(f"{k}={v}" for k, v in self.other_lines if k == letter)
        out.extend(f"{k}={v}" for k, v in self.other_lines if k not in _SESSION_ORDER)
        for media in self.media:
            out.extend(media.lines())
        return "\r\n".join(out) + "\r\n"

    def to_bytes(self) -> bytes:
        return self.to_text().encode("utf-8")

    __str__ = to_text

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        return parse_sdp(data)


def _copy_connection(connection: Connection) -> Connection:
    return Connection(
        connection.address, connection.address_type, connection.network_type, connection.suffix
    )


def _origin_fields(origin: Origin) -> tuple[str, str, int, str, str, str]:
    return (
        origin.username,
        origin.session_id,
        origin.session_version,
        origin.network_type,
        origin.address_type,
        origin.address,
    )


def _port(text: str, what: str, line: int | None = None) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise SdpError(f"{what} port is not 0-65535: {text!r}", line)
    return int(text)


def _parse_rtpmap(value: str) -> tuple[int, tuple[str, int, int]]:
    pt_text, _, rest = value.strip().partition(" ")
    parts = rest.strip().split("/")
    if not pt_text.isdigit() or int(pt_text) > 127 or len(parts) not in (2, 3) or not parts[0]:
        raise SdpError(f"a=rtpmap is malformed: {value!r}")
    if not parts[1].isdigit() or not 0 < int(parts[1]) < 10_000_000:
        raise SdpError(f"a=rtpmap clock rate is not a number: {value!r}")
    channels = 1
    if len(parts) == 3:
        if not parts[2].isdigit() or not 0 < int(parts[2]) < 256:
            raise SdpError(f"a=rtpmap channel count is not a number: {value!r}")
        channels = int(parts[2])
    return int(pt_text), (parts[0], int(parts[1]), channels)


def _parse_media_line(value: str, line: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= needs media, port and protocol, got {value!r}", line)
    media, port_text, proto, *formats = parts
    port_text, slash, count_text = port_text.partition("/")
    port = _port(port_text, "m=", line)
    count = None
    if slash:
        if not count_text.isdigit() or not 0 < int(count_text) < 65536:
            raise SdpError(f"m= port count is not a number: {value!r}", line)
        count = int(count_text)
    return MediaDescription(media, port, proto, formats, count)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description; tolerant of LF line ends and trailing blank lines."""
    if isinstance(data, bytes):
        if len(data) > MAX_SDP_BYTES:
            raise SdpError(f"larger than {MAX_SDP_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = data
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SdpError("empty body")
    version: int | None = None
    origin: Origin | None = None
    session_name: str | None = None
    session = SessionDescription(Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"))
    current: MediaDescription | None = None
    for number, raw in enumerate(lines, start=1):
        if len(raw) < 2 or raw[1] != "=" or not raw[0].isalpha():
            raise SdpError(f"not a <type>=<value> line: {raw[:40]!r}", number)
        letter, value = raw[0], raw[2:]
        if number == 1 and letter != "v":
            raise SdpError("the first line must be v=", number)
        if letter == "v":
            if number != 1 or value.strip() != "0":
                raise SdpError(f"v= must come first and be 0, got {value!r}", number)
            version = 0
        elif letter == "m":
            current = _parse_media_line(value, number)
            session.media.append(current)
        elif current is not None:
            if letter == "c":
                if current.connection is not None:
                    raise SdpError("two c= lines in one media section", number)
                current.connection = Connection.parse(value, number)
            elif letter == "a":
                current.attributes.append(Attribute.parse(value))
            elif letter in "osvtrzuep":
                raise SdpError(f"{letter}= is not allowed inside a media section", number)
            else:
                current.other_lines.append((letter, value))
        elif letter == "o":
            if origin is not None:
                raise SdpError("two o= lines", number)
            origin = Origin.parse(value, number)
        elif letter == "s":
            if session_name is not None:
                raise SdpError("two s= lines", number)
            session_name = value
        elif letter == "c":
            if session.connection is not None:
                raise SdpError("two session-level c= lines", number)
            session.connection = Connection.parse(value, number)
        elif letter == "a":
            session.attributes.append(Attribute.parse(value))
        else:
            session.other_lines.append((letter, value))
    if version is None or origin is None:
        raise SdpError("missing o= line")
    if session_name is None:
        raise SdpError("missing s= line")
    session.origin = origin
    session.session_name = session_name
    for media in session.media:
        if not media.rejected and media.effective_connection(session) is None:
            raise SdpError(f"the {media.media} stream has no connection address (c=)")
        media.codecs()  # validates rtpmap / payload types now rather than later
        if media.get("rtcp") is not None:
            media.rtcp  # noqa: B018 (validation)
        if media.get("ptime") is not None:
            media.ptime  # noqa: B018 (validation)
    return session


def rewrite_for_relay(
    description: SessionDescription,
    host: str,
    ports: Sequence[int | None],
    *,
    origin: Origin | None = None,
) -> SessionDescription:
    """A copy whose media all point at the relay: `host` and `ports[i]` for media line i.

    RTCP goes to the next port up (the relay's pair), said explicitly in `a=rtcp` when the offer had
    one. A `None` port or an already rejected stream is left at port 0 (declined). Codecs, direction
    and the rest are kept; ICE candidates are dropped because they would lead around the relay.
    `origin`, when given, replaces the `o=` line (the B2BUA keeps one per leg, bumping its version).
    """
    if len(ports) != len(description.media):
        raise SdpError(f"{len(description.media)} media lines but {len(ports)} relay ports")
    result = description.copy()
    connection = Connection.for_host(host)
    if origin is not None:
        result.origin = Origin(*_origin_fields(origin))
    if result.connection is not None or any(m.connection is None for m in result.media):
        result.connection = _copy_connection(connection)
    result.attributes = [a for a in result.attributes if a.name not in _DIRECT_PATH_ATTRIBUTES]
    for media, port in zip(result.media, ports, strict=True):
        media.attributes = [a for a in media.attributes if a.name not in _DIRECT_PATH_ATTRIBUTES]
        if port is None or media.rejected:
            media.port = 0
            continue
        media.port = port
        media.port_count = None
        if media.connection is not None:
            media.connection = _copy_connection(connection)
        if media.get("rtcp") is not None:
            media.set("rtcp", f"{port + 1} {connection}")
    return result


def common_codecs(offered: Iterable[Codec], answered: Iterable[Codec]) -> list[Codec]:
    """The offered codecs that the answer also has (same name, clock rate and channels).

    Order and payload types are the offer's: that is what the offerer will send and expect.
    """
    keys = {codec.key for codec in answered}
    return [codec for codec in offered if codec.key in keys]


def payload_type_map(source: Iterable[Codec], target: Iterable[Codec]) -> dict[int, int]:
    """Payload type in `source` -> the same codec's payload type in `target` (where they differ).

    Used at a flip: the new device may number telephone-event 96 where the old one said 101.
    """
    by_key: dict[tuple[str, int, int], int] = {}
    for codec in target:
        by_key.setdefault(codec.key, codec.payload_type)
    mapping: dict[int, int] = {}
    for codec in source:
        pt = by_key.get(codec.key)
        if pt is not None and pt != codec.payload_type:
            mapping[codec.payload_type] = pt
    return mapping


def restrict_codecs(media: MediaDescription, keep: Iterable[Codec | tuple[str, int, int]]) -> None:
    """Keep only the formats whose codec matches one of `keep` (by `Codec.key`), in place.

    rtpmap/fmtp lines of dropped payload types go too. With nothing left the stream is rejected
    (port 0) and keeps its first format, since an m= line must list at least one.
    """
    keys = {k.key if isinstance(k, Codec) else (k[0].lower(), k[1], k[2]) for k in keep}
    kept = {str(c.payload_type) for c in media.codecs() if c.key in keys}
    dropped = [f for f in media.formats if f not in kept]
    if not kept:
        media.port = 0
        media.formats = media.formats[:1]
        return
    media.formats = [f for f in media.formats if f in kept]
    dropped_set = set(dropped)

    def stays(attribute: Attribute) -> bool:
        if attribute.name in ("rtpmap", "fmtp") and attribute.value:
            return attribute.value.split(" ", 1)[0] not in dropped_set
        return True

    media.attributes = [a for a in media.attributes if stays(a)]


def add_codec(media: MediaDescription, encoding: str, clock_rate: int, fmtp: str | None) -> Codec:
    """Append a codec under the first dynamic payload type (96-127) the line does not use.

    101 is tried first for telephone-event: it is what most phones use, so no renumbering is
    needed when they answer with it.
    """
    used = set(media.formats)
    preferred = [101] if encoding.lower() == "telephone-event" else []
    payload_type = next((pt for pt in (*preferred, *range(96, 128)) if str(pt) not in used), None)
    if payload_type is None:
        raise SdpError("no free dynamic payload type")
    codec = Codec(payload_type, encoding, clock_rate, 1, fmtp)
    media.formats.append(str(payload_type))
    # Next to the other payload format lines, where a reader expects them.
    at = 1 + max(
        (i for i, a in enumerate(media.attributes) if a.name in ("rtpmap", "fmtp")), default=-1
    )
    added = [Attribute("rtpmap", codec.rtpmap)]
    if fmtp is not None:
        added.append(Attribute("fmtp", f"{payload_type} {fmtp}"))
    media.attributes[at:at] = added
    return codec


def answer_for_new_device(
    staying: SessionDescription,
    offer: SessionDescription,
    leaving: SessionDescription | None = None,
) -> SessionDescription:
    """The answer to ``offer`` from a device that takes over a call with ``staying`` (an INVITE
    with Replaces), built like call set-up's answers: from the device's offer.

    RFC 3264 (section 6.1): the answer lists the offered formats in the offer's numbering, so the
    device keeps the payload types it chose (the relay renumbers between it and the staying
    party, `payload_type_map`). Codecs are never transcoded, so only those the staying party
    agreed to are kept (its description's, and those ``leaving``, the replaced device's, has
    too: what the call negotiated), in the offer's order, with the staying party's fmtp;
    telephone-event is
    kept when offered (the PBX reads the device's keys), at the staying party's rate if it has
    one, else at the first kept codec's rate. The rest (direction, ptime) is the staying party's,
    as it is what the device talks to. Raises `SdpError` when no audio codec is in common.
    """
    audio = staying.audio()
    offered = offer.audio()
    if audio is None or offered is None:
        raise SdpError("no audio stream to answer")
    ours = {codec.key: codec for codec in audio.codecs()}
    replaced = leaving.audio() if leaving is not None else None
    if replaced is not None:
        agreed = {codec.key for codec in replaced.codecs()}
        ours = {
            key: codec
            for key, codec in ours.items()
            if key in agreed or key[0] == "telephone-event"
        }
    voice = [
        codec
        for codec in offered.codecs()
        if codec.encoding.lower() != "telephone-event" and codec.key in ours
    ]
    if not voice:
        raise SdpError("the offer has none of the call's audio codecs")
    event_rates = {key[1] for key in ours if key[0] == "telephone-event"} or {voice[0].clock_rate}
    chosen: list[Codec] = []
    for codec in offered.codecs():
        if codec.encoding.lower() == "telephone-event":
            if codec.clock_rate not in event_rates:
                continue
        elif codec.key not in ours:
            continue
        own = ours.get(codec.key)
        fmtp = own.fmtp if own is not None and own.fmtp is not None else codec.fmtp
        chosen.append(
            Codec(codec.payload_type, codec.encoding, codec.clock_rate, codec.channels, fmtp)
        )
    answer = staying.copy()
    media = next(m for m in answer.media if m.media == "audio" and not m.rejected)
    answer.media = [media]
    at = next(
        (i for i, a in enumerate(media.attributes) if a.name in ("rtpmap", "fmtp")),
        0,
    )
    rest = [a for a in media.attributes if a.name not in ("rtpmap", "fmtp")]
    lines: list[Attribute] = []
    for codec in chosen:
        lines.append(Attribute("rtpmap", codec.rtpmap))
        if codec.fmtp is not None:
            lines.append(Attribute("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    before = sum(1 for a in media.attributes[:at] if a.name not in ("rtpmap", "fmtp"))
    media.attributes = [*rest[:before], *lines, *rest[before:]]
    media.formats = [str(codec.payload_type) for codec in chosen]
    return answer


def offer_for_new_device(
    staying: SessionDescription, leaving: SessionDescription
) -> SessionDescription:
    """The audio offer for a device that takes over from ``leaving`` in a call with ``staying``.

    Codecs are never transcoded, so the new device may only use what the party that stays has
    already agreed to: the codecs both descriptions share, in the staying side's order and
    numbering (so its packets need no renumbering), plus telephone-event (RFC 4733) so the new
    device's keys can be read too; added under a free payload type if the call had none. The
    result has the audio stream only; `rewrite_for_relay` then points it at the relay.
    Raises `SdpError` when the call has no audio codec in common (nothing could be offered).
    """
    audio = staying.audio()
    other = leaving.audio()
    if audio is None or other is None:
        raise SdpError("the call has no audio stream")
    negotiated = common_codecs(audio.codecs(), other.codecs())
    if not any(codec.encoding.lower() != "telephone-event" for codec in negotiated):
        raise SdpError("the call has no audio codec in common")
    events = [c for c in audio.codecs() if c.encoding.lower() == "telephone-event"]
    keep = [*negotiated, *(c for c in events if c not in negotiated)]
    offer = staying.copy()
    media = next(m for m in offer.media if m.media == "audio" and not m.rejected)
    offer.media = [media]
    restrict_codecs(media, keep)
    if not events:
        first = next(c for c in negotiated if c.encoding.lower() != "telephone-event")
        rate = 48000 if first.clock_rate == 48000 else 8000
        add_codec(media, "telephone-event", rate, "0-16")
    return offer
