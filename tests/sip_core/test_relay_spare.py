"""Spare legs: the relay sockets a flip target is offered before it answers.

Real UDP on 127.0.0.1. "Not forwarded" is shown the way test_relay.py does it: a later packet
arrives first (loopback keeps order) and the drop counters say what happened.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from sip_core.clock import ManualClock
from sip_core.media.relay import MediaRelay, RelayError

from .test_relay import HOST, Stream, _call, _port_range, endpoint


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    low, high = _port_range(20)
    media = MediaRelay(HOST, low, high, clock=ManualClock())
    yield media
    media.close()


async def test_a_spare_forwards_nothing_until_it_is_switched_in(relay: MediaRelay) -> None:
    session, caller, old = await _call(relay)
    new = await endpoint()
    try:
        session.a.set_remote(caller.address)
        session.b.set_remote(old.address)
        spare = session.open_spare("b")
        assert spare.local_rtp.port not in (session.a.local_rtp.port, session.b.local_rtp.port)
        new_stream = Stream(7, 1, 1)
        new.send(new_stream.next(), spare.local_rtp)  # early audio from the target: nobody hears
        old.send(Stream(2, 1, 1).next(), session.b.local_rtp)
        assert (await caller.receive_rtp()).ssrc == 2
        assert spare.stats.dropped_no_peer == 1
        switched = await session.switch_leg("b", new.address, spare=spare)
        assert switched is spare
        assert session.b is spare
        new.send(new_stream.next(), spare.local_rtp)
        got = await caller.receive_rtp()
        assert got.ssrc == 2  # the caller's stream goes on as the one it had
        caller.send(Stream(1, 1, 1).next(), session.a.local_rtp)
        assert (await new.receive_rtp()).ssrc == 1
        session.discard_spare(spare)  # adopted: discarding is a no-op
        assert not spare.closed
    finally:
        for phone in (caller, old, new):
            phone.close()


async def test_a_discarded_spare_releases_its_ports(relay: MediaRelay) -> None:
    session, caller, old = await _call(relay)
    try:
        available = relay.ports.available
        spare = session.open_spare("a")
        assert relay.ports.available == available - 1
        session.discard_spare(spare)
        session.discard_spare(spare)
        assert spare.closed
        assert relay.ports.available == available
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, spare.local_rtp.port))
    finally:
        caller.close()
        old.close()


async def test_a_spare_for_another_side_or_a_closed_session_is_refused(
    relay: MediaRelay,
) -> None:
    session, caller, old = await _call(relay)
    try:
        spare = session.open_spare("a")
        with pytest.raises(RelayError):
            await session.switch_leg("b", spare=spare)
        session.discard_spare(spare)
        session.close()
        with pytest.raises(RelayError):
            session.open_spare("b")
    finally:
        caller.close()
        old.close()
