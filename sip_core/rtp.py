"""RTP and RTCP packets (RFC 3550): parsing, building, and the in-place rewrites of a flip.

Why two styles: `RtpPacket`/`parse_rtcp` give tests and the B2BUA readable objects, while the
relay's hot path never builds them. It looks at a few header bytes directly and, only when a stream
is being rewritten (after a flip), patches SSRC, sequence number and timestamp with
`struct.pack_into` on a copy (`rewrite_rtp_into`, `rewrite_rtcp`). Junk (wrong version, truncated
headers, lengths that run past the datagram) raises `RtpError` from the parsers and makes the quick
checks return False.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "ReportBlock",
    "RtcpPacket",
    "RtpError",
    "RtpPacket",
    "build_rtcp",
    "is_rtcp",
    "is_rtp",
    "parse_rtcp",
    "parse_rtp",
    "rewrite_rtcp",
    "rewrite_rtp_into",
]

RTP_VERSION: Final = 2
RTP_HEADER: Final = struct.Struct("!BBHII")  # flags, marker|pt, sequence, timestamp, ssrc
RTCP_HEADER: Final = struct.Struct("!BBHI")  # flags|count, packet type, length (words - 1), ssrc
SENDER_INFO: Final = struct.Struct("!IIIII")  # NTP seconds, NTP fraction, RTP ts, packets, octets
REPORT_BLOCK: Final = struct.Struct("!IIIIII")
_U32: Final = struct.Struct("!I")

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP or RTCP packet."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. `extension` is (profile, data) with data a multiple of 4 bytes."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0  # padding bytes at the end, including the count byte; 0 = no P bit

    def to_bytes(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} is not 0-127")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise RtpError("padding must be 0-255 bytes")
        flags = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            flags |= 0x20
        if self.extension is not None:
            flags |= 0x10
        out = bytearray(
            RTP_HEADER.pack(
                flags,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        )
        for csrc in self.csrcs:
            out += _U32.pack(csrc & 0xFFFFFFFF)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension data must be a multiple of 4 bytes")
            out += struct.pack("!HH", profile & 0xFFFF, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse an RTP packet, checking every length against the datagram."""
    size = len(data)
    if size < RTP_HEADER.size:
        raise RtpError(f"{size} bytes is shorter than an RTP header")
    flags, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if flags >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {flags >> 6}, not 2")
    offset = RTP_HEADER.size
    count = flags & 0x0F
    if size < offset + 4 * count:
        raise RtpError("CSRC list runs past the end of the packet")
    csrcs = struct.unpack_from(f"!{count}I", data, offset)
    offset += 4 * count
    extension = None
    if flags & 0x10:
        if size < offset + 4:
            raise RtpError("header extension runs past the end of the packet")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        if size < offset + 4 * words:
            raise RtpError("header extension runs past the end of the packet")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    end = size
    padding = 0
    if flags & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < offset:
            raise RtpError(f"padding count {padding} does not fit the packet")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def is_rtcp(data: bytes | bytearray) -> bool:
    """Whether a datagram looks like RTCP (version 2, packet type 192-223: RFC 5761 §4)."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


def is_rtp(data: bytes | bytearray) -> bool:
    """The hot path's cheap check: long enough for the header and its CSRCs, version 2, not RTCP."""
    if len(data) < 12:
        return False
    flags = data[0]
    return (
        flags >> 6 == RTP_VERSION
        and len(data) >= 12 + 4 * (flags & 0x0F)
        and not (192 <= data[1] <= 223)
    )


@dataclass(slots=True)
class ReportBlock:
    """A reception report about one source (in SR and RR)."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0  # signed 24 bits
    highest_sequence: int = 0  # extended: cycles << 16 | sequence
    jitter: int = 0
    last_sr: int = 0
    delay_since_last_sr: int = 0

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return REPORT_BLOCK.pack(
            self.ssrc & 0xFFFFFFFF,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.last_sr & 0xFFFFFFFF,
            self.delay_since_last_sr & 0xFFFFFFFF,
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(slots=True)
class RtcpPacket:
    """One packet of a compound RTCP datagram.

    For SR and RR, `ssrc` is the sender's and `reports` the reception reports; SR also has the
    sender info. Other types (SDES, BYE, APP, ...) keep `count` and their `body` after the first
    SSRC word as bytes, so they survive a round trip unchanged.
    """

    packet_type: int
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    ntp_timestamp: int = 0  # 64-bit NTP format (SR only)
    rtp_timestamp: int = 0  # SR only
    packet_count: int = 0  # SR only
    octet_count: int = 0  # SR only
    count: int = 0  # the header's 5-bit count for non-report packets
    body: bytes = b""  # SR/RR: profile extensions after the report blocks; others: the rest

    def to_bytes(self) -> bytes:
        if self.packet_type in (RTCP_SR, RTCP_RR):
            if len(self.reports) > 31:
                raise RtpError("at most 31 report blocks")
            count = len(self.reports)
            content = b""
            if self.packet_type == RTCP_SR:
                content = SENDER_INFO.pack(
                    (self.ntp_timestamp >> 32) & 0xFFFFFFFF,
                    self.ntp_timestamp & 0xFFFFFFFF,
                    self.rtp_timestamp & 0xFFFFFFFF,
                    self.packet_count & 0xFFFFFFFF,
                    self.octet_count & 0xFFFFFFFF,
                )
            content += b"".join(block.pack() for block in self.reports) + self.body
        else:
            count = self.count & 0x1F
            content = self.body
        if len(content) % 4:
            raise RtpError("RTCP packet content must be a multiple of 4 bytes")
        words = (RTCP_HEADER.size + len(content)) // 4 - 1
        return (
            RTCP_HEADER.pack(
                (RTP_VERSION << 6) | count, self.packet_type, words, self.ssrc & 0xFFFFFFFF
            )
            + content
        )


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram into its packets; lengths must tile it exactly."""
    view = memoryview(data)
    size = len(view)
    offset = 0
    packets: list[RtcpPacket] = []
    if size < RTCP_HEADER.size:
        raise RtpError(f"{size} bytes is shorter than an RTCP header")
    while offset < size:
        if size - offset < RTCP_HEADER.size:
            raise RtpError("trailing bytes after the last RTCP packet")
        flags, packet_type, words, ssrc = RTCP_HEADER.unpack_from(view, offset)
        if flags >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {flags >> 6}, not 2")
        if not 192 <= packet_type <= 223:
            raise RtpError(f"packet type {packet_type} is not RTCP")
        length = (words + 1) * 4
        if offset + length > size:
            raise RtpError("RTCP length runs past the end of the datagram")
        end = offset + length
        if flags & 0x20:
            # Padding is only allowed on the last packet; its count is the last byte.
            pad = view[end - 1]
            if end != size or pad == 0 or pad > length - RTCP_HEADER.size:
                raise RtpError("bad RTCP padding")
            end -= pad
        count = flags & 0x1F
        body_start = offset + RTCP_HEADER.size
        packet = RtcpPacket(packet_type, ssrc, count=count)
        if packet_type in (RTCP_SR, RTCP_RR):
            needed = (SENDER_INFO.size if packet_type == RTCP_SR else 0) + count * 24
            if end - body_start < needed:
                raise RtpError("RTCP report blocks run past the packet length")
            if packet_type == RTCP_SR:
                ntp_hi, ntp_lo, rtp_ts, packets_sent, octets = SENDER_INFO.unpack_from(
                    view, body_start
                )
                packet.ntp_timestamp = (ntp_hi << 32) | ntp_lo
                packet.rtp_timestamp = rtp_ts
                packet.packet_count = packets_sent
                packet.octet_count = octets
                body_start += SENDER_INFO.size
            for index in range(count):
                packet.reports.append(ReportBlock.unpack(view, body_start + 24 * index))
            packet.count = 0
            body_start += 24 * count
        packet.body = bytes(view[body_start:end])
        packets.append(packet)
        offset += length
    return packets


def build_rtcp(packets: list[RtcpPacket]) -> bytes:
    """A compound datagram from packets (which should start with SR or RR)."""
    return b"".join(packet.to_bytes() for packet in packets)


def rewrite_rtp_into(
    buffer: bytearray, ssrc: int, sequence_offset: int, timestamp_offset: int, marker: bool
) -> tuple[int, int]:
    """Patch a copied RTP packet in place for a continued stream; returns (sequence, timestamp).

    Offsets are added modulo 2**16 and 2**32; `marker` forces the M bit on (the first packet after
    a flip tells the receiver to resynchronise its jitter buffer).
    """
    _, second, sequence, timestamp, _ = RTP_HEADER.unpack_from(buffer)
    sequence = (sequence + sequence_offset) & 0xFFFF
    timestamp = (timestamp + timestamp_offset) & 0xFFFFFFFF
    RTP_HEADER.pack_into(
        buffer, 0, buffer[0], second | 0x80 if marker else second, sequence, timestamp, ssrc
    )
    return sequence, timestamp


def rewrite_rtcp(
    data: bytes | bytearray,
    *,
    sender_from: int | None = None,
    sender_to: int | None = None,
    timestamp_offset: int = 0,
    report_from: int | None = None,
    report_to: int = 0,
    sequence_offset: int = 0,
) -> bytearray | None:
    """A rewritten copy of a compound RTCP datagram, or None when it is malformed.

    Two uses at a flip. Towards the caller: the new device's SR/RR/SDES/BYE say `sender_from` (its
    SSRC; None = whatever it is) and become `sender_to` (None: sender left alone), and SR RTP
    timestamps get the stream's `timestamp_offset`, so RTCP matches the continued RTP stream.
    Towards the new device: report blocks about `report_from` (the SSRC the caller sees) are turned
    back into `report_to` with the extended highest sequence shifted back by `sequence_offset`.
    """
    buffer = bytearray(data)
    size = len(buffer)
    offset = 0
    if size < RTCP_HEADER.size:
        return None
    while offset < size:
        if size - offset < RTCP_HEADER.size:
            return None
        flags, packet_type, words, ssrc = RTCP_HEADER.unpack_from(buffer, offset)
        end = offset + (words + 1) * 4
        if flags >> 6 != RTP_VERSION or end > size or not 192 <= packet_type <= 223:
            return None
        count = flags & 0x1F
        if (
            sender_to is not None
            and packet_type in (RTCP_SR, RTCP_RR, RTCP_BYE, RTCP_SDES, RTCP_APP)
            and (sender_from is None or ssrc == sender_from)
        ):
            _U32.pack_into(buffer, offset + 4, sender_to)
        blocks = offset + RTCP_HEADER.size
        if packet_type == RTCP_SR:
            if end - blocks < SENDER_INFO.size + 24 * count:
                return None
            ts_at = blocks + 8
            (rtp_ts,) = _U32.unpack_from(buffer, ts_at)
            _U32.pack_into(buffer, ts_at, (rtp_ts + timestamp_offset) & 0xFFFFFFFF)
            blocks += SENDER_INFO.size
        if packet_type in (RTCP_SR, RTCP_RR) and report_from is not None:
            if end - blocks < 24 * count:
                return None
            for index in range(count):
                at = blocks + 24 * index
                (about,) = _U32.unpack_from(buffer, at)
                if about == report_from:
                    _U32.pack_into(buffer, at, report_to)
                    (highest,) = _U32.unpack_from(buffer, at + 8)
                    _U32.pack_into(buffer, at + 8, (highest - sequence_offset) & 0xFFFFFFFF)
        offset = end
    return buffer
