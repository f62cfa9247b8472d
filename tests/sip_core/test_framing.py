"""StreamFramer: cutting a TCP byte stream on Content-Length, keep-alives, framing errors."""

from __future__ import annotations

import pytest

from sip_core.framing import Keepalive, StreamFramer
from sip_core.limits import MAX_BODY, MAX_HEADER_BLOCK
from sip_core.message import ParseError, Request, parse_message


def message(body: bytes = b"", *, length: str | None = None, compact: bool = False) -> bytes:
    name = "l" if compact else "Content-Length"
    value = str(len(body)) if length is None else length
    return (
        "MESSAGE sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: framing\r\n"
        "CSeq: 1 MESSAGE\r\n"
        f"{name}: {value}\r\n\r\n"
    ).encode() + body


def test_two_messages_in_one_chunk() -> None:
    first, second = message(b"hello"), message(b"\r\n\r\nbody with blank lines", compact=True)
    out = StreamFramer().feed(first + second)
    assert out == [first, second]
    parsed = parse_message(second)
    assert isinstance(parsed, Request)
    assert parsed.body == b"\r\n\r\nbody with blank lines"


def test_byte_by_byte() -> None:
    # A ping is sent in one write; a lone CRLF that arrives by itself is taken as a pong.
    chunks = [bytes([b]) for b in message(b"abc")] + [b"\r\n\r\n"]
    chunks += [bytes([b]) for b in message()]
    framer = StreamFramer()
    out: list[bytes | Keepalive] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    assert out == [message(b"abc"), Keepalive.PING, message()]
    assert framer.buffered == 0


def test_partial_body_waits() -> None:
    framer = StreamFramer()
    data = message(b"0123456789")
    assert framer.feed(data[:-3]) == []
    assert framer.buffered == len(data) - 3
    assert framer.feed(data[-3:]) == [data]


def test_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [Keepalive.PING]
    assert framer.feed(b"\r\n") == [Keepalive.PONG]
    assert framer.feed(b"\r\n\r\n\r\n") == [Keepalive.PING, Keepalive.PONG]
    assert framer.feed(b"\r\n" + message()) == [Keepalive.PONG, message()]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (message().replace(b"Content-Length: 0\r\n", b""), 400),
        (message(length="-1"), 400),
        (message(length="abc"), 400),
        (message(length=str(MAX_BODY + 1)), 413),
        (message().replace(b"\r\n\r\n", b"\r\nl: 0\r\n\r\n"), 400),
        (b"INVITE sip:x SIP/2.0\r\nX: " + b"a" * (MAX_HEADER_BLOCK + 10), 513),
    ],
)
def test_framing_errors(data: bytes, status: int) -> None:
    with pytest.raises(ParseError) as info:
        StreamFramer().feed(data)
    assert info.value.status == status
