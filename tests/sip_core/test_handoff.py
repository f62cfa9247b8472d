"""Handoff in Personal Ring Groups: push (the code in a call) and pull (the code from idle).

The group "Home" is Alice's desk 201 (prime), her mobile 202 and Bob's desk 301; Carol (401) is
the outside party whose dialog must never see a request from us while the call moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from sip_core.calls import CallOutcome, CallState, LegRole
from sip_core.config import NoAnswerKind, NoAnswerTarget, PbxConfig, RingGroup
from sip_core.events import HandoffFailed, HandoffStarted, HandoffSucceeded
from sip_core.features.handoff import HandoffError, Refusal
from sip_core.features.ring_group import RECHECK_INTERVAL
from sip_core.message import Request, Response

from .test_b2bua_harness import Harness, Phone, make_config, sdp, sdp_port, settle

HOME = RingGroup("Home", "250", ("201", "202", "301"), ring_timer=20)


def config_with(*groups: RingGroup) -> PbxConfig:
    return dataclasses.replace(make_config(), groups=groups)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(config_with(HOME))
    yield harness
    harness.close()


def invites(phone: Phone) -> list[Request]:
    """The INVITEs the phone got since the last look; each rings (180), as a phone's would."""
    found = [m for m in phone.new() if isinstance(m, Request) and m.method == "INVITE"]
    for invite in found:
        phone.answer(invite, 180)
    phone.seen = len(phone.inbox())
    return found


def key(phone: Phone, digits: str) -> None:
    for digit in digits:
        phone.request(
            "INFO",
            body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
            content_type="application/dtmf-relay",
        )


async def talking(h: Harness) -> tuple[Phone, Phone, Phone, Phone]:
    """Carol calls the desk (201) directly; it answers. Returns carol, desk, mobile, bob."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    for phone in (desk, mobile, bob):
        phone.seen = len(phone.inbox())
    return carol, desk, mobile, bob


async def refused(phone: Phone, status: int) -> Response:
    """A refused pull: a 183 with early media (the error tone) first, then ``status``."""
    (progress,) = list(phone.responses(183))
    assert progress.headers.get("Content-Type") == "application/sdp"
    assert sdp_port(progress.body) > 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    while not phone.responses(status):
        assert loop.time() < deadline, f"no {status} after the error tone"
        await asyncio.sleep(0.05)
    (final,) = phone.responses(status)
    return final


def failures(h: Harness) -> list[tuple[str, str]]:
    return [(e.kind, e.refusal) for e in h.events_of(HandoffFailed)]


async def test_push_rings_every_other_member_and_the_first_to_answer_takes_the_call(
    h: Harness,
) -> None:
    carol, desk, mobile, bob = await talking(h)
    call = h.only_call()
    key(desk, "*5")
    (to_mobile,) = invites(mobile)
    (to_bob,) = invites(bob)
    assert invites(desk) == []
    # Both are offered the same spare relay port, with Carol's codecs, showing Carol calling.
    assert sdp_port(to_mobile.body) == sdp_port(to_bob.body)
    assert call.media is not None
    assert sdp_port(to_mobile.body) != call.media.b.local_rtp.port
    assert "Carol" in (to_bob.headers.get("From") or "")
    assert call.operation is not None
    assert call.operation.kind == "push"
    assert desk.requests("BYE") == []  # the pusher keeps talking
    bob.answer(to_bob, 200, sdp(6301))
    await settle()
    assert len(desk.requests("BYE")) == 1  # the pusher is released
    assert len(mobile.requests("CANCEL")) == 1  # the others stop ringing
    assert call.callee is not None
    assert call.callee.device == "301"
    assert call.callee.role is LegRole.CALLEE
    assert call.media.b.remote_rtp == ("127.0.0.1", 6301)
    assert carol.requests() == []  # Carol's dialog never saw a thing
    assert call.operation is None
    started, succeeded = h.events_of(HandoffStarted)[0], h.events_of(HandoffSucceeded)[0]
    assert (started.kind, started.from_device, started.to_device) == ("push", "201", "Home")
    assert (succeeded.kind, succeeded.from_device, succeeded.to_device) == ("push", "201", "301")
    bob.request("BYE")
    (record,) = h.b2bua.history.records()
    (handoff,) = record.handoffs
    # The transfer-record shape: transferring = the pusher, transferred-to = who answered.
    assert (handoff.kind, handoff.from_device, handoff.to_device, handoff.group) == (
        "push",
        "201",
        "301",
        "Home",
    )
    assert handoff.succeeded
    assert record.callee_device == "301"


async def test_push_by_action_and_the_group_cannot_be_pushed_twice(h: Harness) -> None:
    _carol, _desk, mobile, bob = await talking(h)
    call = h.only_call()
    op = h.b2bua.push(call.id)
    assert op.group.name == "Home"
    assert len(invites(mobile)) == len(invites(bob)) == 1
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id)
    assert caught.value.refusal is Refusal.OPERATION_IN_PROGRESS


async def test_pusher_hangs_up_first_the_caller_hears_ringback_and_the_pusher_rings_too(
    h: Harness,
) -> None:
    carol, desk, mobile, bob = await talking(h)
    call = h.only_call()
    key(desk, "*5")
    (to_mobile,) = invites(mobile)
    invites(bob)
    desk.request("BYE")
    await settle()
    assert call.active
    assert carol.requests("BYE") == []
    op = call.operation
    assert op is not None
    assert op.kind == "push"
    assert getattr(op, "ringback", None) is not None  # ringback to Carol from the PBX
    (to_desk,) = invites(desk)  # the pusher's line is free: it rings too
    assert sdp_port(to_desk.body) == sdp_port(to_mobile.body)
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "202"
    assert call.operation is None
    assert carol.requests() == []
    assert len(desk.requests("CANCEL")) == 1
    (record,) = call.handoffs
    assert (record.from_device, record.to_device, record.succeeded) == ("201", "202", True)


async def test_ring_timer_with_the_pusher_still_on_stops_the_others_and_the_call_stays(
    h: Harness,
) -> None:
    _carol, desk, mobile, bob = await talking(h)
    call = h.only_call()
    key(desk, "*5")
    invites(mobile)
    invites(bob)
    h.clock.advance(HOME.ring_timer)
    assert len(mobile.requests("CANCEL")) == 1
    assert len(bob.requests("CANCEL")) == 1
    assert call.active
    assert call.callee is not None
    assert call.callee.device == "201"
    assert desk.requests("BYE") == []
    assert call.operation is None
    assert failures(h) == [("push", "unanswered")]
    assert "no member answered within 20 s" in h.events_of(HandoffFailed)[0].reason


async def test_pusher_released_and_nobody_answers_goes_to_the_no_answer_destination() -> None:
    group = dataclasses.replace(
        HOME, members=("201", "202"), no_answer=NoAnswerTarget(NoAnswerKind.USER, "Bob")
    )
    h = Harness(config_with(group))
    try:
        carol, desk, mobile, bob = await talking(h)
        call = h.only_call()
        key(desk, "*5")
        (_to_mobile,) = invites(mobile)
        assert invites(bob) == []  # not a member
        desk.request("BYE")
        await settle()
        invites(desk)
        h.clock.advance(group.ring_timer)
        assert len(mobile.requests("CANCEL")) == 1
        (to_bob,) = invites(bob)  # Call Forward No Answer: Bob's devices
        bob.answer(to_bob, 200, sdp(6301))
        await settle()
        assert call.callee is not None
        assert call.callee.device == "301"
        assert carol.requests() == []
        assert call.handoffs[-1].to_device == "301"
    finally:
        h.close()


async def test_pusher_released_without_a_no_answer_destination_ends_with_a_reason(
    h: Harness,
) -> None:
    carol, desk, _mobile, _bob = await talking(h)
    call = h.only_call()
    key(desk, "*5")
    desk.request("BYE")
    await settle()
    h.clock.advance(HOME.ring_timer)
    assert not call.active
    assert len(carol.requests("BYE")) == 1
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.NO_ANSWER
    assert "no no-answer destination" in record.reason
    assert failures(h)[-1] == ("push", "unanswered")


async def test_an_absent_member_is_not_rung_and_rings_once_made_present(h: Harness) -> None:
    presence = h.b2bua.group_presence
    presence.set_present("Home", "301", False)
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    assert len(invites(mobile)) == 1
    assert invites(bob) == []
    h.clock.advance(RECHECK_INTERVAL)
    assert invites(bob) == []
    presence.set_present("Home", "301", True)
    h.clock.advance(RECHECK_INTERVAL)  # within the four seconds the rule allows
    assert len(invites(bob)) == 1
    assert RECHECK_INTERVAL <= 4


async def test_a_member_made_absent_mid_ring_stops_ringing(h: Harness) -> None:
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    invites(mobile)
    invites(bob)
    h.b2bua.group_presence.set_present("Home", "301", False)
    h.clock.advance(RECHECK_INTERVAL)
    assert len(bob.requests("CANCEL")) == 1
    assert mobile.requests("CANCEL") == []


async def test_a_member_that_registers_mid_ring_starts_ringing() -> None:
    h = Harness(config_with(HOME))
    try:
        carol = h.phone("401", 5401)
        desk = h.phone("201", 5201)
        mobile = h.phone("202", 5202)
        bob = h.phone("301", 5301, register=False)
        invite = carol.invite("201")
        await settle()
        desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
        carol.confirm(invite, carol.responses(200)[-1])
        key(desk, "*5")
        assert len(invites(mobile)) == 1
        bob.register()
        h.clock.advance(RECHECK_INTERVAL)
        assert len(invites(bob)) == 1
    finally:
        h.close()


async def test_push_refusals_play_the_error_tone_and_say_why(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    call = h.only_call()
    # 202 and 301 are not registered: nobody could take the call.
    key(desk, "*5")
    assert failures(h) == [("push", "no_member_available")]
    assert call.operation is None
    assert call.active
    # Carol is no member of any group.
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id, device="401")
    assert caught.value.refusal is Refusal.NOT_MEMBER
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push("nope")
    assert caught.value.refusal is Refusal.NO_SUCH_CALL


async def test_push_is_refused_on_hold_and_while_a_flip_runs(h: Harness) -> None:
    _carol, _desk, _mobile, _bob = await talking(h)
    call = h.only_call()
    call.transition(CallState.HELD)
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id)
    assert caught.value.refusal is Refusal.NOT_TALKING
    assert "on hold" in str(caught.value)
    call.transition(CallState.TALKING)
    h.b2bua.flip(call.id, "202")
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id)
    assert caught.value.refusal is Refusal.OPERATION_IN_PROGRESS
    assert "flip" in str(caught.value)


async def test_a_push_already_ringing_the_group_refuses_a_second_one(h: Harness) -> None:
    _carol, _desk, mobile, bob = await talking(h)
    first = h.only_call()
    bob_mobile = h.phone("302", 5302)
    second_invite = bob_mobile.invite("301")
    await settle()
    bob.answer(bob.last_request("INVITE"), 200, sdp(6301))
    bob_mobile.confirm(second_invite, bob_mobile.responses(200)[-1])
    second = next(c for c in h.b2bua.calls() if c is not first)
    invites(mobile)
    h.b2bua.push(first.id)
    assert len(invites(mobile)) == 1  # 301 is in a call: not rung
    assert h.b2bua.handoff.pushing("Home") is not None
    key(bob, "*5")
    assert failures(h) == [("push", "group_ringing")]
    assert second.operation is None
    assert second.active


async def test_push_by_a_device_that_is_not_registered_is_refused(h: Harness) -> None:
    _carol, _desk, _mobile, _bob = await talking(h)
    call = h.only_call()
    h.registrations.pop("201")
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id)
    assert caught.value.refusal is Refusal.NOT_REGISTERED


# -- pull --------------------------------------------------------------------------------------


async def test_pull_from_idle_takes_the_call_then_byes_the_pulled_from_device(
    h: Harness,
) -> None:
    carol, desk, mobile, _bob = await talking(h)
    call = h.only_call()
    assert call.media is not None
    old_port = call.media.b.local_rtp.port
    pull = mobile.invite("*5", body=sdp(6202, pt=96))
    await settle()
    (ok,) = mobile.responses(200)
    assert ok.call_id == pull.call_id
    assert sdp_port(ok.body) != old_port  # a spare port of its own
    assert b"telephone-event" in ok.body
    assert b"a=rtpmap:96 telephone-event" in ok.body  # the puller's own numbering
    assert desk.requests("BYE") == []  # not before the puller is connected
    assert call.operation is not None
    assert call.operation.kind == "pull"
    mobile.confirm(pull, ok)
    await settle()
    assert len(desk.requests("BYE")) == 1
    assert call.callee is not None
    assert call.callee.device == "202"
    assert call.media.b.local_rtp.port == sdp_port(ok.body)
    assert call.media.b.remote_rtp == ("127.0.0.1", 6202)
    assert call.media.a.payload_map == {96: 101}
    assert carol.requests() == []
    assert call.operation is None
    (record,) = call.handoffs
    # Transferring = the device pulled from, transferred-to = the puller.
    assert (record.kind, record.from_device, record.to_device, record.succeeded) == (
        "pull",
        "201",
        "202",
        True,
    )
    # The call goes on with the puller: its BYE ends it for Carol.
    mobile.request("BYE")
    assert len(carol.requests("BYE")) == 1


async def test_pull_without_an_ack_leaves_the_call_where_it_was(h: Harness) -> None:
    _carol, desk, mobile, _bob = await talking(h)
    call = h.only_call()
    mobile.invite("*5")
    await settle()
    assert len(mobile.responses(200)) == 1
    h.clock.advance(40)  # 64*T1: no ACK ever came
    await settle()
    assert call.active
    assert call.callee is not None
    assert call.callee.device == "201"
    assert desk.requests("BYE") == []
    assert call.operation is None
    assert failures(h)[-1] == ("pull", "failed")
    assert len(mobile.requests("BYE")) >= 1  # the puller's half-made leg is ended


async def test_pull_respects_member_order_and_skips_a_held_call(h: Harness) -> None:
    group = RingGroup("Home", "250", ("201", "202", "301", "302"))
    h.config = config_with(group)
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    # Carol talks to Bob's desk (301), Alice's desk (201) calls Bob's mobile (302).
    first = carol.invite("301")
    await settle()
    bob.answer(bob.last_request("INVITE"), 200, sdp(6301))
    carol.confirm(first, carol.responses(200)[-1])
    second = desk.invite("302")
    await settle()
    bob_mobile.answer(bob_mobile.last_request("INVITE"), 200, sdp(6302))
    desk.confirm(second, desk.responses(200)[-1])
    calls = h.b2bua.calls()
    assert len(calls) == 2
    with_carol = next(c for c in calls if c.caller_device == "401")
    with_desk = next(c for c in calls if c.caller_device == "201")
    # Member order: 201 comes first, so the pull takes the desk's call ...
    found = h.b2bua.handoff.pullable("202")
    assert found is not None
    assert found[1].call is with_desk
    # ... unless it is on hold: then 301's call is next.
    with_desk.transition(CallState.HELD)
    found = h.b2bua.handoff.pullable("202")
    assert found is not None
    assert found[1].call is with_carol
    assert found[1].device == "301"
    pull = mobile.invite("*5")
    await settle()
    mobile.confirm(pull, mobile.responses(200)[-1])
    await settle()
    assert with_carol.callee is not None
    assert with_carol.callee.device == "202"
    assert len(bob.requests("BYE")) == 1


async def test_pull_refusals_play_the_error_tone_then_answer_with_the_reason(
    h: Harness,
) -> None:
    h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    carol = h.phone("401", 5401)
    mobile.invite("*5")
    carol.invite("*5")
    await settle()
    nothing = await refused(mobile, 404)
    assert "no call to pull" in (nothing.headers.get("Warning") or "")
    stranger = await refused(carol, 403)
    assert "not a member" in (stranger.headers.get("Warning") or "")
    assert [r for _k, r in failures(h)] == ["nothing_to_pull", "not_member"]


async def test_a_refused_pull_without_an_offer_gets_its_status_at_once(h: Harness) -> None:
    mobile = h.phone("202", 5202)
    mobile.invite("*5", body=b"")
    await settle()
    assert mobile.responses(183) == []
    assert len(mobile.responses(404)) == 1


async def test_a_ringing_call_cannot_be_pulled_and_a_busy_puller_cannot_pull(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    carol.invite("201")
    await settle()
    mobile.invite("*5")
    await settle()
    ringing = await refused(mobile, 404)
    assert "not talking" in (ringing.headers.get("Warning") or "")
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    h.b2bua.flip(h.only_call().id, "202")  # the mobile rings for the flip: it is not idle
    mobile.invite("*5", body=b"")
    await settle()
    assert len(mobile.responses(486)) == 1
    assert failures(h)[-1] == ("pull", "puller_busy")


async def test_pull_works_from_an_absent_member(h: Harness) -> None:
    _carol, _desk, _mobile, bob = await talking(h)
    h.b2bua.group_presence.set_present("Home", "201", False)
    h.b2bua.group_presence.set_present("Home", "301", False)
    pull = bob.invite("*5")
    await settle()
    bob.confirm(pull, bob.responses(200)[-1])
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"


async def test_the_pull_operation_refuses_a_push_meanwhile(h: Harness) -> None:
    _carol, _desk, mobile, _bob = await talking(h)
    call = h.only_call()
    mobile.invite("*5")
    await settle()
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(call.id)
    assert caught.value.refusal is Refusal.OPERATION_IN_PROGRESS
    await asyncio.sleep(0)


# -- calls to the group's pilot number ------------------------------------------------------------


async def test_the_pilot_rings_every_present_free_member_at_once(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    h.b2bua.group_presence.set_present("Home", "202", False)
    invite = carol.invite("250")
    await settle()
    (to_desk,) = invites(desk)
    (to_bob,) = invites(bob)
    assert invites(mobile) == []  # absent
    assert "Carol" in (to_desk.headers.get("From") or "")
    bob.answer(to_bob, 200, sdp(6301))
    await settle()
    assert len(desk.requests("CANCEL")) == 1
    carol.confirm(invite, carol.responses(200)[-1])
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert call.dialled == "250"


async def test_a_member_made_present_mid_ring_rings_within_four_seconds(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    h.b2bua.group_presence.set_present("Home", "202", False)
    carol.invite("250")
    await settle()
    assert len(invites(desk)) == 1
    assert invites(mobile) == []
    h.b2bua.group_presence.set_present("Home", "202", True)
    h.clock.advance(RECHECK_INTERVAL)
    assert len(invites(mobile)) == 1
    assert invites(desk) == []  # already ringing: not rung twice


async def test_an_unanswered_group_call_goes_to_the_no_answer_destination() -> None:
    group = dataclasses.replace(
        HOME, members=("201", "202"), no_answer=NoAnswerTarget(NoAnswerKind.DEVICE, "301")
    )
    h = Harness(config_with(group))
    try:
        carol = h.phone("401", 5401)
        desk = h.phone("201", 5201)
        bob = h.phone("301", 5301)
        invite = carol.invite("250")
        await settle()
        assert len(invites(desk)) == 1
        assert invites(bob) == []
        h.clock.advance(group.ring_timer)
        assert len(desk.requests("CANCEL")) == 1
        (to_bob,) = invites(bob)
        bob.answer(to_bob, 200, sdp(6301))
        await settle()
        carol.confirm(invite, carol.responses(200)[-1])
        call = h.only_call()
        assert call.callee is not None
        assert call.callee.device == "301"
    finally:
        h.close()


async def test_a_group_nobody_can_take_gives_480_with_the_reason(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    h.b2bua.group_presence.set_present("Home", "201", False)
    carol.invite("250")
    await settle()
    (refused,) = carol.responses(480)
    assert "nobody in Home answered" in (refused.headers.get("Warning") or "")
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.NO_ANSWER


# -- pull by action (Home Assistant's callflip.pull) ----------------------------------------------


async def test_pull_by_action_rings_the_puller_and_moves_the_call_when_it_answers(
    h: Harness,
) -> None:
    carol, desk, mobile, _bob = await talking(h)
    call = h.only_call()
    h.b2bua.pull("202")
    (ringing,) = invites(mobile)
    assert b"telephone-event" in ringing.body
    assert desk.requests("BYE") == []
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    assert len(desk.requests("BYE")) == 1
    assert call.callee is not None
    assert call.callee.device == "202"
    assert carol.requests() == []
    (record,) = call.handoffs
    assert (record.kind, record.from_device, record.to_device, record.succeeded) == (
        "pull",
        "201",
        "202",
        True,
    )


async def test_pull_by_action_unanswered_leaves_the_call(h: Harness) -> None:
    _carol, desk, mobile, _bob = await talking(h)
    call = h.only_call()
    h.b2bua.pull("202")
    invites(mobile)
    h.clock.advance(HOME.ring_timer)
    assert len(mobile.requests("CANCEL")) == 1
    assert call.callee is not None
    assert call.callee.device == "201"
    assert desk.requests("BYE") == []
    assert call.operation is None
    assert failures(h)[-1] == ("pull", "unanswered")


async def test_pull_by_action_refusals(h: Harness) -> None:
    await talking(h)
    with pytest.raises(HandoffError) as caught:
        h.b2bua.pull("999")
    assert caught.value.refusal is Refusal.UNKNOWN_DEVICE
    with pytest.raises(HandoffError) as caught:
        h.b2bua.pull("401")
    assert caught.value.refusal is Refusal.NOT_MEMBER
    with pytest.raises(HandoffError) as caught:
        h.b2bua.pull("201")  # the device that has the call
    assert caught.value.refusal is Refusal.PULLER_BUSY
    h.registrations.pop("202")
    with pytest.raises(HandoffError) as caught:
        h.b2bua.pull("202")
    assert caught.value.refusal is Refusal.NOT_REGISTERED


async def test_no_push_while_a_call_to_the_pilot_rings_the_group(h: Harness) -> None:
    _carol, _desk, mobile, _bob = await talking(h)
    dave = h.phone("302", 5302)
    dave.invite("250")  # rings the free members: the mobile and Bob
    await settle()
    assert len(invites(mobile)) == 1
    with pytest.raises(HandoffError) as caught:
        h.b2bua.push(next(c for c in h.b2bua.calls() if c.caller_device == "401").id)
    assert caught.value.refusal is Refusal.GROUP_RINGING
    assert "a call already rings Home" in str(caught.value)


async def test_what_home_assistant_shows_of_a_group(h: Harness) -> None:
    handoff = h.b2bua.handoff
    assert not handoff.rings(HOME)
    assert handoff.call_holder(HOME) is None
    _carol, desk, mobile, _bob = await talking(h)
    assert handoff.call_holder(HOME) == "201"
    h.b2bua.push(h.only_call().id)
    assert handoff.rings(HOME)
    (to_mobile,) = invites(mobile)
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    assert not handoff.rings(HOME)
    assert handoff.call_holder(HOME) == "202"
    assert len(desk.requests("BYE")) == 1


# -- Do Not Disturb, Make Busy and Call Forward Always (sip_core.presence) ---------------------


async def test_push_overrides_dnd_make_busy_and_call_forward_always(h: Harness) -> None:
    presence = h.b2bua.presence
    presence.set_dnd("202", True)
    presence.set_make_busy("301", True)
    presence.set_forward("301", "device:302")
    _carol, desk, mobile, bob = await talking(h)
    bob_mobile = h.phone("302", 5302)
    key(desk, "*5")
    assert len(invites(mobile)) == 1  # in DND, rung all the same
    assert len(invites(bob)) == 1  # in Make Busy and forwarding, rung itself
    assert invites(bob_mobile) == []  # the forward is not followed


async def test_push_never_overrides_group_presence(h: Harness) -> None:
    h.b2bua.group_presence.set_present("Home", "202", False)
    h.b2bua.presence.set_dnd("301", True)
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    assert invites(mobile) == []
    assert len(invites(bob)) == 1


async def test_a_pilot_call_respects_dnd_and_make_busy(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    bob = h.phone("301", 5301)
    h.b2bua.presence.set_dnd("201", True)
    h.b2bua.presence.set_make_busy("202", True)
    carol.invite("250")
    await settle()
    assert invites(desk) == []
    assert invites(mobile) == []
    assert len(invites(bob)) == 1
    h.b2bua.presence.set_dnd("201", False)
    h.clock.advance(RECHECK_INTERVAL)
    assert len(invites(desk)) == 1  # out of DND: rings within the re-check
    assert invites(mobile) == []


async def test_pull_works_to_and_from_devices_in_dnd_and_make_busy(h: Harness) -> None:
    h.b2bua.presence.set_dnd("201", True)
    h.b2bua.presence.set_make_busy("202", True)
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    invite = carol.invite("201")  # a direct call to a device in DND is refused ...
    await settle()
    assert carol.responses(486)
    h.b2bua.presence.set_dnd("201", False)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    h.b2bua.presence.set_dnd("201", True)  # ... but a call on it can be pulled from it
    pull = mobile.invite("*5")  # and to a device in Make Busy
    await settle()
    mobile.confirm(pull, mobile.responses(200)[-1])
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "202"


async def test_call_forward_always_to_a_group_rings_its_present_members() -> None:
    from sip_core.presence import ForwardKind, ForwardTarget, Presence
    from sip_core.prg.presence import GroupPresence

    config = config_with(HOME)
    groups = GroupPresence(lambda: config)
    presence = Presence(lambda: config, group_present=groups.present)
    presence.set_forward("401", "group:Home")
    assert presence.device("401").forward == ForwardTarget(ForwardKind.GROUP, "Home")
    assert presence.forwards("401") == ["201", "202", "301"]
    groups.set_present("Home", "202", False)
    assert presence.forwards("401") == ["201", "301"]
    with pytest.raises(ValueError, match="no group is called 'Nope'"):
        presence.set_forward("401", "group:Nope")
    with pytest.raises(ValueError, match="'group:<name>'"):
        presence.set_forward("401", "team:Home")
