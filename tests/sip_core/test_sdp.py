"""SDP: parsing, lossless round trips, the relay rewrite, codec helpers, and clear errors."""

from __future__ import annotations

import random

import pytest

from sip_core.sdp import (
    Attribute,
    Codec,
    Connection,
    Direction,
    Origin,
    SdpError,
    SessionDescription,
    common_codecs,
    parse_sdp,
    payload_type_map,
    restrict_codecs,
    rewrite_for_relay,
)

BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 1234 5678 IN IP4 192.168.1.20\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.20\r\n"
    "t=0 0\r\n"
    "a=tool:baresip\r\n"
    "m=audio 10000 RTP/AVP 9 0 8 111 101\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp:10001 IN IP4 192.168.1.20\r\n"
    "a=sendrecv\r\n"
    "a=ptime:20\r\n"
    "a=candidate:1 1 UDP 2130706431 192.168.1.20 10000 typ host\r\n"
    "a=x-unknown:keep me\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
)


def test_parse_reads_the_fields_the_relay_needs() -> None:
    sdp = parse_sdp(BARESIP_OFFER.encode())
    assert sdp.origin == Origin("-", "1234", 5678, "IN", "IP4", "192.168.1.20")
    assert sdp.connection == Connection("192.168.1.20")
    audio = sdp.audio()
    assert audio is not None
    assert (audio.port, audio.proto, audio.formats) == (
        10000,
        "RTP/AVP",
        ["9", "0", "8", "111", "101"],
    )
    assert audio.direction is Direction.SENDRECV
    assert audio.ptime == 20
    assert audio.rtcp == (10001, Connection("192.168.1.20"))
    assert audio.telephone_event_payload_type() == 101
    names = [(c.payload_type, c.encoding, c.clock_rate, c.channels) for c in audio.codecs()]
    assert names == [
        (9, "G722", 8000, 1),
        (0, "PCMU", 8000, 1),  # static: no rtpmap needed
        (8, "PCMA", 8000, 1),
        (111, "opus", 48000, 2),
        (101, "telephone-event", 8000, 1),
    ]
    assert audio.codecs()[3].fmtp == "stereo=1;sprop-stereo=1"
    assert sdp.media[1].rejected


def test_round_trip_is_byte_identical_for_canonical_input() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    assert sdp.to_text() == BARESIP_OFFER
    assert parse_sdp(sdp.to_bytes()).to_bytes() == BARESIP_OFFER.encode()


def test_lf_line_ends_and_trailing_blank_lines_are_accepted() -> None:
    text = BARESIP_OFFER.replace("\r\n", "\n") + "\n\n"
    assert parse_sdp(text).to_text() == BARESIP_OFFER


def test_unknown_lines_are_kept_in_their_place() -> None:
    text = (
        "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=call\r\ni=info\r\nu=http://x\r\ne=a@b\r\n"
        "c=IN IP4 10.0.0.1\r\nb=CT:128\r\nt=0 0\r\nr=7d 1h 0 25h\r\nk=prompt\r\na=recvonly\r\n"
        "m=audio 4000/2 RTP/AVP 0\r\ni=voice\r\nb=AS:80\r\nk=clear:x\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    sdp = parse_sdp(text)
    assert sdp.to_text() == text
    assert sdp.media[0].port_count == 2
    assert sdp.direction is Direction.RECVONLY
    assert sdp.media[0].effective_direction(sdp) is Direction.RECVONLY


def test_media_level_connection_overrides_session() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\nc=IN IP6 fd00::5\r\n"
    )
    sdp = parse_sdp(text)
    assert sdp.connection is None
    assert sdp.media[0].effective_connection(sdp) == Connection("fd00::5", "IP6")


def test_direction_setters_replace_the_attribute_in_place() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    audio = sdp.media[0]
    audio.direction = Direction.SENDONLY
    assert audio.direction is Direction.SENDONLY
    assert audio.get_all("sendrecv") == []
    position = [a.name for a in audio.attributes].index("sendonly")
    assert audio.attributes[position - 1].name == "rtcp"  # where sendrecv was
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    audio.direction = None
    assert audio.direction is None
    assert audio.effective_direction(sdp) is Direction.SENDRECV
    sdp.direction = Direction.INACTIVE
    assert audio.effective_direction(sdp) is Direction.INACTIVE
    assert "a=inactive\r\n" in sdp.to_text()


def test_rewrite_points_every_stream_at_the_relay() -> None:
    offer = parse_sdp(BARESIP_OFFER)
    ours = Origin("callflip", "42", 1, "IN", "IP4", "10.0.0.2")
    out = rewrite_for_relay(offer, "10.0.0.2", [40000, None], origin=ours)
    assert out.connection == Connection("10.0.0.2")
    audio = out.media[0]
    assert audio.port == 40000
    assert audio.rtcp == (40001, Connection("10.0.0.2"))
    assert audio.get("candidate") is None
    assert audio.get("x-unknown") == "keep me"
    assert [c.encoding for c in audio.codecs()] == [c.encoding for c in offer.media[0].codecs()]
    assert audio.ptime == 20
    assert out.media[1].port == 0
    assert out.origin == ours
    assert "192.168.1.20" not in out.to_text()
    # the input is untouched
    assert offer.media[0].port == 10000
    assert parse_sdp(out.to_bytes()).media[0].port == 40000


def test_rewrite_of_media_level_connections_and_ipv6() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\nc=IN IP4 10.1.1.1\r\na=sendonly\r\n"
    )
    out = rewrite_for_relay(parse_sdp(text), "fd00::1", [40010])
    assert out.media[0].connection == Connection("fd00::1", "IP6")
    assert out.media[0].direction is Direction.SENDONLY
    assert out.media[0].get("rtcp") is None  # not added when the offer had none


def test_rewrite_needs_a_port_per_stream() -> None:
    with pytest.raises(SdpError, match="relay ports"):
        rewrite_for_relay(parse_sdp(BARESIP_OFFER), "10.0.0.2", [40000])


def test_common_codecs_keep_the_offer_order_and_numbers() -> None:
    offer = parse_sdp(BARESIP_OFFER).media[0].codecs()
    answer = [
        Codec(0, "pcmu", 8000),
        Codec(96, "telephone-event", 8000),
        Codec(97, "opus", 48000, 2),
        Codec(98, "G722", 16000),  # different clock rate: not the same codec
    ]
    common = common_codecs(offer, answer)
    assert [(c.payload_type, c.encoding) for c in common] == [
        (0, "PCMU"),
        (111, "opus"),
        (101, "telephone-event"),
    ]
    assert payload_type_map(offer, answer) == {111: 97, 101: 96}


def test_restrict_codecs_drops_formats_and_their_lines() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    audio = sdp.media[0]
    restrict_codecs(audio, [("pcma", 8000, 1), Codec(0, "telephone-event", 8000)])
    assert audio.formats == ["8", "101"]
    assert audio.get_all("rtpmap") == ["101 telephone-event/8000"]
    assert audio.get_all("fmtp") == ["101 0-15"]
    restrict_codecs(audio, [("gsm", 8000, 1)])
    assert audio.rejected
    assert audio.formats == ["8"]


def test_attribute_helpers() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    audio = sdp.media[0]
    audio.set("ptime", "30")
    assert audio.ptime == 30
    assert audio.get_all("ptime") == ["30"]
    audio.remove("ptime")
    assert audio.get("ptime") is None
    assert str(Attribute.parse("sendrecv")) == "sendrecv"
    assert str(Attribute.parse("rtpmap:0 PCMU/8000")) == "rtpmap:0 PCMU/8000"
    assert str(Connection.parse("IN IP4 224.2.1.1/127/3")) == "IN IP4 224.2.1.1/127/3"
    assert SessionDescription.parse(BARESIP_OFFER).copy() == sdp.copy().__class__.parse(
        BARESIP_OFFER
    )


MINIMAL = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "first line"),
        ("v=1\r\n", "must come first and be 0"),
        ("v=0\r\ns=-\r\n", "missing o="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "missing s="),
        ("v=0\r\no=- 1 x IN IP4 1.2.3.4\r\ns=-\r\n", "session version"),
        ("v=0\r\no=- 1 1 IN\r\ns=-\r\n", "six fields"),
        (MINIMAL + "garbage\r\n", "<type>=<value>"),
        (MINIMAL + "c=IN IP4 1.1.1.1\r\n", "two session-level c="),
        (MINIMAL + "m=audio\r\n", "m= needs"),
        (MINIMAL + "m=audio 70000 RTP/AVP 0\r\n", "0-65535"),
        (MINIMAL + "m=audio x RTP/AVP 0\r\n", "0-65535"),
        (MINIMAL + "m=audio 4000/0 RTP/AVP 0\r\n", "port count"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4\r\n", "three fields"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n", "two c="),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\r\no=- 1 1 IN IP4 1.1.1.1\r\n", "not allowed"),
        (MINIMAL + "m=audio 4000 RTP/AVP 200\r\n", "0-127"),
        (MINIMAL + "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n", "rtpmap"),
        (MINIMAL + "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/x\r\n", "clock rate"),
        (MINIMAL + "m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/0\r\n", "channel"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\r\na=rtcp:abc\r\n", "a=rtcp"),
        (MINIMAL + "m=audio 4000 RTP/AVP 0\r\na=ptime:fast\r\n", "ptime"),
        (
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
            "no connection address",
        ),
    ],
)
def test_malformed_sdp_raises_sdp_error(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(text)


def test_non_utf8_and_oversized_bodies() -> None:
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(b"v=0\r\ns=\xff\r\n")
    with pytest.raises(SdpError, match="larger"):
        parse_sdp(b"v=0\r\n" + b"a=x\r\n" * 20000)


def test_fuzzed_input_only_ever_raises_sdp_error() -> None:
    """Random mutations of a real offer: a description comes out or SdpError, nothing else."""
    rng = random.Random(4566)
    base = BARESIP_OFFER.encode()
    parsed = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            action = rng.random()
            position = rng.randrange(len(data))
            if action < 0.4:
                data[position] = rng.choice(b"=:/ \r\n0123456789amcv\xff")
            elif action < 0.7:
                del data[position : position + rng.randint(1, 20)]
            else:
                data[position:position] = bytes(rng.randrange(256) for _ in range(3))
        try:
            sdp = parse_sdp(bytes(data))
        except SdpError:
            continue
        parsed += 1
        # whatever parses also serialises and re-parses
        again = parse_sdp(sdp.to_bytes())
        assert len(again.media) == len(sdp.media)
        for media in again.media:
            media.codecs()
    assert parsed > 0
