"""Calls the PBX places itself (`CallControl.originate`) and announcements on them
(`sip_core.features.announce`), through the wire harness with a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sip_core.audio import PlaySilence
from sip_core.call.originate import (
    DEFAULT_CALLER_NAME,
    CallerId,
    NothingToRing,
    UnknownTarget,
    pbx_device,
)
from sip_core.calls import CallOutcome, CallState, LegState
from sip_core.events import CallStateChanged
from sip_core.sdp import SessionDescription

from .test_b2bua_harness import Harness, make_config, sdp, settle


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def encodings(body: bytes) -> list[str]:
    audio = SessionDescription.parse(body).audio()
    assert audio is not None
    return [codec.encoding.upper() for codec in audio.codecs()]


async def test_a_call_from_the_pbx_rings_every_device_and_the_first_answer_wins(
    h: Harness,
) -> None:
    desk, mobile = h.phone("201", 5201), h.phone("202", 5202)
    placed = h.b2bua.originate(("201", "202"), dialled="200", callee_user="Alice", ring_timeout=20)
    await settle()
    to_desk, to_mobile = desk.last_request("INVITE"), mobile.last_request("INVITE")
    for invite in (to_desk, to_mobile):
        assert invite.from_.display_name == DEFAULT_CALLER_NAME
        assert invite.from_.uri.user == "pbx"
        # Our own offer: every codec the media engine generates, and RFC 4733 events.
        assert encodings(invite.body) == ["PCMU", "PCMA", "G722", "TELEPHONE-EVENT"]
    desk.answer(to_desk, 180)
    mobile.answer(to_mobile, 180)
    assert placed.call.state is CallState.RINGING
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    leg = await asyncio.wait_for(placed.answered, 5)
    assert leg is not None
    assert leg.device == "202"
    assert placed.call.state is CallState.TALKING
    assert mobile.requests("ACK"), "the answer is ACKed at once"
    assert desk.requests("CANCEL"), "the other device stops ringing"
    # The device hangs up: the call ends and is recorded with the PBX as its caller.
    bye = mobile.request("BYE")
    assert bye.method == "BYE"
    await settle()
    record = h.b2bua.history.records()[-1]
    assert record.caller == pbx_device("originate")
    assert DEFAULT_CALLER_NAME in record.caller_party
    assert (record.callee_user, record.answered_device) == ("Alice", "202")
    assert record.outcome is CallOutcome.ANSWERED
    states = [e.state for e in h.events_of(CallStateChanged) if e.call_id == placed.call.id]
    assert states[0] is CallState.SETUP
    assert states[-1] is CallState.ENDED
    assert h.b2bua.open_counts()["calls"] == 0


async def test_the_caller_id_shown_is_the_one_asked_for(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.b2bua.originate(
        ("401",),
        dialled="401",
        callee_user="Carol",
        ring_timeout=20,
        caller_id=CallerId("Front door", "1234"),
    )
    await settle()
    invite = carol.last_request("INVITE")
    assert invite.from_.display_name == "Front door"
    assert invite.from_.uri.user == "1234"
    with pytest.raises(ValueError, match="caller ID number"):
        CallerId("x", "12 34")


async def test_nobody_answering_in_the_ring_timeout_cancels_and_resolves_none(h: Harness) -> None:
    carol = h.phone("401", 5401)
    placed = h.b2bua.originate(("401",), dialled="401", callee_user="Carol", ring_timeout=7)
    await settle()
    invite = carol.last_request("INVITE")
    carol.answer(invite, 180)
    h.clock.advance(6.9)
    assert not placed.answered.done()
    h.clock.advance(0.2)
    await settle()
    assert await asyncio.wait_for(placed.answered, 5) is None
    assert carol.requests("CANCEL")
    record = h.b2bua.history.records()[-1]
    assert record.outcome is CallOutcome.NO_ANSWER
    assert "7 s" in record.reason


async def test_a_busy_device_declining_ends_the_call_busy(h: Harness) -> None:
    carol = h.phone("401", 5401)
    placed = h.b2bua.originate(("401",), dialled="401", callee_user="Carol", ring_timeout=7)
    await settle()
    carol.answer(carol.last_request("INVITE"), 486)
    await settle()
    assert await asyncio.wait_for(placed.answered, 5) is None
    assert h.b2bua.history.records()[-1].outcome is CallOutcome.BUSY


async def test_nothing_registered_or_everything_busy_is_refused_before_ringing(h: Harness) -> None:
    with pytest.raises(NothingToRing) as unregistered:
        h.b2bua.originate(("401",), dialled="401", callee_user="Carol", ring_timeout=7)
    assert not unregistered.value.busy
    h.phone("401", 5401)
    h.b2bua.presence.set_dnd("401", True)
    with pytest.raises(NothingToRing) as busy:
        h.b2bua.originate(("401",), dialled="401", callee_user="Carol", ring_timeout=7)
    assert busy.value.busy
    assert h.b2bua.calls() == []
    assert h.transport.sent == []


async def test_an_announcement_plays_then_hangs_up(h: Harness) -> None:
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    done = h.b2bua.announce(PlaySilence(40), user="Alice", repeat=2)
    await settle()
    offered = mobile.last_request("INVITE")
    assert desk.last_request("INVITE").from_.display_name == DEFAULT_CALLER_NAME
    mobile.answer(offered, 200, sdp(6202))
    result = await asyncio.wait_for(done, 10)
    assert (result.answered, result.device, result.played) == (True, "202", 2)
    assert mobile.requests("BYE"), "the PBX hangs up after the message"
    record = h.b2bua.history.records()[-1]
    assert record.caller == pbx_device("announce")
    assert (record.dialled, record.callee_user) == ("200", "Alice")
    assert record.outcome is CallOutcome.ANSWERED
    assert record.reason == "announcement played"
    assert h.b2bua.calls() == []


async def test_an_announcement_nobody_answers_says_so(h: Harness) -> None:
    carol = h.phone("401", 5401)
    done = h.b2bua.announce(PlaySilence(40), device="401", ring_timeout=5)
    await settle()
    assert carol.last_request("INVITE")
    h.clock.advance(5.1)
    result = await asyncio.wait_for(done, 5)
    assert (result.answered, result.device, result.played) == (False, None, 0)


async def test_the_device_hanging_up_cuts_the_announcement_short(h: Harness) -> None:
    carol = h.phone("401", 5401)
    done = h.b2bua.announce(PlaySilence(60_000), device="401")
    await settle()
    carol.answer(carol.last_request("INVITE"), 200, sdp(6401))
    await settle()
    call = h.b2bua.calls()[0]
    assert call.callee is not None
    assert call.callee.state is LegState.CONFIRMED
    carol.request("BYE")
    result = await asyncio.wait_for(done, 10)
    assert (result.answered, result.device, result.played) == (True, "401", 0)
    assert "hung up" in result.reason
    assert not carol.requests("BYE")


async def test_announcement_refusals(h: Harness) -> None:
    with pytest.raises(UnknownTarget):
        h.b2bua.announce(PlaySilence(40), device="999")
    with pytest.raises(UnknownTarget):
        h.b2bua.announce(PlaySilence(40), user="Nobody")
    with pytest.raises(ValueError, match="repeat"):
        h.b2bua.announce(PlaySilence(40), device="401", repeat=0)
    with pytest.raises(ValueError, match="not both"):
        h.b2bua.announce(PlaySilence(40), device="401", user="Carol")
    with pytest.raises(NothingToRing):
        h.b2bua.announce(PlaySilence(40), device="401")
    assert make_config().user("Carol") is not None
