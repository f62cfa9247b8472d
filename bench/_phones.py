"""Phones for the reliability runs (bench/loss, bench/soak and their quick tests).

Each `Phone` is a SIP user agent on sip_core's own transport and transaction layers, so every
request, provisional and 2xx is retransmitted the way RFC 3261 says (timers A, E, G and the 2xx
retransmission of §13.3.1.4) and retransmissions it receives are absorbed: exactly what a lossy
path needs from both ends. It registers with MD5 digest, places calls (answering 407 challenges),
answers every INVITE at once with SDP, acknowledges each 2xx again when it comes again, answers
BYE, and sends key presses as SIP INFO (``application/dtmf-relay``), which the PBX reads for the
flip code. Media: each call has an RTP socket that sends a PCMU packet every 20 ms carrying the
sender's username, so a receiver knows whose audio reaches it (before and after a flip).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sip_core.clock import LoopClock
from sip_core.message import Request, Response, parse_message
from sip_core.transaction import ServerTransaction, TransactionLayer
from sip_core.transport import Address, Source, TransportKind, TransportLayer

DOMAIN = "home.arpa"
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


class PhoneError(Exception):
    """A request failed (timeout or an unexpected final response)."""


def _token() -> str:
    return secrets.token_hex(6)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_answer(challenge: str, method: str, uri: str, username: str, password: str) -> str:
    """An Authorization value for one MD5 challenge (RFC 2617 with qop=auth when offered)."""
    params = {m.group(1).lower(): m.group(2) or m.group(3) for m in _PARAM.finditer(challenge)}
    realm, nonce = params["realm"], params["nonce"]
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    parts = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        "algorithm=MD5",
    ]
    if "qop" in params:
        cnonce, nc = _token(), "00000001"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts)


def _md5_challenge(response: Response, header: str) -> str:
    for value in response.headers.get_all(header):
        if "md5" in value.lower() and "sha" not in value.lower().split("algorithm=")[-1][:4]:
            return value
    values = response.headers.get_all(header)
    if not values:
        raise PhoneError(f"{response.status} without {header}")
    return values[0]


class Media(asyncio.DatagramProtocol):
    """One call's RTP socket: sends 20 ms PCMU packets naming the sender, counts who it hears."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.heard: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._ssrc = secrets.randbits(32)

    @classmethod
    async def open(cls, owner: str, host: str) -> Media:
        loop = asyncio.get_running_loop()
        _, media = await loop.create_datagram_endpoint(lambda: cls(owner), local_addr=(host, 0))
        return media

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12 and data[1] & 0x7F == 0:
            self.heard[data[12:44].rstrip(b"\0").decode(errors="replace")] += 1

    def start(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        name = self.owner.encode()[:32].ljust(32, b"\0")
        for sequence in itertools.count():
            if self.transport is None or self.transport.is_closing():
                return
            header = struct.pack(
                "!BBHII", 0x80, 0, sequence & 0xFFFF, (160 * sequence) & 0xFFFFFFFF, self._ssrc
            )
            if self.remote is not None:
                self.transport.sendto(header + name + b"\xff" * 128, self.remote)
            await asyncio.sleep(0.02)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        if self.transport is not None:
            self.transport.close()


def sdp_offer(host: str, port: int) -> bytes:
    return (
        f"v=0\r\no=- {secrets.randbelow(10**6)} 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    ).encode()


def sdp_address(body: bytes) -> tuple[str, int] | None:
    host = re.search(rb"c=IN IP[46] (\S+)", body)
    port = re.search(rb"m=audio (\d+)", body)
    if host is None or port is None:
        return None
    return host.group(1).decode(), int(port.group(1))


@dataclass(eq=False)
class PhoneCall:
    """One dialog of a phone (placed or answered)."""

    phone: Phone
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    cseq: int
    media: Media
    incoming: bool
    ack: bytes = b""  # the ACK for our 2xx'd INVITE, sent again with each 2xx retransmission
    keys: str = ""  # key presses the far end sent us as INFO (application/dtmf-relay)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def next_cseq(self) -> int:
        self.cseq += 1
        return self.cseq


class Phone:
    """A phone on ``host`` registered as ``username`` with the PBX at ``server``."""

    def __init__(
        self,
        username: str,
        password: str,
        server: Address,
        *,
        host: str = "127.0.0.1",
        domain: str = DOMAIN,
        media: bool = True,
    ) -> None:
        self.username = username
        self.password = password
        self.server = server
        self.host = host
        self.domain = domain
        self.send_media = media
        self.calls: dict[str, PhoneCall] = {}
        self.incoming: asyncio.Queue[PhoneCall] = asyncio.Queue()
        self.on_incoming: Callable[[PhoneCall], None] | None = None
        self._transport = TransportLayer(host, 0, self._receive, tcp=False)
        self._txns = TransactionLayer(
            self._transport,
            LoopClock(),
            on_request=self._on_request,
            on_stray_response=self._on_stray_response,
        )
        self._register_call_id = f"{_token()}@{host}"
        self._register_cseq = 0

    async def start(self) -> Phone:
        await self._transport.start()
        return self

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            call.media.close()
        self._txns.close()
        await self._transport.stop()

    @property
    def port(self) -> int:
        return self._transport.local_address.port

    @property
    def contact(self) -> str:
        return f"<sip:{self.username}@{self.host}:{self.port}>"

    def via(self) -> str:
        return f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{_token()};rport"

    # -- requests ---------------------------------------------------------------------------------

    def _build(self, first: str, headers: list[str], body: bytes = b"", kind: str = "") -> Request:
        lines = [first, self.via(), "Max-Forwards: 70", *headers]
        if body:
            lines.append(f"Content-Type: {kind or 'application/sdp'}")
        lines.append(f"Content-Length: {len(body)}")
        message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(message, Request)
        return message

    async def _transaction(self, request: Request, time_limit: float = 40.0) -> Response:
        """The final response to ``request`` (retransmitted by the transaction layer)."""
        loop = asyncio.get_running_loop()
        final: asyncio.Future[Response] = loop.create_future()

        def on_response(response: Response) -> None:
            if response.status >= 200 and not final.done():
                final.set_result(response)
            elif 200 <= response.status < 300 and request.method == "INVITE":
                self._ack_again(response)

        def on_timeout() -> None:
            if not final.done():
                final.set_exception(PhoneError(f"{request.method} timed out"))

        self._txns.send_request(
            request,
            self.server,
            TransportKind.UDP,
            on_response=on_response,
            on_timeout=on_timeout,
        )
        async with asyncio.timeout(time_limit):
            return await final

    async def register(self, expires: int = 600) -> Response:
        """REGISTER (answering the digest challenge); returns the final response."""
        authorization: list[str] = []
        for _ in range(3):
            response = await self.register_once(expires, authorization)
            if response.status != 401:
                return response
            authorization = self.register_answer(response)
        return response

    async def register_once(self, expires: int, authorization: list[str]) -> Response:
        """One REGISTER transaction (``authorization``: from `register_answer`, or none)."""
        self._register_cseq += 1
        request = self._build(
            f"REGISTER sip:{self.domain} SIP/2.0",
            [
                f"From: <sip:{self.username}@{self.domain}>;tag={_token()}",
                f"To: <sip:{self.username}@{self.domain}>",
                f"Call-ID: {self._register_call_id}",
                f"CSeq: {self._register_cseq} REGISTER",
                f"Contact: {self.contact};expires={expires}",
                *authorization,
            ],
        )
        return await self._transaction(request)

    def register_answer(self, challenge: Response) -> list[str]:
        """The Authorization header answering a 401's MD5 challenge."""
        value = _md5_challenge(challenge, "WWW-Authenticate")
        uri = f"sip:{self.domain}"
        return [
            f"Authorization: {digest_answer(value, 'REGISTER', uri, self.username, self.password)}"
        ]

    async def call(self, dialled: str) -> PhoneCall:
        """INVITE ``dialled`` (a username or extension), answer 407, ACK the 200."""
        uri = f"sip:{dialled}@{self.domain}"
        media = await Media.open(self.username, self.host)
        call_id, tag = f"{_token()}@{self.host}", _token()
        local_uri = f"sip:{self.username}@{self.domain}"
        body = sdp_offer(self.host, media.port)
        authorization: list[str] = []
        cseq = 0
        try:
            for _ in range(3):
                cseq += 1
                request = self._build(
                    f"INVITE {uri} SIP/2.0",
                    [
                        f"From: <{local_uri}>;tag={tag}",
                        f"To: <{uri}>",
                        f"Call-ID: {call_id}",
                        f"CSeq: {cseq} INVITE",
                        f"Contact: {self.contact}",
                        *authorization,
                    ],
                    body,
                )
                call = PhoneCall(self, call_id, tag, "", local_uri, uri, uri, cseq, media, False)
                self.calls[call_id] = call
                response = await self._transaction(request)
                if response.status == 407:
                    challenge = _md5_challenge(response, "Proxy-Authenticate")
                    answer = digest_answer(challenge, "INVITE", uri, self.username, self.password)
                    authorization = [f"Proxy-Authorization: {answer}"]
                    continue
                if response.status // 100 != 2:
                    raise PhoneError(f"INVITE {dialled}: {response.status} {response.reason}")
                self._ack_again(response)
                remote = sdp_address(response.body)
                if remote is not None and self.send_media:
                    media.start(remote)
                return call
            raise PhoneError(f"INVITE {dialled}: challenged again and again")
        except BaseException:
            self.calls.pop(call_id, None)
            media.close()
            raise

    def _ack_again(self, response: Response) -> None:
        """ACK a 2xx of one of our INVITEs (the first time, and whenever it comes again)."""
        call = self.calls.get(response.call_id or "")
        if call is None or call.incoming:
            return
        if not call.ack:
            call.remote_tag = response.to.tag or ""
            contacts = response.contacts
            if contacts:
                call.remote_target = str(contacts[0].uri)
            call.cseq = response.cseq.number
            call.ack = self._build(
                f"ACK {call.remote_target} SIP/2.0",
                [
                    f"From: <{call.local_uri}>;tag={call.local_tag}",
                    f"To: <{call.remote_uri}>;tag={call.remote_tag}",
                    f"Call-ID: {call.call_id}",
                    f"CSeq: {call.cseq} ACK",
                ],
            ).to_bytes()
        self._send_raw(call.ack)

    def _send_raw(self, data: bytes) -> None:
        message = parse_message(data)
        assert isinstance(message, Request)
        self._transport.send_request(message, self.server, TransportKind.UDP)

    async def request_in_dialog(
        self, call: PhoneCall, method: str, body: bytes = b"", kind: str = ""
    ) -> Response:
        request = self._build(
            f"{method} {call.remote_target} SIP/2.0",
            [
                f"From: <{call.local_uri}>;tag={call.local_tag}",
                f"To: <{call.remote_uri}>;tag={call.remote_tag}",
                f"Call-ID: {call.call_id}",
                f"CSeq: {call.next_cseq()} {method}",
            ],
            body,
            kind,
        )
        return await self._transaction(request)

    async def hangup(self, call: PhoneCall) -> Response | None:
        """BYE (None when the call had ended already)."""
        if call.ended.is_set():
            return None
        call.ended.set()
        call.media.close()
        try:
            return await self.request_in_dialog(call, "BYE")
        finally:
            self.calls.pop(call.call_id, None)

    async def press(self, call: PhoneCall, keys: str) -> None:
        """Key presses as INFO (application/dtmf-relay), one transaction each, in order."""
        for key in keys:
            body = f"Signal={key}\r\nDuration=160\r\n".encode()
            response = await self.request_in_dialog(call, "INFO", body, "application/dtmf-relay")
            if response.status // 100 != 2:
                raise PhoneError(f"INFO {key}: {response.status}")

    # -- what arrives ----------------------------------------------------------------------------

    def _receive(self, message: Request | Response, source: Source) -> None:
        self._txns.receive(message, source)

    def _on_stray_response(self, response: Response, source: Source) -> None:
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            self._ack_again(response)

    def _respond(
        self, txn: ServerTransaction, request: Request, status: int, tag: str, body: bytes = b""
    ) -> None:
        lines = [f"SIP/2.0 {status} {'OK' if status == 200 else 'Whatever'}"]
        lines += [f"Via: {via}" for via in request.headers.get_all("Via")]
        to = request.headers.get("To") or ""
        if tag and ";tag=" not in to:
            to = f"{to};tag={tag}"
        lines += [
            f"From: {request.headers.get('From')}",
            f"To: {to}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {request.cseq.number} {request.cseq.method}",
        ]
        if request.method == "INVITE":
            lines.append(f"Contact: {self.contact}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        response = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(response, Response)
        txn.respond(response)

    def _on_request(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        call = self.calls.get(request.call_id or "")
        if txn is None:
            if request.method == "ACK" and call is not None:
                call.acked.set()
            return
        method = request.method
        if method == "INVITE" and call is None:
            asyncio.get_running_loop().create_task(self._answer(request, txn))
            return
        if method == "INVITE" and call is not None:
            self._respond(txn, request, 200, call.local_tag, sdp_offer(self.host, call.media.port))
            return
        if method == "BYE":
            if call is None:
                self._respond(txn, request, 481, "")
                return
            self._respond(txn, request, 200, call.local_tag)
            call.ended.set()
            call.media.close()
            self.calls.pop(call.call_id, None)
            return
        if method == "CANCEL":
            return  # the layer answered it; we answer INVITEs at once, so nothing is left
        if method == "INFO" and call is not None:
            signal = re.search(rb"Signal\s*=\s*(\S)", request.body)
            if signal is not None:
                call.keys += signal.group(1).decode(errors="replace")
        self._respond(txn, request, 200 if call is not None or method == "OPTIONS" else 481, "")

    async def _answer(self, request: Request, txn: ServerTransaction) -> None:
        media = await Media.open(self.username, self.host)
        tag = _token()
        contacts = request.contacts
        call = PhoneCall(
            self,
            request.call_id or "",
            tag,
            request.from_.tag or "",
            str(request.to.uri),
            str(request.from_.uri),
            str(contacts[0].uri) if contacts else str(request.from_.uri),
            1000,
            media,
            True,
        )
        self.calls[call.call_id] = call
        self._respond(txn, request, 180, tag)
        self._respond(txn, request, 200, tag, sdp_offer(self.host, media.port))
        remote = sdp_address(request.body)
        if remote is not None and self.send_media:
            media.start(remote)
        if self.on_incoming is not None:
            self.on_incoming(call)
        self.incoming.put_nowait(call)


async def open_phone(
    username: str, password: str, server: Address, host: str = "127.0.0.1", media: bool = True
) -> Phone:
    phone = Phone(username, password, server, host=host, media=media)
    return await phone.start()


async def close_all(phones: list[Phone]) -> None:
    for phone in phones:
        with contextlib.suppress(Exception):
            await phone.stop()


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (sockets included), from /proc."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def sockets_of(pid: int) -> int:
    """Open sockets of a process."""
    count = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    count += 1
    return count


__all__ = [
    "DOMAIN",
    "Media",
    "Phone",
    "PhoneCall",
    "PhoneError",
    "close_all",
    "open_fds",
    "open_phone",
    "rss_kib",
    "sockets_of",
]
