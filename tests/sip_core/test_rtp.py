"""RTP/RTCP: header fields both ways, junk refused, and the rewrites a flip uses."""

from __future__ import annotations

import random
import struct

import pytest

from sip_core.rtp import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SDES,
    RTCP_SR,
    ReportBlock,
    RtcpPacket,
    RtpError,
    RtpPacket,
    build_rtcp,
    is_rtcp,
    is_rtp,
    parse_rtcp,
    parse_rtp,
    rewrite_rtcp,
    rewrite_rtp_into,
)


def test_plain_header_layout() -> None:
    data = RtpPacket(0, 0x1234, 0xDEADBEEF, 0x01020304, b"\xff" * 160).to_bytes()
    assert data[:12] == bytes.fromhex("80001234deadbeef01020304")
    assert len(data) == 172
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        0,
        0x1234,
        0xDEADBEEF,
        0x01020304,
    )
    assert not packet.marker
    assert packet.payload == b"\xff" * 160


def test_all_header_features_round_trip() -> None:
    original = RtpPacket(
        payload_type=101,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=0xCAFEBABE,
        payload=b"\x05\x0a\x00\xa0",
        marker=True,
        csrcs=(1, 2, 3),
        extension=(0xBEDE, b"\x10\x01\x00\x00"),
        padding=4,
    )
    data = original.to_bytes()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80 | 101
    assert data[-1] == 4
    assert parse_rtp(data) == original
    assert parse_rtp(bytearray(data)) == original
    assert is_rtp(data)
    assert not is_rtcp(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter than an RTP header"),
        (bytes.fromhex("40000001000000000000000a"), "version 1"),
        (bytes.fromhex("82000001000000000000000a") + b"\x00" * 4, "CSRC list"),
        (bytes.fromhex("90000001000000000000000a") + b"\xbe\xde", "extension"),
        (
            bytes.fromhex("90000001000000000000000a") + b"\xbe\xde\x00\x02" + b"\x00" * 4,
            "extension",
        ),
        (bytes.fromhex("a0000001000000000000000a") + b"\x00\x00\x09", "padding"),
        (bytes.fromhex("a0000001000000000000000a") + b"\x00\x00\x00", "padding"),
    ],
)
def test_junk_rtp_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


def test_builder_refuses_impossible_fields() -> None:
    with pytest.raises(RtpError):
        RtpPacket(128, 0, 0, 0).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, csrcs=tuple(range(16))).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, extension=(1, b"abc")).to_bytes()


def test_quick_checks() -> None:
    assert not is_rtp(b"\x80\x00")
    assert not is_rtp(bytes.fromhex("00000001000000000000000a"))
    assert not is_rtp(bytes.fromhex("83000001000000000000000a"))  # 3 CSRCs missing
    assert not is_rtp(bytes.fromhex("80c8000600000001") + bytes(20))  # that is RTCP (SR)
    assert is_rtcp(bytes.fromhex("80c8000600000001") + bytes(20))
    assert not is_rtcp(b"\x80\xc8\x00")


def _sender_report() -> RtcpPacket:
    return RtcpPacket(
        RTCP_SR,
        ssrc=0x11111111,
        ntp_timestamp=0xE1234567_89ABCDEF,
        rtp_timestamp=160_000,
        packet_count=1000,
        octet_count=160_000,
        reports=[
            ReportBlock(0x22222222, 12, -3, 0x0001_0010, 44, 0x12345678, 655),
            ReportBlock(0x33333333, 0, 7, 99, 1, 0, 0),
        ],
    )


def test_compound_rtcp_round_trip() -> None:
    sdes = RtcpPacket(RTCP_SDES, ssrc=0x11111111, count=1, body=b"\x01\x03abc\x00\x00\x00")
    bye = RtcpPacket(RTCP_BYE, ssrc=0x11111111, count=1)
    data = build_rtcp([_sender_report(), sdes, bye])
    packets = parse_rtcp(data)
    assert packets == [_sender_report(), sdes, bye]
    sr = packets[0]
    assert sr.reports[0].cumulative_lost == -3
    assert sr.reports[0].fraction_lost == 12
    # length field: 28 bytes header+sender info + 2 * 24 report bytes = 76 bytes = 19 words
    assert struct.unpack_from("!H", data, 2)[0] == 76 // 4 - 1
    rr = RtcpPacket(RTCP_RR, ssrc=5, reports=[ReportBlock(6)])
    assert parse_rtcp(rr.to_bytes()) == [rr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc8\x00", "shorter"),
        (bytes.fromhex("40c9000100000001"), "version"),
        (bytes.fromhex("80600001000000010000"), "not RTCP"),
        (bytes.fromhex("80c9000500000001"), "past the end"),
        (bytes.fromhex("81c9000100000001"), "report blocks"),
        (bytes.fromhex("80c9000100000001") + b"\x00\x00", "trailing"),
        (bytes.fromhex("a0c9000100000001"), "padding"),
    ],
)
def test_junk_rtcp_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtcp(data)


def test_rewrite_rtp_into_continues_a_stream() -> None:
    buffer = bytearray(RtpPacket(8, 65534, 2**32 - 80, 0xAAAA, b"x" * 160).to_bytes())
    sequence, timestamp = rewrite_rtp_into(buffer, 0xBBBB, 5, 160, marker=True)
    assert (sequence, timestamp) == (3, 80)  # both wrap around
    packet = parse_rtp(buffer)
    assert (packet.ssrc, packet.sequence, packet.timestamp, packet.marker) == (0xBBBB, 3, 80, True)
    assert packet.payload_type == 8
    assert packet.payload == b"x" * 160
    rewrite_rtp_into(buffer, 0xBBBB, 0, 0, marker=False)
    assert parse_rtp(buffer).marker  # the marker is never cleared by a rewrite


def test_rewrite_rtcp_towards_the_caller() -> None:
    data = build_rtcp([_sender_report(), RtcpPacket(RTCP_BYE, ssrc=0x11111111, count=1)])
    out = rewrite_rtcp(data, sender_from=0x11111111, sender_to=0x99999999, timestamp_offset=1000)
    assert out is not None
    sr, bye = parse_rtcp(out)
    assert sr.ssrc == 0x99999999
    assert bye.ssrc == 0x99999999
    assert sr.rtp_timestamp == 161_000
    assert sr.ntp_timestamp == _sender_report().ntp_timestamp
    assert sr.reports == _sender_report().reports  # reports about others stay as they are
    untouched = rewrite_rtcp(data, sender_from=0x12345678, sender_to=0x99999999)
    assert untouched is not None
    assert parse_rtcp(untouched)[0].ssrc == 0x11111111


def test_rewrite_rtcp_reports_back_to_the_real_source() -> None:
    rr = RtcpPacket(
        RTCP_RR, ssrc=7, reports=[ReportBlock(0x99999999, highest_sequence=0x0001_0005)]
    )
    out = rewrite_rtcp(
        rr.to_bytes(), report_from=0x99999999, report_to=0x11111111, sequence_offset=10
    )
    assert out is not None
    (parsed,) = parse_rtcp(out)
    assert parsed.ssrc == 7
    assert parsed.reports[0].ssrc == 0x11111111
    assert parsed.reports[0].highest_sequence == 0x0000_FFFB


def test_rewrite_rtcp_refuses_malformed_input() -> None:
    assert rewrite_rtcp(b"\x80\xc8", sender_to=1) is None
    assert rewrite_rtcp(bytes.fromhex("80c8000600000001"), sender_to=1) is None
    assert rewrite_rtcp(bytes.fromhex("00c9000100000001"), sender_to=1) is None


def test_fuzzed_datagrams_raise_only_rtp_error() -> None:
    rng = random.Random(3550)
    samples = [
        RtpPacket(0, 1, 2, 3, b"abcd", csrcs=(9,), extension=(1, b"1234"), padding=2).to_bytes(),
        build_rtcp([_sender_report()]),
    ]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(4000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[position] = rng.randrange(256)
            else:
                del data[position:]
                if not data:
                    data = bytearray(b"\x80")
        for parser in (parse_rtp, parse_rtcp):
            try:
                parser(bytes(data))
                outcomes["ok"] += 1
            except RtpError:
                outcomes["error"] += 1
        rewrite_rtcp(bytes(data), sender_to=1, timestamp_offset=5, report_from=2)
    assert outcomes["ok"] > 0
    assert outcomes["error"] > 0
