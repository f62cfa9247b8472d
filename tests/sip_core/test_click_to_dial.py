"""Click to dial (`sip_core.features.click_to_dial` on `CallControl.originate` and
`ring_onward`), through the wire harness with a ManualClock: the phone rung first, the number
called for it, the connection, the refusals, and a number out through a trunk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sip_core.call.originate import NothingToRing, UnknownTarget
from sip_core.calls import CallOutcome, CallState
from sip_core.features.click_to_dial import MayNotCallOut, NumberUnavailable, UnknownNumber
from sip_core.sdp import SessionDescription

from .test_b2bua_harness import Harness, sdp, settle
from .test_trunk_outbound import PROVIDER_PORT, trunk_config


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(trunk_config(), trunks=True)
    yield harness
    harness.close()


def encodings(body: bytes) -> list[str]:
    audio = SessionDescription.parse(body).audio()
    assert audio is not None
    return [codec.encoding.upper() for codec in audio.codecs()]


async def test_the_phone_answers_then_the_number_rings_and_they_are_connected(
    h: Harness,
) -> None:
    desk = h.phone("201", 5201)
    bob_desk, bob_mobile = h.phone("301", 5301), h.phone("302", 5302)
    call, done = h.b2bua.click_to_dial("201", "300")
    await settle()
    first = desk.last_request("INVITE")
    # Alice's desk shows what it will be connected to.
    assert first.from_.display_name == "Bob"
    assert first.from_.uri.user == "300"
    assert not bob_desk.requests("INVITE"), "Bob rings only once Alice answered"
    desk.answer(first, 200, sdp(6201))
    await settle()
    assert call.state is CallState.RINGING
    to_bob = bob_mobile.last_request("INVITE")
    assert bob_desk.requests("INVITE")
    # Bob sees Alice calling, offered what her phone answered with.
    assert to_bob.from_.display_name == "Alice"
    assert to_bob.from_.uri.user == "200"
    assert encodings(to_bob.body) == ["PCMU", "TELEPHONE-EVENT"]
    bob_desk.answer(bob_desk.last_request("INVITE"), 180)
    bob_mobile.answer(to_bob, 200, sdp(6302))
    result = await asyncio.wait_for(done, 5)
    assert (result.answered, result.device) == (True, "201")
    assert (result.connected, result.to_device) == (True, "302")
    assert call.state is CallState.TALKING
    assert bob_desk.requests("CANCEL")
    assert call.caller is not None
    assert call.caller.device == "201"
    assert call.callee is not None
    assert call.callee.device == "302"
    # The relay connects the two: each side's audio goes to the other's address.
    assert call.media is not None
    assert call.media.leg("a").remote_rtp == ("127.0.0.1", 6302)
    assert call.media.leg("b").remote_rtp == ("127.0.0.1", 6201)
    desk.request("BYE")
    await settle()
    assert bob_mobile.requests("BYE")
    record = h.b2bua.history.records()[-1]
    assert (record.caller, record.caller_user, record.dialled) == ("201", "Alice", "300")
    assert (record.callee_user, record.answered_device) == ("Bob", "302")
    assert record.outcome is CallOutcome.ANSWERED
    assert "Alice" in record.caller_party


async def test_the_number_busy_ends_the_call_for_the_phone_too(h: Harness) -> None:
    desk, carol = h.phone("201", 5201), h.phone("401", 5401)
    _call, done = h.b2bua.click_to_dial("201", "401")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    await settle()
    carol.answer(carol.last_request("INVITE"), 486)
    result = await asyncio.wait_for(done, 5)
    assert (result.answered, result.connected) == (True, False)
    assert desk.requests("BYE"), "the phone rung first is hung up"
    assert h.b2bua.history.records()[-1].outcome is CallOutcome.BUSY


async def test_nobody_answering_the_number_in_time(h: Harness) -> None:
    desk, carol = h.phone("201", 5201), h.phone("401", 5401)
    _call, done = h.b2bua.click_to_dial("201", "Carol", ring_timeout=9)
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    await settle()
    carol.answer(carol.last_request("INVITE"), 180)
    h.clock.advance(9.1)
    result = await asyncio.wait_for(done, 5)
    assert (result.answered, result.connected) == (True, False)
    assert carol.requests("CANCEL")
    assert desk.requests("BYE")
    assert h.b2bua.history.records()[-1].outcome is CallOutcome.NO_ANSWER


async def test_the_phone_not_answering_rings_nobody_else(h: Harness) -> None:
    desk, carol = h.phone("201", 5201), h.phone("401", 5401)
    _call, done = h.b2bua.click_to_dial("201", "401", ring_timeout=5)
    await settle()
    desk.answer(desk.last_request("INVITE"), 180)
    h.clock.advance(5.1)
    result = await asyncio.wait_for(done, 5)
    assert (result.answered, result.connected) == (False, False)
    assert not carol.requests("INVITE")


async def test_an_outside_number_goes_out_through_the_trunk(h: Harness) -> None:
    provider = h.phone("provider", PROVIDER_PORT, register=False)
    desk = h.phone("201", 5201)
    _call, done = h.b2bua.click_to_dial("201", "0301234")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    await settle()
    out = provider.last_request("INVITE")
    assert out.uri.user == "301234"
    provider.answer(out, 200, sdp(7000))
    result = await asyncio.wait_for(done, 5)
    assert (result.connected, result.to_device) == (True, "trunk:provider")


async def test_refusals_before_anything_rings(h: Harness) -> None:
    h.phone("201", 5201)
    h.phone("301", 5301)
    with pytest.raises(UnknownTarget):
        h.b2bua.click_to_dial("999", "300")
    with pytest.raises(UnknownNumber):
        h.b2bua.click_to_dial("201", "")
    with pytest.raises(NumberUnavailable):
        h.b2bua.click_to_dial("201", "400")  # Carol has nothing registered
    with pytest.raises(MayNotCallOut):
        h.b2bua.click_to_dial("301", "0301234")  # Bob may not call out
    with pytest.raises(NothingToRing):
        h.b2bua.click_to_dial("202", "300")  # Alice's mobile is not registered
    with pytest.raises(ValueError, match="ring timeout"):
        h.b2bua.click_to_dial("201", "300", ring_timeout=0)
    assert h.b2bua.calls() == []


async def test_unknown_numbers_without_trunks() -> None:
    h = Harness()
    try:
        h.phone("201", 5201)
        with pytest.raises(UnknownNumber):
            h.b2bua.click_to_dial("201", "0301234")
    finally:
        h.close()
