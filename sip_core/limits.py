"""Size limits for everything that arrives from the network.

They exist so that one hostile or broken peer cannot make the PBX buffer or parse without bound; the
values are generous for real phones (a REGISTER is ~600 bytes, an INVITE with SDP ~1.5 KiB) and for
the long-but-legal messages of RFC 4475.
"""

from typing import Final

#: Longest request or status line, in bytes. Longer request lines are answered 414.
MAX_START_LINE: Final = 8 * 1024
#: Largest header block (start line and header lines, without the blank line), in bytes.
MAX_HEADER_BLOCK: Final = 64 * 1024
#: Most header lines (after unfolding) in one message.
MAX_HEADER_LINES: Final = 512
#: Largest body, in bytes (SDP and the odd multipart body; nothing streams over SIP).
MAX_BODY: Final = 256 * 1024
#: Most bytes a TCP connection may buffer while waiting for the end of one message.
MAX_STREAM_BUFFER: Final = MAX_HEADER_BLOCK + 4 + MAX_BODY
#: Largest value of a 32-bit unsigned integer (CSeq numbers, Expires).
MAX_UINT32: Final = 2**32 - 1
#: Largest Max-Forwards value (RFC 3261 §20.22).
MAX_MAX_FORWARDS: Final = 255
