"""A minimal SIP user agent for the tests: REGISTER and calls over UDP on 127.0.0.1, MD5 digest.

It is deliberately independent of sip_core (its own message text, its own parser and digest
arithmetic), so a registration or a call that works here means the PBX speaks SIP to something it
did not write. It answers what a phone must answer by itself (BYE, CANCEL, OPTIONS) and queues
everything for the test to look at.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
WAIT = 10.0
"""Seconds any single wait may take before the test fails (the PBX answers in milliseconds)."""


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _token() -> str:
    return secrets.token_hex(6)


@dataclass(slots=True)
class SipMessage:
    """A request or a response, as the tests look at it."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split()[1])

    @property
    def method(self) -> str:
        if self.is_request:
            return self.start.split()[0]
        return self.get("CSeq").split()[1]

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def get(self, name: str) -> str:
        values = self.all(name)
        return values[0] if values else ""


def parse_message(data: bytes) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipMessage(lines[0], headers, body)


def sdp(port: int, *, direction: str = "sendrecv") -> bytes:
    """An audio offer or answer with PCMU on ``port`` of 127.0.0.1."""
    return (
        f"v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    ).encode()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[SipMessage], None]) -> None:
        self.received: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._answer = answer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        self._answer(message)
        self.received.put_nowait(message)


@dataclass(slots=True)
class Dialog:
    """One side of an established call, enough to send ACK, re-INVITE and BYE."""

    call_id: str
    local: str  # our From/To value with our tag
    remote: str  # theirs with their tag
    target: str  # the remote Contact URI
    cseq: int


@dataclass(slots=True)
class SipPhone:
    """One phone with one account, talking to the PBX at 127.0.0.1:port."""

    port: int
    username: str
    password: str
    domain: str
    user_agent: str = "callflip-test-phone/1.0"
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    cseq: int = 0
    _transport: asyncio.DatagramTransport | None = None
    _protocol: _Protocol | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, self._protocol = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._auto_answer),
            local_addr=("127.0.0.1", 0),
            remote_addr=("127.0.0.1", self.port),
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def contact(self) -> str:
        return f"<sip:{self.username}@127.0.0.1:{self.local_port}>"

    # -- sending and waiting ---------------------------------------------------------------------

    def send(self, start: str, headers: list[str], body: bytes = b"") -> None:
        assert self._transport is not None
        lines = [start, *headers]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _via(self) -> str:
        return f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch=z9hG4bK{_token()};rport"

    async def expect(self, match: Callable[[SipMessage], bool]) -> SipMessage:
        """The next message that matches (others are dropped)."""
        assert self._protocol is not None
        async with asyncio.timeout(WAIT):
            while True:
                message = await self._protocol.received.get()
                if match(message):
                    return message

    async def request(self, method: str) -> SipMessage:
        return await self.expect(lambda m: m.is_request and m.method == method)

    async def final_response(self, method: str) -> SipMessage:
        return await self.expect(
            lambda m: not m.is_request and m.method == method and m.status >= 200
        )

    def respond(
        self, request: SipMessage, status: int, *, tag: str | None = None, body: bytes = b""
    ) -> None:
        """Answer a request; ``tag`` goes on the To header (a dialog-creating answer)."""
        to = request.get("To")
        if tag and ";tag=" not in to:
            to = f"{to};tag={tag}"
        headers = [f"Via: {via}" for via in request.all("Via")]
        headers += [
            f"From: {request.get('From')}",
            f"To: {to}",
            f"Call-ID: {request.get('Call-ID')}",
            f"CSeq: {request.get('CSeq')}",
        ]
        if request.method == "INVITE" and 200 <= status < 300:
            headers.append(f"Contact: {self.contact}")
        self.send(f"SIP/2.0 {status} {'OK' if status == 200 else 'Status'}", headers, body)

    def _auto_answer(self, message: SipMessage) -> None:
        """What any phone answers by itself: BYE and OPTIONS get 200, CANCEL ends the ringing."""
        if not message.is_request:
            return
        if message.method in ("BYE", "OPTIONS"):
            self.respond(message, 200)
        elif message.method == "CANCEL":
            self.respond(message, 200)
            invite = SipMessage(
                message.start.replace("CANCEL", "INVITE", 1),
                [
                    (k, v.replace("CANCEL", "INVITE") if k.lower() == "cseq" else v)
                    for k, v in message.headers
                ],
            )
            self.respond(invite, 487, tag=_token())

    # -- registration ----------------------------------------------------------------------------

    async def register(self, expires: int = 300, contact_port: int | None = None) -> SipMessage:
        """Register (or unregister with expires=0), answering one digest challenge.

        contact_port: register a Contact on another port than the one the REGISTER is sent from.
        """
        contact = (
            f"<sip:{self.username}@127.0.0.1:{contact_port}>" if contact_port else self.contact
        )
        response = await self._send_register(expires, None, contact)
        if response.status != 401:
            return response
        challenges = [c for c in response.all("WWW-Authenticate") if "MD5" in c.upper()]
        if not challenges:
            challenges = response.all("WWW-Authenticate")
        authorization = self._authorization(challenges[0], "REGISTER", f"sip:{self.domain}")
        return await self._send_register(expires, authorization, contact)

    def _authorization(self, challenge: str, method: str, uri: str) -> str:
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(challenge)}
        realm, nonce = params["realm"], params["nonce"]
        ha1 = _md5(f"{self.username}:{realm}:{self.password}")
        ha2 = _md5(f"{method}:{uri}")
        parts = [
            f'username="{self.username}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
            "algorithm=MD5",
        ]
        if "qop" in params:
            cnonce = secrets.token_hex(8)
            digest = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
            parts += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
        else:
            digest = _md5(f"{ha1}:{nonce}:{ha2}")
        parts.append(f'response="{digest}"')
        if "opaque" in params:
            parts.append(f'opaque="{params["opaque"]}"')
        return "Digest " + ", ".join(parts)

    async def _send_register(
        self, expires: int, authorization: str | None, contact: str
    ) -> SipMessage:
        self.cseq += 1
        headers = [
            self._via(),
            "Max-Forwards: 70",
            f"From: <sip:{self.username}@{self.domain}>;tag={_token()}",
            f"To: <sip:{self.username}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {contact}",
            f"Expires: {expires}",
            f"User-Agent: {self.user_agent}",
        ]
        if authorization:
            headers.append(f"Authorization: {authorization}")
        self.send(f"REGISTER sip:{self.domain} SIP/2.0", headers)
        return await self.final_response("REGISTER")

    # -- calls -----------------------------------------------------------------------------------

    async def dial(self, number: str, media_port: int = 30000) -> Outgoing:
        """Send an authenticated INVITE to ``number``; the PBX now rings the callee."""
        uri = f"sip:{number}@{self.domain}"
        call = Outgoing(
            self,
            uri,
            call_id=f"{_token()}@127.0.0.1",
            local=f"<sip:{self.username}@{self.domain}>;tag={_token()}",
            body=sdp(media_port),
        )
        call.send_invite(1, None)
        challenge = await self.expect(
            lambda m: not m.is_request and m.method == "INVITE" and m.status >= 200
        )
        assert challenge.status == 407, challenge.start
        call.ack_failure(challenge, 1)
        header = challenge.get("Proxy-Authenticate")
        call.send_invite(2, self._authorization(header, "INVITE", uri))
        return call

    def ring(self, invite: SipMessage) -> str:
        """Send 180 Ringing; returns our To tag for the answer."""
        tag = _token()
        self.respond(invite, 180, tag=tag)
        return tag

    async def answer(
        self, invite: SipMessage, tag: str | None = None, body: bytes | None = None
    ) -> Dialog:
        """Answer ``invite`` (with an offer when it had none) and wait for the ACK."""
        tag = tag or self.ring(invite)
        self.respond(invite, 200, tag=tag, body=body if body is not None else sdp(30100))
        await self.request("ACK")
        contact = _URI_IN_BRACKETS.search(invite.get("Contact"))
        return Dialog(
            call_id=invite.get("Call-ID"),
            local=f"{invite.get('To')};tag={tag}",
            remote=invite.get("From"),
            target=contact.group(1) if contact else "",
            cseq=1,
        )

    def hang_up(self, dialog: Dialog) -> None:
        dialog.cseq += 1
        self.send(
            f"BYE {dialog.target} SIP/2.0",
            [
                self._via(),
                "Max-Forwards: 70",
                f"From: {dialog.local}",
                f"To: {dialog.remote}",
                f"Call-ID: {dialog.call_id}",
                f"CSeq: {dialog.cseq} BYE",
            ],
        )


@dataclass(slots=True)
class Outgoing:
    """A call this phone placed, until it is answered."""

    phone: SipPhone
    uri: str
    call_id: str
    local: str
    body: bytes
    via: str = ""

    def _headers(self, cseq: int, method: str, to: str) -> list[str]:
        return [
            self.via,
            "Max-Forwards: 70",
            f"From: {self.local}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]

    def send_invite(self, cseq: int, authorization: str | None) -> None:
        self.via = self.phone._via()
        headers = [
            *self._headers(cseq, "INVITE", f"<{self.uri}>"),
            f"Contact: {self.phone.contact}",
        ]
        if authorization:
            headers.append(f"Proxy-Authorization: {authorization}")
        self.phone.send(f"INVITE {self.uri} SIP/2.0", headers, self.body)

    def ack_failure(self, response: SipMessage, cseq: int) -> None:
        """The ACK of a non-2xx final response: same branch as the INVITE."""
        self.phone.send(f"ACK {self.uri} SIP/2.0", self._headers(cseq, "ACK", response.get("To")))

    async def answered(self) -> Dialog:
        """Wait for the 200 OK and ACK it; returns the dialog."""
        ok = await self.phone.final_response("INVITE")
        assert ok.status == 200, ok.start
        contact = _URI_IN_BRACKETS.search(ok.get("Contact"))
        dialog = Dialog(
            call_id=self.call_id,
            local=self.local,
            remote=ok.get("To"),
            target=contact.group(1) if contact else self.uri,
            cseq=2,
        )
        self.via = self.phone._via()
        self.phone.send(f"ACK {dialog.target} SIP/2.0", self._headers(2, "ACK", dialog.remote))
        return dialog
