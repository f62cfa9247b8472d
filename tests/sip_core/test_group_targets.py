"""Every number someone can dial resolves the same way: ring group pilots and outside numbers as
transfer targets, Call Forward Always to a group, on the B2BUA harness with a ManualClock.

The group Home (pilot 250) is Alice's desk (201), Alice's mobile (202) and Bob's desk (301);
Carol (401) calls the desk, which passes her on.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from sip_core.audio import PlaySilence
from sip_core.call.dial import RECHECK_INTERVAL, NotRung, RingRequest, resolve, ring
from sip_core.call.originate import NothingToRing, UnknownTarget
from sip_core.call.targets import Destination, RingPlan
from sip_core.calls import LegRole, TransferKind
from sip_core.config import PbxConfig, RingGroup, TransferSettings
from sip_core.events import TransferEnded, TransferStarted
from sip_core.features.attended import AttendedPhase, AttendedTransferOperation
from sip_core.features.transfer import TransferPhase
from sip_core.message import Request
from sip_core.sdp import SessionDescription
from sip_core.trunk.egress import OutboundTarget

from .test_b2bua_harness import DOMAIN, Harness, Phone, make_config, sdp, sdp_port, settle
from .test_refer import answer_to, notifies, refer
from .test_transfer import answered_call, dial, invites, requests_to
from .test_trunk_outbound import PROVIDER_PORT, trunk_config

HOME = RingGroup("Home", "250", ("201", "202", "301"), ring_timer=10)


def with_home(config: PbxConfig) -> PbxConfig:
    return dataclasses.replace(config, groups=(HOME,))


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness(with_home(make_config()))
    yield harness
    harness.close()


@pytest.fixture
async def ht() -> AsyncIterator[Harness]:
    """With a trunk: Alice may call out ("0" + number), Bob may not."""
    harness = Harness(with_home(trunk_config()), trunks=True)
    yield harness
    harness.close()


def ringing(phone: Phone) -> list[Request]:
    """New INVITEs to ``phone``, each answered 180 as a phone would."""
    found = invites(phone)
    for invite in found:
        phone.answer(invite, 180)
    return found


async def consult(h: Harness, desk: Phone, keys: str) -> AttendedTransferOperation:
    """The desk keys an attended transfer and takes the consultation's re-INVITE."""
    dial(desk, keys)
    await settle()
    (moving,) = invites(desk)
    desk.answer(moving, 200, sdp(6211))
    await settle()
    op = h.only_call().operation
    assert isinstance(op, AttendedTransferOperation)
    return op


def phase(op: AttendedTransferOperation) -> AttendedPhase:
    """The operation's phase now (read through a call, so the type checker does not narrow)."""
    return op.phase


# -- resolution -------------------------------------------------------------------------------


async def test_one_resolution_for_devices_users_pilots_and_outside_numbers(ht: Harness) -> None:
    control = ht.b2bua
    for name in ("201", "202", "301"):
        ht.phone(name, 5000 + int(name))
    assert isinstance(resolve(control, "201", "301"), Destination)
    assert isinstance(resolve(control, "201", "300"), Destination)
    plan = resolve(control, "201", "250")
    assert isinstance(plan, RingPlan)
    assert plan.name == "Home"
    assert plan.timeout == 10.0
    assert plan.devices == ("202", "301")  # the dialling device itself is not rung
    assert isinstance(resolve(control, "201", "0301234"), OutboundTarget)
    assert resolve(control, "201", "0301234", outside=False) is None
    assert resolve(control, "201", "999") is None
    assert resolve(control, "201", "") is None
    with pytest.raises(Exception, match="Bob may not call 0301234 outside"):
        resolve(control, "301", "0301234")


async def test_ring_reports_what_could_not_ring(h: Harness) -> None:
    await answered_call(h)
    call = h.only_call()
    offer = SessionDescription.parse(sdp(6000).decode())
    request = RingRequest(call, LegRole.TRANSFER_TARGET, "b", "<sip:x@y>", offer)

    def never(*_args: object) -> None:
        raise AssertionError("nothing may ring")

    target = resolve(h.b2bua, "201", "250")  # nobody of the group is registered but the desk
    assert isinstance(target, RingPlan)
    result = ring(
        h.b2bua, target, "250", request, timeout=5, on_answer=never, on_fail=never, on_timeout=never
    )
    assert result == NotRung("nobody in Home can take the call", 480)


# -- blind transfer to a pilot ----------------------------------------------------------------


async def test_blind_transfer_to_a_pilot_rings_present_available_members(h: Harness) -> None:
    carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    h.b2bua.presence.set_dnd("202", True)  # not available: not rung
    call = h.only_call()
    dial(desk, "*2250#")
    await settle()
    assert requests_to(desk) == ["BYE"]  # the transferring desk is released at once
    assert ringing(mobile) == []
    (invite,) = ringing(bob)
    assert "Carol" in (invite.headers.get("From") or "")  # Bob sees Carol calling
    (started,) = h.events_of(TransferStarted)
    assert started.target == "250"
    bob.answer(invite, 200, sdp(6301))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert call.operation is None
    assert requests_to(carol) == []  # Carol's dialog never saw a request
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert (ended.record.target, ended.record.to_device) == ("250", "301")


async def test_first_member_to_answer_wins_and_the_others_stop(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    dial(desk, "*2250#")
    await settle()
    (to_mobile,) = ringing(mobile)
    (to_bob,) = ringing(bob)
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    assert "CANCEL" in requests_to(bob)
    assert ringing(bob) == []
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "202"
    assert to_bob.call_id != to_mobile.call_id


async def test_an_absent_member_is_not_rung_until_present(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    h.b2bua.group_presence.set_present("Home", "202", False)
    dial(desk, "*2250#")
    await settle()
    assert ringing(mobile) == []
    assert len(ringing(bob)) == 1
    h.b2bua.group_presence.set_present("Home", "202", True)
    h.clock.advance(RECHECK_INTERVAL)  # within the 4 s the rule allows
    assert len(ringing(mobile)) == 1
    assert ringing(bob) == []  # already ringing: not rung twice


async def test_no_answer_within_the_group_ring_timer_recalls(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    # The group's ring timer (10 s), not the transfer's no-answer time (30 s), decides.
    h.config = dataclasses.replace(h.config, transfer=TransferSettings(timeout=30))
    dial(desk, "*2250#")
    await settle()
    (invite,) = ringing(bob)
    h.clock.advance(9)
    assert requests_to(bob) == []
    h.clock.advance(1)
    assert requests_to(bob) == ["CANCEL"]
    op = h.only_call().operation
    assert getattr(op, "phase", None) is TransferPhase.RECALLING
    bob.answer(invite, 487)
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp(6211))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "201"
    (ended,) = h.events_of(TransferEnded)
    assert not ended.record.succeeded
    assert ended.record.recalled == "201"
    assert "250 did not answer within 10 s" in ended.record.reason
    assert requests_to(carol) == []


async def test_a_group_nobody_can_answer_recalls_at_once(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    dial(desk, "*2250#")  # nobody else of Home is registered
    await settle()
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.recalled == "201"
    assert "nobody in Home can take the call" in ended.record.reason


async def test_the_action_transfers_to_a_pilot(h: Harness) -> None:
    _carol, _desk = await answered_call(h)
    bob = h.phone("301", 5301)
    call = h.only_call()
    h.b2bua.transfer(call.id, "250", device="201")
    await settle()
    assert len(ringing(bob)) == 1


async def test_a_refer_to_the_pilot_rings_the_group(h: Harness) -> None:
    """The phone's own Transfer button (a blind REFER) reaches the group like the keypad."""
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    request = refer(desk, f"<sip:250@{DOMAIN}>")
    assert answer_to(desk, request).status == 202
    await settle()
    (invite,) = ringing(bob)
    bob.answer(invite, 200, sdp(6301))
    await settle()
    assert notifies(desk)[-1][0] == "SIP/2.0 200 OK"
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"


# -- attended transfer to a pilot and outside -------------------------------------------------


async def test_attended_transfer_to_a_pilot_consults_the_group(h: Harness) -> None:
    carol, desk = await answered_call(h)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    op = await consult(h, desk, "**250#")
    assert phase(op) is AttendedPhase.RINGING
    (to_mobile,) = ringing(mobile)
    (to_bob,) = ringing(bob)
    port = op.session.b.local_rtp.port
    assert sdp_port(to_mobile.body) == sdp_port(to_bob.body) == port  # the consultation's leg
    bob.answer(to_bob, 200, sdp(6301))
    await settle()
    assert phase(op) is AttendedPhase.TALKING
    assert op.consulted is not None
    assert op.consulted.device == "301"
    assert "CANCEL" in requests_to(mobile)
    desk.request("BYE")  # complete on hang-up
    await settle()
    (moved,) = invites(bob)
    bob.answer(moved, 200, sdp(6301))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert requests_to(carol) == []
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.kind is TransferKind.ATTENDED
    assert ended.record.succeeded


async def test_attended_to_a_pilot_unanswered_returns_after_the_ring_timer(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    op = await consult(h, desk, "**250#")
    assert len(ringing(bob)) == 1
    h.clock.advance(9.9)
    assert phase(op) is AttendedPhase.RINGING
    h.clock.advance(0.1)
    assert phase(op) is AttendedPhase.RETURNING
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp(6201))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert "250 did not answer within 10 s" in ended.record.reason


async def test_attended_transfer_to_an_outside_number_rings_the_provider(ht: Harness) -> None:
    provider = ht.phone("provider", PROVIDER_PORT, register=False)
    carol, desk = await answered_call(ht)
    op = await consult(ht, desk, "**0301234#")
    (invite,) = invites(provider)
    assert str(invite.uri).startswith("sip:301234@")
    assert str(invite.from_.uri).startswith("sip:+4930123@")  # the trunk's caller ID
    assert sdp_port(invite.body) == op.session.b.local_rtp.port
    provider.answer(invite, 200, sdp(7999))
    await settle()
    assert phase(op) is AttendedPhase.TALKING
    assert op.consulted is not None
    assert op.consulted.device == "trunk:provider"
    assert requests_to(carol) == []  # Carol, held, never hears of it


async def test_attended_out_by_someone_who_may_not_call_out_is_refused(ht: Harness) -> None:
    provider = ht.phone("provider", PROVIDER_PORT, register=False)
    carol = ht.phone("401", 5401)
    bob = ht.phone("301", 5301)
    invite = carol.invite("301")
    await settle()
    bob.answer(bob.last_request("INVITE"), 200, sdp(6301))
    carol.confirm(invite, carol.responses(200)[-1])
    bob.seen = len(bob.inbox())
    carol.seen = len(carol.inbox())
    dial(bob, "**0301234#")
    await settle()
    assert invites(provider) == []
    assert requests_to(bob) == []  # no consultation: no re-INVITE
    assert requests_to(carol) == []
    call = ht.only_call()
    assert call.operation is None
    assert ht.events_of(TransferStarted) == []
    (ended,) = ht.events_of(TransferEnded)  # the failed event, with the reason
    record = ended.record
    assert record.kind is TransferKind.ATTENDED
    assert not record.succeeded
    assert (record.transferring, record.transferred, record.target) == ("301", "401", "0301234")
    assert "Bob may not call 0301234 outside" in record.reason
    assert call.transfers == [record]


async def test_blind_out_by_someone_who_may_not_call_out_leaves_a_failed_event(
    ht: Harness,
) -> None:
    carol = ht.phone("401", 5401)
    bob = ht.phone("301", 5301)
    invite = carol.invite("301")
    await settle()
    bob.answer(bob.last_request("INVITE"), 200, sdp(6301))
    carol.confirm(invite, carol.responses(200)[-1])
    dial(bob, "*20301234#")
    await settle()
    (ended,) = ht.events_of(TransferEnded)
    assert ended.record.kind is TransferKind.BLIND
    assert "may not call 0301234 outside" in ended.record.reason


async def test_a_wrong_number_is_no_failed_transfer_event(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    dial(desk, "*2999#")
    await settle()
    assert h.events_of(TransferEnded) == []
    assert h.only_call().operation is None


# -- Call Forward Always to a group -----------------------------------------------------------


async def test_a_call_to_a_device_forwarded_to_a_group_rings_the_group(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("302", "group:Home")
    h.b2bua.group_presence.set_present("Home", "202", False)
    h.b2bua.presence.set_make_busy("201", True)
    carol.invite("302")
    await settle()
    assert ringing(bob_mobile) == []  # it forwards: not rung itself
    assert ringing(desk) == []  # Make Busy
    assert ringing(mobile) == []  # absent from the group
    assert len(ringing(bob)) == 1


async def test_a_transfer_to_a_device_forwarded_to_a_group_rings_the_group(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    mobile = h.phone("202", 5202)
    h.b2bua.presence.set_forward("302", "group:Home")
    dial(desk, "*2302#")
    await settle()
    assert ringing(bob_mobile) == []
    assert len(ringing(bob)) == 1
    assert len(ringing(mobile)) == 1


async def test_a_forwarding_loop_is_cut_once_for_set_up_and_transfers(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    h.phone("301", 5301)
    h.phone("302", 5302)
    h.b2bua.presence.set_forward("301", "device:302")
    h.b2bua.presence.set_forward("302", "device:301")
    dial(desk, "*2301#")
    await settle()
    (recall,) = invites(desk)  # the loop is refused: the desk is rung back
    desk.answer(recall, 200, sdp(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert "forwarding loop: 301 -> 302 -> 301" in ended.record.reason
    mobile = h.phone("202", 5202)
    mobile.invite("301")  # the same check, the same words, for a call's set-up
    await settle()
    assert len(mobile.responses(482)) == 1


# -- announcements to a group -----------------------------------------------------------------


async def test_an_announcement_to_a_group_rings_its_members_and_says_who_answered(
    h: Harness,
) -> None:
    desk, mobile, bob = h.phone("201", 5201), h.phone("202", 5202), h.phone("301", 5301)
    carol = h.phone("401", 5401)
    h.b2bua.group_presence.set_present("Home", "202", False)
    done = h.b2bua.announce(PlaySilence(40), group="Home")
    await settle()
    (to_desk,) = ringing(desk)
    (to_bob,) = ringing(bob)
    assert ringing(mobile) == []  # absent
    assert ringing(carol) == []  # no member
    h.b2bua.group_presence.set_present("Home", "202", True)
    h.clock.advance(RECHECK_INTERVAL)
    assert len(ringing(mobile)) == 1  # present now: rings too
    bob.answer(to_bob, 200, sdp(6301))
    result = await asyncio.wait_for(done, 10)
    assert (result.answered, result.device, result.played) == (True, "301", 1)
    assert "CANCEL" in requests_to(desk)
    record = h.b2bua.history.records()[-1]
    assert record.dialled == "250"  # the group's pilot
    assert to_desk.method == "INVITE"


async def test_an_announcement_to_an_unknown_or_unreachable_group_is_refused(
    h: Harness,
) -> None:
    with pytest.raises(UnknownTarget, match="no group 'Nope'"):
        h.b2bua.announce(PlaySilence(40), group="Nope")
    with pytest.raises(NothingToRing):  # nobody of Home is registered
        h.b2bua.announce(PlaySilence(40), group="Home")
    with pytest.raises(ValueError, match="not both"):
        h.b2bua.announce(PlaySilence(40), group="Home", device="201")
    assert h.b2bua.calls() == []
