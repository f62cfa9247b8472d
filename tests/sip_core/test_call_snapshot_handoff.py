"""Call snapshots of pushes and pulls: the devices a push or a pull by action rings are shown
ringing (`DeviceActivity.RINGING`), facing the party that stays; a pusher who hung up is no longer
shown talking, and rings with the others once its line is free.

The group "Home" is Alice's desk 201, her mobile 202 and Bob's desk 301; Carol (401) called the
desk directly (`test_handoff.talking`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from sip_core.call_snapshot import CallSnapshot, DeviceActivity, DeviceInCall, snapshot_of
from sip_core.config import RingGroup

from .test_b2bua_harness import Harness, make_config, sdp, settle
from .test_handoff import invites, key, talking

HOME = RingGroup("Home", "250", ("201", "202", "301"), ring_timer=20)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(dataclasses.replace(make_config(), groups=(HOME,)))
    yield harness
    harness.close()


def _snapshot(h: Harness) -> CallSnapshot:
    """The call as the PBX shows it: with the activities call control reads from its legs."""
    call = h.only_call()
    return snapshot_of(call, h.b2bua.call_parties(call))


def activities(h: Harness) -> dict[str, DeviceActivity]:
    snapshot = _snapshot(h)
    return {device: a for device in snapshot.devices if (a := snapshot.activity(device))}


async def test_the_members_a_push_rings_are_shown_ringing(h: Harness) -> None:
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    invites(mobile)
    (to_bob,) = invites(bob)
    snapshot = _snapshot(h)
    assert snapshot.operation is not None
    assert (snapshot.operation.kind, snapshot.operation.to_device) == ("push", "Home")
    (rung,) = [p for p in snapshot.parties if p.device == "301"]
    assert rung == DeviceInCall(
        "301", DeviceActivity.RINGING, False, "401", snapshot.operation.started_at
    )
    assert activities(h) == {
        "401": DeviceActivity.TALKING,
        "201": DeviceActivity.TALKING,  # the pusher talks on meanwhile
        "202": DeviceActivity.RINGING,
        "301": DeviceActivity.RINGING,
    }
    bob.answer(to_bob, 200, sdp(6301))
    await settle()
    assert activities(h) == {"401": DeviceActivity.TALKING, "301": DeviceActivity.TALKING}


async def test_a_pusher_who_hung_up_rings_with_the_others(h: Harness) -> None:
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    invites(mobile)
    invites(bob)
    desk.request("BYE")
    await settle()
    assert len(invites(desk)) == 1  # its line is free: it rings too
    assert activities(h) == {
        "401": DeviceActivity.TALKING,
        "201": DeviceActivity.RINGING,
        "202": DeviceActivity.RINGING,
        "301": DeviceActivity.RINGING,
    }


async def test_a_member_that_declined_a_push_is_no_longer_shown_ringing(h: Harness) -> None:
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    invites(mobile)
    (to_bob,) = invites(bob)
    bob.answer(to_bob, 603)
    await settle()
    found = activities(h)
    assert "301" not in found
    assert found["202"] is DeviceActivity.RINGING


async def test_the_puller_rung_by_the_pull_action_is_shown_ringing(h: Harness) -> None:
    _carol, _desk, mobile, _bob = await talking(h)
    h.b2bua.pull("202")
    (to_mobile,) = invites(mobile)
    snapshot = _snapshot(h)
    assert snapshot.activity("202") is DeviceActivity.RINGING
    assert snapshot.activity("201") is DeviceActivity.TALKING
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    assert activities(h) == {"401": DeviceActivity.TALKING, "202": DeviceActivity.TALKING}
