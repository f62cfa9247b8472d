"""A transfer's target is rung as an ordinary call would ring it: Call Forward Always is followed
(loops cut), and a device in Do Not Disturb or Make Busy counts as busy (blind: recall; attended:
the transferring device is back with the held party)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip_core.events import TransferEnded

from .test_b2bua_harness import Harness, settle
from .test_b2bua_harness import sdp as sdp_of
from .test_transfer import answered_call, dial, invites, requests_to


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


async def test_blind_transfer_follows_the_targets_forward(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob_desk = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("301", "device:302")
    dial(desk, "*2301#")
    assert invites(bob_desk) == []
    (ringing,) = invites(bob_mobile)
    bob_mobile.answer(ringing, 200, sdp_of(6302))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "302"
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert ended.record.to_device == "302"
    assert requests_to(carol) == []


async def test_blind_transfer_into_a_forwarding_loop_recalls(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob_desk = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("301", "device:302")
    h.b2bua.presence.set_forward("302", "device:301")
    dial(desk, "*2301#")
    assert invites(bob_desk) == []
    assert invites(bob_mobile) == []
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp_of(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.recalled == "201"
    assert "forwarding loop" in ended.record.reason


@pytest.mark.parametrize("state", ["dnd", "make_busy"])
async def test_blind_transfer_to_a_dnd_or_make_busy_device_recalls(h: Harness, state: str) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    if state == "dnd":
        h.b2bua.presence.set_dnd("301", True)
    else:
        h.b2bua.presence.set_make_busy("301", True)
    dial(desk, "*2301#")
    assert invites(bob) == []
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp_of(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.recalled == "201"
    assert "301 is busy" in ended.record.reason


async def test_blind_transfer_forwarded_to_a_dnd_device_recalls(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("301", "device:302")
    h.b2bua.presence.set_dnd("302", True)
    dial(desk, "*2301#")
    assert invites(bob_mobile) == []
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp_of(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert "301 is busy" in ended.record.reason


async def test_attended_transfer_follows_the_targets_forward(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob_desk = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("301", "device:302")
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    assert invites(bob_desk) == []
    (ringing,) = invites(bob_mobile)
    bob_mobile.answer(ringing, 200, sdp_of(6302))
    await settle()
    desk.request("BYE")
    await settle()
    (moved,) = invites(bob_mobile)
    bob_mobile.answer(moved, 200, sdp_of(6302))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "302"
    assert requests_to(carol) == []


@pytest.mark.parametrize("state", ["dnd", "make_busy", "loop"])
async def test_attended_transfer_to_a_busy_dnd_or_looping_target_returns_the_desk(
    h: Harness, state: str
) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    if state == "dnd":
        h.b2bua.presence.set_dnd("301", True)
    elif state == "make_busy":
        h.b2bua.presence.set_make_busy("301", True)
    else:
        h.b2bua.presence.set_forward("301", "device:302")
        h.b2bua.presence.set_forward("302", "device:301")
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    assert invites(bob) == []
    (back,) = invites(desk)
    desk.answer(back, 200, sdp_of(6201))
    await settle()
    assert h.only_call().operation is None
    (ended,) = h.events_of(TransferEnded)
    assert not ended.record.succeeded
    expected = "forwarding loop" if state == "loop" else "301 is busy"
    assert expected in ended.record.reason
    assert requests_to(carol) == []
