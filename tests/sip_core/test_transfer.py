"""Blind transfer: every state of the operation, on the in-process harness with a ManualClock.

Carol (401) calls Alice (200) and Alice's desk (201) answers; Alice passes Carol on. Carol's dialog
must never see a request from the PBX while she is passed on (no re-INVITE): only the BYE at the
end of a call that could not be saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from sip_core.calls import CallOutcome, CallState, LegRole, TransferKind
from sip_core.config import TransferSettings
from sip_core.events import DtmfReceived, TransferEnded, TransferStarted
from sip_core.features import FlipInProgress
from sip_core.features.transfer import (
    CallNotTransferable,
    TransferCallNotFound,
    TransferInProgress,
    TransferPhase,
    UnknownTransferTarget,
)
from sip_core.message import Request

from .test_b2bua_harness import Harness, Phone, make_config, sdp, sdp_port, settle


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    """The harness, closed while the loop still runs (playbacks resolve their futures on it)."""
    harness = Harness()
    yield harness
    harness.close()


async def answered_call(h: Harness) -> tuple[Phone, Phone]:
    """Carol (401) calls Alice's desk (201) directly; it answers."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    desk.seen = len(desk.inbox())
    carol.seen = len(carol.inbox())
    return carol, desk


def dial(phone: Phone, keys: str) -> None:
    for key in keys:
        phone.request(
            "INFO",
            body=f"Signal={key}\r\nDuration=160\r\n".encode(),
            content_type="application/dtmf-relay",
        )


def invites(phone: Phone) -> list[Request]:
    return [m for m in phone.new() if isinstance(m, Request) and m.method == "INVITE"]


def requests_to(phone: Phone) -> list[str]:
    """Methods of the new requests, each transaction once (retransmissions left out)."""
    seen: dict[str, str] = {}
    for message in phone.new():
        if isinstance(message, Request):
            seen.setdefault(message.top_via.branch or "", message.method)
    return list(seen.values())


def info_digits(phone: Phone) -> list[str]:
    """Keys passed on to ``phone`` by INFO, each transaction once."""
    seen: dict[str, str] = {}
    for message in phone.new():
        if isinstance(message, Request) and message.method == "INFO":
            signal = message.body.decode().split("\r\n")[0]
            seen.setdefault(message.top_via.branch or "", signal.removeprefix("Signal="))
    return list(seen.values())


async def test_blind_transfer_releases_the_presser_and_rings_the_target(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    call = h.only_call()
    assert call.media is not None
    old_port = call.media.b.local_rtp.port
    dial(desk, "*2300#")
    # The desk is released at once; Bob's devices both ring, showing Carol calling.
    assert requests_to(desk) == ["BYE"]
    (ringing,) = invites(bob)
    (ringing_mobile,) = invites(bob_mobile)
    assert "Carol" in (ringing.headers.get("From") or "")
    assert sdp_port(ringing.body) != old_port  # a spare of its own, as for a flip
    started = h.events_of(TransferStarted)
    assert started == [TransferStarted(call.id, TransferKind.BLIND, "201", "401", "300")]
    op = call.operation
    assert op is not None
    assert op.kind == "transfer"
    view = op.view()
    assert view is not None
    assert view.from_device == "201"
    assert view.to_device == "300"
    # Carol's digits never reached anyone, and her dialog sees nothing.
    assert [e.digit for e in h.events_of(DtmfReceived)] == list("*2300#")
    bob.answer(ringing, 200, sdp(6301))
    await settle()
    bob_mobile.answer(ringing_mobile, 487)
    assert call.callee is not None
    assert call.callee.device == "301"
    assert call.callee.role is LegRole.CALLEE
    assert call.operation is None
    assert call.state is CallState.TALKING
    assert requests_to(carol) == []
    (ended,) = h.events_of(TransferEnded)
    record = ended.record
    assert record.succeeded
    assert record.to_device == "301"
    assert (record.transferring, record.transferred, record.target) == ("201", "401", "300")
    assert record.recalled is None
    assert call.transfers == [record]
    # The call goes on: Bob hangs up, the call ends with the transfer in its record.
    bob.request("BYE")
    assert requests_to(carol) == ["BYE"]
    (history,) = h.b2bua.history.records()
    assert history.transfers == (record,)
    assert history.callee_device == "301"


async def test_the_inter_digit_pause_ends_the_number(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "*2301")
    assert invites(bob) == []
    h.clock.advance(2)
    assert len(invites(bob)) == 1
    assert requests_to(desk) == ["BYE"]


async def test_a_wrong_number_leaves_the_call_as_it_was(h: Harness) -> None:
    carol, desk = await answered_call(h)
    dial(desk, "*2999#")
    call = h.only_call()
    assert call.operation is None
    assert requests_to(desk) == []
    assert requests_to(carol) == []
    assert h.events_of(TransferStarted) == []
    assert call.callee is not None
    assert call.callee.device == "201"


async def test_an_incomplete_number_leaves_the_call_as_it_was(h: Harness) -> None:
    carol, desk = await answered_call(h)
    dial(desk, "*2")
    h.clock.advance(2)
    dial(desk, "*2#")
    assert h.only_call().operation is None
    assert requests_to(desk) == []
    assert requests_to(carol) == []
    assert h.events_of(TransferStarted) == []


async def test_other_digits_still_reach_the_far_end(h: Harness) -> None:
    carol, desk = await answered_call(h)
    dial(desk, "5*9")
    h.clock.advance(2)
    assert info_digits(carol) == ["5", "*", "9"]


async def test_no_answer_recalls_the_transferring_device(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    h.config = dataclasses.replace(h.config, transfer=TransferSettings(timeout=20))
    dial(desk, "*2301#")
    (ringing,) = invites(bob)
    bob.answer(ringing, 180)
    call = h.only_call()
    h.clock.advance(19)
    assert requests_to(bob) == []
    h.clock.advance(1)
    assert requests_to(bob) == ["CANCEL"]
    op = call.operation
    assert op is not None
    assert getattr(op, "phase", None) is TransferPhase.RECALLING
    bob.answer(ringing, 487)
    messages = [m for m in desk.new() if isinstance(m, Request)]
    recall = [m for m in messages if m.method == "INVITE"]
    assert len(recall) == 1
    assert "Carol" in (recall[0].headers.get("From") or "")  # the desk sees Carol again
    desk.answer(recall[0], 200, sdp(6211))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "201"
    assert call.operation is None
    assert call.active
    (ended,) = h.events_of(TransferEnded)
    record = ended.record
    assert not record.succeeded
    assert record.recalled == "201"
    assert "301 did not answer within 20 s" in record.reason
    assert requests_to(carol) == []


async def test_busy_target_recalls_at_once(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "*2301#")
    (ringing,) = invites(bob)
    bob.answer(ringing, 486)
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.recalled == "201"
    assert "301 is busy" in ended.record.reason


async def test_unregistered_target_recalls_at_once(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    dial(desk, "*2300#")  # Bob exists, but nothing of his is registered
    (recall,) = invites(desk)
    desk.answer(recall, 200, sdp(6211))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert "300 has no device registered" in ended.record.reason


async def test_failed_recall_ends_the_call_with_both_reasons(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    h.config = dataclasses.replace(h.config, transfer=TransferSettings(recall_timeout=15))
    dial(desk, "*2301#")
    (ringing,) = invites(bob)
    bob.answer(ringing, 603)
    (recall,) = invites(desk)
    desk.answer(recall, 180)
    h.clock.advance(15)
    # (the first BYE, unanswered here, is being retransmitted meanwhile)
    assert [m for m in requests_to(desk) if m != "BYE"] == ["CANCEL"]
    assert requests_to(carol) == ["BYE"]
    (history,) = h.b2bua.history.records()
    assert history.outcome is CallOutcome.ANSWERED
    assert "301 declined" in history.reason
    assert "recall failed: 201 did not answer within 15 s" in history.reason
    (record,) = history.transfers
    assert not record.succeeded
    assert record.recalled is None


async def test_the_transferred_party_hanging_up_ends_it_all(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "*2301#")
    (ringing,) = invites(bob)
    bob.answer(ringing, 180)
    carol.request("BYE")
    assert requests_to(bob) == ["CANCEL"]
    assert h.b2bua.calls() == []
    (history,) = h.b2bua.history.records()
    assert history.transfers[0].reason == "the call ended"


async def test_a_target_ringing_off_does_not_end_the_call(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    dial(desk, "*2300#")
    (ringing,) = invites(bob)
    (ringing_mobile,) = invites(bob_mobile)
    bob.answer(ringing, 480)
    assert h.only_call().active
    bob_mobile.answer(ringing_mobile, 200, sdp(6302))
    await settle()
    assert h.only_call().callee is not None
    assert h.only_call().callee.device == "302"  # type: ignore[union-attr]
    assert requests_to(carol) == []


async def test_nothing_else_while_a_transfer_runs(h: Harness) -> None:
    carol, desk = await answered_call(h)
    h.phone("202", 5202)
    bob = h.phone("301", 5301)
    dial(desk, "*2301#")
    call = h.only_call()
    with pytest.raises(FlipInProgress):
        h.b2bua.flip(call.id)
    with pytest.raises(TransferInProgress):
        h.b2bua.transfer(call.id, "300", device="401")
    # Carol's re-INVITE cannot cross: her other side is not there.
    carol.request("INVITE", body=sdp(6401, direction="sendonly"))
    responses = [m for m in carol.new() if not isinstance(m, Request)]
    assert [r.status for r in responses if r.cseq.method == "INVITE"] == [491]
    assert len(invites(bob)) == 1


async def test_the_new_party_may_flip_it_afterwards(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    dial(desk, "*2301#")
    bob.answer(invites(bob)[0], 200, sdp(6301))
    await settle()
    call = h.only_call()
    future = h.b2bua.flip(call.id, "302")
    (ringing,) = invites(bob_mobile)
    bob_mobile.answer(ringing, 200, sdp(6302))
    await settle()
    assert (await future).succeeded
    assert call.callee is not None
    assert call.callee.device == "302"


async def test_the_action_transfers_a_call_and_refuses_clearly(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    call = h.only_call()
    with pytest.raises(TransferCallNotFound):
        h.b2bua.transfer("nope", "301")
    with pytest.raises(UnknownTransferTarget):
        h.b2bua.transfer(call.id, "999")
    with pytest.raises(UnknownTransferTarget):
        h.b2bua.transfer(call.id, "")
    with pytest.raises(CallNotTransferable):
        h.b2bua.transfer(call.id, "301", device="202")
    future = h.b2bua.transfer(call.id, "301", device="401")  # Carol leaves, the desk goes on
    assert requests_to(carol) == ["BYE"]
    bob.answer(invites(bob)[0], 200, sdp(6301))
    await settle()
    record = await future
    assert record.succeeded
    assert record.transferring == "401"
    assert record.transferred == "201"
    assert call.caller is not None
    assert call.caller.device == "301"
    assert requests_to(desk) == []


async def test_an_unanswered_call_cannot_be_transferred(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    carol.invite("201")
    await settle()
    with pytest.raises(CallNotTransferable):
        h.b2bua.transfer(h.only_call().id, "301")


async def test_the_voipnow_preset_uses_hash_one(h: Harness) -> None:
    h.config = dataclasses.replace(
        make_config(), transfer=TransferSettings(blind_code="#1", attended_code="*2")
    )
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "*7")  # not a code with this preset: passed on
    h.clock.advance(2)
    assert info_digits(carol) == ["*", "7"]
    assert invites(bob) == []
    assert requests_to(desk) == []
    dial(desk, "#1301#")
    assert len(invites(bob)) == 1
    assert requests_to(desk) == ["BYE"]
    assert requests_to(carol) == []
