"""SipUri: parsing, serialising and RFC 3261 §19.1.4 comparison."""

from __future__ import annotations

import pytest

from sip_core.uri import ParseError, SipUri


def test_full_uri() -> None:
    uri = SipUri.parse(
        "sips:bob:secret@Example.COM:5061;transport=TLS;lr;maddr=192.0.2.1?subject=hi&x=1"
    )
    assert (uri.scheme, uri.user, uri.password) == ("sips", "bob", "secret")
    assert (uri.host, uri.port) == ("example.com", 5061)
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "192.0.2.1"}
    assert uri.transport == "tls"
    assert uri.headers == {"subject": "hi", "x": "1"}
    assert (
        str(uri)
        == "sips:bob:secret@example.com:5061;transport=TLS;lr;maddr=192.0.2.1?subject=hi&x=1"
    )


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]", "[2001:db8::1]", None),
        ("sip:carol@[2001:DB8::10]:5070;transport=tcp", "[2001:db8::10]", 5070),
        ("sip:[::ffff:192.0.2.1]:5060", "[::ffff:192.0.2.1]", 5060),
        ("sip:192.0.2.4", "192.0.2.4", None),
        ("SIP:host_with_underscore.example.com:1", "host_with_underscore.example.com", 1),
    ],
)
def test_hosts(text: str, host: str, port: int | None) -> None:
    uri = SipUri.parse(text)
    assert (uri.host, uri.port) == (host, port)
    assert SipUri.parse(str(uri)) == uri


def test_user_with_semicolon_question_mark_and_escapes() -> None:
    uri = SipUri.parse("sip:alice;ext=12?x%40y@example.com;user=phone")
    assert uri.user == "alice;ext=12?x%40y"
    assert uri.user_unescaped == "alice;ext=12?x@y"
    assert uri.params == {"user": "phone"}
    assert SipUri.parse("sip:%61%62c@h").user_unescaped == "abc"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:port",
        "sip:alice@[2001:db8::1",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com?noequals",
        "sip:a<b@example.com",
        "no-scheme-at-all",
    ],
)
def test_malformed_uris_are_400(text: str) -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse(text)
    assert info.value.status == 400


@pytest.mark.parametrize("text", ["tel:+15551234567", "http://example.com/", "urn:service:sos"])
def test_other_schemes_are_416_but_kept_opaque_by_parse_any(text: str) -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse(text)
    assert info.value.status == 416
    uri = SipUri.parse_any(text)
    assert not uri.is_sip
    assert str(uri) == text


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%62ob@biloxi.example.com;transport=TCP", "sip:bob@BiLoXi.Example.Com;Transport=tcp"),
        ("sip:carol@chicago.example.com", "sip:carol@chicago.example.com;newparam=5"),
        ("sip:carol@chicago.example.com;security=on", "sip:carol@chicago.example.com"),
        (
            "sip:example.com;transport=tcp;method=REGISTER?to=sip:bob%40example.com",
            "sip:example.com;method=REGISTER;transport=tcp?to=sip:bob%40example.com",
        ),
        ("sip:h.example.com;%6C%72", "sip:h.example.com;lr"),
    ],
)
def test_equivalent(a: str, b: str) -> None:
    assert SipUri.parse(a).equivalent(SipUri.parse(b))
    assert SipUri.parse(b).equivalent(SipUri.parse(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:BOB@biloxi.example.com", "sip:bob@biloxi.example.com"),
        ("sip:bob@biloxi.example.com", "sip:bob@biloxi.example.com:5060"),
        ("sip:bob@biloxi.example.com", "sip:bob@biloxi.example.com;transport=udp"),
        ("sip:bob@biloxi.example.com;newparam=5", "sip:bob@biloxi.example.com;newparam=6"),
        (
            "sip:bob@h.example.com?subject=a&priority=urgent",
            "sip:bob@h.example.com?priority=urgent",
        ),
        ("sip:bob@h.example.com", "sips:bob@h.example.com"),
        ("sip:bob:pw@h.example.com", "sip:bob@h.example.com"),
    ],
)
def test_not_equivalent(a: str, b: str) -> None:
    assert not SipUri.parse(a).equivalent(SipUri.parse(b))
    assert not SipUri.parse(b).equivalent(SipUri.parse(a))


def test_copy_is_independent() -> None:
    uri = SipUri.parse("sip:alice@example.com;lr?h=1")
    clone = uri.copy()
    clone.params["transport"] = "tcp"
    clone.headers["h"] = "2"
    assert uri.params == {"lr": None}
    assert uri.headers == {"h": "1"}
