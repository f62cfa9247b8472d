"""A minimal SIP user agent for the tests: REGISTER over UDP on 127.0.0.1 with MD5 digest.

It is deliberately independent of sip_core (its own message text, its own digest arithmetic), so
a registration that succeeds here means the PBX speaks SIP to something it did not write.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass(slots=True)
class SipResponse:
    """The parts of a SIP response the tests look at."""

    status: int
    headers: list[tuple[str, str]]

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_response(data: bytes) -> SipResponse:
    head = data.decode(errors="replace").split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipResponse(status, headers)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


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
            _Protocol, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", self.port)
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    async def register(self, expires: int = 300) -> SipResponse:
        """Register (or unregister with expires=0), answering one digest challenge."""
        response = await self._send_register(expires, None)
        if response.status != 401:
            return response
        challenges = [c for c in response.all("WWW-Authenticate") if "MD5" in c.upper()]
        if not challenges:
            challenges = response.all("WWW-Authenticate")
        return await self._send_register(expires, self._authorization(challenges[0]))

    def _authorization(self, challenge: str) -> str:
        params = {m[0].lower(): m[1] or m[2] for m in _CHALLENGE_PARAM.findall(challenge)}
        realm, nonce = params["realm"], params["nonce"]
        uri = f"sip:{self.domain}"
        ha1 = _md5(f"{self.username}:{realm}:{self.password}")
        ha2 = _md5(f"REGISTER:{uri}")
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

    async def _send_register(self, expires: int, authorization: str | None) -> SipResponse:
        assert self._transport is not None
        assert self._protocol is not None
        self.cseq += 1
        local = f"127.0.0.1:{self.local_port}"
        lines = [
            f"REGISTER sip:{self.domain} SIP/2.0",
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.username}@{self.domain}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{self.username}@{self.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.username}@{local}>",
            f"Expires: {expires}",
            f"User-Agent: {self.user_agent}",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            response = parse_response(
                await asyncio.wait_for(self._protocol.received.get(), timeout=10)
            )
            if response.status >= 200:
                return response
