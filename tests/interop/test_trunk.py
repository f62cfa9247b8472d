"""The runner and a SIP trunk, against independent software.

Kamailio (``bench/_kamailio.py``) is the provider's registrar with digest authentication:
registration and refresh, a wrong password (one refused answer, then a long wait: the provider
must never see a burst), and recovery once an unreachable provider comes up.

sipp is the provider's proxy delivering a call from the outside: sent from the trunk's address,
for a DID, it rings the DID's user (a sipp UAS registered as that user's device) with the outside
caller's number shown, without a challenge; an unknown DID gets 404.

Kamailio as the provider's proxy (``bench/_kamailio_proxy.py``: 407 on every INVITE, then relayed
to a registered contact) carries a call out: a device dials the outside-line prefix, the runner
answers the 407 with the trunk's credentials, and the "PSTN" party (a sipp UAS registered at
Kamailio) sees the trunk's caller ID.

A second instance of our own runner is a provider too: the trunk is one of its devices, its
"PSTN" party a baresip registered there; calls both ways with audio recorded at each end.

A blind transfer (``*2``) of an internal call to an outside number goes out through Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from . import audio
from .clients import (
    HOST,
    Baresip,
    ClientError,
    free_port,
    read_sipp_outputs,
    run_process,
    run_sipp,
    sipp_uac_call_argv,
    sipp_uas_argv,
    write_sipp_callers,
)
from .conftest import DOMAIN, REPO, Device, StartPbx, User, users_from
from .rtp_tap import RtpPacket, RtpTap

pytestmark = pytest.mark.interop

PROVIDER_USER = "4930123456"


def trunk_yaml(port: int, password: str, *, transport: str = "udp") -> str:
    """A ``trunks`` section in the documented schema; the shortest interval the loader allows."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {port}\n"
        f"    transport: {transport}\n"
        f'    username: "{PROVIDER_USER}"\n'
        f'    password: "{password}"\n'
        "    register_interval: 60\n"
    )


def accepted(kam: Any) -> int:
    return str(kam.log_text()).count(f"REGISTER {PROVIDER_USER} from")


def refused(kam: Any) -> int:
    return str(kam.log_text()).count("rejected: bad credentials")


async def test_registers_and_refreshes_with_kamailio(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    # The provider grants at most 4 s, so the refresh comes after 2 s.
    kam = start_kamailio(
        {PROVIDER_USER: "provider-pw"}, realm="provider.test", min_expires=1, max_expires=4
    )
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}), extra_yaml=trunk_yaml(kam.port, "provider-pw")
    )
    first = await pbx.wait_for_log(r"Trunk provider registered for 4 s")
    start = pbx.lines.index(first) + 1
    await pbx.wait_for_log(r"Trunk provider registered for 4 s", 10.0, start=start)
    log = kam.log_text()
    # Kamailio saw the REGISTERs from the PBX's own SIP port, and accepted them.
    assert f"REGISTER {PROVIDER_USER} from {HOST}:{pbx.port} accepted" in log
    assert log.count("accepted") >= 2
    assert "authentication failed" not in pbx.log()


async def test_a_wrong_password_is_not_retried_in_a_burst(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    kam = start_kamailio({PROVIDER_USER: "provider-pw"}, realm="provider.test")
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}), extra_yaml=trunk_yaml(kam.port, "not-the-password")
    )
    await pbx.wait_for_log(
        r"Trunk provider: registration failed \(authentication failed\); attempt 1, next in 300 s"
    )
    # Watch for a while: no second attempt, and the provider saw exactly one refused answer.
    await asyncio.sleep(6)
    assert refused(kam) == 1
    assert "accepted" not in kam.log_text()
    assert pbx.log().count("registration failed") == 1


async def test_recovers_when_the_provider_comes_up(
    start_pbx: StartPbx, start_kamailio: Callable[..., Any]
) -> None:
    """Over TCP, nothing listening at first: connection refused, back-off, then registered."""
    port = free_port()
    pbx = await start_pbx(
        users_from({"201": "desk-secret"}),
        extra_yaml=trunk_yaml(port, "provider-pw", transport="tcp"),
    )
    await pbx.wait_for_log(
        r"Trunk provider: registration failed \(transport error.*attempt 1, next in 30 s"
    )
    kam = start_kamailio({PROVIDER_USER: "provider-pw"}, port=port, tcp=True, realm="p.test")
    await pbx.wait_for_log(r"Trunk provider registered for \d+ s", 45.0)
    assert accepted(kam) >= 1
    assert pbx.log().count("registration failed") == 1


async def test_an_inbound_call_for_a_did_rings_its_user(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    provider_port = free_port()
    uas_port = free_port(digits=5)
    trunk = (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {provider_port}\n"
        '    username: "4930"\n'
        '    password: "provider-pw"\n'
        "    register: false\n"
        "    dids:\n"
        '      - {number: "+4930111", destination: bob}\n'
    )
    pbx = await start_pbx([User("bob", "300", [Device("501", "sipp-callee-pw")])], extra_yaml=trunk)
    registered = await run_sipp(
        "register", pbx.port, {"501": "sipp-callee-pw"}, local_port=uas_port
    )
    assert registered.returncode == 0, registered.describe()
    (tmp_path / "uas").mkdir()
    (tmp_path / "uac").mkdir()
    (tmp_path / "unknown").mkdir()
    uas = asyncio.create_task(
        run_process(
            sipp_uas_argv(uas_port, calls=1, time_limit=30, trace_messages=True),
            time_limit=40,
            cwd=tmp_path / "uas",
        )
    )
    try:
        await asyncio.sleep(0.3)
        callers = write_sipp_callers(
            tmp_path / "uac" / "callers.csv", [("+4989555", "none", "+4930111")], domain=DOMAIN
        )
        argv = sipp_uac_call_argv(
            pbx.port, callers, calls=1, rate=1, local_port=provider_port, trace_messages=True
        )
        result = await run_process(argv, time_limit=30, cwd=tmp_path / "uac")
        stats, _rtts, messages, errors = read_sipp_outputs(tmp_path / "uac")
        detail = f"{result.describe()}\n{errors[-2000:]}\n{messages[-3000:]}\n{pbx.log()[-2000:]}"
        assert result.returncode == 0, detail
        assert stats.get("SuccessfulCall(C)") == "1", detail
        assert "407 Proxy Authentication Required" not in messages, detail
        served = await asyncio.wait_for(uas, 15)
        assert served.returncode == 0, served.describe()
        delivered = read_sipp_outputs(tmp_path / "uas")[2]
        # The device saw the outside caller's number, in our domain.
        assert f"From: <sip:+4989555@{DOMAIN}>" in delivered, delivered[-3000:]
    finally:
        uas.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await uas

    callers = write_sipp_callers(
        tmp_path / "unknown" / "callers.csv", [("+4989555", "none", "+4930999")], domain=DOMAIN
    )
    argv = sipp_uac_call_argv(
        pbx.port, callers, calls=1, rate=1, local_port=provider_port, trace_messages=True
    )
    result = await run_process(argv, time_limit=30, cwd=tmp_path / "unknown")
    messages = read_sipp_outputs(tmp_path / "unknown")[2]
    assert result.returncode != 0
    assert "SIP/2.0 404" in messages, messages[-3000:]


def _kamailio_proxy_class() -> Any:
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    if importlib.import_module("_kamailio").kamailio_binary() is None:
        pytest.skip("kamailio not installed")
    return importlib.import_module("_kamailio_proxy").KamailioProxy


async def test_an_outbound_call_answers_the_providers_challenge(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    proxy = _kamailio_proxy_class()(
        users={PROVIDER_USER: "trunk-pw", "301234": "pstn-pw"},
        port=free_port(),
        min_expires=1,
        children=1,
    )
    proxy.start()
    uas: asyncio.Task[Any] | None = None
    try:
        uas_port = free_port(digits=5)
        registered = await run_sipp(
            "register", proxy.port, {"301234": "pstn-pw"}, local_port=uas_port
        )
        assert registered.returncode == 0, registered.describe()
        trunk = (
            trunk_yaml(proxy.port, "trunk-pw").replace("register_interval: 60", "register: false")
            + "dialplan:\n"
            + "  routes:\n"
            + '    - {prefix: "0", trunk: provider, strip: true}\n'
        )
        pbx = await start_pbx(
            [User("carol", "400", [Device("401", "sipp-caller-pw")])], extra_yaml=trunk
        )
        for name in ("uas", "uac"):
            (tmp_path / name).mkdir()
        uas = asyncio.create_task(
            run_process(
                sipp_uas_argv(uas_port, calls=1, time_limit=30, trace_messages=True),
                time_limit=40,
                cwd=tmp_path / "uas",
            )
        )
        await asyncio.sleep(0.3)
        callers = write_sipp_callers(
            tmp_path / "uac" / "callers.csv", [("401", "sipp-caller-pw", "0301234")], domain=DOMAIN
        )
        argv = sipp_uac_call_argv(
            pbx.port, callers, calls=1, rate=1, trace_messages=True,
            auth_uri=f"0301234@{DOMAIN}",
        )  # fmt: skip
        result = await run_process(argv, time_limit=30, cwd=tmp_path / "uac")
        stats, _rtts, messages, errors = read_sipp_outputs(tmp_path / "uac")
        detail = (
            f"{result.describe()}\n{errors[-2000:]}\n{messages[-3000:]}\n--- runner\n"
            f"{pbx.log()[-2000:]}\n--- kamailio\n{proxy.log_text()[-2000:]}"
        )
        assert result.returncode == 0, detail
        assert stats.get("SuccessfulCall(C)") == "1", detail
        served = await asyncio.wait_for(uas, 15)
        assert served.returncode == 0, served.describe()
        delivered = read_sipp_outputs(tmp_path / "uas")[2]
        # The outside party sees the trunk's number (Kamailio only relays what authenticated).
        assert f"From: <sip:{PROVIDER_USER}@{HOST}>" in delivered, delivered[-3000:]
        assert "refused our credentials" not in pbx.log()
    finally:
        if uas is not None:
            uas.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await uas
        proxy.stop()


# -- calls with audio through Kamailio as the provider ---------------------------------------------

PSTN_USER = "301234"
PSTN_HZ, DESK_HZ, MOBILE_HZ = 1000.0, 440.0, 700.0
TRUNK_PASSWORD = "trunk-pw"
DESK, MOBILE = "201", "202"
DEVICE_PASSWORDS = {DESK: "bob-desk-pw", MOBILE: "bob-mobile-pw"}


def _provider() -> Any:
    """Kamailio as the provider's registrar and proxy: our trunk's account and a "PSTN" party."""
    proxy = _kamailio_proxy_class()(
        users={PROVIDER_USER: TRUNK_PASSWORD, PSTN_USER: "pstn-pw"},
        port=free_port(),
        min_expires=1,
        children=1,
    )
    proxy.start()
    return proxy


def _trunk_with_did(proxy_port: int, extra: str = "") -> str:
    """The trunk registering at the provider, its number ringing bob, "0" dialling out."""
    return (
        trunk_yaml(proxy_port, TRUNK_PASSWORD)
        + extra
        + "    dids:\n"
        + f'      - {{number: "{PROVIDER_USER}", destination: bob}}\n'
        + "dialplan:\n"
        + "  routes:\n"
        + '    - {prefix: "0", trunk: provider, strip: true}\n'
    )


def _bob() -> list[User]:
    return [User("bob", "300", [Device(name, pw) for name, pw in DEVICE_PASSWORDS.items()])]


@contextlib.asynccontextmanager
async def _baresip(
    user: str, password: str, port: int, tone: Path, workdir: Path, *, answermode: str = "auto"
) -> AsyncIterator[Baresip]:
    ua = Baresip(
        user, password, port, domain=DOMAIN, tone=tone, record=True, answermode=answermode,
        workdir=workdir,
    )  # fmt: skip
    async with ua:
        registration = await ua.wait_registered()
        assert registration.ok, f"{user} did not register:\n{ua.output[-3000:]}"
        yield ua


def _heard(ua: Baresip) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    assert found, f"{ua.user} recorded nothing"
    return found


def _received(ua: Baresip, method: str) -> list[str]:
    """The requests ``ua`` received (its SIP trace: "UDP from -> to" before each message)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in ua.lines:
        if match := re.match(r"^(?:UDP|TCP) (\S+) -> (\S+)$", line):
            blocks.append((match.group(2), []))
        elif blocks:
            blocks[-1][1].append(line)
    own = f"{HOST}:{ua.listen_port}"
    return [
        "\n".join(lines)
        for to, lines in blocks
        if to == own and lines and lines[0].startswith(f"{method} ")
    ]


def _own_audio_port(ua: Baresip) -> int:
    """The RTP port ``ua`` named in the SDP it sent (its trace: "UDP from -> to")."""
    own = f"{HOST}:{ua.listen_port}"
    sending = False
    for line in ua.lines:
        if match := re.match(r"^(?:UDP|TCP) (\S+) -> (\S+)$", line):
            sending = match.group(1) == own
        elif sending and (port := re.match(r"^m=audio (\d+) ", line)):
            return int(port.group(1))
    raise AssertionError(f"{ua.user} sent no SDP:\n{ua.output[-3000:]}")


def _switch_gap(packets: list[RtpPacket], old_hz: float, new_hz: float) -> float:
    """Seconds without audio at the switch from the ``old_hz`` stream to the ``new_hz`` one, as
    received: from the arrival of the last packet carrying the old tone to that of the first
    carrying the new one, less the 20 ms a packet lasts (negative: they overlapped)."""

    def carries(packet: RtpPacket, hz: float) -> bool:
        return audio.goertzel_power(packet.samples, audio.RATE, hz) > 0.2

    first_new = next((i for i, p in enumerate(packets) if carries(p, new_hz)), None)
    assert first_new is not None, "no packet of the new stream was captured"
    last_old = max((i for i in range(first_new) if carries(packets[i], old_hz)), default=None)
    assert last_old is not None, "no packet of the old stream before the new one"
    return packets[first_new].arrival - packets[last_old].arrival - 0.020


async def _wait_trunk_registered(pbx: Any) -> None:
    await pbx.wait_for_log(r"Trunk provider registered for \d+ s", 15.0)


def _detail(pbx: Any, proxy: Any, *uas: Baresip) -> str:
    text = "\n".join(f"--- baresip {ua.user}\n{ua.output[-2500:]}" for ua in uas)
    return f"{text}\n--- runner\n{pbx.log()[-3000:]}\n--- kamailio\n{proxy.log_text()[-2000:]}"


@pytest.fixture
def tones(tmp_path: Path) -> dict[float, Path]:
    return {
        hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for hz in (PSTN_HZ, DESK_HZ, MOBILE_HZ)
    }


async def test_an_inbound_call_from_the_pstn_is_answered_with_audio_both_ways(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path]
) -> None:
    proxy = _provider()
    try:
        pbx = await start_pbx(_bob(), extra_yaml=_trunk_with_did(proxy.port))
        await _wait_trunk_registered(pbx)
        async with (
            _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk")
            as desk,
            _baresip(PSTN_USER, "pstn-pw", proxy.port, tones[PSTN_HZ], tmp_path / "pstn",
                     answermode="manual") as pstn,
        ):  # fmt: skip
            try:
                await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await pstn.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(3.0)
                await pstn.hangup()
                await desk.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_detail(pbx, proxy, pstn, desk)}")
        # The desk was shown the outside caller's number.
        (ringing,) = _received(desk, "INVITE")
        assert re.search(rf"^From: <sip:{PSTN_USER}@", ringing, re.MULTILINE), ringing
        by_pstn, by_desk = _heard(pstn), _heard(desk)
        assert audio.tone_seconds(by_pstn, DESK_HZ) >= 2.0, audio.describe(by_pstn)
        assert audio.tone_seconds(by_desk, PSTN_HZ) >= 2.0, audio.describe(by_desk)
        assert audio.tone_seconds(by_pstn, PSTN_HZ) == 0, audio.describe(by_pstn)
    finally:
        proxy.stop()


async def test_an_outbound_call_shows_the_trunks_caller_id_with_audio_both_ways(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path]
) -> None:
    proxy = _provider()
    try:
        pbx = await start_pbx(_bob(), extra_yaml=_trunk_with_did(proxy.port))
        await _wait_trunk_registered(pbx)
        async with (
            _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk",
                     answermode="manual") as desk,
            _baresip(PSTN_USER, "pstn-pw", proxy.port, tones[PSTN_HZ], tmp_path / "pstn") as pstn,
        ):  # fmt: skip
            try:
                await desk.dial(f"sip:0{PSTN_USER}@{DOMAIN}")
                await pstn.wait_event("CALL_ESTABLISHED", 15)
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(3.0)
                await desk.hangup()
                await pstn.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_detail(pbx, proxy, pstn, desk)}")
        # The outside party sees the trunk's caller ID, never the extension or the device.
        (invite,) = _received(pstn, "INVITE")
        assert re.search(rf"^From: <sip:{PROVIDER_USER}@", invite, re.MULTILINE), invite
        by_pstn, by_desk = _heard(pstn), _heard(desk)
        assert audio.tone_seconds(by_pstn, DESK_HZ) >= 2.0, audio.describe(by_pstn)
        assert audio.tone_seconds(by_desk, PSTN_HZ) >= 2.0, audio.describe(by_desk)
    finally:
        proxy.stop()


async def test_a_flip_of_an_inbound_trunk_call_never_reinvites_the_outside_party(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path]
) -> None:
    """Desk answers a call from the PSTN, then presses *0: the call moves to the mobile, the
    outside party keeps hearing (first the desk, then the mobile) and receives no INVITE, and
    the RTP reaching it (captured on loopback) has no gap above the flip target at the switch."""
    proxy = _provider()
    try:
        pbx = await start_pbx(_bob(), extra_yaml=_trunk_with_did(proxy.port))
        await _wait_trunk_registered(pbx)
        async with (
            _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk")
            as desk,
            _baresip(PSTN_USER, "pstn-pw", proxy.port, tones[PSTN_HZ], tmp_path / "pstn",
                     answermode="manual") as pstn,
        ):  # fmt: skip
            try:
                await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await pstn.wait_event("CALL_ESTABLISHED", 15)
                # The mobile registers only now, so it cannot have answered the first ring.
                async with _baresip(
                    MOBILE, DEVICE_PASSWORDS[MOBILE], pbx.port, tones[MOBILE_HZ],
                    tmp_path / "mobile",
                ) as mobile:  # fmt: skip
                    # What reaches the outside party's RTP port, with kernel arrival times.
                    tap = RtpTap(_own_audio_port(pstn)) if RtpTap.available() else None
                    await asyncio.sleep(1.5)
                    await desk.send_dtmf("*0")
                    await mobile.wait_event("CALL_ESTABLISHED", 15)
                    await desk.wait_event("CALL_CLOSED", 10)
                    await asyncio.sleep(3.0)
                    packets = tap.stop() if tap is not None else None
                    assert pstn.call_events("CALL_CLOSED") == []
                    await pstn.hangup()
                    await mobile.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_detail(pbx, proxy, pstn, desk)}")
        assert _received(pstn, "INVITE") == [], _received(pstn, "INVITE")
        assert _received(pstn, "UPDATE") == []
        assert len(pstn.call_events("CALL_ESTABLISHED")) == 1, pstn.events
        by_pstn = _heard(pstn)
        assert audio.tone_seconds(by_pstn, DESK_HZ) >= 1.0, audio.describe(by_pstn)
        assert audio.tone_seconds(by_pstn, MOBILE_HZ) >= 2.0, audio.describe(by_pstn)
        sequence = [w.dominant for w in by_pstn if w.is_tone(DESK_HZ) or w.is_tone(MOBILE_HZ)]
        first_mobile = next(i for i, hz in enumerate(sequence) if abs(hz - MOBILE_HZ) < 15)
        assert all(abs(hz - MOBILE_HZ) < 15 for hz in sequence[first_mobile:]), audio.describe(
            by_pstn
        )
        by_mobile = _heard(mobile)
        assert audio.tone_seconds(by_mobile, PSTN_HZ) >= 2.0, audio.describe(by_mobile)
        # No gap above the flip target (40 ms) at the switch, measured on the packets as they
        # reached the outside party (timestamps to the microsecond; a packet is 20 ms of audio).
        if packets is None:
            pytest.skip("no packet capture here (CAP_NET_RAW): the gap was not measured")
        gap = _switch_gap(packets, DESK_HZ, MOBILE_HZ)
        assert gap < 0.040, f"the outside party heard nothing for {gap * 1000:.1f} ms"
    finally:
        proxy.stop()


class _PortForward(asyncio.DatagramProtocol):
    """A router's port forwarding, in user space: datagrams to ``public`` go to ``inside``, and
    the answers go back to their sender (one socket per sender, as a NAT keeps a mapping)."""

    def __init__(self, inside: tuple[str, int]) -> None:
        self.inside = inside
        self.transport: asyncio.DatagramTransport | None = None
        self.forwarded: list[bytes] = []
        self._mappings: dict[tuple[str, int], asyncio.DatagramTransport] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.forwarded.append(data)
        mapping = self._mappings.get(addr)
        if mapping is not None:
            mapping.sendto(data, self.inside)
            return
        asyncio.get_running_loop().create_task(self._open(data, addr))

    async def _open(self, data: bytes, sender: tuple[str, int]) -> None:
        outer = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, answer: bytes, _addr: tuple[str, int]) -> None:
                if outer.transport is not None:
                    outer.transport.sendto(answer, sender)

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Back, local_addr=(HOST, 0))
        self._mappings[sender] = transport
        transport.sendto(data, self.inside)

    def close(self) -> None:
        for mapping in self._mappings.values():
            mapping.close()
        if self.transport is not None:
            self.transport.close()


async def test_public_address_is_what_the_provider_is_told(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path]
) -> None:
    """A test about ``public_address`` (NAT): the router forwards port F to the PBX, and the trunk
    advertises 127.0.0.1:F. The provider registers that Contact, the outside party sees it (and
    our Via names it), and the outside party's BYE, sent there, reaches the PBX through the
    forwarding: the call ends on both sides."""
    proxy = _provider()
    forward: _PortForward | None = None
    try:
        public_port = free_port(tcp=False)
        pbx = await start_pbx(
            _bob(),
            extra_yaml=_trunk_with_did(
                proxy.port, extra=f'    public_address: "{HOST}:{public_port}"\n'
            ),
        )
        loop = asyncio.get_running_loop()
        _, forward = await loop.create_datagram_endpoint(
            lambda: _PortForward((HOST, pbx.port)), local_addr=(HOST, public_port)
        )
        await _wait_trunk_registered(pbx)
        async with (
            _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk",
                     answermode="manual") as desk,
            _baresip(PSTN_USER, "pstn-pw", proxy.port, tones[PSTN_HZ], tmp_path / "pstn") as pstn,
        ):  # fmt: skip
            try:
                await desk.dial(f"sip:0{PSTN_USER}@{DOMAIN}")
                await pstn.wait_event("CALL_ESTABLISHED", 15)
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(2.0)
                before = len(forward.forwarded)
                await pstn.hangup()
                await desk.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_detail(pbx, proxy, pstn, desk)}")
        (invite,) = _received(pstn, "INVITE")
        assert f"Contact: <sip:callflip@{HOST}:{public_port}>" in invite, invite
        assert re.search(rf"^Via: SIP/2.0/UDP {HOST}:{public_port};", invite, re.MULTILINE), invite
        # Our own device is told our real port, not the forwarded one.
        answers = [r for r in _received(desk, "SIP/2.0 200") if re.search(r"CSeq: \d+ INVITE", r)]
        assert answers, desk.output[-3000:]
        assert all(f"@{HOST}:{pbx.port}>" in r for r in answers), answers
        assert all(f":{public_port}" not in r for r in answers), answers
        # The outside party's BYE came in through the forwarded port.
        assert any(d.startswith(b"BYE ") for d in forward.forwarded[before:]), forward.forwarded
        by_desk = _heard(desk)
        assert audio.tone_seconds(by_desk, PSTN_HZ) >= 1.0, audio.describe(by_desk)
    finally:
        if forward is not None:
            forward.close()
        proxy.stop()


# -- a second instance of our own runner as the provider -------------------------------------------

ACCOUNT, ACCOUNT_PASSWORD = "4930", "account-pw"  # the trunk's device at the provider
PSTN_DEVICE, PSTN_PASSWORD = "pstn1", "pstn-line-pw"


def _runner_provider_users() -> list[User]:
    """The provider's own users: the trunk's account (a device of the user whose extension is
    the public number) and the "PSTN" party (a device of the user with extension 301234)."""
    return [
        User("line", PROVIDER_USER, [Device(ACCOUNT, ACCOUNT_PASSWORD)]),
        User("pstn", PSTN_USER, [Device(PSTN_DEVICE, PSTN_PASSWORD)]),
    ]


def _trunk_to_runner(provider_port: int) -> str:
    """Our trunk at the provider runner, on the shipped defaults but the account: the provider
    rings a registered device addressed by its username, so that is the DID it delivers."""
    return (
        "trunks:\n"
        "  - name: provider\n"
        f"    host: {HOST}\n"
        f"    port: {provider_port}\n"
        f'    username: "{ACCOUNT}"\n'
        f'    password: "{ACCOUNT_PASSWORD}"\n'
        "    dids:\n"
        f'      - {{number: "{ACCOUNT}", destination: bob}}\n'
        "dialplan:\n"
        "  routes:\n"
        '    - {prefix: "0", trunk: provider, strip: true}\n'
    )


def _runners_detail(pbx: Any, provider: Any, *uas: Baresip) -> str:
    text = "\n".join(f"--- baresip {ua.user}\n{ua.output[-2500:]}" for ua in uas)
    return f"{text}\n--- runner\n{pbx.log()[-3000:]}\n--- provider runner\n{provider.log()[-3000:]}"


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
async def test_our_own_runner_as_the_provider(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path], direction: str
) -> None:
    """The trunk registers at a second runner (as one of its devices); a call from its "PSTN"
    party rings bob's desk, and the desk's call out reaches the PSTN party, with the provider's
    number for our account as the caller ID; audio both ways, as recorded by each end."""
    provider = await start_pbx(_runner_provider_users())
    pbx = await start_pbx(_bob(), extra_yaml=_trunk_to_runner(provider.port))
    await _wait_trunk_registered(pbx)
    # The provider saw the REGISTER with the account's credentials from our SIP port.
    await provider.wait_for_log(
        rf"Registration of {ACCOUNT} \w+: .* from udp {HOST}:{pbx.port}$", 5.0
    )
    inbound = direction == "inbound"
    async with (
        _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk",
                 answermode="auto" if inbound else "manual") as desk,
        _baresip(PSTN_DEVICE, PSTN_PASSWORD, provider.port, tones[PSTN_HZ], tmp_path / "pstn",
                 answermode="manual" if inbound else "auto") as pstn,
    ):  # fmt: skip
        caller, callee = (pstn, desk) if inbound else (desk, pstn)
        try:
            if inbound:
                await pstn.dial(f"sip:{PROVIDER_USER}@{DOMAIN}")
            else:
                await desk.dial(f"sip:0{PSTN_USER}@{DOMAIN}")
            await callee.wait_event("CALL_ESTABLISHED", 15)
            await caller.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(3.0)
            await caller.hangup()
            await callee.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{_runners_detail(pbx, provider, pstn, desk)}")
    (invite,) = _received(callee, "INVITE")
    if inbound:
        # The desk is shown the outside caller's number (the provider's number for it).
        assert re.search(rf'^From: "pstn" <sip:{PSTN_USER}@', invite, re.MULTILINE), invite
    else:
        # The PSTN party sees the provider's number for our account, never our extension.
        assert re.search(rf'^From: "line" <sip:{PROVIDER_USER}@', invite, re.MULTILINE), invite
        assert "bob" not in invite, invite
        assert "sip:300@" not in invite, invite
    by_pstn, by_desk = _heard(pstn), _heard(desk)
    assert audio.tone_seconds(by_pstn, DESK_HZ) >= 2.0, audio.describe(by_pstn)
    assert audio.tone_seconds(by_desk, PSTN_HZ) >= 2.0, audio.describe(by_desk)
    assert audio.tone_seconds(by_pstn, PSTN_HZ) == 0, audio.describe(by_pstn)


async def test_a_blind_transfer_sends_an_internal_call_out_through_the_trunk(
    start_pbx: StartPbx, tmp_path: Path, tones: dict[float, Path]
) -> None:
    """Carol calls bob's desk; the desk dials ``*2`` and an outside number: the desk is released,
    the provider (Kamailio) rings the PSTN party with the trunk's caller ID, and Carol and the
    PSTN party hear each other."""
    proxy = _provider()
    carol_user = User("carol", "400", [Device("401", "carol-phone-pw")])
    try:
        pbx = await start_pbx([*_bob(), carol_user], extra_yaml=_trunk_with_did(proxy.port))
        await _wait_trunk_registered(pbx)
        async with (
            _baresip(DESK, DEVICE_PASSWORDS[DESK], pbx.port, tones[DESK_HZ], tmp_path / "desk")
            as desk,
            _baresip("401", "carol-phone-pw", pbx.port, tones[MOBILE_HZ], tmp_path / "carol",
                     answermode="manual") as carol,
            _baresip(PSTN_USER, "pstn-pw", proxy.port, tones[PSTN_HZ], tmp_path / "pstn") as pstn,
        ):  # fmt: skip
            try:
                await carol.dial(f"sip:{DESK}@{DOMAIN}")
                await desk.wait_event("CALL_ESTABLISHED", 15)
                await carol.wait_event("CALL_ESTABLISHED", 15)
                await asyncio.sleep(1.0)
                await desk.send_dtmf(f"*20{PSTN_USER}#")
                await desk.wait_event("CALL_CLOSED", 10)
                await pstn.wait_event("CALL_ESTABLISHED", 20)
                await asyncio.sleep(3.0)
                assert carol.call_events("CALL_CLOSED") == []
                await carol.hangup()
                await pstn.wait_event("CALL_CLOSED", 10)
            except ClientError as error:
                pytest.fail(f"{error}\n{_detail(pbx, proxy, pstn, desk, carol)}")
        (invite,) = _received(pstn, "INVITE")
        assert re.search(rf"^From: <sip:{PROVIDER_USER}@", invite, re.MULTILINE), invite
        assert "transfer to 0301234 succeeded" in pbx.log(), pbx.log()[-3000:]
        by_pstn, by_carol = _heard(pstn), _heard(carol)
        assert audio.tone_seconds(by_pstn, MOBILE_HZ) >= 2.0, audio.describe(by_pstn)
        assert audio.tone_seconds(by_carol, PSTN_HZ) >= 2.0, audio.describe(by_carol)
    finally:
        proxy.stop()
