"""Fast paths of the message and digest layers agree with the straightforward grammar checks.

The hot paths of a registration avoid some regular-expression passes; these tests hold them to the
plain implementation they replace, on hand-picked edge cases and on generated inputs.
"""

from __future__ import annotations

import asyncio
import re
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.digest import DigestCredentials, parse_credentials
from sip_core.headers import Via
from sip_core.message import Request, Response, make_response, new_tag, parse_message, random_bytes
from sip_core.transport import Source, TransportLayer

# The grammar check and extraction parse_credentials used before its one-pass version.
_NAME = r"[A-Za-z0-9_.!%*+`'~-]+"
_VALUE = r'"(?:[^"\\]|\\.)*"|[^ \t,"]*'
_ITEM = rf"[ \t]*{_NAME}[ \t]*=[ \t]*(?:{_VALUE})[ \t]*"
_REF_PARAM = re.compile(rf"[ \t]*({_NAME})[ \t]*=[ \t]*({_VALUE})[ \t]*")
_REF_LIST = re.compile(rf"{_ITEM}(?:,{_ITEM})*")


def reference_credentials(value: str) -> DigestCredentials | None:
    value = value.strip()
    if value[:6].lower() != "digest" or len(value) < 8 or value[6] not in " \t":
        return None
    rest = value[7:]
    if _REF_LIST.fullmatch(rest) is None:
        return None
    params: dict[str, str] = {}
    for name, raw in _REF_PARAM.findall(rest):
        key = name.lower()
        if key in params:
            return None
        if raw.startswith('"'):
            text = raw[1:-1]
            params[key] = re.sub(r"\\(.)", r"\1", text) if "\\" in text else text
        else:
            params[key] = raw
    return DigestCredentials(params)


CREDENTIALS = [
    'Digest username="alice",realm="home.arpa",nonce="n",uri="sip:home.arpa",'
    'response="0123456789abcdef0123456789abcdef",algorithm=MD5,cnonce="abc",qop=auth,nc=00000001',
    'Digest username="a", realm="r"',
    "Digest a=1",
    "Digest a=1,",
    "Digest a=1 ,b=2",
    "Digest a=1 , ",
    "Digest ,a=1",
    "Digest a=1,,b=2",
    "Digest a=1 b=2",
    'Digest a="x\\"y", b = z ',
    'Digest a="x',
    'Digest a="x"y',
    'Digest a="x" "y"',
    "Digest a=1;b=2",
    "Digest a=",
    "Digest a=,b=",
    "Digest A=1,a=2",
    "Digest =1",
    'Digest a="\\',
    'Digest a="new\nline"',
    "Digest\ta=1",
    "Digestive a=1",
    "Basic abc",
]


def test_parse_credentials_matches_the_grammar_on_edge_cases() -> None:
    for value in CREDENTIALS:
        assert parse_credentials(value) == reference_credentials(value), value


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "A", "nonce", "uri", "b-c", ""]),
            st.sampled_from(["", " ", "\t"]),
            st.text(alphabet='ab1 ,"\\=\t;', max_size=8),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([",", ", ", " ,", ",,", " "]),
)
def test_parse_credentials_matches_the_grammar(
    items: list[tuple[str, str, str]], separator: str
) -> None:
    value = "Digest " + separator.join(f"{name}{blank}={raw}" for name, blank, raw in items)
    assert parse_credentials(value) == reference_credentials(value)


REQUESTS = [
    "OPTIONS sip:home.arpa SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
    "From: <sip:a@home.arpa>;tag=1\r\nTo: <sip:b@home.arpa>\r\nCall-ID: c1\r\n"
    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS sip:home.arpa SIP/2.0\r\n"
    'v: SIP / 2.0 / tcp  [::1]:5070 ; branch = z9hG4bK-2 ; received="x" ;rport=7,'
    " SIP/2.0/UDP proxy.example;maddr=10.0.0.1;lr\r\n"
    "Via: SIP/2.0/UDP HOST.example:5060;branch=z9hG4bK-3;ttl=1\r\n"
    "f: <sip:a@home.arpa>;tag=1\r\nt: <sip:b@home.arpa>\r\ni: c2\r\n"
    "CSeq: 2 OPTIONS\r\nl: 0\r\n\r\n",
]


def test_make_response_copies_parsed_vias_consistently_with_their_text() -> None:
    """make_response hands the request's parsed Vias to the response as copies; they must be
    what parsing the response's own Via text gives, and independent of the request."""
    for text in REQUESTS:
        request = parse_message(text.encode())
        assert isinstance(request, Request)
        request.top_via.received = "192.0.2.1"  # as the transport stamps it
        response = make_response(request, 200)
        lines = response.headers.get_all("Via")
        assert response.vias == [Via.parse(line) for line in lines]
        reparsed = parse_message(response.to_bytes())
        assert reparsed.vias == response.vias
        response.top_via.received = "198.51.100.7"
        assert request.top_via.received == "192.0.2.1"


def test_random_bytes_are_fresh_each_time() -> None:
    seen = {random_bytes(8) for _ in range(2000)}
    assert len(seen) == 2000
    assert all(len(item) == 8 for item in seen)
    assert len(random_bytes(5000)) == 5000
    assert len({new_tag() for _ in range(1000)}) == 1000


async def test_a_burst_of_udp_datagrams_is_drained_completely_and_in_order() -> None:
    """The UDP protocol reads queued datagrams itself after the one asyncio delivers; a burst
    larger than one drain batch must still arrive whole, in order, CRLF keep-alives skipped."""
    received: list[int] = []
    done = asyncio.Event()
    count = 200

    def on_message(message: Request | Response, source: Source) -> None:
        received.append(message.cseq.number)
        if len(received) == count:
            done.set()

    layer = TransportLayer("127.0.0.1", 0, on_message)
    await layer.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        target = (layer.local_address.host, layer.local_address.port)
        for number in range(1, count + 1):
            client.sendto(
                (
                    "OPTIONS sip:home.arpa SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{number}\r\n"
                    "From: <sip:a@home.arpa>;tag=1\r\nTo: <sip:b@home.arpa>\r\n"
                    f"Call-ID: burst\r\nCSeq: {number} OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                target,
            )
            if number % 50 == 0:
                client.sendto(b"\r\n\r\n", target)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        client.close()
        await layer.stop()
    assert received == list(range(1, count + 1))
