"""The Pbx facade over real UDP on 127.0.0.1: dispatch, OPTIONS, expiry, live changes, the runner.

The registrations here go through `tests/ha/sip_client.SipPhone`, a UA with its own message text
and digest arithmetic, so the facade is checked against code it did not write.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sip_core.config import Device, PbxConfig, SipSettings, User, parse_config
from sip_core.events import PbxEvent, RegistrationChanged, RegistrationReason
from sip_core.message import Response, parse_message
from sip_core.pbx import Pbx
from tests.ha.sip_client import SipPhone
from tests.interop.clients import free_port

DOMAIN = "home.arpa"
REPO = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    """A port free for UDP and TCP (the PBX opens both), taken outside Linux's range for outgoing
    connections: a port the kernel just handed out as ephemeral can be taken again, for TCP, by
    the time the PBX binds it on a busy machine."""
    return free_port(digits=5)


def household(port: int, *, min_expires: int = 60) -> PbxConfig:
    return parse_config(
        f"""
sip: {{listen: 127.0.0.1, port: {port}, domain: {DOMAIN}}}
registrar: {{min_expires: {min_expires}, default_expires: 3600}}
users:
  - name: alice
    extension: "200"
    devices:
      - {{username: "201", password: "desk-secret", label: Desk, type: desk}}
      - {{username: "202", password: "mobile-secret", label: Mobile, type: mobile}}
"""
    )


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    server = Pbx(household(free_udp_port(), min_expires=1))
    await server.start()
    yield server
    await server.stop()


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


async def exchange(port: int, *lines: str) -> Response:
    """Send one request (Via, Call-ID and Content-Length added) and return its final response."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port)
    )
    try:
        local = transport.get_extra_info("sockname")
        head = [
            lines[0],
            f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"Call-ID: {secrets.token_hex(6)}@127.0.0.1",
            *lines[1:],
            "Content-Length: 0",
        ]
        transport.sendto(("\r\n".join(head) + "\r\n\r\n").encode())
        while True:
            message = parse_message(await asyncio.wait_for(protocol.queue.get(), 5))
            assert isinstance(message, Response)
            if message.status >= 200:
                return message
    finally:
        transport.close()


def request_lines(method: str, *extra: str) -> tuple[str, ...]:
    return (
        f"{method} sip:201@{DOMAIN} SIP/2.0",
        "Max-Forwards: 70",
        f"From: <sip:201@{DOMAIN}>;tag=a1",
        f"To: <sip:201@{DOMAIN}>",
        f"CSeq: 1 {method}",
        *extra,
    )


async def test_options_answers_200_with_allow_accept_and_supported(pbx: Pbx) -> None:
    response = await exchange(pbx.local_address.port, *request_lines("OPTIONS"))
    assert response.status == 200
    allow = {m.strip() for m in (response.headers.get("Allow") or "").split(",")}
    assert {"REGISTER", "OPTIONS"} <= allow
    assert response.headers.get("Accept") == "application/sdp"
    assert response.headers.get("Supported") == "timer"
    assert (response.headers.get("Server") or "").startswith("callflip/")


async def test_unsupported_require_is_refused_with_420_naming_it(pbx: Pbx) -> None:
    response = await exchange(pbx.local_address.port, *request_lines("OPTIONS", "Require: foo-ext"))
    assert response.status == 420
    assert response.headers.get("Unsupported") == "foo-ext"


async def test_unknown_method_gets_501(pbx: Pbx) -> None:
    response = await exchange(pbx.local_address.port, *request_lines("FROBNICATE"))
    assert response.status == 501


async def test_registration_events_and_expiry(pbx: Pbx) -> None:
    events: list[PbxEvent] = []
    expired = asyncio.Event()

    def collect(event: PbxEvent) -> None:
        events.append(event)
        if isinstance(event, RegistrationChanged) and event.reason is RegistrationReason.EXPIRED:
            expired.set()

    pbx.subscribe(collect)
    phone = SipPhone(pbx.local_address.port, "201", "desk-secret", DOMAIN)
    await phone.open()
    try:
        assert (await phone.register(expires=1)).status == 200
    finally:
        phone.close()
    assert [b.username for b in pbx.bindings()] == ["201"]
    first = events[0]
    assert isinstance(first, RegistrationChanged)
    assert first.reason is RegistrationReason.REGISTERED
    # The facade's own timer (not the test) removes the binding when it expires.
    await asyncio.wait_for(expired.wait(), 5)
    assert pbx.bindings("201") == []


async def test_removing_a_device_drops_its_registration_and_says_so(pbx: Pbx) -> None:
    events: list[PbxEvent] = []
    pbx.subscribe(events.append)
    phone = SipPhone(pbx.local_address.port, "202", "mobile-secret", DOMAIN)
    await phone.open()
    try:
        assert (await phone.register(expires=300)).status == 200
        user = pbx.config.users[0]
        desk_only = User(user.name, user.extension, user.devices[:1])
        pbx.update_users([desk_only])
        assert pbx.bindings("202") == []
        last = events[-1]
        assert isinstance(last, RegistrationChanged)
        assert (last.username, last.reason, last.online) == (
            "202",
            RegistrationReason.UNREGISTERED,
            False,
        )
        # The removed device can no longer register; the remaining one still can.
        assert (await phone.register(expires=300)).status == 401
    finally:
        phone.close()


async def test_password_change_applies_to_the_next_request(pbx: Pbx) -> None:
    user = pbx.config.users[0]
    desk = user.devices[0]
    changed = Device(desk.username, "new-desk-secret", desk.label, desk.type)
    pbx.update_users([User(user.name, user.extension, (changed, *user.devices[1:]))])
    old = SipPhone(pbx.local_address.port, "201", "desk-secret", DOMAIN)
    new = SipPhone(pbx.local_address.port, "201", "new-desk-secret", DOMAIN)
    await old.open()
    await new.open()
    try:
        assert (await old.register()).status == 401
        assert (await new.register()).status == 200
    finally:
        old.close()
        new.close()


async def test_saved_bindings_are_live_after_a_restart() -> None:
    port = free_udp_port()
    first = Pbx(household(port))
    await first.start()
    phone = SipPhone(port, "201", "desk-secret", DOMAIN)
    await phone.open()
    try:
        assert (await phone.register(expires=600)).status == 200
    finally:
        phone.close()
    records = first.binding_records()
    await first.stop()

    second = Pbx(household(port), bindings=records)
    await second.start()
    try:
        restored = second.bindings("201")
        assert len(restored) == 1
        assert restored[0].contact == first.bindings("201")[0].contact
    finally:
        await second.stop()


async def test_stop_releases_the_port() -> None:
    port = free_udp_port()
    server = Pbx(household(port))
    await server.start()
    await server.stop()
    again = Pbx(household(port))
    await again.start()
    assert again.local_address.port == port
    await again.stop()


def run_runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sip_core", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )


def test_runner_refuses_a_bad_file_naming_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "pbx.yaml"
    config.write_text(
        "sip: {listen: 127.0.0.1, port: 5099}\n"
        "users:\n"
        "  - name: alice\n"
        '    extension: "200"\n'
        "    devices:\n"
        '      - {username: "201"}\n'
    )
    result = run_runner("--config", str(config))
    assert result.returncode == 2
    assert "users[0].devices[0].password: required (line 6)" in result.stderr
    assert "Traceback" not in result.stderr


def test_runner_reports_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        config = tmp_path / "pbx.yaml"
        config.write_text(f"sip: {{listen: 127.0.0.1, port: {port}}}\n")
        result = run_runner("--config", str(config))
    assert result.returncode == 2
    assert f"127.0.0.1:{port}/udp is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_default_listen_is_all_addresses() -> None:
    """The runner's default is to serve the LAN; the demo and tests pin 127.0.0.1 explicitly."""
    assert SipSettings().listen == "0.0.0.0"


class _Provider(asyncio.DatagramProtocol):
    """A provider's registrar stand-in: keeps what arrives, with where it came from."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def test_trunks_register_with_the_pbx_and_unregister_when_it_stops() -> None:
    from sip_core.events import TrunkStateChanged, TrunkStatus
    from sip_core.message import Request, make_response

    loop = asyncio.get_running_loop()
    transport, provider = await loop.create_datagram_endpoint(
        _Provider, local_addr=("127.0.0.1", 0)
    )
    provider_port = transport.get_extra_info("sockname")[1]
    port = free_udp_port()
    text = (
        f"sip: {{listen: 127.0.0.1, port: {port}, domain: {DOMAIN}}}\n"
        "trunks:\n"
        "  - {name: provider, host: 127.0.0.1, "
        f'port: {provider_port}, username: "4930", password: pw}}\n'
    )
    server = Pbx(parse_config(text))
    events: list[PbxEvent] = []
    server.subscribe(events.append)
    try:
        await server.start()
        data, sender = await asyncio.wait_for(provider.queue.get(), 5)
        register = parse_message(data)
        assert isinstance(register, Request)
        assert register.method == "REGISTER"
        assert sender == ("127.0.0.1", port)  # from the PBX's own SIP port
        ok = make_response(register, 200, to_tag="prov")
        ok.headers.add("Contact", f"<sip:4930@127.0.0.1:{port}>;expires=300")
        transport.sendto(ok.to_bytes(), sender)
        for _ in range(50):
            if server.trunk_states()[0].status is TrunkStatus.REGISTERED:
                break
            await asyncio.sleep(0.02)
        assert server.trunk_states()[0].status is TrunkStatus.REGISTERED
        await server.stop()
        data, _ = await asyncio.wait_for(provider.queue.get(), 5)
        unregister = parse_message(data)
        assert isinstance(unregister, Request)
        assert unregister.headers.get("Expires") == "0"
        statuses = [e.status for e in events if isinstance(e, TrunkStateChanged)]
        assert statuses == [TrunkStatus.REGISTERING, TrunkStatus.REGISTERED, TrunkStatus.STOPPED]
    finally:
        if server.running:
            await server.stop()
        transport.close()
