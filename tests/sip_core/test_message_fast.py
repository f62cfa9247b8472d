"""The per-message fast paths of the parser and the response builder agree with the general ones.

`NameAddress.parse` matches a <sip:...> name-addr in one pattern (URI included) and falls back to
the general grammar for everything else; the parser keeps the Via objects it validated with; and
`make_response` copies those objects instead of their text. Each is held here to the plain
implementation it stands in for, on hand-picked cases and on generated input.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.headers import Headers, NameAddress, Via
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transport import Address, _stamp_via
from sip_core.uri import ParseError, SipUri

NAME_ADDRESSES = [
    "<sip:alice@home.arpa>",
    "<sip:alice@home.arpa>;tag=abc",
    "Alice <sip:alice@home.arpa>;tag=abc",
    '"Alice Liddell" <sip:alice@home.arpa:5060;transport=tcp>;tag=1;expires=60',
    '"A \\"quoted\\" name" <sips:alice:secret@[2001:db8::1]:5061>',
    "  Bob   Smith  <SIP:bob@Example.COM;lr;maddr=10.0.0.1?subject=hi&x=y> ; tag = 7 ",
    '<sip:alice@home.arpa>;+sip.instance="<urn:uuid:1234>";reg-id=1',
    "<sip:%61lice@home.arpa;user=phone>",
    "<sip:alice@home.arpa:65535>",
    "<sip:alice@home.arpa:65536>",
    "<sip:alice@home.arpa:0080>",
    "<tel:+1-555-0100>",
    "<http://example.com/x>",
    "sip:alice@home.arpa;tag=x",
    "sip:alice@home.arpa",
    "<sip:alice@home.arpa",
    "<sip:al ice@home.arpa>",
    "<sip:>",
    "<sip:alice@>",
    "<sip:alice@home.arpa>;",
    "<sip:alice@home.arpa>;;tag=1",
    "Ünïcode <sip:alice@home.arpa>",
    '"unterminated <sip:alice@home.arpa>',
    "<sips:sip:x@h>",
    "<sip:sips:x@h>",
    "<sIpS:x@h>",
    "<sip:a;;b@h>;tag=1",
    '<sip:a@h>;x=";;";;tag=2',
]


def _outcome(parse: object, text: str) -> NameAddress | str:
    assert callable(parse)
    try:
        result = parse(text)
    except ParseError:
        return "ParseError"
    assert isinstance(result, NameAddress)
    return result


def _general(text: str, strict: bool = True) -> NameAddress:
    """The general grammar only; when not strict, empty parameters are dropped from a value it
    refuses as written."""
    text = text.strip()
    try:
        return NameAddress._parse_general(text)
    except ParseError:
        if strict:
            raise
    return NameAddress._parse_general(re.sub(r";[ \t]*+(?=;|$)", "", text))


@pytest.mark.parametrize("text", NAME_ADDRESSES)
@pytest.mark.parametrize("strict", [True, False])
def test_name_address_fast_path_matches_the_general_grammar(text: str, strict: bool) -> None:
    fast = _outcome(lambda t: NameAddress.parse(t, strict=strict), text)
    general = _outcome(lambda t: _general(t, strict), text)
    assert fast == general
    if isinstance(fast, NameAddress):
        assert str(fast) == str(general)
        assert NameAddress.is_valid(text) or not strict


_CHARS = st.sampled_from([*"abAB09.-_:;@<>\"\\ =?&%[]+!~*',/tT", "sip:", "sips:", "\t"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_CHARS, max_size=30).map("".join),
    st.sampled_from(["", '"N" ', "Name ", " "]),
    st.booleans(),
)
def test_name_address_fast_path_matches_on_generated_input(
    rest: str, display: str, strict: bool
) -> None:
    for text in (f"{display}<sip:{rest}", rest, f"{display}<{rest}>"):
        fast = _outcome(lambda t: NameAddress.parse(t, strict=strict), text)
        assert fast == _outcome(lambda t: _general(t, strict), text)


def test_lenient_parsing_drops_empty_parameters_only_from_values_that_need_it() -> None:
    assert Via.parse("SIP/2.0/UDP h;;branch=z9hG4bK1;", strict=False).params == {
        "branch": "z9hG4bK1"
    }
    quoted = Via.parse('SIP/2.0/UDP h;branch=z9hG4bK1;x=";;"', strict=False)
    assert quoted.params["x"] == '";;"'
    with pytest.raises(ParseError):
        Via.parse("SIP/2.0/UDP h;;branch=z9hG4bK1")
    assert NameAddress.parse("<sip:a@h>;;tag=1", strict=False).tag == "1"
    assert NameAddress.parse("<sip:a;;b@h>", strict=False).uri.user == "a;;b"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@home.arpa",
        "sip:home.arpa",
        "sip:alice@home.arpa:5070",
        "sips:[2001:db8::1]:5061",
        "sip:alice:pw@h",
        "sip:alice@h;transport=tcp;lr",
        "sip:alice@h?subject=x",
    ],
)
def test_uri_serialises_back_to_its_text(text: str) -> None:
    uri = SipUri.parse(text)
    assert str(uri) == text
    assert str(uri.copy()) == text


# --- the parser keeps its Via objects ---------------------------------------------------------

REQUESTS = [
    # the shape of a registration
    "REGISTER sip:home.arpa SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
    "From: <sip:alice@home.arpa>;tag=t1\r\n"
    "To: <sip:alice@home.arpa>\r\n"
    "Call-ID: c1@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:alice@127.0.0.1:5070>;expires=3600\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n",
    # compact forms, several Vias on one line and on two, a folded line, a To tag
    "INVITE sip:bob@home.arpa SIP/2.0\r\n"
    "v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-p1;received=192.0.2.9,\r\n"
    " SIP/2.0/TCP 192.0.2.1:5062 ; branch=z9hG4bK-a1\r\n"
    "V: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK-b2\r\n"
    'f: "Alice" <sip:alice@home.arpa>;tag=a\r\n'
    "t: Bob\r\n <sip:bob@home.arpa>;tag=b\r\n"
    "i: abc@def\r\n"
    "CSeq: 2 INVITE\r\n"
    "m: <sip:alice@192.0.2.1:5062;transport=tcp>\r\n"
    "Record-Route: <sip:proxy.example.com;lr>\r\n"
    "l: 0\r\n\r\n",
    # IPv6 everywhere, lower-case names, Timestamp
    "OPTIONS sip:[2001:db8::2]:5060 SIP/2.0\r\n"
    "via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK-6;rport\r\n"
    "from: <sip:alice@[2001:db8::1]>;tag=6\r\n"
    "to: <sip:[2001:db8::2]>\r\n"
    "call-id: six\r\n"
    "cseq: 6 OPTIONS\r\n"
    "timestamp: 54\r\n"
    "content-length: 0\r\n\r\n",
    # bare LF line ends, an addr-spec From and a tel: To
    "MESSAGE sip:bob@home.arpa SIP/2.0\n"
    "Via: SIP/2.0/UDP host.example;branch=z9hG4bK-7\n"
    "From: sip:alice@home.arpa;tag=7\n"
    "To: <tel:+15550100>\n"
    "Call-ID: seven\n"
    "CSeq: 7 MESSAGE\n"
    "Content-Length: 0\n\n",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_parser_keeps_the_vias_it_validated(text: str) -> None:
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    assert request.headers.is_cached("via")
    raw = request.headers.get_all("Via")
    assert [str(v) for v in request.vias] == [str(Via.parse(item)) for item in raw]


@pytest.mark.parametrize(
    "via", ["SIP/2.0/UDP", "SIP/2.0/UDP host;;branch=x", "SIP/3.0/UDP h", "SIP/2.0/UDP h:99999"]
)
def test_a_bad_via_is_still_a_400_with_a_basis(via: str) -> None:
    text = REQUESTS[0].replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport", f"Via: {via}"
    )
    with pytest.raises(ParseError) as caught:
        parse_message(text.encode())
    assert caught.value.status == 400
    assert caught.value.reason == f"bad Via {via!r}"


# --- make_response ------------------------------------------------------------------------


def _reference_response(request: Request, status: int, to_tag: str) -> bytes:
    """RFC 3261 §8.2.6 through the public Headers API only: the general way to build it."""
    headers = Headers()
    for via in request.vias:
        headers.add("Via", str(via))
    source = request.headers
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = source.get(name)
        if value is not None:
            if name == "To" and status != 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            headers.add(name, value)
    if 100 < status < 300 and request.method == "INVITE":
        for value in source.get_lines("Record-Route"):
            headers.add("Record-Route", value)
    if status == 100:
        for value in source.get_lines("Timestamp"):
            headers.add("Timestamp", value)
    return Response(status, None, headers).to_bytes()


@pytest.mark.parametrize("text", REQUESTS)
@pytest.mark.parametrize("status", [100, 180, 200, 401, 486])
@pytest.mark.parametrize("stamp", [False, True])
@pytest.mark.parametrize("read_to", [False, True])
def test_make_response_is_byte_identical_to_the_general_builder(
    text: str, status: int, stamp: bool, read_to: bool
) -> None:
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    if stamp:
        _stamp_via(request, Address("198.51.100.7", 40000))
    if read_to:
        request.to.params["x"] = "changed in place"  # a typed view changed in place is copied
    expected = _reference_response(request, status, "tagx")
    response = make_response(request, status, to_tag="tagx")
    assert response.to_bytes() == expected
    again = parse_message(expected)
    assert [str(v) for v in response.vias] == [str(v) for v in again.vias]
    again.headers.remove("Content-Length")
    assert response.headers == again.headers
    assert len(response.headers) == len(again.headers)
    # The response's Vias are its own: routing or changing them leaves the request alone.
    response.top_via.params["received"] = "203.0.113.1"
    assert request.top_via.params.get("received") != "203.0.113.1"


def test_make_response_headers_can_be_changed_before_sending() -> None:
    request = parse_message(REQUESTS[1].encode())
    assert isinstance(request, Request)
    response = make_response(request, 200, to_tag="t")
    assert "Via" in response.headers
    response.headers.prepend("Via", "SIP/2.0/UDP first.example;branch=z9hG4bK-0")
    lines = response.headers.get_lines("Via")
    assert lines[0] == "SIP/2.0/UDP first.example;branch=z9hG4bK-0"
    assert lines[1:] == [str(v) for v in request.vias]
    response.headers.remove("Via")
    assert "Via" not in response.headers
    assert b"\r\nVia:" not in response.to_bytes()


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("SIP/2.0/UDP h;branch=z9hG4bK1;rport", {"branch": "z9hG4bK1", "rport": None}),
        ("SIP/2.0/UDP h ; Branch = z9hG4bK1 ;rport ", {"branch": "z9hG4bK1", "rport": None}),
        ('SIP/2.0/UDP h;RPORT=5;x="a;b"', {"rport": "5", "x": '"a;b"'}),
        ("SIP/2.0/UDP h\t;received=10.0.0.1", {"received": "10.0.0.1"}),
        ("SIP/2.0/UDP h", {}),
    ],
)
def test_via_parameters_with_and_without_blanks(text: str, params: dict[str, str | None]) -> None:
    assert Via.parse(text).params == params


@pytest.mark.parametrize("host", ["\u212a", "\u017fip.example", "ex\u0131mple"])
def test_via_host_is_ascii_only(host: str) -> None:
    """Letters that case-fold to ASCII ones (Kelvin sign, long s, dotless i) are not ASCII."""
    with pytest.raises(ParseError):
        Via.parse(f"SIP/2.0/UDP {host};branch=z9hG4bK1")
    assert Via.parse("sIp/2.0/udp Example.COM").host == "example.com"
