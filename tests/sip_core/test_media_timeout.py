"""RTP inactivity: a phone gone silent (without a BYE) ends its call; a held call does not.

Real engine processes and sockets on 127.0.0.1, with a one-second timeout from the
configuration. Waits are bounded only so that a broken engine fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from sip_core.calls import CallOutcome
from sip_core.clock import LoopClock
from sip_core.config import (
    ConfigError,
    Device,
    PbxConfig,
    RtpSettings,
    SipSettings,
    User,
    config_from_mapping,
)
from sip_core.media import MediaRelay, MediaSession
from sip_core.pbx import Pbx

from .test_b2bua_udp import DOMAIN, PASSWORD
from .test_flip_udp import audio_port, call_carol_to_desk, rtp_packet, rtp_socket, udp_phone
from .test_media_engine import HOST, WAIT, _port_range, until

TIMEOUT = 1


# -- configuration -------------------------------------------------------------------------------


def test_the_timeout_is_a_minute_unless_configured() -> None:
    assert config_from_mapping({}).rtp.timeout == 60
    assert config_from_mapping({"rtp": {"timeout": 0}}).rtp.timeout == 0  # never
    assert config_from_mapping({"rtp": {"timeout": 5, "ports": "42000-42099"}}).rtp.timeout == 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "rtp.timeout: must be between 0 and 3600, not -1"),
        (3601, "rtp.timeout: must be between 0 and 3600, not 3601"),
        ("soon", "rtp.timeout: must be a whole number"),
    ],
)
def test_a_bad_timeout_is_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"rtp": {"timeout": value}})
    assert str(caught.value).startswith(message)


# -- through the PBX ------------------------------------------------------------------------------


@pytest.fixture
async def pbx() -> AsyncIterator[Pbx]:
    low, high = _port_range(8)
    config = PbxConfig(
        sip=SipSettings(listen=HOST, port=0, domain=DOMAIN),
        rtp=RtpSettings(low, high, timeout=TIMEOUT),
        users=(
            User("Alice", "200", (Device("201", PASSWORD, "desk"),)),
            User("Carol", "400", (Device("401", PASSWORD, "desk"),)),
        ),
    )
    instance = Pbx(config)
    await instance.start()
    yield instance
    await instance.stop()


@contextlib.asynccontextmanager
async def sending(sock: socket.socket, port: int) -> AsyncIterator[None]:
    """RTP from `sock` to `port` every 20 ms meanwhile."""

    async def send() -> None:
        sequence = 10
        while True:
            sock.sendto(rtp_packet(sequence), (HOST, port))
            sequence += 1
            await asyncio.sleep(0.02)

    task = asyncio.create_task(send())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_phone_gone_silent_gets_its_call_ended_with_bye_to_both(pbx: Pbx) -> None:
    carol = await udp_phone(pbx, "401")
    desk = await udp_phone(pbx, "201")
    carol_rtp, desk_rtp = rtp_socket(), rtp_socket()
    try:
        ok = await call_carol_to_desk(pbx, carol, desk, carol_rtp.getsockname()[1])
        (call,) = pbx.calls()
        assert call.media is not None
        # Both legs latch; then the desk falls silent while Carol goes on talking.
        desk_rtp.sendto(rtp_packet(1), (HOST, call.media.b.local_rtp.port))
        async with sending(carol_rtp, audio_port(ok.body)):
            await until(lambda: call.media is not None and call.media.b.latched, "desk latched")
            carol_bye = await carol.request("BYE")
            desk_bye = await desk.request("BYE")
        assert carol_bye.call_id != desk_bye.call_id
        assert pbx.calls() == []
        (record,) = pbx.history()
        assert record.outcome is CallOutcome.FAILED
        assert record.reason == f"no media for {TIMEOUT} s"
    finally:
        for sock in (carol_rtp, desk_rtp):
            sock.close()
        for phone in (carol, desk):
            assert phone.transport is not None
            phone.transport.close()


# -- in the engine ---------------------------------------------------------------------------------


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    low, high = _port_range(4)
    media = MediaRelay(HOST, low, high, clock=LoopClock(), rtp_timeout=TIMEOUT)
    yield media
    await media.stop()


@pytest.fixture
def far_ends() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = rtp_socket(), rtp_socket()
    yield a, b
    a.close()
    b.close()


async def _latched_silent_call(
    relay: MediaRelay, far_ends: tuple[socket.socket, socket.socket]
) -> tuple[MediaSession, list[tuple[str, float]]]:
    """A session whose two far ends each sent one packet (both legs latched), then nothing."""
    session = relay.open_session("silent")
    timeouts: list[tuple[str, float]] = []
    session.on_timeout = lambda side, seconds: timeouts.append((side, seconds))
    a, b = far_ends
    for sock, leg in ((a, session.a), (b, session.b)):
        sock.sendto(rtp_packet(1), (HOST, leg.local_rtp.port))
    await until(lambda: session.a.latched and session.b.latched, "both legs latched")
    return session, timeouts


@pytest.mark.parametrize("hold", ["pbx", "sdp"])
async def test_a_held_call_is_not_timed_out_and_is_once_resumed(
    relay: MediaRelay, far_ends: tuple[socket.socket, socket.socket], hold: str
) -> None:
    session, timeouts = await _latched_silent_call(relay, far_ends)
    if hold == "pbx":
        session.hold("b")
    else:
        session.b.on_hold = True  # the far end's re-INVITE said sendonly or inactive
    await asyncio.sleep(3 * TIMEOUT)
    assert timeouts == []
    if hold == "pbx":
        session.resume("b")
    else:
        session.b.on_hold = False
    await until(lambda: bool(timeouts), "the timeout once the hold ended", WAIT)
    assert timeouts[0][1] == TIMEOUT
    assert len(timeouts) == 1  # once per session


async def test_a_silent_unlatched_leg_is_not_timed_out(relay: MediaRelay) -> None:
    session = relay.open_session("never-latched")
    timeouts: list[tuple[str, float]] = []
    session.on_timeout = lambda side, seconds: timeouts.append((side, seconds))
    await asyncio.sleep(3 * TIMEOUT)
    await relay.sync()
    assert timeouts == []
    assert not session.a.latched


async def test_only_the_silent_leg_is_reported_while_the_other_keeps_sending(
    relay: MediaRelay, far_ends: tuple[socket.socket, socket.socket]
) -> None:
    session, timeouts = await _latched_silent_call(relay, far_ends)
    async with sending(far_ends[0], session.a.local_rtp.port):
        await until(lambda: bool(timeouts), "the silent leg's timeout", WAIT)
    assert timeouts == [("b", TIMEOUT)]
