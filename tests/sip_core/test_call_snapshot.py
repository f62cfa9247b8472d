"""Call snapshots and the one rule for what a device does in a call (`sip_core.call_snapshot`).

Calls are driven through the B2BUA harness (fake phones, real transactions and relay, a
ManualClock); a transfer's operation is a stand-in whose view is all that matters here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sip_core.call_snapshot import (
    CallSnapshot,
    DeviceActivity,
    DeviceInCall,
    busiest,
    snapshot_of,
)
from sip_core.calls import Call, CallState, Leg, LegRole, LegState, OperationView

from .test_b2bua_harness import Harness, connect, ring, sdp, settle
from .test_flip import answered_call, new_invites


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def snap(h: Harness, call: Call) -> CallSnapshot:
    """A snapshot as the PBX takes it: with call control's reading of every device."""
    return snapshot_of(call, h.b2bua.call_parties(call))


def activities(h: Harness) -> dict[str, DeviceActivity]:
    snapshot = snap(h, h.only_call())
    return {party.device: party.activity for party in snapshot.parties}


async def test_ringing_then_talking_then_held(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    invite = await ring(h, carol, "300")
    to_mobile = mobile.last_request("INVITE")
    mobile.answer(to_mobile, 180)
    ringing = snap(h, h.only_call())
    assert ringing.state is CallState.RINGING
    assert {p.device: p.activity for p in ringing.parties} == {
        "401": DeviceActivity.DIALING,
        "301": DeviceActivity.RINGING,
        "302": DeviceActivity.RINGING,
    }
    assert [leg.device for leg in ringing.ringing_legs] == ["301", "302"]
    assert all(leg.ringing and not leg.confirmed for leg in ringing.ringing_legs)
    assert ringing.caller_party
    assert '"Carol"' in ringing.caller_party
    assert ringing.answered_at is None
    assert not ringing.answered
    to_desk = desk.last_request("INVITE")
    desk.answer(to_desk, 200, sdp(6301))
    carol.confirm(invite, carol.responses(200)[-1])
    mobile.reply(mobile.last_request("CANCEL"), 200)
    mobile.answer(to_mobile, 487)
    talking = snap(h, h.only_call())
    assert activities(h) == {"401": DeviceActivity.TALKING, "301": DeviceActivity.TALKING}
    assert talking.callee_device == talking.answered_device == "301"
    assert talking.callee_leg is not None
    assert talking.callee_leg.confirmed
    assert talking.ringing_legs == ()
    assert talking.answered_at is not None
    assert talking.parties[0].since == talking.answered_at
    assert talking.parties[0].remote_device == "301"
    assert talking.parties[1].remote_device == "401"
    # Held by a phone's own re-INVITE: both devices are held, the call too.
    desk.request("INVITE", body=sdp(6301, direction="sendonly"))
    carol.reply(carol.last_request("INVITE"), 200, sdp(6401, direction="recvonly"))
    held = snap(h, h.only_call())
    assert held.held
    assert held.activity("401") is held.activity("301") is DeviceActivity.HELD
    assert held.activity("302") is None


async def test_a_snapshot_does_not_change_with_the_call(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    before = snap(h, call)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.state = CallState.ENDED  # type: ignore[misc]
    assert not hasattr(before, "__dict__")  # slotted
    h.b2bua.hangup(call.id)
    await settle()
    assert call.state is CallState.ENDED
    assert before.state is CallState.TALKING
    assert before.activity("201") is DeviceActivity.TALKING
    assert before.caller_leg is not None
    assert before.caller_leg.state is LegState.CONFIRMED
    ended = snap(h, call)
    assert not ended.active
    assert ended.parties == ()  # an ended call occupies no device
    assert ended.ended_at is not None


async def test_a_flip_target_rings_facing_the_party_that_stays(h: Harness) -> None:
    _carol, _desk, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    snapshot = snap(h, call)
    assert snapshot.pending_flip is not None
    assert snapshot.pending_flip.from_device == "201"
    assert snapshot.pending_flip.to_device == "202"
    (target,) = [p for p in snapshot.parties if p.device == "202"]
    assert target == DeviceInCall(
        "202", DeviceActivity.RINGING, False, "401", snapshot.pending_flip.started_at
    )
    assert snapshot.activity("201") is DeviceActivity.TALKING  # still on the desk meanwhile
    assert snapshot.activity("401") is DeviceActivity.TALKING
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    assert (await asyncio.wait_for(future, 5)).succeeded
    moved = snap(h, call)
    assert moved.pending_flip is None
    assert moved.callee_device == "202"
    assert moved.answered_device == "201"
    assert [(r.from_device, r.to_device) for r in moved.handoffs] == [("201", "202")]
    assert {p.device: p.activity for p in moved.parties} == {
        "401": DeviceActivity.TALKING,
        "202": DeviceActivity.TALKING,
    }


@dataclass
class _Transfer:
    """A stand-in transfer operation: only its view matters here."""

    transferring: Leg
    holds_other: bool
    kind: str = "transfer"
    blocks_offers: bool = True

    def owns(self, leg: Leg) -> bool:
        return False

    def on_leg_bye(self, leg: Leg) -> bool:
        return False

    def on_call_end(self) -> None:
        return None

    def view(self) -> OperationView:
        return OperationView(self.kind, self.transferring, "300", 7.0, self.holds_other)


async def test_an_attended_transfer_holds_the_kept_party_at_the_pbx(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    assert call.callee is not None
    assert call.caller is not None
    call.operation = _Transfer(call.callee, holds_other=True)
    snapshot = snap(h, call)
    assert activities(h) == {
        "201": DeviceActivity.HELD_AT_PBX,
        "401": DeviceActivity.TRANSFERRING,
    }
    assert snapshot.caller_leg is not None
    assert snapshot.caller_leg.held_at_pbx
    assert snapshot.callee_leg is not None
    assert not snapshot.callee_leg.held_at_pbx
    assert snapshot.operation is not None
    assert (snapshot.operation.kind, snapshot.operation.to_device) == ("transfer", "300")
    assert snapshot.pending_flip is None
    call.operation = None


async def test_a_blind_transfer_shows_the_party_passed_on_not_the_released_device(
    h: Harness,
) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    assert call.callee is not None
    callee = call.callee
    call.operation = _Transfer(callee, holds_other=False)
    assert activities(h) == {
        "201": DeviceActivity.BEING_TRANSFERRED,
        "401": DeviceActivity.TRANSFERRING,
    }
    callee.state = LegState.TERMINATED  # released at once
    snapshot = snap(h, call)
    assert snapshot.operation is not None
    assert snapshot.operation.from_released
    assert {p.device: p.activity for p in snapshot.parties} == {
        "201": DeviceActivity.BEING_TRANSFERRED
    }
    call.operation = None
    callee.state = LegState.CONFIRMED


def test_the_busiest_activity_wins() -> None:
    ringing = DeviceInCall("201", DeviceActivity.RINGING, False, None, 0.0)
    talking = DeviceInCall("201", DeviceActivity.TALKING, False, None, 0.0)
    transferring = DeviceInCall("201", DeviceActivity.TRANSFERRING, False, None, 0.0)
    assert busiest([]) is None
    assert busiest([ringing, talking]) is talking
    assert busiest([talking, ringing]) is talking
    assert busiest([talking, transferring, ringing]) is transferring
    ranks = [activity.rank for activity in DeviceActivity]
    assert len(ranks) == len(DeviceActivity)  # every activity has a rank
    assert DeviceActivity.DIALING.rank < DeviceActivity.RINGING.rank < DeviceActivity.HELD.rank
    assert DeviceActivity.HELD.rank < DeviceActivity.TALKING.rank
    assert LegRole.CALLER  # the roles a snapshot's legs carry are the model's own
