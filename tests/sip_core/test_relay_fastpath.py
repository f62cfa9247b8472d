"""The compiled packet path (`sip_core.media.fastpath`): what it takes over, and what it gives back.

Real UDP on 127.0.0.1, the relay in process with `fast_path=True` (the engine process runs it the
same way). The rest of the relay's behaviour is tested on this path too: test_relay.py runs its
tests on it (`compiled`), and the engine's tests run with it and without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from sip_core.clock import ManualClock
from sip_core.dtmf import DtmfDigit, TelephoneEvent, build_telephone_event
from sip_core.media import fastpath
from sip_core.media.packets import RelayEngine
from sip_core.media.relay import MediaLeg, MediaRelay, MediaSession, Side
from sip_core.sdp import Codec

from .test_relay import COMPILED, HOST, WAIT, Endpoint, Stream, _call, _port_range, endpoint

pytestmark = pytest.mark.skipif(not COMPILED, reason="the compiled packet path is not built")


@pytest.fixture
async def relay(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MediaRelay]:
    calls: list[MediaLeg] = []
    python_path = MediaLeg._rtp_from_peer

    def counted(leg: MediaLeg) -> None:
        calls.append(leg)
        python_path(leg)

    # Every packet Python's connected handler reads is recorded: the compiled path reads none.
    monkeypatch.setattr(MediaLeg, "_rtp_from_peer", counted)
    low, high = _port_range(20)
    media = MediaRelay(HOST, low, high, clock=ManualClock(), fast_path=True)
    media.python_reads = calls  # type: ignore[attr-defined]
    yield media
    media.close()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the relay's thread to have done something; never a measurement."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 (the relay's thread sets no event to wait on)
            await asyncio.sleep(0.005)


def _python_reads(relay: MediaRelay) -> list[MediaLeg]:
    reads: list[MediaLeg] = relay.python_reads  # type: ignore[attr-defined]
    return reads


async def _latched_call(
    relay: MediaRelay,
) -> tuple[MediaSession, Endpoint, Endpoint, Stream, Stream]:
    """A call whose legs both latched (each far end's first packet went through Python)."""
    session, phone_a, phone_b = await _call(relay)
    a_stream, b_stream = Stream(1, 100, 1000), Stream(2, 500, 9000)
    session.b.set_remote(phone_b.address)  # from its SDP; A is learnt from its first packet
    phone_a.send(a_stream.next(), session.a.local_rtp)
    phone_b.send(b_stream.next(), session.b.local_rtp)
    await phone_a.receive_rtp()
    await phone_b.receive_rtp()
    return session, phone_a, phone_b, a_stream, b_stream


async def test_latched_legs_are_forwarded_without_python(relay: MediaRelay) -> None:
    session, phone_a, phone_b, a_stream, b_stream = await _latched_call(relay)
    try:
        for _ in range(20):
            phone_a.send(a_stream.next(), session.a.local_rtp)
            phone_b.send(b_stream.next(), session.b.local_rtp)
        for _ in range(20):
            assert (await phone_b.receive_rtp()).ssrc == 1
            assert (await phone_a.receive_rtp()).ssrc == 2
        assert _python_reads(relay) == []
        # What C counted comes back with the stats: the first packet each way plus 20.
        assert session.a.stats.received == session.a.stats.forwarded == 21
        assert session.b.stats.received == session.b.stats.forwarded == 21
        # Junk on a compiled leg is counted as Python would count it, and never forwarded.
        phone_a.send(b"\x00" * 40, session.a.local_rtp)
        phone_a.send(a_stream.next(), session.a.local_rtp)
        assert (await phone_b.receive_rtp()).ssrc == 1
        assert session.a.stats.dropped_invalid == 1
        assert session.a.stats.received == 23
    finally:
        phone_a.close()
        phone_b.close()


async def test_a_held_leg_leaves_the_compiled_path_and_comes_back(relay: MediaRelay) -> None:
    session, phone_a, phone_b, a_stream, _ = await _latched_call(relay)
    try:
        session.a.set_muted(True)
        phone_a.send(a_stream.next(), session.a.local_rtp)  # held: dropped, in Python
        await _until(lambda: session.a.stats.dropped_held == 1)
        session.a.set_muted(False)
        phone_a.send(a_stream.next(), session.a.local_rtp)
        got = await phone_b.receive_rtp()
        assert got.sequence == 102  # the held packet (101) never arrived
        assert _python_reads(relay) == [session.a]  # only the held one went through Python
    finally:
        phone_a.close()
        phone_b.close()


async def test_dtmf_on_a_compiled_leg_reaches_python_and_is_swallowed(relay: MediaRelay) -> None:
    session, phone_a, phone_b, a_stream, _ = await _latched_call(relay)
    digits: list[tuple[Side, DtmfDigit]] = []
    session.on_dtmf = lambda side, digit: digits.append((side, digit))
    session.a.set_codecs([Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000)])
    session.a.swallow_dtmf = True
    try:
        start = a_stream.timestamp
        for end in (False, True):
            event = build_telephone_event(TelephoneEvent(5, end, 10, 800))
            phone_a.send(
                a_stream.next(event, payload_type=101, timestamp=start), session.a.local_rtp
            )
        phone_a.send(a_stream.next(), session.a.local_rtp)
        got = await phone_b.receive_rtp()
        # The two event packets were swallowed: the audio after them follows the last audio
        # the far end got without a hole (101), so renumbering began and A's packets left the
        # compiled path.
        assert got.payload_type == 0
        assert got.sequence == 101
        # The compiled path handed the first event over; from then on the leg is Python's.
        assert _python_reads(relay) == [session.a, session.a]
        await _until(lambda: bool(digits))  # posted to this loop by the relay's thread
        assert [(side, d.digit) for side, d in digits] == [("a", "5")]
        assert session.a.stats.dtmf_swallowed == 2
    finally:
        phone_a.close()
        phone_b.close()


async def test_a_switch_continues_from_the_last_packet_the_compiled_path_sent(
    relay: MediaRelay,
) -> None:
    clock = relay.clock
    assert isinstance(clock, ManualClock)
    session, caller, old, _, old_stream = await _latched_call(relay)
    new = None
    try:
        for _ in range(5):  # sequence 501 to 505, timestamps up to 9000 + 5 * 160
            old.send(old_stream.next(), session.b.local_rtp)
            await caller.receive_rtp()
        assert _python_reads(relay) == []
        clock.advance(0.5)
        new = await endpoint()
        session.switch("b", new.address, latch=True)
        new_stream = Stream(9, 40000, 7)
        new.send(new_stream.next(), session.b.local_rtp)
        got = await caller.receive_rtp()
        # One stream for the caller: the SSRC it had, the sequence after the last one C sent
        # (505), the timestamp moved on by the half second since then, the marker set.
        assert (got.ssrc, got.sequence, got.marker) == (2, 506, True)
        assert got.timestamp == 9000 + 5 * 160 + 4000
    finally:
        for phone in (caller, old, new):
            if phone is not None:
                phone.close()


def test_the_switch_in_the_environment_leaves_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fastpath.ENVIRONMENT_SWITCH, "0")
    engine = RelayEngine(ManualClock().monotonic, fast=True)
    assert engine.fast is None
    assert engine.fast_state is fastpath.FastPathState.SWITCHED_OFF
    monkeypatch.delenv(fastpath.ENVIRONMENT_SWITCH)
    engine = RelayEngine(ManualClock().monotonic, fast=True)
    assert engine.fast is not None
    assert engine.fast_state is fastpath.FastPathState.COMPILED
