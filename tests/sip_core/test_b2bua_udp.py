"""End to end over real UDP on 127.0.0.1: two small in-test phones register and call via the Pbx.

The phones are the test's own few lines of SIP (independent clients such as baresip and sipp are
the interop tests' job). Waiting is bounded so a broken PBX fails instead of hanging; nothing is
timed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Callable

import pytest

from sip_core.calls import CallOutcome, CallState
from sip_core.config import Device, PbxConfig, RtpSettings, SipSettings, User
from sip_core.events import CallStateChanged, PbxEvent
from sip_core.message import Request, Response, new_branch, new_tag, parse_message
from sip_core.pbx import Pbx

HOST = "127.0.0.1"
DOMAIN = "home.arpa"
PASSWORD = "secret-password"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class UdpPhone(asyncio.DatagramProtocol):
    """A phone on its own UDP socket: sends text, waits for parsed messages."""

    def __init__(self, username: str, pbx_port: int) -> None:
        self.username = username
        self.pbx = (HOST, pbx_port)
        self.queue: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(parse_message(data))

    def send(self, lines: list[str], body: bytes = b"") -> None:
        assert self.transport is not None
        text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
        self.transport.sendto(text.encode() + body, self.pbx)

    async def expect(self, match: Callable[[Request | Response], bool]) -> Request | Response:
        async with asyncio.timeout(5):
            while True:
                message = await self.queue.get()
                if match(message):
                    return message

    async def response(self, status: int, method: str) -> Response:
        found = await self.expect(
            lambda m: isinstance(m, Response) and m.status == status and m.cseq.method == method
        )
        assert isinstance(found, Response)
        return found

    async def request(self, method: str) -> Request:
        found = await self.expect(lambda m: isinstance(m, Request) and m.method == method)
        assert isinstance(found, Request)
        return found

    def via(self) -> str:
        return f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={new_branch()};rport"

    def credentials(self, challenge: str, method: str, uri: str) -> str:
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[7:]))
        ha1 = md5(f"{self.username}:{params['realm']}:{PASSWORD}")
        ha2 = md5(f"{method}:{uri}")
        response = md5(f"{ha1}:{params['nonce']}:00000001:abc:auth:{ha2}")
        return (
            f'Digest username="{self.username}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
            f'cnonce="abc", nc=00000001, qop=auth, opaque="{params["opaque"]}"'
        )

    async def register(self) -> None:
        uri = f"sip:{DOMAIN}"
        call_id = new_tag()
        base = [
            f"From: <sip:{self.username}@{DOMAIN}>;tag={new_tag()}",
            f"To: <sip:{self.username}@{DOMAIN}>",
            f"Call-ID: {call_id}",
            f"Contact: <sip:{self.username}@{HOST}:{self.port}>",
            "Expires: 600",
        ]
        self.send([f"REGISTER {uri} SIP/2.0", self.via(), "CSeq: 1 REGISTER", *base])
        challenge = await self.response(401, "REGISTER")
        auth = self.credentials(challenge.headers.get("WWW-Authenticate") or "", "REGISTER", uri)
        self.send(
            [
                f"REGISTER {uri} SIP/2.0",
                self.via(),
                "CSeq: 2 REGISTER",
                *base,
                f"Authorization: {auth}",
            ]
        )
        await self.response(200, "REGISTER")


def sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(44000, 44999),
        users=(
            User("Alice", "200", (Device("201", PASSWORD, "desk"),)),
            User("Carol", "400", (Device("401", PASSWORD, "desk"),)),
        ),
    )
    instance = Pbx(config)
    await instance.start()
    yield instance
    await instance.stop()


async def phone(pbx: Pbx, username: str) -> UdpPhone:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpPhone(username, pbx.local_address.port), local_addr=(HOST, 0)
    )
    await protocol.register()
    return protocol


async def test_a_call_over_udp_with_407_answer_and_bye(pbx: Pbx) -> None:
    events: list[PbxEvent] = []
    pbx.subscribe(events.append)
    alice = await phone(pbx, "201")
    carol = await phone(pbx, "401")
    uri = f"sip:400@{DOMAIN}"
    tag = new_tag()
    call_id = new_tag()
    common = [
        f"From: <sip:201@{DOMAIN}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"Contact: <sip:201@{HOST}:{alice.port}>",
        "Content-Type: application/sdp",
    ]
    first_via = alice.via()
    alice.send([f"INVITE {uri} SIP/2.0", first_via, "CSeq: 1 INVITE", *common], sdp(30000))
    challenge = await alice.response(407, "INVITE")
    alice.send(
        [
            f"ACK {uri} SIP/2.0",
            first_via,
            f"From: <sip:201@{DOMAIN}>;tag={tag}",
            f"To: {challenge.headers.get('To')}",
            f"Call-ID: {call_id}",
            "CSeq: 1 ACK",
        ]
    )
    auth = alice.credentials(challenge.headers.get("Proxy-Authenticate") or "", "INVITE", uri)
    alice.send(
        [
            f"INVITE {uri} SIP/2.0",
            alice.via(),
            "CSeq: 2 INVITE",
            *common,
            f"Proxy-Authorization: {auth}",
        ],
        sdp(30000),
    )
    offered = await carol.request("INVITE")
    assert offered.call_id != call_id
    carol_tag = new_tag()

    def carol_answer(status: int, body: bytes = b"") -> None:
        lines = [
            f"SIP/2.0 {status} {'OK' if status == 200 else 'Ringing'}",
            *[f"Via: {v}" for v in offered.headers.get_all("Via")],
            f"From: {offered.headers.get('From')}",
            f"To: {offered.headers.get('To')};tag={carol_tag}",
            f"Call-ID: {offered.call_id}",
            f"CSeq: {offered.cseq.number} INVITE",
            f"Contact: <sip:401@{HOST}:{carol.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        carol.send(lines, body)

    carol_answer(180)
    await alice.response(180, "INVITE")
    carol_answer(200, sdp(30002))
    ok = await alice.response(200, "INVITE")
    assert b"m=audio 44" in ok.body  # the relay's port, not Carol's
    contact = ok.contacts[0].uri
    to_value = ok.headers.get("To")
    in_dialog = [f"From: <sip:201@{DOMAIN}>;tag={tag}", f"To: {to_value}", f"Call-ID: {call_id}"]
    alice.send([f"ACK {contact} SIP/2.0", alice.via(), "CSeq: 2 ACK", *in_dialog])
    ack = await carol.request("ACK")
    assert ack.call_id == offered.call_id
    assert [c.state for c in pbx.calls()] == [CallState.TALKING]
    (call,) = pbx.calls()
    assert pbx.call(call.id) is call
    assert pbx.call("no-such-call") is None
    alice.send([f"BYE {contact} SIP/2.0", alice.via(), "CSeq: 3 BYE", *in_dialog])
    await alice.response(200, "BYE")
    bye = await carol.request("BYE")
    assert bye.call_id == offered.call_id
    assert pbx.calls() == []
    (record,) = pbx.history()
    assert record.outcome is CallOutcome.ANSWERED
    assert (record.caller, record.callee_device) == ("201", "401")
    changes = [e for e in events if isinstance(e, CallStateChanged)]
    assert {(e.caller_user, e.callee_user) for e in changes} == {("Alice", "Carol")}
    assert pbx.call(call.id) is None  # ended
    states = [e.state for e in changes]
    assert states == [
        CallState.SETUP,
        CallState.RINGING,
        CallState.TALKING,
        CallState.ENDING,
        CallState.ENDED,
    ]
    for p in (alice, carol):
        assert p.transport is not None
        p.transport.close()


async def test_unknown_number_over_udp_is_404(pbx: Pbx) -> None:
    alice = await phone(pbx, "201")
    uri = f"sip:999@{DOMAIN}"
    lines = [
        f"INVITE {uri} SIP/2.0",
        alice.via(),
        "CSeq: 1 INVITE",
        f"From: <sip:201@{DOMAIN}>;tag={new_tag()}",
        f"To: <{uri}>",
        f"Call-ID: {new_tag()}",
        f"Contact: <sip:201@{HOST}:{alice.port}>",
    ]
    alice.send(lines)
    challenge = await alice.response(407, "INVITE")
    auth = alice.credentials(challenge.headers.get("Proxy-Authenticate") or "", "INVITE", uri)
    lines[1] = alice.via()
    lines[2] = "CSeq: 2 INVITE"
    alice.send([*lines, f"Proxy-Authorization: {auth}"])
    not_found = await alice.response(404, "INVITE")
    assert not_found.headers.get("Allow") is not None
    assert alice.transport is not None
    alice.transport.close()
