"""Registration workers (`sip_core.workers`) over real UDP on 127.0.0.1.

In-process: a started Pbx and a RegistrationFront share one UDP port (SO_REUSEPORT) and the BPF
steering, exactly as the runner's processes do, with the hand-over socket pair in between; the
phones are `tests/ha/sip_client.SipPhone`, a UA with its own digest arithmetic. Then the runner
itself with ``workers: 1``: a real worker process, killed and restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sip_core.config import ConfigError, parse_config
from sip_core.message import parse_message
from sip_core.pbx import Pbx
from sip_core.transport import Address, TransportError
from sip_core.workers import Handover, HandoverReceiver, RegistrationFront, WorkerPool
from tests.ha.sip_client import SipPhone
from tests.sip_core.test_pbx import DOMAIN, REPO, free_udp_port


def config_text(port: int, workers: int = 1) -> str:
    return f"""
sip: {{listen: 127.0.0.1, port: {port}, domain: {DOMAIN}, workers: {workers}}}
registrar: {{min_expires: 60, default_expires: 3600}}
users:
  - name: alice
    extension: "200"
    devices:
      - {{username: "201", password: "desk-secret", label: Desk, type: desk}}
      - {{username: "202", password: "mobile-secret", label: Mobile, type: mobile}}
"""


@dataclass
class Site:
    pbx: Pbx
    front: RegistrationFront
    port: int


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    port = free_udp_port()
    config = parse_config(config_text(port))
    secret = WorkerPool.new_secret()
    pbx = Pbx(config, digest_secret=secret)
    await pbx.start()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    front = RegistrationFront(config, secret, theirs)
    await front.start()
    receiver = HandoverReceiver(pbx, ours)
    receiver.start()
    pbx.steer_registers(1)
    yield Site(pbx, front, port)
    receiver.stop()
    await front.stop()
    theirs.close()
    await pbx.stop()


def phone(port: int, username: str = "201", password: str = "desk-secret") -> SipPhone:
    return SipPhone(port=port, username=username, password=password, domain=DOMAIN)


def test_a_handover_survives_encoding_and_garbage_is_refused() -> None:
    forwarded = Handover(b"REGISTER sip:x SIP/2.0\r\n\r\n", Address("::1", 5070), "201")
    assert Handover.decode(forwarded.encode()) == forwarded
    raw = Handover(b"OPTIONS", Address("127.0.0.1", 1), None)
    assert Handover.decode(raw.encode()) == raw
    for packet, why in (
        (b"", "short"),
        (b"R\x00", "short"),
        (b"X" + raw.encode()[1:], "unknown hand-over kind"),
        (b"A" + raw.encode()[1:], "without an identity"),
    ):
        with pytest.raises(ValueError, match=why):
            Handover.decode(packet)


async def test_the_worker_challenges_and_the_main_process_keeps_the_binding(site: Site) -> None:
    desk = phone(site.port)
    await desk.open()
    try:
        response = await desk.register()
    finally:
        desk.close()
    assert response.status == 200
    assert f"<sip:201@127.0.0.1:{desk.local_port}>" in response.get("Contact")
    # The challenge came from the worker, the 200 from the Pbx it handed the request to.
    assert site.front.answered == 1
    assert site.front.authenticated == 1
    assert [b.username for b in site.pbx.bindings("201")] == ["201"]


async def test_every_contact_of_a_device_is_in_the_200_whichever_socket_saw_it(
    site: Site,
) -> None:
    first, second = phone(site.port), phone(site.port)
    await first.open()
    await second.open()
    try:
        assert (await first.register()).status == 200
        response = await second.register()
    finally:
        first.close()
        second.close()
    assert response.status == 200
    contacts = " ".join(response.all("Contact"))
    assert f"127.0.0.1:{first.local_port}" in contacts
    assert f"127.0.0.1:{second.local_port}" in contacts
    assert len(site.pbx.bindings("201")) == 2


async def test_a_wrong_password_is_refused_by_the_worker_alone(site: Site) -> None:
    intruder = phone(site.port, password="guess")
    await intruder.open()
    try:
        response = await intruder.register()
    finally:
        intruder.close()
    assert response.status == 401
    assert site.front.authenticated == 0
    assert not site.pbx.bindings("201")


async def test_a_retransmitted_authenticated_register_gets_the_same_200(site: Site) -> None:
    """The worker hands the retransmission over too; the Pbx's transaction answers it again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    local = sock.getsockname()[1]
    helper = phone(site.port)

    def register(cseq: int, branch: str, authorization: str = "") -> bytes:
        lines = [
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:201@{DOMAIN}>;tag=f{cseq}",
            f"To: <sip:201@{DOMAIN}>",
            "Call-ID: retransmission-test",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:201@127.0.0.1:{local}>",
            "Expires: 600",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    async def exchange(data: bytes) -> bytes:
        sock.sendto(data, ("127.0.0.1", site.port))
        async with asyncio.timeout(5):
            return await loop.sock_recv(sock, 65535)

    try:
        challenge = parse_message(await exchange(register(1, "z9hG4bK-first")))
        assert getattr(challenge, "status", None) == 401
        header = challenge.headers.get_all("WWW-Authenticate")[0]
        authorized = register(
            2, "z9hG4bK-second", helper._authorization(header, "REGISTER", f"sip:{DOMAIN}")
        )
        first = await exchange(authorized)
        again = await exchange(authorized)
    finally:
        sock.close()
    assert first.startswith(b"SIP/2.0 200 ")
    assert again == first  # the same transaction's answer, not a replayed nonce count's 401
    assert site.front.authenticated == 1
    assert site.front.passed_on == 1


async def test_other_requests_go_to_the_main_process(site: Site) -> None:
    desk = phone(site.port)
    await desk.open()
    try:
        desk.send(
            f"OPTIONS sip:{DOMAIN} SIP/2.0",
            [
                desk._via(),
                "Max-Forwards: 70",
                f"From: <sip:201@{DOMAIN}>;tag=o1",
                f"To: <sip:{DOMAIN}>",
                "Call-ID: options-to-workers",
                "CSeq: 1 OPTIONS",
            ],
        )
        response = await desk.final_response("OPTIONS")
    finally:
        desk.close()
    assert response.status == 200
    assert "REGISTER" in response.get("Allow")
    assert site.front.passed_on == 0  # steered straight to the main socket


def test_workers_are_bounded_in_the_configuration() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(5060, workers=99))
    assert "sip.workers" in str(caught.value)
    assert parse_config(config_text(5060, workers=0)).sip.workers == 0


# -- the runner with a real worker process ---------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The runner's registration workers (its media engine is a child process too)."""
    result = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [
        int(line.split()[0]) for line in result.stdout.splitlines() if "sip_core.workers" in line
    ]


async def _wait_for(predicate: Callable[[], bool], limit: float = 15.0) -> None:
    """Poll (a log file, the process table) until ``predicate`` holds."""
    for _ in range(int(limit / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still false after {limit} s: {predicate}")


async def _register_until_ok(port: int) -> int:
    """Registration status once the runner serves (start-up takes a moment)."""
    for _ in range(100):
        desk = phone(port)
        await desk.open()
        try:
            return (await desk.register()).status
        except TimeoutError:
            await asyncio.sleep(0.1)
        finally:
            desk.close()
    raise AssertionError("the runner never answered")


async def test_the_runner_starts_restarts_and_stops_its_worker(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "pbx.yaml"
    config.write_text(config_text(port))
    log = tmp_path / "runner.log"
    with log.open("wb") as output:
        runner = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "sip_core", "--config", str(config), "--log-level", "debug"),
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        await _wait_for(lambda: b"registration worker(s) share" in log.read_bytes())
        assert await _register_until_ok(port) == 200
        text = log.read_text()
        # The worker did the challenge (its log lines carry its name).
        assert any("[worker 1]" in line and "challenged" in line for line in text.splitlines())
        workers = _children(runner.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        await _wait_for(lambda: "registration worker 1 exited" in log.read_text())
        # Until the new worker is up the kernel hands REGISTER to the main process; after it, the
        # new one takes them. Either way a phone can register.
        assert await _register_until_ok(port) == 200
        await _wait_for(
            lambda: len(_children(runner.pid)) == 1 and _children(runner.pid) != workers
        )
        assert await _register_until_ok(port) == 200
    finally:
        runner.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await runner.wait() == 0
    assert _children(runner.pid) == []
    assert "Traceback" not in log.read_text()


async def test_a_platform_without_so_reuseport_gets_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    config = parse_config(config_text(free_udp_port()))
    pbx = Pbx(config)
    with pytest.raises(TransportError, match=r"no SO_REUSEPORT.*sip.workers to 0"):
        await pbx.start()


def test_workers_go_on_without_steering_when_the_kernel_refuses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoSteering:
        def steer_registers(self, workers: int) -> None:
            raise TransportError(f"cannot steer REGISTER to the {workers} workers: EPERM")

    pool = WorkerPool(NoSteering(), Path("pbx.yaml"), 2, b"s" * 32)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="sip_core.workers"):
        pool._steer()
    assert "cannot steer REGISTER to the 2 workers" in caplog.text
    assert "every process gets a share of all traffic" in caplog.text
