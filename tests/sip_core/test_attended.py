"""Attended transfer: every phase of the operation, on the in-process harness with a ManualClock.

Carol (401) calls Alice's desk (201), which keys ``**301`` to consult Bob's desk (301). Carol is
held at the PBX: her dialog must never see a request (no re-INVITE) until the call ends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from sip_core.calls import TransferKind
from sip_core.dtmf import TelephoneEvent, build_telephone_event
from sip_core.events import TransferEnded, TransferStarted
from sip_core.features.attended import AttendedPhase, AttendedTransferOperation
from sip_core.message import Request
from sip_core.rtp import RtpPacket

from .test_b2bua_harness import Harness, Phone, sdp, sdp_port, settle
from .test_transfer import answered_call, dial, info_digits, invites, requests_to


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def operation(h: Harness) -> AttendedTransferOperation:
    op = h.only_call().operation
    assert isinstance(op, AttendedTransferOperation)
    return op


async def consulting(h: Harness) -> tuple[Phone, Phone, Phone, Request]:
    """Carol and the desk talk; the desk keys **301, takes the re-INVITE, Bob answers."""
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    call = h.only_call()
    assert call.media is not None
    call_port = call.media.b.local_rtp.port
    dial(desk, "**301#")
    await settle()
    (moving,) = invites(desk)
    assert sdp_port(moving.body) != call_port  # the consultation's own session
    assert operation(h).phase is AttendedPhase.MOVING
    desk.answer(moving, 200, sdp(6211))
    await settle()
    assert "ACK" in requests_to(desk)
    (ringing,) = invites(bob)
    assert "Alice" in (ringing.headers.get("From") or "")  # Bob sees the desk calling
    assert sdp_port(ringing.body) == operation(h).session.b.local_rtp.port
    bob.answer(ringing, 200, sdp(6301))
    await settle()
    assert operation(h).phase is AttendedPhase.TALKING
    return carol, desk, bob, ringing


async def press_on_consultation(h: Harness, keys: str) -> None:
    """The desk keys ``keys`` as RFC 4733 events on the consultation's session, and waits until
    the consultation's collector saw them (or gave up on them)."""
    op = operation(h)
    port = op.session.a.local_rtp.port
    events = {"*": 10, "#": 11, **{str(n): n for n in range(10)}}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sequence = 1
    try:
        for number, key in enumerate(keys):
            for end in (False, True, True):
                payload = build_telephone_event(TelephoneEvent(events[key], end, 10, 400))
                packet = RtpPacket(101, sequence, 1000 + 800 * number, 0x77, payload, not end)
                sequence += 1
                sock.sendto(packet.to_bytes(), ("127.0.0.1", port))
            await asyncio.sleep(0.05)
        for _ in range(300):
            if op.phase is not AttendedPhase.TALKING:
                break  # a code was taken
            if op.codes is not None and not op.codes.pending:
                break  # every key seen, none held back
            await asyncio.sleep(0.01)
    finally:
        sock.close()


async def test_hanging_up_hands_the_held_party_to_the_target(h: Harness) -> None:
    carol, desk, bob, ringing = await consulting(h)
    call = h.only_call()
    assert call.media is not None
    (started,) = h.events_of(TransferStarted)
    assert started.kind is TransferKind.ATTENDED
    assert call.media.held("b")  # Carol hears music: the desk's side is held
    desk.request("BYE")
    await settle()
    (moved,) = invites(bob)
    assert moved.call_id == ringing.call_id  # a re-INVITE in the consultation's dialog
    assert sdp_port(moved.body) != operation(h).session.b.local_rtp.port
    bob.answer(moved, 200, sdp(6301))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert call.operation is None
    assert not call.media.held("b")
    assert requests_to(carol) == []
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert (ended.record.transferring, ended.record.transferred, ended.record.to_device) == (
        "201",
        "401",
        "301",
    )
    bob.request("BYE")
    assert requests_to(carol) == ["BYE"]
    (history,) = h.b2bua.history.records()
    assert history.transfers == (ended.record,)


async def test_the_completion_code_hands_over_and_releases_the_desk(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    await press_on_consultation(h, "*3")
    await settle()
    (moved,) = invites(bob)
    bob.answer(moved, 200, sdp(6301))
    await settle()
    assert "BYE" in requests_to(desk)
    assert h.only_call().callee is not None
    assert h.only_call().callee.device == "301"  # type: ignore[union-attr]
    assert requests_to(carol) == []


async def test_the_cancel_code_puts_the_desk_back_with_the_held_party(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    call = h.only_call()
    assert call.media is not None
    await press_on_consultation(h, "*4")
    assert "BYE" in requests_to(bob)
    await settle()
    (back,) = invites(desk)
    assert sdp_port(back.body) == call.media.b.local_rtp.port
    desk.answer(back, 200, sdp(6201))
    await settle()
    assert call.operation is None
    assert not call.media.held("b")
    assert call.callee is not None
    assert call.callee.device == "201"
    (ended,) = h.events_of(TransferEnded)
    assert not ended.record.succeeded
    assert ended.record.reason == "cancelled"
    assert requests_to(carol) == []


async def test_other_keys_on_the_consultation_reach_the_target_not_the_held_party(
    h: Harness,
) -> None:
    carol, _desk, _bob, _ringing = await consulting(h)
    await press_on_consultation(h, "5")
    assert operation(h).phase is AttendedPhase.TALKING
    assert info_digits(carol) == []


@pytest.mark.parametrize("status", [486, 603, 480])
async def test_a_target_that_fails_returns_the_desk(h: Harness, status: int) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp(6211))
    await settle()
    bob.answer(invites(bob)[0], status)
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp(6201))
    await settle()
    assert h.only_call().operation is None
    (ended,) = h.events_of(TransferEnded)
    assert not ended.record.succeeded
    assert requests_to(carol) == []


async def test_no_answer_returns_the_desk(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp(6211))
    await settle()
    bob.answer(invites(bob)[0], 180)
    h.clock.advance(30)
    assert "CANCEL" in requests_to(bob)
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp(6201))
    await settle()
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.reason == "301 did not answer within 30 s"


async def test_the_target_hanging_up_returns_the_desk(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    bob.request("BYE")
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp(6201))
    await settle()
    assert h.only_call().active
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.reason == "301 hung up"
    assert requests_to(carol) == []


async def test_hanging_up_while_the_target_rings_hands_over_on_answer(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp(6211))
    await settle()
    (ringing,) = invites(bob)
    desk.request("BYE")
    assert h.only_call().active
    bob.answer(ringing, 200, sdp(6301))
    await settle()
    (moved,) = invites(bob)
    bob.answer(moved, 200, sdp(6301))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert requests_to(carol) == []


async def test_a_desk_that_refuses_the_move_stays_with_the_held_party(h: Harness) -> None:
    carol, desk = await answered_call(h)
    h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 488)
    await settle()
    await settle()
    (back,) = invites(desk)  # back to the call's session
    desk.answer(back, 200, sdp(6201))
    await settle()
    assert h.only_call().operation is None
    assert requests_to(carol) == []


async def test_a_wrong_number_or_a_second_transfer_is_refused(h: Harness) -> None:
    carol, desk = await answered_call(h)
    dial(desk, "**999#")
    assert h.only_call().operation is None
    assert invites(desk) == []
    h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    assert operation(h).phase is AttendedPhase.MOVING
    dial(carol, "*2301#")  # Carol's blind transfer code is refused meanwhile
    assert operation(h).phase is AttendedPhase.MOVING
    assert requests_to(carol) == []
