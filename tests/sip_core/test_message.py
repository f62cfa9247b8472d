"""Unit tests of the message layer: parsing, validation, serialisation, make_response."""

from __future__ import annotations

import pytest

from sip_core.message import (
    REASON_PHRASES,
    Headers,
    NameAddress,
    ParseError,
    Request,
    Response,
    SipUri,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)


def build(*lines: str, body: bytes = b"", start: str | None = None) -> bytes:
    head = "\r\n".join(lines)
    return (head + "\r\n\r\n").encode() + body


REGISTER = build(
    "REGISTER sip:pbx.example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'To: "Alice" <sip:alice@pbx.example.com>',
    'From: "Alice" <sip:alice@pbx.example.com>;tag=456248',
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600",
    'Authorization: Digest username="alice", realm="pbx", nonce="abc", uri="sip:pbx.example.com"',
    "Expires: 3600",
    "Content-Length: 0",
)


def test_register_fields() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.uri.host == "pbx.example.com"
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.has_rport
    assert msg.top_via.rport is None
    assert msg.top_via.port == 5060
    assert msg.to.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.from_.tag == "456248"
    assert msg.call_id == "843817637684230@998sdasdh09"
    assert (msg.cseq.number, msg.cseq.method) == (1826, "REGISTER")
    assert msg.contacts[0].uri.port == 5060
    assert msg.contacts[0].params == {"expires": "3600"}
    assert msg.expires == 3600
    assert msg.max_forwards == 70
    assert msg.body == b""
    # the Authorization value has commas but is not a list header
    assert len(msg.headers.get_all("Authorization")) == 1


def test_make_response_adds_to_tag_and_copies_vias() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    msg.top_via.received = "198.51.100.7"
    msg.top_via.rport = 40000
    resp = make_response(msg, 401, to_tag="abc")
    assert resp.reason == "Unauthorized"
    again = parse_message(resp.to_bytes())
    assert isinstance(again, Response)
    assert again.status == 401
    assert again.to.tag == "abc"
    assert again.top_via.received == "198.51.100.7"
    assert again.top_via.rport == 40000
    assert again.call_id == msg.call_id
    assert again.cseq == msg.cseq
    assert again.headers.get("Content-Length") == "0"


def test_make_response_100_has_no_tag_and_existing_tag_is_kept() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    assert make_response(msg, 100).to.tag is None
    msg.to.tag = "already"
    resp = make_response(msg, 200, to_tag="other")
    assert resp.to.tag == "already"


def test_compact_forms_and_folding() -> None:
    data = build(
        "INVITE sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/UDP host.example.com;branch=z9hG4bK1,",
        " SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2",
        "f: <sip:alice@example.com>;tag=1",
        "t: sip:bob@example.com",
        "i: abc@def",
        "CSeq: 1",
        "\tINVITE",
        "m: <sip:alice@192.0.2.1>",
        "c: application/sdp",
        "k: timer, replaces",
        "l: 4",
        body=b"v=0\r\n",
    )
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert [v.host for v in msg.vias] == ["host.example.com", "[2001:db8::1]"]
    assert msg.vias[1].port == 5070
    assert msg.cseq.method == "INVITE"
    assert msg.content_type == "application/sdp"
    assert msg.headers.get_all("Supported") == ["timer", "replaces"]
    assert msg.body == b"v=0\r"  # Content-Length 4 truncates (RFC 3261 §18.3)
    assert msg.max_forwards is None  # lenient: missing Max-Forwards accepted


@pytest.mark.parametrize(
    ("start", "status"),
    [
        ("INVITE sip:bob@example.com SIP/3.0", 505),
        ("INVITE tel:+15551234 SIP/2.0", 416),
        ("INVITE  sip:bob@example.com SIP/2.0", 400),
        ("INVITE <sip:bob@example.com> SIP/2.0", 400),
    ],
)
def test_bad_request_lines_have_status_and_basis(start: str, status: int) -> None:
    data = build(
        start,
        "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bK1",
        "From: <sip:alice@example.com>;tag=1",
        "To: <sip:bob@example.com>",
        "Call-ID: x",
        "CSeq: 1 INVITE",
    )
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == status
    assert info.value.basis is not None
    resp = make_response(info.value.basis, status)
    assert resp.top_via.branch == "z9hG4bK1"


def test_garbage_is_dropped() -> None:
    for data in (b"", b"\r\n\r\n", b"hello world", b"\xff\xfe\x00", b"GET / HTTP/1.1\r\n\r\n"):
        with pytest.raises(ParseError) as info:
            parse_message(data)
        assert info.value.status is None


def test_helpers() -> None:
    assert new_branch().startswith("z9hG4bK")
    assert new_branch() != new_branch()
    assert new_tag() != new_tag()
    assert len(new_call_id()) >= 16
    assert REASON_PHRASES[486] == "Busy Here"


def test_headers_multimap() -> None:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")
    h.prepend("v", "SIP/2.0/UDP b;branch=z9hG4bK2")
    h.add("X-Custom", "1")
    assert h.get("VIA") == "SIP/2.0/UDP b;branch=z9hG4bK2"
    assert "x-custom" in h
    assert list(h)[2] == ("X-Custom", "1")
    h.set("Via", "SIP/2.0/UDP c")
    assert h.get_all("Via") == ["SIP/2.0/UDP c"]
    h.remove("x-custom")
    assert "X-Custom" not in h


def test_copy_is_independent() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, Request)
    clone = msg.copy()
    clone.top_via.branch = "z9hG4bKnew"
    clone.headers.set("Max-Forwards", "69")
    clone.uri.user = "changed"
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.max_forwards == 70
    assert msg.uri.user is None
    assert clone.max_forwards == 69


def test_typed_values() -> None:
    via = Via.parse("SIP / 2.0 / UDP  host.example.com : 5062 ; branch = z9hG4bKx ; rport=1")
    assert (via.transport, via.host, via.port, via.branch, via.rport) == (
        "UDP",
        "host.example.com",
        5062,
        "z9hG4bKx",
        1,
    )
    na = NameAddress.parse('"J \\"R\\"" <sip:j@example.com;lr>;tag=5')
    assert na.display_name == 'J "R"'
    assert na.uri.params == {"lr": None}
    assert NameAddress.parse(str(na)) == na
    uri = SipUri.parse("sips:user;x=1?y@[::1]:5061;transport=tls")
    assert uri.user == "user;x=1?y"
    assert uri.host == "[::1]"
    assert uri.port == 5061
