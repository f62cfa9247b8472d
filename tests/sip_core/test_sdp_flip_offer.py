"""The offer a flip target gets: the call's agreed codecs, telephone-event, audio only."""

from __future__ import annotations

import pytest

from sip_core.sdp import SdpError, add_codec, offer_for_new_device, parse_sdp


def description(formats: str, rtpmaps: str, extra_media: str = "") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP {formats}\r\n{rtpmaps}a=sendrecv\r\n{extra_media}"
    )


STAYING = description(
    "9 8 0 101",
    "a=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
)


def test_the_offer_has_the_agreed_codecs_in_the_staying_sides_numbering() -> None:
    leaving = parse_sdp(description("0 8 96", "a=rtpmap:96 telephone-event/8000\r\n"))
    offer = offer_for_new_device(parse_sdp(STAYING), leaving)
    audio = offer.audio()
    assert audio is not None
    assert [m.media for m in offer.media] == ["audio"]
    assert [(c.payload_type, c.encoding) for c in audio.codecs()] == [
        (8, "PCMA"),
        (0, "PCMU"),
        (101, "telephone-event"),
    ]
    assert audio.get("fmtp") == "101 0-16"


def test_telephone_event_is_added_when_the_call_had_none() -> None:
    staying = parse_sdp(description("0 101", "a=rtpmap:101 CN/8000\r\n"))
    leaving = parse_sdp(description("0 13", ""))  # comfort noise: static 13, same as 101
    audio = offer_for_new_device(staying, leaving).audio()
    assert audio is not None
    assert [(c.payload_type, c.encoding, c.clock_rate) for c in audio.codecs()] == [
        (0, "PCMU", 8000),
        (101, "CN", 8000),
        (96, "telephone-event", 8000),  # 101 is taken
    ]
    assert audio.get_all("fmtp") == ["96 0-16"]
    assert [a.name for a in audio.attributes] == ["rtpmap", "rtpmap", "fmtp", "sendrecv"]


def test_opus_calls_get_telephone_event_at_48_khz() -> None:
    opus = "a=rtpmap:111 opus/48000/2\r\n"
    audio = offer_for_new_device(
        parse_sdp(description("111", opus)), parse_sdp(description("111", opus))
    ).audio()
    assert audio is not None
    assert [(c.encoding, c.clock_rate) for c in audio.codecs()] == [
        ("opus", 48000),
        ("telephone-event", 48000),
    ]


def test_no_codec_in_common_cannot_be_offered() -> None:
    with pytest.raises(SdpError):
        offer_for_new_device(parse_sdp(description("0", "")), parse_sdp(description("8", "")))


def test_add_codec_refuses_when_every_dynamic_type_is_taken() -> None:
    formats = " ".join(str(pt) for pt in range(96, 128))
    audio = parse_sdp(description(formats, "")).audio()
    assert audio is not None
    with pytest.raises(SdpError):
        add_codec(audio, "telephone-event", 8000, None)
