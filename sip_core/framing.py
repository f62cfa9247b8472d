"""Cutting a TCP byte stream into SIP messages (RFC 3261 §18.3) and keep-alives (RFC 5626 §4.4.1).

On a stream, Content-Length is the only way to find where a body ends, so it is required; a
message without it, with a bad one, or larger than the limits is a framing error: the stream can
no longer be trusted and the caller closes the connection.
"""

from __future__ import annotations

import re
from enum import Enum

from sip_core.limits import MAX_BODY, MAX_HEADER_BLOCK
from sip_core.uri import ParseError

__all__ = ["Keepalive", "StreamFramer"]


class Keepalive(Enum):
    """A keep-alive between messages: a double CRLF "ping" or the single CRLF "pong" answer."""

    PING = "ping"
    PONG = "pong"


# A Content-Length (or compact "l") header line in a header block; the value is checked separately.
_CONTENT_LENGTH_RE = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n|$)", re.IGNORECASE
)


class StreamFramer:
    """Feed it bytes as they arrive; it returns the complete messages (and keep-alives) in order.

    Each message comes out as the exact bytes of start line, headers, blank line and body, ready
    for `parse_message`. After a ParseError the framer must not be used again.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Keepalive]:
        buffer = self._buffer
        buffer += data
        out: list[bytes | Keepalive] = []
        while buffer:
            if buffer[:1] == b"\r" or buffer[:1] == b"\n":
                if buffer.startswith(b"\r\n\r\n"):
                    out.append(Keepalive.PING)
                    del buffer[:4]
                    continue
                if len(buffer) < 4 and bytes(buffer) in (b"\r\n\r", b"\r"):
                    break  # the rest of a CRLF or of a ping is on its way
                if buffer.startswith(b"\r\n"):
                    out.append(Keepalive.PONG)
                    del buffer[:2]
                    continue
                del buffer[:1]  # a stray LF or CR between messages: ignore it
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BLOCK:
                    raise ParseError("header block too large", 513)
                break
            if end > MAX_HEADER_BLOCK:
                raise ParseError("header block too large", 513)
            length = self._content_length(bytes(buffer[:end]))
            total = end + 4 + length
            if len(buffer) < total:
                break
            out.append(bytes(buffer[:total]))
            del buffer[:total]
        return out

    @staticmethod
    def _content_length(head: bytes) -> int:
        values = _CONTENT_LENGTH_RE.findall(head)
        if not values:
            raise ParseError("no Content-Length on a stream", 400)
        if len(values) > 1:
            raise ParseError("more than one Content-Length", 400)
        text = values[0]
        if not text.isdigit():
            raise ParseError(f"bad Content-Length {text[:20]!r}", 400)
        if len(text) > 9 or int(text) > MAX_BODY:
            raise ParseError("body too large", 413)
        return int(text)
