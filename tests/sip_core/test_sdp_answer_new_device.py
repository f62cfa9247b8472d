"""`answer_for_new_device`: the answer to a device taking a call over, in the offer's numbering."""

from __future__ import annotations

import pytest

from sip_core.sdp import SdpError, answer_for_new_device, parse_sdp

STAYING = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 111 0 101\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def offer(formats: str, lines: str) -> str:
    return (
        "v=0\r\no=- 2 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        f"m=audio 5000 RTP/AVP {formats}\r\n{lines}a=sendrecv\r\n"
        "m=video 5002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    )


def test_offer_order_and_numbering_with_the_staying_fmtp() -> None:
    answer = answer_for_new_device(
        parse_sdp(STAYING),
        parse_sdp(
            offer(
                "8 0 98 97 100",
                "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:98 opus/48000/2\r\na=rtpmap:97 telephone-event/8000\r\n"
                "a=fmtp:97 0-16\r\na=rtpmap:100 telephone-event/48000\r\n",
            )
        ),
    )
    audio = answer.audio()
    assert audio is not None
    assert [(c.payload_type, c.encoding, c.fmtp) for c in audio.codecs()] == [
        (0, "PCMU", None),
        (98, "opus", "useinbandfec=1"),
        (97, "telephone-event", "0-15"),
    ]
    assert [m.media for m in answer.media] == ["audio"]
    text = answer.to_bytes().decode()
    assert "a=ptime:20" in text
    assert "a=sendrecv" in text
    assert "PCMA" not in text


def test_telephone_event_offered_to_a_call_without_one_is_kept() -> None:
    staying = STAYING.replace(" 0 101", " 0").replace(
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n", ""
    )
    answer = answer_for_new_device(
        parse_sdp(staying),
        parse_sdp(
            offer(
                "0 96 100",
                "a=rtpmap:96 telephone-event/8000\r\na=rtpmap:100 telephone-event/48000\r\n",
            )
        ),
    )
    audio = answer.audio()
    assert audio is not None
    assert [(c.payload_type, c.encoding) for c in audio.codecs()] == [
        (0, "PCMU"),
        (96, "telephone-event"),
    ]


def test_no_codec_in_common_is_an_error() -> None:
    with pytest.raises(SdpError, match="none of the call's audio codecs"):
        answer_for_new_device(
            parse_sdp(STAYING), parse_sdp(offer("8 96", "a=rtpmap:96 telephone-event/8000\r\n"))
        )


def test_only_what_the_call_negotiated_is_answered() -> None:
    """The staying party offered opus and PCMU, the replaced device answered PCMU only: opus
    is no codec of the call, even if the new device offers it."""
    leaving = STAYING.replace("111 0 101", "0 101").replace(
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n", ""
    )
    answer = answer_for_new_device(
        parse_sdp(STAYING),
        parse_sdp(
            offer("98 0 97", "a=rtpmap:98 opus/48000/2\r\na=rtpmap:97 telephone-event/8000\r\n")
        ),
        parse_sdp(leaving),
    )
    audio = answer.audio()
    assert audio is not None
    assert [(c.payload_type, c.encoding) for c in audio.codecs()] == [
        (0, "PCMU"),
        (97, "telephone-event"),
    ]
