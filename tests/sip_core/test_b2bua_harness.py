"""In-process harness for the B2BUA: real TransactionLayer and MediaRelay, fake phones, no wire.

Every message is serialised and parsed again on its way (so what the B2BUA writes must be valid
SIP), time is a ManualClock, and the recording transport tells each fake phone what was sent to
it. The media relay is the real one on 127.0.0.1 (it needs the event loop, hence async tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sip_core.b2bua import B2bua
from sip_core.calls import Call
from sip_core.clock import ManualClock
from sip_core.config import Device, PbxConfig, SipSettings, User
from sip_core.digest import DeviceCredentials, DigestAuthenticator
from sip_core.events import PbxEvent
from sip_core.media import MediaRelay
from sip_core.message import Request, Response, make_response, new_branch, new_tag, parse_message
from sip_core.registrar import Binding
from sip_core.transaction import ServerTransaction, TransactionLayer
from sip_core.transport import Address, Source, TransportKind
from sip_core.trunk.egress import TrunkEgress
from sip_core.trunk.ingress import TrunkIngress

HOST = "127.0.0.1"
PBX = Address(HOST, 5060)
DOMAIN = "home.arpa"
PASSWORD = "secret-password"
UDP = TransportKind.UDP


def make_config(no_answer: int = 30, flip_timeout: int = 30) -> PbxConfig:
    def dev(name: str, label: str) -> Device:
        return Device(name, PASSWORD, label)

    from sip_core.config import CallSettings, FlipSettings

    return PbxConfig(
        sip=SipSettings(listen=HOST, port=5060, domain=DOMAIN),
        users=(
            User("Alice", "200", (dev("201", "Alice desk"), dev("202", "Alice mobile"))),
            User("Bob", "300", (dev("301", "Bob desk"), dev("302", "Bob mobile"))),
            User("Carol", "400", (dev("401", "Carol desk"),)),
        ),
        calls=CallSettings(no_answer),
        flip=FlipSettings("*0", flip_timeout),
    )


def sdp(port: int, *, direction: str = "sendrecv", pt: int = 101) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 {pt}\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\na={direction}\r\n"
    ).encode()


def sdp_port(body: bytes) -> int:
    match = re.search(rb"m=audio (\d+)", body)
    assert match is not None
    return int(match.group(1))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Sent:
    message: Request | Response
    destination: Address


class Recorder:
    """The transport: everything sent is parsed back from bytes and kept per destination."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: object = None,
    ) -> None:
        parsed = parse_message(request.to_bytes())
        self.sent.append(Sent(parsed, destination))

    def send_response(self, response: Response, source: Source | None = None) -> None:
        assert source is not None
        self.sent.append(Sent(parse_message(response.to_bytes()), source.remote))


@dataclass
class PhoneDialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    target: str
    cseq: int = 1


@dataclass
class Phone:
    """A fake SIP phone at 127.0.0.1:port: reads what the PBX sent it, answers by hand."""

    harness: Harness
    username: str
    port: int
    seen: int = 0
    dialogs: dict[str, PhoneDialog] = field(default_factory=dict)

    @property
    def address(self) -> Address:
        return Address(HOST, self.port)

    @property
    def source(self) -> Source:
        return Source(UDP, self.address, PBX, None)

    def binding(self) -> Binding:
        clock = self.harness.clock
        return Binding(
            self.username,
            f"<sip:{self.username}@{HOST}:{self.port}>",
            clock.monotonic() + 3600,
            clock.wall(),
            clock.wall() + 3600,
            f"reg-{self.username}-{self.port}",
            1,
            self.source,
        )

    def register(self) -> None:
        self.harness.registrations.setdefault(self.username, []).append(self.binding())

    def inbox(self) -> list[Request | Response]:
        return [s.message for s in self.harness.transport.sent if s.destination == self.address]

    def new(self) -> list[Request | Response]:
        """Messages sent to this phone since the last call."""
        messages = self.inbox()
        fresh = messages[self.seen :]
        self.seen = len(messages)
        return fresh

    def requests(self, method: str | None = None) -> list[Request]:
        return [m for m in self.inbox() if isinstance(m, Request) and method in (None, m.method)]

    def responses(self, status: int | None = None) -> list[Response]:
        return [m for m in self.inbox() if isinstance(m, Response) and status in (None, m.status)]

    def last_request(self, method: str) -> Request:
        found = self.requests(method)
        assert found, f"{self.username} got no {method}"
        return found[-1]

    def send(self, message: Request | Response) -> None:
        self.harness.layer.receive(parse_message(message.to_bytes()), self.source)

    # -- as a caller -----------------------------------------------------------------------------

    def invite(
        self,
        dialled: str,
        *,
        body: bytes | None = None,
        authenticate: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        call_id = f"{new_tag()}@{HOST}"
        tag = new_tag()
        uri = f"sip:{dialled}@{DOMAIN}"
        lines = [
            f"INVITE {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.username}@{DOMAIN}>;tag={tag}",
            f"To: <{uri}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:{self.username}@{HOST}:{self.port}>",
        ]
        if authenticate:
            lines.append(f"Proxy-Authorization: {self.harness.credentials(self.username, uri)}")
        lines.extend(f"{name}: {value}" for name, value in extra)
        payload = body if body is not None else sdp(self.port + 1000)
        lines.append("Content-Type: application/sdp")
        text = "\r\n".join(lines) + f"\r\nContent-Length: {len(payload)}\r\n\r\n"
        request = parse_message(text.encode() + payload)
        assert isinstance(request, Request)
        self.dialogs[call_id] = PhoneDialog(
            call_id, tag, "", f"<sip:{self.username}@{DOMAIN}>", f"<{uri}>", uri
        )
        self.send(request)
        return request

    def confirm(self, invite: Request, response: Response, body: bytes = b"") -> None:
        """ACK a 2xx to our INVITE and remember the dialog."""
        dialog = self.dialogs[invite.call_id]
        dialog.remote_tag = response.to.tag or ""
        contact = response.contacts[0].uri
        dialog.target = str(contact)
        ack = self.in_dialog_request(dialog, "ACK", cseq=invite.cseq.number, body=body)
        self.send(ack)

    def cancel(self, invite: Request) -> None:
        cancel = invite.copy()
        cancel.method = "CANCEL"
        cancel.headers.set("CSeq", f"{invite.cseq.number} CANCEL")
        cancel.headers.remove("Content-Type")
        cancel.headers.remove("Proxy-Authorization")
        cancel.body = b""
        self.send(cancel)

    # -- as a callee -----------------------------------------------------------------------------

    def answer(self, invite: Request, status: int = 200, body: bytes | None = None) -> Response:
        """Respond to an INVITE the PBX sent us; a 2xx (or 1xx) opens a dialog."""
        tag = (
            self.dialogs[invite.call_id].local_tag if invite.call_id in self.dialogs else new_tag()
        )
        response = make_response(invite, status, to_tag=tag, body=body or b"")
        if status > 100:
            response.headers.add("Contact", f"<sip:{self.username}@{HOST}:{self.port}>")
        if body:
            response.headers.add("Content-Type", "application/sdp")
        if invite.call_id not in self.dialogs:
            self.dialogs[invite.call_id] = PhoneDialog(
                invite.call_id,
                tag,
                invite.from_.tag or "",
                invite.headers.get("To") or "",
                invite.headers.get("From") or "",
                str(invite.contacts[0].uri),
            )
        self.send(response)
        return response

    def reply(self, request: Request, status: int, body: bytes = b"") -> None:
        response = make_response(request, status, body=body)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.headers.add("Contact", f"<sip:{self.username}@{HOST}:{self.port}>")
        self.send(response)

    # -- in a dialog -----------------------------------------------------------------------------

    def dialog(self) -> PhoneDialog:
        assert len(self.dialogs) >= 1
        return list(self.dialogs.values())[-1]

    def in_dialog_request(
        self,
        dialog: PhoneDialog,
        method: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str = "application/sdp",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        lines = [
            f"{method} {dialog.target} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: {dialog.local_uri};tag={dialog.local_tag}",
            f"To: {dialog.remote_uri};tag={dialog.remote_tag}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.username}@{HOST}:{self.port}>",
        ]
        lines.extend(f"{name}: {value}" for name, value in extra)
        if body:
            lines.append(f"Content-Type: {content_type}")
        text = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
        request = parse_message(text.encode() + body)
        assert isinstance(request, Request)
        return request

    def request(self, method: str, *, body: bytes = b"", **kwargs: object) -> Request:
        request = self.in_dialog_request(self.dialog(), method, body=body, **kwargs)  # type: ignore[arg-type]
        self.send(request)
        return request


class Harness:
    """A B2BUA over a real TransactionLayer, a recording transport and the real relay."""

    def __init__(self, config: PbxConfig | None = None, *, trunks: bool = False) -> None:
        self.clock = ManualClock()
        self.config = config or make_config()
        self.transport = Recorder()
        self.events: list[PbxEvent] = []
        self.registrations: dict[str, list[Binding]] = {}
        creds = {
            d.username: DeviceCredentials(d.username, d.password, d.digest)
            for _, d in self.config.devices()
        }
        self.auth = DigestAuthenticator(DOMAIN, self.clock, creds.get, 300.0)
        self.layer = TransactionLayer(
            self.transport,
            self.clock,
            on_request=self._on_request,
            on_stray_response=self._on_stray,
        )
        self.relay = MediaRelay(HOST, 43000, 43999, clock=self.clock)
        self.b2bua = B2bua(
            self.layer,
            self.clock,
            config=lambda: self.config,
            authenticator=self.auth,
            bindings=lambda name: tuple(self.registrations.get(name, ())),
            relay=self.relay,
            publish=self.events.append,
            respond=lambda txn, response: txn.respond(response),
            local_port=lambda: PBX.port,
            ingress=TrunkIngress(lambda: self.config) if trunks else None,
            egress=TrunkEgress(lambda: self.config) if trunks else None,
        )
        self.phones: dict[str, Phone] = {}
        self._nc = 0

    def _on_stray(self, response: Response, source: Source) -> None:
        self.b2bua.stray_response(response, source)

    def _on_request(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        self.b2bua.handle_request(request, txn, source)

    def phone(self, username: str, port: int, *, register: bool = True) -> Phone:
        phone = Phone(self, username, port)
        if register:
            phone.register()
        self.phones[f"{username}:{port}"] = phone
        return phone

    def credentials(self, username: str, uri: str) -> str:
        challenge = self.auth.challenge()[0]
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge[7:]))
        self._nc += 1
        nc = "00000001"
        ha1 = _md5(f"{username}:{DOMAIN}:{PASSWORD}")
        ha2 = _md5(f"INVITE:{uri}")
        response = _md5(f"{ha1}:{params['nonce']}:{nc}:c0ffee:auth:{ha2}")
        return (
            f'Digest username="{username}", realm="{DOMAIN}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="c0ffee", nc={nc}, '
            f'qop=auth, opaque="{params["opaque"]}"'
        )

    def only_call(self) -> Call:
        calls = self.b2bua.calls()
        assert len(calls) == 1
        return calls[0]

    def events_of[T](self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    def close(self) -> None:
        self.b2bua.close()
        self.relay.close()
        self.layer.close()


async def settle() -> None:
    """Let the B2BUA's tasks (relay sockets, flips) run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def ring(h: Harness, caller: Phone, dialled: str, **kwargs: object) -> Request:
    invite = caller.invite(dialled, **kwargs)  # type: ignore[arg-type]
    await settle()
    return invite


async def connect(
    h: Harness, caller: Phone, callee: Phone, dialled: str
) -> tuple[Request, Request]:
    """Caller dials, callee answers, caller ACKs: returns (caller's INVITE, callee's INVITE)."""
    invite = await ring(h, caller, dialled)
    offered = callee.last_request("INVITE")
    callee.answer(offered, 180)
    callee.answer(offered, 200, sdp(callee.port + 1000))
    ok = caller.responses(200)[-1]
    caller.confirm(invite, ok)
    return invite, offered


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


async def test_the_harness_round_trips_messages(harness: Harness) -> None:
    """Sanity: a phone's INVITE reaches the B2BUA and its 100 Trying comes back to that phone."""
    alice = harness.phone("201", 5201)
    harness.phone("401", 5401)
    alice.invite("400")
    assert [r.status for r in alice.responses()] == [100]
