"""Plug-and-play over real multicast, between two network namespaces this test creates.

Namespace "pbx" and namespace "phones" are joined by a veth pair (10.77.0.1 and 10.77.0.2, plus
10.77.0.3 for a stranger on the phones' side); the addresses exist only inside them. The PBX runs
with its shipped discovery defaults, listening on 10.77.0.1; a phone is a plain UDP socket on
10.77.0.2:5060 that multicasts the SUBSCRIBEs real phones send at boot to 224.0.1.75:5060, in the
shapes of Snom, Yealink, Grandstream and a generic RFC 6080 client. The test thread lives in the
PBX's namespace for the whole test (setns) and enters the phones' one to create their sockets.

Absence is shown by ordering, not by waiting: after a request that must stay unanswered, the phone
sends an OPTIONS to the PBX, and the first thing it receives must be that OPTIONS' 200.

Needs root and iproute2; skipped (with the reason) where namespaces cannot be created.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sip_core.__main__ import _start_discovery as runner_discovery
from sip_core.clock import ManualClock
from sip_core.config import parse_config
from sip_core.message import Request, Response, parse_message
from sip_core.pbx import Pbx
from sip_core.plugplay import PNP_GROUP, PNP_PORT
from sip_core.provision_http import PROVISION_PATH, ProvisioningServer

WAIT = 5.0  # a guard against hanging, never a performance expectation
PBX_ADDR = "10.77.0.1"
PHONE_ADDR = "10.77.0.2"
STRANGER_ADDR = "10.77.0.3"
PBX_PORT = 5070
PASSWORD = "Desk-secret-0123456789"


@dataclass(frozen=True, slots=True)
class Namespaces:
    pbx: int  # an open fd of each namespace, for setns
    phones: int
    phones_name: str  # for ip netns exec


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _why_not() -> str | None:
    if not hasattr(os, "setns"):
        return "os.setns is not available"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    names = (f"cfpbx{tag}", f"cfph{tag}")
    created: list[str] = []
    fds: list[int] = []
    try:
        try:
            for name in names:
                _ip("netns", "add", name)
                created.append(name)
            a, b = names
            _ip("link", "add", f"cfa{tag}", "netns", a, "type", "veth", "peer", "name",
                f"cfb{tag}", "netns", b)  # fmt: skip
            for ns, dev, addresses in (
                (a, f"cfa{tag}", [PBX_ADDR]),
                (b, f"cfb{tag}", [PHONE_ADDR, STRANGER_ADDR]),
            ):
                for address in addresses:
                    _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        except (subprocess.CalledProcessError, OSError) as err:
            stderr = getattr(err, "stderr", b"") or b""
            pytest.skip(f"cannot create network namespaces here: {err} {stderr.decode().strip()}")
        fds = [os.open(f"/run/netns/{name}", os.O_RDONLY) for name in names]
        # The test runs as the PBX's host: in its namespace (sockets made at run time, such as
        # the probe that finds our routed address, are made there too). Phones are made in
        # theirs with `inside`.
        with inside(fds[0]):
            yield Namespaces(fds[0], fds[1], names[1])
    finally:
        for fd in fds:
            os.close(fd)
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextlib.contextmanager
def inside(ns_fd: int) -> Iterator[None]:
    """Run the block in another network namespace (this thread only), then come back."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        os.setns(ns_fd, os.CLONE_NEWNET)
        yield
    finally:
        os.setns(back, os.CLONE_NEWNET)
        os.close(back)


def household(*, provision: str = "") -> str:
    return f"""
sip: {{listen: {PBX_ADDR}, port: {PBX_PORT}, domain: home.arpa}}
users:
  - name: alice
    extension: "200"
    devices:
      - {{username: "201", password: "{PASSWORD}", label: Desk, type: desk}}
{provision}
"""


# -- the phones ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """How one kind of phone writes its plug-and-play SUBSCRIBE (text written for this test
    from the vendors' documented request shapes)."""

    name: str
    mac: str
    manufacturer: str
    model: str
    firmware: str
    request_uri: str
    from_user: str
    event: str
    user_agent: str


SNOM = Shape(
    "snom", "000413a1b2c3", "Snom", "D785", "10.1.73.16",
    "sip:MAC%3a000413A1B2C3@224.0.1.75", "MAC%3a000413A1B2C3",
    'ua-profile;profile-type="device";vendor="snom";model="snomD785";version="10.1.73.16"',
    "snomD785/10.1.73.16",
)  # fmt: skip
YEALINK = Shape(
    "yealink", "001565d4e5f6", "Yealink", "SIP-T46S", "66.86.0.15",
    "sip:MAC%3a001565d4e5f6@224.0.1.75", "MAC%3a001565d4e5f6",
    'ua-profile;profile-type="device";vendor="Yealink";model="SIP-T46S";version="66.86.0.15"',
    "Yealink SIP-T46S 66.86.0.15",
)  # fmt: skip
GRANDSTREAM = Shape(
    "grandstream", "000b82778899", "Grandstream", "GXP2170", "1.0.11.6",
    "sip:MAC%3a000b82778899@224.0.1.75", "MAC%3a000b82778899",
    'ua-profile;profile-type="device";vendor="Grandstream";model="GXP2170";version="1.0.11.6"',
    "Grandstream GXP2170 1.0.11.6",
)  # fmt: skip
GENERIC = Shape(
    "generic", "02deadbeef01", "acme", "x1", "1.0",
    "sip:224.0.1.75", "02deadbeef01",
    "ua-profile;profile-type=device;vendor=acme;model=x1;version=1.0",
    "acme-x1/1.0",
)  # fmt: skip
SHAPES = [SNOM, YEALINK, GRANDSTREAM, GENERIC]


class Phone:
    """A UDP socket on the phones' side, port 5060, talking SIP text by hand."""

    def __init__(self, ns: Namespaces, address: str = PHONE_ADDR) -> None:
        with inside(ns.phones):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((address, PNP_PORT))
            self.sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address)
            )
        self.sock.setblocking(False)
        self.address = address
        self.ns = ns

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str, destination: tuple[str, int]) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), destination)

    def subscribe(self, shape: Shape, *, branch: str, call_id: str) -> None:
        self.send(
            f"""SUBSCRIBE {shape.request_uri} SIP/2.0
Via: SIP/2.0/UDP {self.address}:5060;branch={branch};rport
From: <sip:{shape.from_user}@224.0.1.75>;tag=pnp{call_id[:6]}
To: <sip:{shape.from_user}@224.0.1.75>
Call-ID: {call_id}@{self.address}
CSeq: 1 SUBSCRIBE
Contact: <sip:{self.address}:5060>
Max-Forwards: 70
User-Agent: {shape.user_agent}
Event: {shape.event}
Accept: application/url
Expires: 0
Content-Length: 0

""",
            (PNP_GROUP, PNP_PORT),
        )

    def options(self, call_id: str) -> None:
        self.send(
            f"""OPTIONS sip:{PBX_ADDR}:{PBX_PORT} SIP/2.0
Via: SIP/2.0/UDP {self.address}:5060;branch=z9hG4bK{secrets.token_hex(6)};rport
From: <sip:probe@{self.address}>;tag=probe
To: <sip:{PBX_ADDR}:{PBX_PORT}>
Call-ID: {call_id}
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

""",
            (PBX_ADDR, PBX_PORT),
        )

    async def receive(self) -> Request | Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), WAIT)
        return parse_message(data)

    async def nothing_before_probe(self) -> None:
        """The next datagram is the probe's answer: nothing was sent to us before it."""
        call_id = f"probe-{secrets.token_hex(4)}"
        self.options(call_id)
        message = await self.receive()
        assert isinstance(message, Response), f"unexpected {message.method}"
        assert message.call_id == call_id, f"unexpected response {message.status}"

    def answer(self, request: Request) -> None:
        vias = "\n".join(f"Via: {via}" for via in request.headers.get_all("Via"))
        self.send(
            f"""SIP/2.0 200 OK
{vias}
From: {request.headers.get("From")}
To: {request.headers.get("To")}
Call-ID: {request.call_id}
CSeq: {request.cseq.number} {request.cseq.method}
Content-Length: 0

""",
            (PBX_ADDR, PBX_PORT),
        )


async def http_get(ns: Namespaces, url: str, source: str = PHONE_ADDR) -> tuple[int, bytes]:
    """GET ``url`` from ``source`` on the phones' side (a minimal client, one request)."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    with inside(ns.phones):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (host, int(port))), WAIT)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
async def pbx(namespaces: Namespaces) -> AsyncIterator[tuple[Pbx, ProvisioningServer]]:
    """The PBX (shipped discovery defaults) and a provisioning server, both in "pbx"."""
    with inside(namespaces.pbx):
        server = Pbx(parse_config(household()))
        await server.start()
        http = ProvisioningServer(server.provisioner, PBX_ADDR, 0)
        await http.start()
    server.set_provisioning_url(f"http://{{host}}:{http.port}{PROVISION_PATH}")
    yield server, http
    await http.stop()
    await server.stop()


async def until_found(server: Pbx, mac: str) -> None:
    """Wait until the directory has the phone (its listener fires when it is recorded)."""
    if server.phones.get(mac) is not None:
        return
    found = asyncio.Event()
    unsubscribe = server.phones.subscribe(
        lambda phone, _new: found.set() if phone.mac == mac else None
    )
    try:
        await asyncio.wait_for(found.wait(), WAIT)
    finally:
        unsubscribe()


@pytest.fixture
def phone(namespaces: Namespaces) -> Iterator[Phone]:
    device = Phone(namespaces)
    yield device
    device.close()


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.name for shape in SHAPES])
async def test_a_phone_asking_at_boot_is_recorded_and_not_answered(
    pbx: tuple[Pbx, ProvisioningServer], phone: Phone, shape: Shape
) -> None:
    server, _ = pbx
    assert server.plug_and_play_listening
    call_id = secrets.token_hex(6)
    phone.subscribe(shape, branch=f"z9hG4bK{call_id}", call_id=call_id)
    await until_found(server, shape.mac)
    found = server.phones.get(shape.mac)
    assert found is not None
    assert found.host == PHONE_ADDR
    assert found.source.value == "plug_and_play"
    assert (found.identity.manufacturer, found.identity.model, found.identity.firmware) == (
        shape.manufacturer,
        shape.model,
        shape.firmware,
    )
    # The phone retransmits; still nobody answers it.
    phone.subscribe(shape, branch=f"z9hG4bK{call_id}", call_id=call_id)
    await phone.nothing_before_probe()


async def _adopted_notify(server: Pbx, phone: Phone, shape: Shape) -> tuple[Response, Request]:
    """The phone asks, is adopted, reboots and asks again (retransmitting once): returns the
    one 200 and the one NOTIFY it gets, after answering the NOTIFY."""
    first = secrets.token_hex(6)
    phone.subscribe(shape, branch=f"z9hG4bK{first}", call_id=first)
    await until_found(server, shape.mac)
    server.adopt(shape.mac, "201")
    again = secrets.token_hex(6)
    phone.subscribe(shape, branch=f"z9hG4bK{again}", call_id=again)
    ok = await phone.receive()
    assert isinstance(ok, Response)
    assert ok.status == 200
    assert ok.call_id == f"{again}@{PHONE_ADDR}"
    assert ok.to.tag
    notify = await phone.receive()
    assert isinstance(notify, Request)
    assert notify.method == "NOTIFY"
    phone.answer(notify)
    # A retransmission of the SUBSCRIBE gets the same 200 again, and no second NOTIFY.
    phone.subscribe(shape, branch=f"z9hG4bK{again}", call_id=again)
    repeated = await phone.receive()
    assert isinstance(repeated, Response)
    assert (repeated.status, repeated.to.tag) == (200, ok.to.tag)
    await phone.nothing_before_probe()
    return ok, notify


def _account_in(shape: Shape, body: bytes) -> dict[str, str]:
    """The account the served file names, read the way each vendor's format is structured."""
    if shape is SNOM:
        root = ET.fromstring(body)
        assert root.tag == "settings"
        settings = root.find("phone-settings")
        assert settings is not None
        return {
            element.tag: element.text or "" for element in settings if element.get("idx") == "1"
        }
    if shape is YEALINK:
        lines = body.decode().splitlines()
        assert lines[0] == "#!version:1.0.0.1"
        pairs = dict(line.split(" = ", 1) for line in lines[1:] if line)
        return {
            "user_name": pairs["account.1.user_name"],
            "user_pass": pairs["account.1.password"],
            "user_host": f"{pairs['account.1.sip_server.1.address']}:"
            f"{pairs['account.1.sip_server.1.port']}",
        }
    root = ET.fromstring(body)
    assert root.tag == "gs_provision"
    assert root.findtext("mac") == shape.mac
    config = root.find("config")
    assert config is not None
    return {
        "user_name": config.findtext("P35") or "",
        "user_pass": config.findtext("P34") or "",
        "user_host": config.findtext("P47") or "",
    }


def _file_url(shape: Shape, notify_url: str) -> str:
    if shape is SNOM:
        return notify_url  # Snom fetches exactly the URL it was given
    if shape is YEALINK:
        return f"{notify_url}{shape.mac}.cfg"
    return f"{notify_url}cfg{shape.mac}.xml"


PROVISIONED = [SNOM, YEALINK, GRANDSTREAM]


@pytest.mark.parametrize("shape", PROVISIONED, ids=[shape.name for shape in PROVISIONED])
async def test_an_adopted_phone_gets_one_notify_and_its_file_once(
    namespaces: Namespaces,
    pbx: tuple[Pbx, ProvisioningServer],
    phone: Phone,
    shape: Shape,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sip_core")
    server, http = pbx
    _, notify = await _adopted_notify(server, phone, shape)
    assert notify.content_type == "application/url"
    assert (notify.headers.get("Event") or "").startswith("ua-profile")
    assert (notify.headers.get("Subscription-State") or "").startswith("terminated")
    url = notify.body.decode()
    assert url.startswith(f"http://{PBX_ADDR}:{http.port}{PROVISION_PATH}/")
    assert PASSWORD not in url
    if shape is YEALINK:  # the common file first: not there, and the token is not spent
        assert (await http_get(namespaces, f"{url}y000000000000.cfg"))[0] == 404
    status, body = await http_get(namespaces, _file_url(shape, url))
    assert status == 200
    account = _account_in(shape, body)
    assert account["user_name"] == "201"
    assert account["user_pass"] == PASSWORD
    assert account["user_host"] == f"{PBX_ADDR}:{PBX_PORT}"
    # The token is spent: the same fetch again gets nothing.
    assert (await http_get(namespaces, _file_url(shape, url)))[0] == 404
    # Neither the password nor the token is in any log line, at any level.
    token = url.removeprefix(f"http://{PBX_ADDR}:{http.port}{PROVISION_PATH}/").split("/")[0]
    assert len(token) >= 24
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Served the configuration" in logged  # the log was captured
    assert PASSWORD not in logged
    assert token not in logged


async def test_another_mac_or_address_gets_404_and_the_phone_still_gets_its_file(
    namespaces: Namespaces, pbx: tuple[Pbx, ProvisioningServer], phone: Phone
) -> None:
    server, _ = pbx
    _, notify = await _adopted_notify(server, phone, GRANDSTREAM)
    url = notify.body.decode()
    assert (await http_get(namespaces, f"{url}cfg000b82000001.xml"))[0] == 404
    stranger = f"{url}cfg{GRANDSTREAM.mac}.xml"
    assert (await http_get(namespaces, stranger, source=STRANGER_ADDR))[0] == 404
    assert (await http_get(namespaces, stranger))[0] == 200


async def test_a_phone_of_another_mac_is_not_answered_while_one_is_adopted(
    pbx: tuple[Pbx, ProvisioningServer], phone: Phone
) -> None:
    server, _ = pbx
    call_id = secrets.token_hex(6)
    phone.subscribe(SNOM, branch=f"z9hG4bK{call_id}", call_id=call_id)
    await until_found(server, SNOM.mac)
    server.adopt(SNOM.mac, "201")
    other = secrets.token_hex(6)
    phone.subscribe(YEALINK, branch=f"z9hG4bK{other}", call_id=other)
    await until_found(server, YEALINK.mac)
    await phone.nothing_before_probe()


async def test_an_expired_adoption_is_not_answered_and_its_url_is_gone(
    namespaces: Namespaces, phone: Phone
) -> None:
    clock = ManualClock()
    with inside(namespaces.pbx):
        server = Pbx(parse_config(household()), clock=clock)
        await server.start()
        http = ProvisioningServer(server.provisioner, PBX_ADDR, 0)
        await http.start()
    server.set_provisioning_url(f"http://{{host}}:{http.port}{PROVISION_PATH}")
    try:
        call_id = secrets.token_hex(6)
        phone.subscribe(SNOM, branch=f"z9hG4bK{call_id}", call_id=call_id)
        await until_found(server, SNOM.mac)
        adoption = server.adopt(SNOM.mac, "201")
        clock.advance(601)
        again = secrets.token_hex(6)
        phone.subscribe(SNOM, branch=f"z9hG4bK{again}", call_id=again)
        await phone.nothing_before_probe()
        url = f"http://{PBX_ADDR}:{http.port}{PROVISION_PATH}/{adoption.url_path()}"
        assert (await http_get(namespaces, url))[0] == 404
    finally:
        await http.stop()
        await server.stop()


async def test_the_runner_key_provisions_a_phone_at_its_first_request(
    namespaces: Namespaces, phone: Phone, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's ``discovery.provision``: logged when the phone shows up, armed when the
    named MAC first asks, served by the runner's own HTTP server."""
    caplog.set_level(logging.INFO, logger="sip_core")
    provision = f'discovery:\n  provision: {{"{YEALINK.mac}": "201"}}\n  http_port: 0'
    server = Pbx(parse_config(household(provision=provision)))
    await server.start()
    http = await runner_discovery(server)
    assert http is not None
    try:
        call_id = secrets.token_hex(6)
        phone.subscribe(YEALINK, branch=f"z9hG4bK{call_id}", call_id=call_id)
        ok = await phone.receive()
        assert isinstance(ok, Response)
        assert ok.status == 200
        notify = await phone.receive()
        assert isinstance(notify, Request)
        assert notify.method == "NOTIFY"
        phone.answer(notify)
        url = notify.body.decode()
        assert url.startswith(f"http://{PBX_ADDR}:{http.port}{PROVISION_PATH}/")
        status, body = await http_get(namespaces, f"{url}{YEALINK.mac}.cfg")
        assert status == 200
        assert "account.1.user_name = 201" in body.decode()
        assert any(
            f"(MAC {YEALINK.mac}) will be provisioned as 201" in record.getMessage()
            for record in caplog.records
        )
        # Another phone is only logged, with the hint how to provision it.
        other = secrets.token_hex(6)
        phone.subscribe(SNOM, branch=f"z9hG4bK{other}", call_id=other)
        await until_found(server, SNOM.mac)
        assert any(
            f"(MAC {SNOM.mac}) found; to provision it" in record.getMessage()
            for record in caplog.records
        )
    finally:
        await http.stop()
        await server.stop()


async def test_a_pbx_on_every_address_of_port_5060_hears_the_group_on_its_own_socket(
    namespaces: Namespaces, phone: Phone
) -> None:
    """Home Assistant's default: 0.0.0.0:5060. No second socket can bind that port, so the
    PBX's socket joins the group; answers still leave from it, with our routed address."""
    config = parse_config(
        household().replace(f"listen: {PBX_ADDR}, port: {PBX_PORT}", "port: 5060")
    )
    assert (config.sip.listen, config.sip.port) == ("0.0.0.0", 5060)
    with inside(namespaces.pbx):
        server = Pbx(config)
        await server.start()
        http = ProvisioningServer(server.provisioner, "0.0.0.0", 0)
        await http.start()
    server.set_provisioning_url(f"http://{{host}}:{http.port}{PROVISION_PATH}")
    try:
        assert server.plug_and_play_listening
        call_id = secrets.token_hex(6)
        phone.subscribe(SNOM, branch=f"z9hG4bK{call_id}", call_id=call_id)
        await until_found(server, SNOM.mac)
        server.adopt(SNOM.mac, "201")
        again = secrets.token_hex(6)
        phone.subscribe(SNOM, branch=f"z9hG4bK{again}", call_id=again)
        ok = await phone.receive()
        assert isinstance(ok, Response)
        assert ok.status == 200
        notify = await phone.receive()
        assert isinstance(notify, Request)
        assert notify.top_via.host == PBX_ADDR  # the wildcard resolved to our routed address
        assert notify.body.decode().startswith(f"http://{PBX_ADDR}:{http.port}{PROVISION_PATH}/")
    finally:
        await http.stop()
        await server.stop()


async def test_when_the_group_cannot_be_joined_one_line_says_so_and_the_pbx_runs(
    namespaces: Namespaces, caplog: pytest.LogCaptureFixture
) -> None:
    with inside(namespaces.pbx):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR
        blocker.bind(("0.0.0.0", PNP_PORT))
        server = Pbx(parse_config(household()))
        await server.start()
    try:
        assert server.running
        assert not server.plug_and_play_listening
        lines = [
            r.getMessage()
            for r in caplog.records
            if "Plug-and-play discovery is off" in r.getMessage()
        ]
        assert len(lines) == 1
        assert f"cannot join {PNP_GROUP}:{PNP_PORT} on {PBX_ADDR}" in lines[0]
    finally:
        await server.stop()
        blocker.close()


SIPP_SCENARIO = Path(__file__).parents[1] / "interop" / "sipp" / "pnp_subscribe.xml"


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
async def test_sipp_booting_as_a_yealink_is_provisioned_by_the_runner_key(
    namespaces: Namespaces, tmp_path: Path
) -> None:
    """An independent client (sipp, in the phones' namespace) multicasts the SUBSCRIBE, takes the
    200 and the NOTIFY and answers it; the URL it was given serves its file."""
    mac = "001565a0b1c2"
    provision = f'discovery:\n  provision: {{"{mac}": "201"}}\n  http_port: 0'
    server = Pbx(parse_config(household(provision=provision)))
    await server.start()
    http = await runner_discovery(server)
    assert http is not None
    messages = tmp_path / "messages.log"
    try:
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespaces.phones_name,
            "sipp", "-sf", str(SIPP_SCENARIO), f"{PNP_GROUP}:{PNP_PORT}",
            "-i", PHONE_ADDR, "-p", str(PNP_PORT), "-m", "1", "-nostdin",
            "-timeout", "20", "-timeout_error", "-default_behaviors", "abortunexp",
            "-key", "mac", mac, "-key", "vendor", "Yealink", "-key", "model", "SIP-T46S",
            "-key", "version", "66.86.0.15",
            "-trace_msg", "-message_file", str(messages),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 30)
        log = messages.read_text() if messages.exists() else ""
        assert process.returncode == 0, output.decode()[-2000:] + log[-4000:]
        found = server.phones.get(mac)
        assert found is not None
        assert (found.identity.manufacturer, found.identity.model) == ("Yealink", "SIP-T46S")
        urls = re.findall(rf"http://{re.escape(PBX_ADDR)}:\d+{PROVISION_PATH}/\S+", log)
        assert len(set(urls)) == 1, log[-4000:]  # one NOTIFY
        status, body = await http_get(namespaces, f"{urls[0]}{mac}.cfg")
        assert status == 200
        assert "account.1.user_name = 201" in body.decode()
    finally:
        await http.stop()
        await server.stop()
