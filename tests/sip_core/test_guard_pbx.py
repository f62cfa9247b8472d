"""The guard in the running Pbx, over real UDP: enumeration, bans, legitimate load, events.

The test client writes its own message text and digest arithmetic (hashlib), and sends from a
chosen loopback address, so 127.0.0.2 can be the attacker while 127.0.0.1 is the household.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sip_core import digest
from sip_core.clock import ManualClock
from sip_core.config import parse_config
from sip_core.digest import DeviceCredentials, DigestAlgorithm, DigestAuthenticator
from sip_core.events import AddressBanned, BanEnded, BanEndReason, PbxEvent
from sip_core.message import Request, Response, parse_message
from sip_core.pbx import Pbx

DOMAIN = "home.arpa"
PASSWORD = "desk-secret-201"
ATTACKER = "127.0.0.2"
HOUSEHOLD = "127.0.0.1"
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


class Client:
    """A UDP client on ``host`` that sends one request at a time and reads its final answer."""

    def __init__(self, host: str, server_port: int) -> None:
        self.host = host
        self.server_port = server_port
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox = _Inbox()
        self.call_id = secrets.token_hex(6)
        self.cseq = 0

    async def open(self) -> Client:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.inbox,
            local_addr=(self.host, 0),
            remote_addr=("127.0.0.1", self.server_port),
        )
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def send(
        self,
        method: str,
        user: str,
        *,
        authorization: str | None = None,
        agent: str = "Linphone/5.2",
        wait: float = 5.0,
    ) -> Response | None:
        """Send; the final response, or None when nothing came within ``wait`` seconds."""
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        self.cseq += 1
        uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{DOMAIN}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{user}@{self.host}:{port}>",
            f"User-Agent: {agent}",
        ]
        if method == "SUBSCRIBE":
            lines.append("Event: presence")
        if authorization:
            header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
            lines.append(f"{header}: {authorization}")
        body = b""
        if method == "INVITE":
            body = (
                f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
                "m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            ).encode()
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            async with asyncio.timeout(wait):
                while True:
                    message = parse_message(await self.inbox.queue.get())
                    if isinstance(message, Response) and message.status >= 200:
                        return message
        except TimeoutError:
            return None

    @staticmethod
    def credentials(
        challenge: Response, method: str, user: str, password: str, *, uri: str | None = None
    ) -> str:
        value = next(
            v
            for name, v in challenge.headers
            if name in ("WWW-Authenticate", "Proxy-Authenticate") and "MD5" in v
        )
        params = {m[0]: m[1] or m[2] for m in _PARAM.findall(value)}
        uri = uri or (f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}")
        md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{user}:{params['realm']}:{password}")
        ha2 = md5(f"{method}:{uri}")
        cnonce = secrets.token_hex(4)
        digest = md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
        return (
            f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{digest}", algorithm=MD5, qop=auth, nc=00000001, '
            f'cnonce="{cnonce}", opaque="{params["opaque"]}"'
        )

    async def login(self, method: str, user: str, password: str) -> Response | None:
        """Challenge, then credentials: the final answer to the second request."""
        challenge = await self.send(method, user)
        assert challenge is not None
        assert challenge.status in (401, 407), challenge.status
        return await self.send(
            method, user, authorization=self.credentials(challenge, method, user, password)
        )


def household(port: int) -> str:
    return f"""
sip: {{listen: 127.0.0.1, port: {port}, domain: {DOMAIN}}}
users:
  - name: alice
    extension: "200"
    devices:
      - {{username: "201", password: "{PASSWORD}"}}
      - {{username: "202", password: "mobile-secret-202"}}
"""


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    config = parse_config(household(5060))
    server = Pbx(replace(config, sip=replace(config.sip, port=0)))  # 0: a free port, UDP and TCP
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def events(pbx: Pbx) -> list[PbxEvent]:
    seen: list[PbxEvent] = []
    pbx.subscribe(seen.append)
    return seen


async def client(pbx: Pbx, host: str) -> Client:
    return await Client(host, pbx.local_address.port).open()


def shape(response: Response | None) -> tuple[object, ...]:
    """Everything about an answer except what is fresh each time (tags, nonces, branch)."""
    assert response is not None
    challenges = sorted(
        re.sub(r'nonce="[^"]*"', "nonce", value)
        for name, value in response.headers
        if name.endswith("Authenticate")
    )
    names = [name for name, _ in response.headers]
    return (response.status, response.reason, tuple(names), tuple(challenges), response.body)


@pytest.mark.parametrize(
    "method", ["REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE", "REFER", "FROBNICATE"]
)
async def test_known_and_unknown_users_get_the_same_answer(pbx: Pbx, method: str) -> None:
    scanner = await client(pbx, ATTACKER)
    try:
        known = await scanner.send(method, "201")
        unknown = await scanner.send(method, "999")
        assert shape(known) == shape(unknown)
        if method in ("REGISTER", "INVITE"):
            assert known is not None
            # And with (wrong) credentials: the same challenge again for both.
            tried_known = await scanner.send(
                method, "201", authorization=Client.credentials(known, method, "201", "guess")
            )
            tried_unknown = await scanner.send(
                method, "999", authorization=Client.credentials(known, method, "999", "guess")
            )
            assert shape(tried_known) == shape(tried_unknown) == shape(known)
    finally:
        scanner.close()


def test_unknown_users_cost_the_same_hashing_as_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing to tell them apart: both run the same hashes (counted, not timed)."""
    auth = DigestAuthenticator(
        DOMAIN, ManualClock(), {"201": DeviceCredentials("201", PASSWORD)}.get
    )
    nonce = auth.new_nonce()
    hashed: list[bytes] = []
    md5 = hashlib.md5

    def counting(data: bytes = b"") -> hashlib._Hash:
        hashed.append(data)
        return md5(data)

    def attempt(user: str) -> int:
        text = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=1\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: c\r\n"
            f'CSeq: 1 REGISTER\r\nAuthorization: Digest username="{user}", realm="{DOMAIN}", '
            f'nonce="{nonce}", uri="sip:{DOMAIN}", response="{"0" * 32}", algorithm=MD5, '
            'qop=auth, nc=00000001, cnonce="ab"\r\nContent-Length: 0\r\n\r\n'
        )
        request = parse_message(text.encode())
        assert isinstance(request, Request)
        auth.verify(request)  # warms a known user's HA1 cache, as a running PBX has it
        hashed.clear()
        auth.verify(request)
        return len(hashed)

    monkeypatch.setitem(digest._HASHES, DigestAlgorithm.MD5, counting)
    assert attempt("201") == attempt("999") == 2


async def test_five_wrong_passwords_ban_the_source_and_only_it(
    pbx: Pbx, events: list[PbxEvent]
) -> None:
    attacker = await client(pbx, ATTACKER)
    phone = await client(pbx, HOUSEHOLD)
    try:
        for guess in range(5):
            answer = await attacker.login("REGISTER", "201", f"guess-{guess}")
            assert answer is not None
            assert answer.status == 401
        assert [e for e in events if isinstance(e, AddressBanned)] == [
            AddressBanned(ATTACKER, "201", 5, pbx.bans()[0].until)
        ]
        # Banned: not even a challenge, and the right password is never accepted.
        assert await attacker.send("REGISTER", "201", wait=0.5) is None
        assert await attacker.send("OPTIONS", "201", wait=0.5) is None
        assert pbx.bindings("201") == []
        # The household is unaffected.
        answer = await phone.login("REGISTER", "201", PASSWORD)
        assert answer is not None
        assert answer.status == 200
        # Lifted by the action: the attacker's address may try again (and with the right password
        # it gets in: it is an address, not a person, that was banned).
        assert pbx.unban(ATTACKER) is True
        assert events[-1] == BanEnded(ATTACKER, BanEndReason.LIFTED)
        assert pbx.bans() == []
        answer = await attacker.login("REGISTER", "202", "mobile-secret-202")
        assert answer is not None
        assert answer.status == 200
    finally:
        attacker.close()
        phone.close()


async def test_failed_calls_count_like_failed_registrations(pbx: Pbx) -> None:
    attacker = await client(pbx, ATTACKER)
    try:
        for guess in range(3):
            await attacker.login("INVITE", "201", f"guess-{guess}")
        for guess in range(2):
            await attacker.login("REGISTER", "999", f"guess-{guess}")
        assert [ban.address for ban in pbx.bans()] == [ATTACKER]
    finally:
        attacker.close()


async def test_a_phone_re_registering_and_retrying_stale_nonces_is_never_banned(
    pbx: Pbx,
) -> None:
    phone = await client(pbx, ATTACKER)
    try:
        for _ in range(30):
            answer = await phone.login("REGISTER", "201", PASSWORD)
            assert answer is not None
            assert answer.status == 200
        challenge = await phone.send("REGISTER", "201")
        assert challenge is not None
        used = Client.credentials(challenge, "REGISTER", "201", PASSWORD)
        assert (await phone.send("REGISTER", "201", authorization=used)) is not None
        for _ in range(30):
            # The phone re-registers with the nonce (and nonce count) it used before: stale.
            stale = await phone.send("REGISTER", "201", authorization=used)
            assert stale is not None
            assert stale.status == 401
            assert "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
            retry = await phone.send(
                "REGISTER",
                "201",
                authorization=Client.credentials(stale, "REGISTER", "201", PASSWORD),
            )
            assert retry is not None
            assert retry.status == 200
        assert pbx.bans() == []
    finally:
        phone.close()


async def test_scanner_agents_get_no_answer(pbx: Pbx) -> None:
    scanner = await client(pbx, ATTACKER)
    try:
        assert await scanner.send("OPTIONS", "201", agent="friendly-scanner", wait=0.5) is None
        assert await scanner.send("OPTIONS", "201") is not None
    finally:
        scanner.close()


async def test_a_registration_worker_bans_too() -> None:
    """With sip.workers the workers answer REGISTER themselves, so they count failures too."""
    from sip_core.workers import HandoverReceiver, RegistrationFront, WorkerPool

    from .test_workers import config_text

    config = parse_config(config_text(5060))
    config = replace(config, sip=replace(config.sip, port=0))
    secret = WorkerPool.new_secret()
    pbx = Pbx(config, digest_secret=secret)
    await pbx.start()
    port = pbx.local_address.port
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    front = RegistrationFront(replace(config, sip=replace(config.sip, port=port)), secret, theirs)
    await front.start()
    receiver = HandoverReceiver(pbx, ours)
    receiver.start()
    pbx.steer_registers(1)
    attacker = await Client(ATTACKER, port).open()
    try:
        for guess in range(5):
            answer = await attacker.login("REGISTER", "201", f"guess-{guess}")
            assert answer is not None
            assert answer.status == 401
        assert await attacker.send("REGISTER", "201", wait=0.5) is None
        assert front.authenticated == 0
    finally:
        attacker.close()
        receiver.stop()
        await front.stop()
        theirs.close()
        ours.close()
        await pbx.stop()
