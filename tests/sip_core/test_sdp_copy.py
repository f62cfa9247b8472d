"""`SessionDescription.copy` is a deep copy written out by hand (deepcopy was a hot spot)."""

from __future__ import annotations

import copy

from sip_core.sdp import parse_sdp, rewrite_for_relay

OFFER = (
    "v=0\r\no=alice 42 7 IN IP4 192.0.2.1\r\ns=call\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\n"
    "t=0 0\r\na=sendrecv\r\na=ice-ufrag:abc\r\n"
    "m=audio 4000 RTP/AVP 0 101\r\nc=IN IP4 192.0.2.2/127\r\nb=TIAS:64000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    "a=rtcp:4001 IN IP4 192.0.2.2\r\na=candidate:1 1 UDP 1 192.0.2.2 4000 typ host\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)


def test_copy_equals_the_original_and_the_deepcopy() -> None:
    original = parse_sdp(OFFER)
    copied = original.copy()
    assert copied == original
    assert copied == copy.deepcopy(original)
    assert copied.to_text() == original.to_text()


def test_copy_shares_no_mutable_part_with_the_original() -> None:
    original = parse_sdp(OFFER)
    before = original.to_text()
    copied = original.copy()
    copied.origin.session_version += 1
    assert copied.connection is not None
    copied.connection.address = "198.51.100.9"
    copied.attributes[0].value = "changed"
    copied.attributes.append(copied.attributes[0])
    copied.other_lines.append(("i", "info"))
    audio = copied.media[0]
    audio.formats.append("8")
    assert audio.connection is not None
    audio.connection.suffix = ""
    audio.attributes[0].value = "0 PCMA/8000"
    audio.other_lines.clear()
    copied.media.pop()
    assert original.to_text() == before


def test_rewrite_for_relay_leaves_the_input_untouched() -> None:
    original = parse_sdp(OFFER)
    before = original.to_text()
    rewritten = rewrite_for_relay(original, "127.0.0.1", [20000, None])
    assert original.to_text() == before
    assert rewritten.origin is not original.origin
    assert rewritten.connection is not None
    assert rewritten.connection.address == "127.0.0.1"
    audio = rewritten.media[0]
    assert audio.port == 20000
    assert audio.connection is not None
    assert audio.connection.address == "127.0.0.1"
    assert audio.get("rtcp") == "20001 IN IP4 127.0.0.1"
    assert audio.get("candidate") is None
    assert rewritten.media[1].port == 0
