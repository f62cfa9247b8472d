"""The held party hangs up during an attended transfer's consultation: the transferring device
and the target talk on as an ordinary call, and the transfer's record says why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip_core.calls import CallOutcome, CallState
from sip_core.events import TransferEnded
from sip_core.features.attended import AttendedPhase

from .test_attended import consulting, operation
from .test_b2bua_harness import Harness, sdp_port, settle
from .test_b2bua_harness import sdp as sdp_of
from .test_transfer import answered_call, dial, invites, requests_to


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


async def test_the_consultation_becomes_the_call(h: Harness) -> None:
    carol, desk, bob, ringing = await consulting(h)
    call = h.only_call()
    assert call.media is not None
    consult_port = operation(h).session.b.local_rtp.port
    carol.request("BYE")
    await settle()
    assert call.active
    assert operation(h).phase is AttendedPhase.JOINING
    # Bob is moved to Carol's side of the call (a spare), in the consultation's dialog.
    (moved,) = invites(bob)
    assert moved.call_id == ringing.call_id
    assert sdp_port(moved.body) not in (consult_port, call.media.b.local_rtp.port)
    bob.answer(moved, 200, sdp_of(6301))
    await settle()
    # The desk goes back to its own side of the call's session.
    (back,) = invites(desk)
    assert sdp_port(back.body) == call.media.b.local_rtp.port
    desk.answer(back, 200, sdp_of(6201))
    await settle()
    assert call.operation is None
    assert call.state is CallState.TALKING
    assert call.caller is not None
    assert call.callee is not None
    assert (call.caller.device, call.callee.device) == ("301", "201")
    assert not call.media.held("b")
    assert requests_to(carol) == []  # her BYE was answered; nothing more
    assert "BYE" not in requests_to(bob)
    (ended,) = h.events_of(TransferEnded)
    record = ended.record
    assert not record.succeeded
    assert record.to_device is None
    assert record.reason == "401 hung up while on hold; 201 and 301 talk on"
    # An ordinary call from now on: the desk hangs up, Bob gets the BYE, the call ends.
    desk.request("BYE")
    assert "BYE" in requests_to(bob)
    (history,) = h.b2bua.history.records()
    assert history.outcome is CallOutcome.ANSWERED
    assert history.transfers == (record,)
    assert history.callee_device == "201"


async def test_while_the_target_rings_the_call_goes_on_when_it_answers(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    (ringing,) = invites(bob)
    carol.request("BYE")
    await settle()
    call = h.only_call()
    assert call.active
    assert operation(h).held_left
    bob.answer(ringing, 200, sdp_of(6301))
    await settle()
    (moved,) = invites(bob)
    bob.answer(moved, 200, sdp_of(6301))
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp_of(6201))
    await settle()
    assert call.operation is None
    assert call.caller is not None
    assert call.caller.device == "301"
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.reason == "401 hung up while on hold; 201 and 301 talk on"


async def test_a_target_that_then_declines_ends_the_call(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    (ringing,) = invites(bob)
    carol.request("BYE")
    bob.answer(ringing, 603)
    await settle()
    assert h.b2bua.calls() == []
    assert "BYE" in requests_to(desk)
    (history,) = h.b2bua.history.records()
    (record,) = history.transfers
    assert record.reason == "401 hung up while on hold; 301 declined"


async def test_the_desk_hanging_up_too_ends_the_call(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    (ringing,) = invites(bob)
    bob.answer(ringing, 180)
    carol.request("BYE")
    desk.request("BYE")
    await settle()
    assert h.b2bua.calls() == []
    assert "CANCEL" in requests_to(bob)
    (history,) = h.b2bua.history.records()
    (record,) = history.transfers
    assert record.reason == "401 hung up while on hold, then 201 hung up"


async def test_a_hang_up_during_the_handover_ends_everything(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    desk.request("BYE")
    await settle()
    assert operation(h).phase is AttendedPhase.COMPLETING
    carol.request("BYE")
    assert h.b2bua.calls() == []
    assert "BYE" in requests_to(bob)
