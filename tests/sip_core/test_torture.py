"""RFC 4475 torture tests: one row per message of RFC 4475 section 3.

The messages are our own, each written to exercise exactly the property its RFC case tests. A row
either parses (`parse_status` ACCEPT) and `check` asserts the fields the property is about, or is
rejected with `parse_status` (an int to answer with, None = drop silently). Where the RFC leaves the
rejection to the application (420, 483, 406, 415 ...), the parser accepts the message,
`application_status` records what the application must answer, and `check` asserts that the parsed
message carries what it needs to decide; a later test runs those rows through the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest

from sip_core.message import (
    ParseError,
    Request,
    Response,
    SipUri,
    make_response,
    parse_message,
)

ACCEPT: Final = "accept"


def sip(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (
    b"v=0\r\no=alice 53655765 2353687637 IN IP4 192.0.2.33\r\ns=-\r\nc=IN IP4 192.0.2.33\r\n"
    b"t=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
L = len(SDP)


@dataclass(frozen=True)
class Torture:
    section: str
    name: str
    data: bytes
    parse_status: int | str | None  # ACCEPT, a status to answer with, or None (drop)
    application_status: int | None = None  # what the application must answer, if not 2xx
    check: Callable[[Request | Response], None] | None = None
    basis: bool | None = None  # for rejected requests: can the error response be built?


def req(m: Request | Response) -> Request:
    assert isinstance(m, Request)
    return m


def resp(m: Request | Response) -> Response:
    assert isinstance(m, Response)
    return m


# --- checks for the messages that parse ---------------------------------------------------------


def check_wsinv(m: Request | Response) -> None:
    r = req(m)
    assert r.method == "INVITE"
    assert r.uri.user == "alice"
    assert r.uri.params == {"oddparam": None}
    assert r.to.uri.host == "atlanta.example.com"
    assert r.to.tag == "77x1"
    assert r.from_.display_name == 'B. Smith \\"'
    assert r.from_.tag == "abc1"
    assert r.max_forwards == 68
    assert (r.cseq.number, r.cseq.method) == (9, "INVITE")
    assert [v.host for v in r.vias] == ["one.example.com", "two.example.com", "192.0.2.200"]
    assert r.vias[0].port == 4000
    assert r.vias[0].params["ttl"] == "16"
    assert [v.transport for v in r.vias] == ["UDP", "TCP", "UDP"]
    assert r.vias[1].branch == "z9hG4bKq1"
    assert r.headers.get("Subject") == ""
    assert r.headers.get("X-Folded") == "first part second part"
    assert r.headers.get("X-Odd-Value") == ";;,,;;,;"
    assert len(r.contacts) == 1
    assert r.contacts[0].display_name == 'Quoted "name"'
    assert r.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert r.routes[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert r.content_type == "application/sdp"
    assert r.body == SDP


WEIRD_METHOD = "!odd-Method0123456789_*+`.%ok'~"
WEIRD_USER = "1_odd.user~(yes!)&it's+ok$/fine?,/;;*"
WEIRD_PASSWORD = "&pass=1,weird!*pw$~_.(too)"


def check_intmeth(m: Request | Response) -> None:
    r = req(m)
    assert r.method == WEIRD_METHOD
    assert r.cseq.method == WEIRD_METHOD
    assert r.uri.user == WEIRD_USER
    assert r.uri.password == WEIRD_PASSWORD
    assert r.uri.host == "example.com"
    assert r.headers.get("odd-Header!.%*+_`'~") == "{}[]\\|^ \u00e9\u00e8 \u20ac value"
    assert r.from_.display_name == "~`!@#$%^&*()_-+={}[]|\\:;'<>,.?/ quoted"
    assert r.to.display_name == "Token-chars.!%*_+`'~ name"
    assert r.call_id == "odd-'!%*_+`~()<>:\\\"/[]?{}-id"


def check_esc01(m: Request | Response) -> None:
    r = req(m)
    assert r.uri.user == "sips%3Auser%40example.com"
    assert r.uri.user_unescaped == "sips:user@example.com"
    assert r.to.uri.user_unescaped == "user"
    contact = r.contacts[0].uri
    assert contact.user_unescaped == "caller"
    assert contact.equivalent(SipUri.parse("sip:caller@host5.example.net;lr;name=value%2541"))


def check_escnull(m: Request | Response) -> None:
    r = req(m)
    assert r.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user_unescaped for c in r.contacts] == ["\x00\x00\x00", "\x00-two"]


def check_esc02(m: Request | Response) -> None:
    r = req(m)
    assert r.method == "RE%47IST%45R"  # a token; '%' is not an escape in a method
    assert r.method != "REGISTER"
    assert r.cseq.method == "RE%47IST%45R"
    assert r.to.display_name == "%Z%45"
    assert r.from_.display_name == "%Z%45"
    assert r.call_id == "esc02.%25e9%zz%"


def check_lwsdisp(m: Request | Response) -> None:
    r = req(m)
    assert r.from_.display_name == "caller"
    assert r.from_.uri.user == "caller"


LONG_NAME = "very long name " * 40
LONG_TAG = "t" * 700
LONG_CALL_ID = "longreq." + "c" * 900
LONG_USER = "u" * 600


def check_longreq(m: Request | Response) -> None:
    r = req(m)
    assert r.uri.user == LONG_USER
    assert r.to.display_name == LONG_NAME.strip()
    assert r.from_.tag == LONG_TAG
    assert r.call_id == LONG_CALL_ID
    assert len(r.vias) == 40
    assert r.vias[-1].branch == "z9hG4bK39"
    assert r.headers.get("X-Long") == "x" * 2000
    assert r.contacts[0].params["longparam"] == "p" * 500


def check_dblreq(m: Request | Response) -> None:
    r = req(m)
    assert r.method == "REGISTER"
    assert r.body == b""  # the second request in the datagram is ignored


def check_semiuri(m: Request | Response) -> None:
    r = req(m)
    assert r.uri.user == "user;par=u%40example.net"
    assert r.uri.host == "example.com"
    assert r.uri.params == {}


def check_transports(m: Request | Response) -> None:
    r = req(m)
    assert [v.transport for v in r.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


MULTIPART = (
    b"--boundary42\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--boundary42\r\nContent-Type: application/octet-stream\r\n\r\n"
    b"\x00\x01\xff\xfe\r\n\r\n\x80binary\xc3\x28\r\n"
    b"--boundary42--\r\n"
)


def check_mpart01(m: Request | Response) -> None:
    r = req(m)
    assert r.content_type == "multipart/mixed"
    assert r.body == MULTIPART
    assert 'boundary="boundary42"' in (r.headers.get("Content-Type") or "")


UNUSUAL_REASON = "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c \u2014 \u00bfok?"  # noqa: E501


def check_unreason(m: Request | Response) -> None:
    r = resp(m)
    assert r.status == 200
    assert r.reason == UNUSUAL_REASON


def check_noreason(m: Request | Response) -> None:
    r = resp(m)
    assert r.status == 100
    assert r.reason == ""


def check_badbranch(m: Request | Response) -> None:
    r = req(m)
    assert r.top_via.branch == "z9hG4bK"
    assert not r.top_via.is_rfc3261_branch  # so RFC 2543 matching is used


def check_unksm2(m: Request | Response) -> None:
    r = req(m)
    assert (r.to.uri.scheme, r.to.uri.opaque) == ("isbn", "2983792873")
    assert (r.from_.uri.scheme, r.from_.uri.opaque) == ("http", "//www.example.com")
    assert r.from_.tag == "3234233"
    assert (r.contacts[0].uri.scheme, r.contacts[0].uri.opaque) == ("name", "John_Doe")
    assert not r.to.uri.is_sip


def check_bext01(m: Request | Response) -> None:
    r = req(m)
    assert r.headers.get_all("Require") == ["nothingSupportedHere", "noSuchExtension"]
    assert r.headers.get_all("Proxy-Require") == ["noProxyExtension"]


def check_invut(m: Request | Response) -> None:
    r = req(m)
    assert r.content_type == "application/unknownformat"
    assert len(r.body) == 19


def check_regaut01(m: Request | Response) -> None:
    r = req(m)
    value = r.headers.get("Authorization") or ""
    assert value.split()[0] == "NoOneKnowsThisScheme"


def check_bcast(m: Request | Response) -> None:
    r = resp(m)
    assert r.status == 200
    assert r.top_via.host == "255.255.255.255"
    assert len(r.vias) == 2


def check_zeromf(m: Request | Response) -> None:
    assert req(m).max_forwards == 0


def check_cparam01(m: Request | Response) -> None:
    contact = req(m).contacts[0]
    assert contact.params == {"unknownparam": None}  # a header parameter: no <>
    assert contact.uri.params == {}


def check_cparam02(m: Request | Response) -> None:
    contact = req(m).contacts[0]
    assert contact.params == {}
    assert contact.uri.params == {"unknownparam": None}  # a URI parameter: inside <>


def check_regescrt(m: Request | Response) -> None:
    uri = req(m).contacts[0].uri
    assert uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def check_sdp01(m: Request | Response) -> None:
    r = req(m)
    assert r.headers.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert r.content_type == "application/sdp"


def check_inv2543(m: Request | Response) -> None:
    r = req(m)
    assert r.top_via.branch is None
    assert r.max_forwards is None
    assert r.from_.tag is None
    assert r.to.tag is None
    assert r.body == SDP


# --- the messages ---------------------------------------------------------------------------------

VIA = "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK"

ROWS: list[Torture] = [
    # 3.1.1 valid messages
    Torture(
        "3.1.1.1",
        "wsinv",
        sip(
            "INVITE sip:alice@atlanta.example.com;oddparam SIP/2.0",
            "TO :",
            " sip:alice@atlanta.example.com ;   tag    = 77x1",
            'from   : "B. Smith \\\\\\""       <sip:bob@biloxi.example.com>',
            "  ;",
            "  tag = abc1",
            "MaX-fOrWaRdS: 0068",
            "Call-ID: wsinv.ndaksdj@192.0.2.1",
            "Content-Length   : " + str(L),
            "cseq: 0009",
            "  INVITE",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    one.example.com: 4000;ttl=16",
            "  ;maddr=224.2.0.1 ; branch=z9hG4bKa7c6",
            "Subject:",
            "X-Folded: first part",
            "      second part",
            "X-Odd-Value: ;;,,;;,;",
            "Content-Type: application/sdp",
            "Route:",
            " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
            "v:  SIP  / 2.0  / TCP     two.example.com   ; branch  =   z9hG4bKq1  ,",
            " SIP  /    2.0   / UDP  192.0.2.200   ; branch = z9hG4bKq2",
            'm:"Quoted \\"name\\""<sip:bob@biloxi.example.com> ; newparam =',
            "      newvalue ;",
            "  secondparam ; q = 0.33",
            body=SDP,
        ),
        ACCEPT,
        check=check_wsinv,
    ),
    Torture(
        "3.1.1.2",
        "intmeth",
        sip(
            f"{WEIRD_METHOD} sip:{WEIRD_USER}:{WEIRD_PASSWORD}@example.com SIP/2.0",
            f"{VIA}intmeth",
            "Max-Forwards: 70",
            "To: Token-chars.!%*_+`'~ name<sip:t@example.com>",
            'From: "~`!@#$%^&*()_-+={}[]|\\\\:;\'<>,.?/ quoted" <sip:f@example.com>;tag=1',
            "Call-ID: odd-'!%*_+`~()<>:\\\"/[]?{}-id",
            f"CSeq: 139122385 {WEIRD_METHOD}",
            "odd-Header!.%*+_`'~: {}[]\\|^ \u00e9\u00e8 \u20ac value",
            "Content-Length: 0",
        ),
        ACCEPT,
        check=check_intmeth,
    ),
    Torture(
        "3.1.1.3",
        "esc01",
        sip(
            "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
            "To: sip:%75s%65r@example.com",
            "From: <sip:I%20have%20spaces@example.net>;tag=938",
            "Max-Forwards: 87",
            "i: esc01.239409asdfakjkn23onasd0-3234",
            "CSeq: 234234 INVITE",
            f"{VIA}nasdfasd",
            "C: application/sdp",
            "Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
            f"Content-Length: {L}",
            body=SDP,
        ),
        ACCEPT,
        check=check_esc01,
    ),
    Torture(
        "3.1.1.4",
        "escnull",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:null-%00-null@example.com",
            "From: sip:null-%00-null@example.com;tag=839923423",
            "Max-Forwards: 70",
            "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
            "CSeq: 14398234 REGISTER",
            f"{VIA}escnull",
            "Contact: <sip:%00%00%00@example.com>",
            "Contact: <sip:%00-two@example.com>",
            "L:0",
        ),
        ACCEPT,
        check=check_escnull,
    ),
    Torture(
        "3.1.1.5",
        "esc02",
        sip(
            "RE%47IST%45R sip:registrar.example.com SIP/2.0",
            'To: "%Z%45" <sip:resource@example.com>',
            'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23',
            "Call-ID: esc02.%25e9%zz%",
            f"{VIA}esc02",
            "CSeq: 29344 RE%47IST%45R",
            "Max-Forwards: 70",
            "Contact: <sip:alias1@host1.example.com>",
            "Content-Length: 0",
        ),
        ACCEPT,
        check=check_esc02,
    ),
    Torture(
        "3.1.1.6",
        "lwsdisp",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: caller<sip:caller@example.com>;tag=323",
            "Max-Forwards: 70",
            "Call-ID: lwsdisp.1234abcd@funky.example.com",
            "CSeq: 60 OPTIONS",
            f"{VIA}lwsdisp",
            "l: 0",
        ),
        ACCEPT,
        check=check_lwsdisp,
    ),
    Torture(
        "3.1.1.7",
        "longreq",
        sip(
            f"INVITE sip:{LONG_USER}@example.com SIP/2.0",
            f'To: "{LONG_NAME.strip()}" <sip:{LONG_USER}@example.com>',
            f"From: sip:caller@example.net;tag={LONG_TAG}",
            f"Call-ID: {LONG_CALL_ID}",
            "CSeq: 18 INVITE",
            "Max-Forwards: 70",
            *(f"Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{i}" for i in range(20)),
            "Via: "
            + ", ".join(f"SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bK{i}" for i in range(20, 40)),
            f"Contact: <sip:caller@host.example.net>;longparam={'p' * 500}",
            f"X-Long: {'x' * 2000}",
            f"Content-Type: application/sdp\r\nl: {L}",
            body=SDP,
        ),
        ACCEPT,
        check=check_longreq,
    ),
    Torture(
        "3.1.1.8",
        "dblreq",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:j.user@example.com;tag=43251j3j324",
            "Max-Forwards: 8",
            "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412",
            "Contact: sip:j.user@host.example.com",
            "CSeq: 8 REGISTER",
            f"{VIA}dblreq",
            "Content-Length: 0",
        )
        + sip(
            "INVITE sip:joe@example.com SIP/2.0",
            "t: sip:joe@example.com",
            "From: sip:caller@example.net;tag=141334",
            "Max-Forwards: 8",
            "Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15",
            "CSeq: 8 INVITE",
            f"{VIA}dblreq2",
            f"Content-Length: {L}",
            body=SDP,
        ),
        ACCEPT,
        check=check_dblreq,
    ),
    Torture(
        "3.1.1.9",
        "semiuri",
        sip(
            "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0",
            "To: sip:j_user@example.com",
            "From: sip:caller@example.org;tag=33242",
            "Max-Forwards: 3",
            "Call-ID: semiuri.0ha0isndaksdj",
            "CSeq: 8 OPTIONS",
            "Accept: application/sdp, application/pkcs7-mime,",
            "        multipart/mixed, multipart/signed,",
            "        message/sip, message/sipfrag",
            f"{VIA}semiuri",
            "l: 0",
        ),
        ACCEPT,
        check=check_semiuri,
    ),
    Torture(
        "3.1.1.10",
        "transports",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: <sip:caller@example.com>;tag=323",
            "Max-Forwards: 70",
            "Call-ID: transports.kijh4akdnaqjkwendsasfdj",
            "Accept: application/sdp",
            "CSeq: 60 OPTIONS",
            "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw",
            "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
            "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj",
            "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
            "l: 0",
        ),
        ACCEPT,
        check=check_transports,
    ),
    Torture(
        "3.1.1.11",
        "mpart01",
        sip(
            "MESSAGE sip:kumiko@example.org SIP/2.0",
            f"{VIA}mpart01",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=3f8d",
            "To: <sip:kumiko@example.org>",
            "Call-ID: mpart01.1234@192.0.2.10",
            "CSeq: 2 MESSAGE",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed;boundary="boundary42"',
            f"Content-Length: {len(MULTIPART)}",
            body=MULTIPART,
        ),
        ACCEPT,
        check=check_mpart01,
    ),
    Torture(
        "3.1.1.12",
        "unreason",
        sip(
            f"SIP/2.0 200 {UNUSUAL_REASON}",
            "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
            "Call-ID: unreason.1234ksdfak3j2erwedfsASdf",
            "CSeq: 35 INVITE",
            "From: sip:user@example.com;tag=11141343",
            "To: sip:user@example.edu;tag=2229",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            "Contact: <sip:user@host198.example.com>",
            body=SDP,
        ),
        ACCEPT,
        check=check_unreason,
    ),
    Torture(
        "3.1.1.13",
        "noreason",
        sip(
            "SIP/2.0 100 ",
            "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
            "Call-ID: noreason.asndj203insdf99223ndf",
            "CSeq: 35 INVITE",
            "From: <sip:user@example.com>;tag=39ansfi3",
            "To: <sip:user@example.edu>;tag=902jndnke3",
            "Content-Length: 0",
            "Contact: <sip:user@host105.example.com>",
        ),
        ACCEPT,
        check=check_noreason,
    ),
    # 3.1.2 invalid messages
    Torture(
        "3.1.2.1",
        "badinv01",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=134161461246",
            "Max-Forwards: 7",
            "Call-ID: badinv01.0ha0isndaksdjasdf3234nas",
            "CSeq: 8 INVITE",
            "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
            'Contact: "Joe" <sip:joe@example.org>;;;;',
            f"Content-Length: {L}",
            "Content-Type: application/sdp",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.2",
        "clerr",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "Max-Forwards: 80",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=93942939o2",
            "Contact: <sip:caller@hungry.example.net>",
            "Call-ID: clerr.0ha0isndaksdjweiafasdk3",
            "CSeq: 8 INVITE",
            f"{VIA}-clerr",
            "Content-Type: application/sdp",
            "Content-Length: 9999",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.3",
        "ncl",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "Max-Forwards: 254",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=32394234",
            "Call-ID: ncl.0ha0isndaksdj2193423r542w35",
            "CSeq: 0 INVITE",
            f"{VIA}-ncl",
            "Contact: <sip:caller@example53.example.net>",
            "Content-Type: application/sdp",
            "Content-Length: -999",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.4",
        "scalar02",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            f"{VIA}-scalar02",
            "Max-Forwards: 300",
            "From: sip:user@example.com;tag=932298734",
            "To: sip:user@example.com",
            "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32",
            "CSeq: 36893488147419103232 REGISTER",
            "Contact: <sip:user@host129.example.com>;expires=280297596632815",
            "Expires: 1" + "0" * 39,
            "Content-Length: 0",
        ),
        400,
        basis=False,  # the CSeq itself is unusable
    ),
    Torture(
        "3.1.2.5",
        "scalarlg",
        sip(
            "SIP/2.0 503 Service Unavailable",
            "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129",
            "To: <sip:user@example.com>",
            "From: <sip:other@example.net>;tag=2easdjfejw",
            "CSeq: 9292394834772304023312 OPTIONS",
            "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r",
            "Retry-After: 949302838503028349304023988",
            'Warning: 1812 overture "In Progress"',
            "Content-Length: 0",
        ),
        None,
    ),
    Torture(
        "3.1.2.6",
        "quotbal",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            'To: "Mr. J. User <sip:j.user@example.com>',
            "From: sip:caller@example.net;tag=93334",
            "Max-Forwards: 10",
            "Call-ID: quotbal.aksdj",
            "Contact: <sip:caller@host59.example.net>",
            "CSeq: 8 INVITE",
            f"{VIA}-quotbal",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.7",
        "ltgtruri",
        sip(
            "INVITE <sip:user@example.com> SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=39291",
            "Max-Forwards: 23",
            "Call-ID: ltgtruri.1@192.0.2.5",
            "CSeq: 1 INVITE",
            f"{VIA}-ltgtruri",
            "Contact: <sip:caller@host5.example.net>",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.8",
        "lwsruri",
        sip(
            "INVITE sip:user@example.com; lr SIP/2.0",
            "To: sip:user@example.com;tag=3xfe-9921883-z9f",
            "From: sip:caller@example.net;tag=231413434",
            "Max-Forwards: 5",
            "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423",
            "CSeq: 2130706432 INVITE",
            f"{VIA}-lwsruri",
            "Contact: <sip:caller@host1.example.net>",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.9",
        "lwsstart",
        sip(
            "INVITE  sip:user@example.com  SIP/2.0",
            "Max-Forwards: 8",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=8814",
            "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com",
            "CSeq: 1893884 INVITE",
            f"{VIA}-lwsstart",
            "Contact: <sip:caller@host1.example.net>",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.10",
        "trws",
        sip(
            "OPTIONS sip:remote-target@example.com SIP/2.0  ",
            f"{VIA}-trws",
            "To: <sip:remote-target@example.com>",
            "From: <sip:local-resource@example.com>;tag=329429089",
            "Call-ID: trws.oicu34958239neffasdhr2345r",
            "Accept: application/sdp",
            "CSeq: 238923 OPTIONS",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.11",
        "escruri",
        sip(
            "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=341518",
            "Max-Forwards: 7",
            "Contact: <sip:caller@host39923.example.net>",
            "Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5",
            "CSeq: 149209342 INVITE",
            f"{VIA}-escruri",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.12",
        "baddate",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=2234923",
            "Max-Forwards: 70",
            "Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234",
            "CSeq: 1392934 INVITE",
            f"{VIA}-baddate",
            "Date: Fri, 01 Jan 2010 16:00:00 EST",
            "Contact: <sip:caller@host5.example.net>",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.13",
        "regbadct",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            f"{VIA}-regbadct",
            "Max-Forwards: 70",
            "From: sip:user@example.com;tag=998332",
            "To: sip:user@example.com",
            "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1",
            "CSeq: 1 REGISTER",
            "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "l: 0",
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.14",
        "badaspec",
        sip(
            "OPTIONS sip:user@example.org SIP/2.0",
            f"{VIA}-badaspec",
            "Max-Forwards: 70",
            'From: "Watson, Thomas" < sip:t.watson@example.org >;tag=ghi',
            "To: sip:user@example.org",
            "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3",
            "Accept: application/sdp",
            "CSeq: 3923239 OPTIONS",
            "l: 0",
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.15",
        "baddn",
        sip(
            "OPTIONS sip:t.watson@example.org SIP/2.0",
            f"{VIA}-baddn",
            "Max-Forwards: 70",
            "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "To: Watson, Thomas <sip:t.watson@example.org>",
            "Call-ID: baddn.31415@c.example.com",
            "Accept: application/sdp",
            "CSeq: 3923239 OPTIONS",
            "l: 0",
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.16",
        "badvers",
        sip(
            "OPTIONS sip:t.watson@example.org SIP/7.0",
            "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            "Max-Forwards:     70",
            "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe",
            "To:      T. Watson <sip:t.watson@example.org>",
            "Call-ID: badvers.31417@c.example.com",
            "CSeq:    1 OPTIONS",
            "l: 0",
        ),
        505,
        # The Via is SIP/7.0 too: there is no usable path back, so the 505 cannot be sent.
        basis=False,
    ),
    Torture(
        "3.1.2.17",
        "mismatch01",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=34525",
            "Max-Forwards: 6",
            "Call-ID: mismatch01.dj0234sxdfl3",
            "CSeq: 8 INVITE",
            f"{VIA}-mismatch01",
            "l: 0",
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.18",
        "mismatch02",
        sip(
            "NEWMETHOD sip:user@example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=34525",
            "Max-Forwards: 6",
            "Call-ID: mismatch02.dj0234sxdfl3",
            "CSeq: 8 INVITE",
            "Contact: <sip:caller@host.example.net>",
            f"{VIA}-mismatch02",
            "Content-Type: application/sdp",
            f"l: {L}",
            body=SDP,
        ),
        400,
        basis=True,
    ),
    Torture(
        "3.1.2.19",
        "bigcode",
        sip(
            "SIP/2.0 4294967301 better not break the receiver",
            "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
            "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i",
            "CSeq: 353494 INVITE",
            "From: <sip:user@example.com>;tag=39ansfi3",
            "To: <sip:user@example.edu>;tag=902jndnke3",
            "Content-Length: 0",
            "Contact: <sip:user@host105.example.com>",
        ),
        None,
    ),
    # 3.2 transaction layer
    Torture(
        "3.2.1",
        "badbranch",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.org;tag=33242",
            "Max-Forwards: 3",
            "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK",
            "Accept: application/sdp",
            "Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n",
            "CSeq: 8 OPTIONS",
            "l: 0",
        ),
        ACCEPT,
        check=check_badbranch,
    ),
    # 3.3 application layer
    Torture(
        "3.3.1",
        "insuf",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "CSeq: 193942 INVITE",
            f"{VIA}-insuf",
            "Content-Type: application/sdp",
            f"l: {L}",
            body=SDP,
        ),
        400,
        application_status=400,
        basis=False,  # no From, To or Call-ID to echo
    ),
    Torture(
        "3.3.2",
        "unkscm",
        sip(
            "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=384",
            "Max-Forwards: 3",
            "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34",
            "CSeq: 3923423 OPTIONS",
            f"{VIA}-unkscm",
            "Content-Length: 0",
        ),
        416,
        application_status=416,
        basis=True,
    ),
    Torture(
        "3.3.3",
        "novelsc",
        sip(
            "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=384",
            "Max-Forwards: 3",
            "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34",
            "CSeq: 3923423 OPTIONS",
            f"{VIA}-novelsc",
            "Content-Length: 0",
        ),
        416,
        application_status=416,
        basis=True,
    ),
    Torture(
        "3.3.4",
        "unksm2",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "To: isbn:2983792873",
            "From: <http://www.example.com>;tag=3234233",
            "Call-ID: unksm2.daksdj@hyphenated-host.example.com",
            "CSeq: 234902 REGISTER",
            "Max-Forwards: 70",
            f"{VIA}-unksm2",
            "Contact: <name:John_Doe>",
            "l: 0",
        ),
        ACCEPT,
        check=check_unksm2,
    ),
    Torture(
        "3.3.5",
        "bext01",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:j_user@example.com",
            "From: sip:caller@example.net;tag=242etr",
            "Max-Forwards: 6",
            "Call-ID: bext01.0ha0isndaksdj",
            "Require: nothingSupportedHere, noSuchExtension",
            "Proxy-Require: noProxyExtension",
            "CSeq: 8 OPTIONS",
            f"{VIA}-bext01",
            "Content-Length: 0",
        ),
        ACCEPT,
        application_status=420,
        check=check_bext01,
    ),
    Torture(
        "3.3.6",
        "invut",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "Contact: <sip:caller@host5.example.net>",
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=8392034",
            "Max-Forwards: 70",
            "Call-ID: invut.0ha0isndaksdjadsfij34n23d",
            "CSeq: 235448 INVITE",
            f"{VIA}-invut",
            "Content-Type: application/unknownformat",
            "Content-Length: 19",
            body=b"<audio> <pcmu-xyz/>",
        ),
        ACCEPT,
        application_status=415,
        check=check_invut,
    ),
    Torture(
        "3.3.7",
        "regaut01",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:j.user@example.com;tag=87321hj23128",
            "Max-Forwards: 8",
            "Call-ID: regaut01.0ha0isndaksdj",
            "CSeq: 9338 REGISTER",
            f"{VIA}-regaut01",
            "Authorization: NoOneKnowsThisScheme opaque-data=here",
            "Content-Length:0",
        ),
        ACCEPT,
        application_status=401,
        check=check_regaut01,
    ),
    Torture(
        "3.3.8",
        "multi01",
        sip(
            "INVITE sip:user@company.com SIP/2.0",
            "Contact: <sip:caller@host25.example.net>",
            f"{VIA}-multi01",
            "Max-Forwards: 70",
            "CSeq: 5 INVITE",
            "Call-ID: multi01.98asdh@192.0.2.1",
            "CSeq: 59 INVITE",
            "Call-ID: multi01.98asdh@192.0.2.2",
            "From: sip:caller@example.com;tag=3413415",
            "To: sip:user@example.com",
            "To: sip:other@example.net",
            "From: sip:caller@example.net;tag=2923420123",
            "Content-Type: application/sdp",
            "l: 0",
            "Max-Forwards: 5",
        ),
        400,
        application_status=400,
        basis=True,
    ),
    Torture(
        "3.3.9",
        "mcl01",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            f"{VIA}-mcl01",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=3ghd",
            "Max-Forwards: 70",
            "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf",
            "CSeq: 15932 OPTIONS",
            "Content-Length: 13",
            "Content-Length: 5",
            "Content-Type: text/plain",
            body=b"There's no way to know how many octets this has\r\n",
        ),
        400,
        application_status=400,
        basis=True,
    ),
    Torture(
        "3.3.10",
        "bcast",
        sip(
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23",
            "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbcast",
            "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf",
            "CSeq: 35 INVITE",
            "From: sip:user@example.com;tag=11141343",
            "To: sip:user@example.edu;tag=2229",
            "Content-Length: 0",
            "Contact: <sip:user@host28.example.com>",
        ),
        ACCEPT,
        application_status=None,  # a proxy or UA must discard it, never answer or forward it
        check=check_bcast,
    ),
    Torture(
        "3.3.11",
        "zeromf",
        sip(
            "OPTIONS sip:user@example.com SIP/2.0",
            f"{VIA}-zeromf",
            "To: sip:user@example.com",
            "From: sip:caller@example.net;tag=3ghd",
            "Call-ID: zeromf.4xsdfj32asd",
            "CSeq: 39234321 OPTIONS",
            "Max-Forwards: 0",
            "Content-Length: 0",
        ),
        ACCEPT,
        application_status=483,
        check=check_zeromf,
    ),
    Torture(
        "3.3.12",
        "cparam01",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            f"{VIA}-cparam01",
            "Max-Forwards: 70",
            "From: sip:user@example.com;tag=e3uet6ksdt",
            "To: sip:user@example.com",
            "Call-ID: cparam01.hajs3sdfkj2390ansd",
            "CSeq: 3 REGISTER",
            "Contact: sip:+19725552222@gw1.example.net;unknownparam",
            "l: 0",
        ),
        ACCEPT,
        check=check_cparam01,
    ),
    Torture(
        "3.3.13",
        "cparam02",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            f"{VIA}-cparam02",
            "Max-Forwards: 70",
            "From: sip:user@example.com;tag=e3uet6ksdt",
            "To: sip:user@example.com",
            "Call-ID: cparam02.wprgtbdlsaa2382",
            "CSeq: 3 REGISTER",
            "Contact: <sip:+19725552222@gw1.example.net;unknownparam>",
            "l: 0",
        ),
        ACCEPT,
        check=check_cparam02,
    ),
    Torture(
        "3.3.14",
        "regescrt",
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:user@example.com;tag=8",
            "Max-Forwards: 70",
            f"{VIA}-regescrt",
            "Call-ID: regescrt.k345asrl3fdbv@192.0.2.1",
            "CSeq: 14398234 REGISTER",
            "M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
            "L:0",
        ),
        ACCEPT,
        check=check_regescrt,
    ),
    Torture(
        "3.3.15",
        "sdp01",
        sip(
            "INVITE sip:user@example.com SIP/2.0",
            "To: sip:j_user@example.com",
            "Contact: <sip:caller@host15.example.net>",
            "From: sip:caller@example.net;tag=234",
            "Max-Forwards: 5",
            "Call-ID: sdp01.ndaksdj9342dasdd",
            "Accept: text/nobodyKnowsThis",
            "CSeq: 8 INVITE",
            f"{VIA}-sdp01",
            f"Content-Length: {L}",
            "Content-Type: application/sdp",
            body=SDP,
        ),
        ACCEPT,
        application_status=406,
        check=check_sdp01,
    ),
    # 3.4 backward compatibility
    Torture(
        "3.4.1",
        "inv2543",
        sip(
            "INVITE sip:UserB@example.com SIP/2.0",
            "Via: SIP/2.0/UDP iftgw.example.com",
            "From: <sip:+13035551111@ift.client.example.net;user=phone>",
            "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>",
            "To: sip:+16505552222@ss1.example.net;user=phone",
            "Call-ID: inv2543.1717@ift.client.example.com",
            "CSeq: 56 INVITE",
            "Content-Type: application/sdp",
            f"Content-Length: {L}",
            body=SDP,
        ),
        ACCEPT,
        check=check_inv2543,
    ),
]

EXPECTED_SECTIONS = (
    [f"3.1.1.{i}" for i in range(1, 14)]
    + [f"3.1.2.{i}" for i in range(1, 20)]
    + ["3.2.1"]
    + [f"3.3.{i}" for i in range(1, 16)]
    + ["3.4.1"]
)


def test_every_rfc4475_message_has_a_row() -> None:
    assert [row.section for row in ROWS] == EXPECTED_SECTIONS
    assert len({row.name for row in ROWS}) == len(ROWS) == 49


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.section}-{row.name}")
def test_torture(row: Torture) -> None:
    if row.parse_status == ACCEPT:
        message = parse_message(row.data)
        assert row.check is not None
        row.check(message)
        return
    with pytest.raises(ParseError) as info:
        parse_message(row.data)
    error = info.value
    assert error.status == row.parse_status, error.reason
    if row.parse_status is None or row.data.startswith(b"SIP/"):
        assert error.basis is None
        return
    assert (error.basis is not None) == row.basis, error.reason
    if error.basis is not None:
        assert isinstance(row.parse_status, int)
        response = make_response(error.basis, row.parse_status)
        again = parse_message(response.to_bytes())
        assert isinstance(again, Response)
        assert again.status == row.parse_status
        assert again.call_id == error.basis.headers.get("Call-ID")
        assert again.top_via.host == error.basis.top_via.host


@pytest.mark.parametrize(
    "row",
    [row for row in ROWS if row.parse_status == ACCEPT],
    ids=lambda row: f"{row.section}-{row.name}",
)
def test_accepted_messages_reach_a_serialisation_fixed_point(row: Torture) -> None:
    first = parse_message(row.data).to_bytes()
    second = parse_message(first)
    assert second.to_bytes() == first
    assert row.check is not None
    row.check(second)  # nothing the RFC case is about was lost in serialising


def test_application_rows_carry_their_status() -> None:
    statuses = {row.name: row.application_status for row in ROWS if row.application_status}
    assert statuses == {
        "insuf": 400,
        "unkscm": 416,
        "novelsc": 416,
        "bext01": 420,
        "invut": 415,
        "regaut01": 401,
        "multi01": 400,
        "mcl01": 400,
        "zeromf": 483,
        "sdp01": 406,
    }
