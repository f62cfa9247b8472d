"""The one rule for what a device is doing in a call (`sip_core.call.activity`), read through
call control: every answer -- in a call (targets of flip, push, ring groups), busy (a new call),
what it is doing (Home Assistant's snapshots) -- comes from it, so they cannot disagree.

Calls run through the B2BUA harness (fake phones, real transactions and relay, a ManualClock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sip_core.call.activity import DeviceActivity, call_parties
from sip_core.call_snapshot import snapshot_of
from sip_core.calls import Call, CallState, Leg, LegRole, LegState
from sip_core.config import UserFlipOptions
from sip_core.features.flip import flip_candidates

from .test_b2bua_harness import Harness, connect, ring, sdp, settle
from .test_call_snapshot import _Transfer
from .test_flip import answered_call, new_invites
from .test_flip_rules import harness3, invites, key, talking


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def state(h: Harness, device: str) -> tuple[DeviceActivity | None, bool, bool]:
    """Every reading of ``device``: its activity, in a call (not offered as a target), busy for
    a new call; what the PBX's snapshots show for it must be the same activity."""
    control = h.b2bua
    shown = [
        party.activity
        for call in control.calls()
        for party in snapshot_of(call, control.call_parties(call)).parties
        if party.device == device
    ]
    activity = control.device_activity(device)
    assert (activity is None) == (not shown)
    if activity is not None:
        assert max(shown, key=lambda found: found.rank) is activity
    return activity, control.in_call(device), control.is_busy(device)


async def test_dialing_ringing_talking_held_and_idle(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    h.phone("201", 5201)
    assert state(h, "401") == (None, False, False)
    invite = await ring(h, carol, "300")
    mobile.answer(mobile.last_request("INVITE"), 180)
    assert state(h, "401") == (DeviceActivity.DIALING, True, True)
    # Ringing: in a call (not offered as a target) but not busy (another call may ring it too).
    assert state(h, "301") == (DeviceActivity.RINGING, True, False)
    assert state(h, "302") == (DeviceActivity.RINGING, True, False)
    assert state(h, "201") == (None, False, False)
    desk.answer(desk.last_request("INVITE"), 200, sdp(6301))
    carol.confirm(invite, carol.responses(200)[-1])
    mobile.reply(mobile.last_request("CANCEL"), 200)
    mobile.answer(mobile.last_request("INVITE"), 487)
    assert state(h, "401") == (DeviceActivity.TALKING, True, True)
    assert state(h, "301") == (DeviceActivity.TALKING, True, True)
    assert state(h, "302") == (None, False, False)  # its branch was cancelled
    desk.request("INVITE", body=sdp(6301, direction="sendonly"))
    carol.reply(carol.last_request("INVITE"), 200, sdp(6401, direction="recvonly"))
    assert h.only_call().state is CallState.HELD
    assert state(h, "401") == (DeviceActivity.HELD, True, True)
    assert state(h, "301") == (DeviceActivity.HELD, True, True)
    h.b2bua.hangup(h.only_call().id)
    await settle()
    for device in ("401", "301", "302"):
        assert state(h, device) == (None, False, False)


async def test_a_ringing_branch_without_a_dialog_is_ringing_for_every_reading(h: Harness) -> None:
    """A branch the fork holds before its INVITE went out: it has no dialog, so it is in no
    dialog index. The dialog-index reading ("has a live leg") said the device was idle while
    the call's own devices said it was in the call; now both read the one rule."""
    carol = h.phone("401", 5401)
    h.phone("301", 5301)
    h.phone("302", 5302)
    h.phone("202", 5202)
    await ring(h, carol, "300")
    call = h.only_call()
    branch = Leg(call, LegRole.CALLEE, "b", "202", '"Bob" <sip:300@home.arpa>')
    call.branches.append(branch)
    assert branch.dialog is None
    assert state(h, "202") == (DeviceActivity.RINGING, True, False)
    # So a flip to it, a push or a ring group do not offer it ...
    alice = h.config.users[0]
    offered = flip_candidates(alice, "201", h.b2bua.is_registered, in_call=h.b2bua.in_call)
    assert [device.username for device in offered] == []
    # ... while a new call still rings it (only ringing), as it rings the other branches.
    assert not h.b2bua.is_busy("202")
    branch.state = LegState.TERMINATED  # its INVITE failed before it went out
    assert state(h, "202") == (None, False, False)
    offered = flip_candidates(alice, "201", h.b2bua.is_registered, in_call=h.b2bua.in_call)
    assert [device.username for device in offered] == ["202"]


async def test_a_failed_branch_leaves_the_call_while_the_others_ring(h: Harness) -> None:
    """A declined branch stays in the call's list of branches; it was "in the call" for the
    flip's reading until the call ended. It is over: idle for every reading."""
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    h.phone("302", 5302)
    await ring(h, carol, "300")
    desk.answer(desk.last_request("INVITE"), 603)
    call = h.only_call()
    assert any(leg.device == "301" for leg in call.branches)
    assert state(h, "301") == (None, False, False)
    assert state(h, "302") == (DeviceActivity.RINGING, True, False)


async def test_a_flip_target_rings_for_every_reading(h: Harness) -> None:
    """A flip's target is a leg of the flip, not of the call: the call's devices did not name it,
    so the flip's own reading offered it again; it rings, in a call, for every reading."""
    _carol, _desk, mobile = await answered_call(h)
    call = h.only_call()
    future = h.b2bua.flip(call.id)
    (ringing,) = new_invites(mobile)
    assert "202" not in call.devices  # not one of the call's own legs
    assert state(h, "202") == (DeviceActivity.RINGING, True, False)
    (party,) = [p for p in h.b2bua.call_parties(call) if p.device == "202"]
    assert party.remote_device == "401"  # facing the party that stays
    assert state(h, "201") == (DeviceActivity.TALKING, True, True)  # still on the desk
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    assert (await asyncio.wait_for(future, 5)).succeeded
    assert state(h, "202") == (DeviceActivity.TALKING, True, True)
    assert state(h, "201") == (None, False, False)  # auto-hangup: BYE, gone


async def test_a_device_ringing_in_one_call_may_be_rung_by_another(h: Harness) -> None:
    """Busy handling of a new call reads the rule: ringing is not busy, talking is (486)."""
    carol = h.phone("401", 5401)
    alice = h.phone("201", 5201)
    desk = h.phone("301", 5301)
    await ring(h, carol, "301")
    first = desk.last_request("INVITE")
    await ring(h, alice, "301")
    second = desk.last_request("INVITE")
    assert second is not first  # rung for the second call too
    assert state(h, "301") == (DeviceActivity.RINGING, True, False)
    assert len(h.b2bua.calls()) == 2


async def test_a_talking_device_is_busy_for_a_new_call(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    alice = h.phone("201", 5201)
    await connect(h, carol, desk, "301")
    invite = await ring(h, alice, "301")
    assert [r.status for r in alice.responses() if r.cseq.number == invite.cseq.number][-1] == 486


def test_the_rule_alone_from_a_call_and_its_legs() -> None:
    """The pure rule over a call built by hand: which legs count, and the ones call control adds."""
    call = Call("c1", caller_user="Carol", dialled="300", callee_user="Bob", started_at=5.0)
    caller = Leg(call, LegRole.CALLER, "a", "401", "<sip:400@home.arpa>")
    call.caller = caller
    ringing = Leg(call, LegRole.CALLEE, "b", "301", "<sip:300@home.arpa>")
    failed = Leg(call, LegRole.CALLEE, "b", "302", "<sip:300@home.arpa>")
    failed.state = LegState.TERMINATED
    call.branches = [ringing, failed]
    call.state = CallState.RINGING
    extra = Leg(call, LegRole.CALLEE, "b", "202", "<sip:300@home.arpa>")
    parties = {p.device: p.activity for p in call_parties(call, [extra])}
    assert parties == {
        "401": DeviceActivity.DIALING,
        "301": DeviceActivity.RINGING,
        "202": DeviceActivity.RINGING,  # an added leg, ringing, no operation: since the call
    }
    extra.state = LegState.CONFIRMED  # e.g. a leg a flip kept up without media
    assert {p.device: p.activity for p in call_parties(call, [extra])}["202"] is (
        DeviceActivity.TALKING
    )
    call.state = CallState.ENDED
    assert call_parties(call, [extra]) == []
    assert all(a.engaged for a in DeviceActivity if a is not DeviceActivity.RINGING)
    assert not DeviceActivity.RINGING.engaged


async def test_a_transfer_makes_both_parties_engaged(h: Harness) -> None:
    """Transferring, held at the PBX, being transferred: in a call, busy for a new call."""
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    await connect(h, alice, carol, "400")
    call = h.only_call()
    assert call.callee is not None
    call.operation = _Transfer(call.callee, holds_other=True)
    assert state(h, "401") == (DeviceActivity.TRANSFERRING, True, True)
    assert state(h, "201") == (DeviceActivity.HELD_AT_PBX, True, True)
    call.operation = _Transfer(call.callee, holds_other=False)
    assert state(h, "201") == (DeviceActivity.BEING_TRANSFERRED, True, True)
    call.operation = None


async def test_a_dialog_kept_up_after_a_flip_keeps_its_device_in_the_call() -> None:
    """Auto-hangup off: the old device's dialog stays up, detached from the media, until it
    hangs up; it is in a call (not offered, busy) until then. The call's own legs no longer
    name it, so only call control's reading of its live legs sees it."""
    for h in harness3(UserFlipOptions(timeout=5, auto_hangup=False)):
        _carol, desk, mobile, _soft = await talking(h)
        key(desk, "*0202")
        mobile.answer(invites(mobile)[0], 200, sdp(6202))
        await settle()
        call = h.only_call()
        assert "201" not in call.devices
        assert state(h, "201") == (DeviceActivity.TALKING, True, True)
        assert state(h, "202") == (DeviceActivity.TALKING, True, True)
        desk.request("BYE")
        assert state(h, "201") == (None, False, False)
        assert state(h, "202") == (DeviceActivity.TALKING, True, True)
