"""An attended transfer's consultation reads the transferring device's keys sent as SIP INFO just
as those sent as RFC 4733 events: ``*3`` completes, ``*4`` cancels, other keys go to the target
(never to the held party), and the held party's keys reach no one meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sip_core.events import TransferEnded
from sip_core.features.attended import AttendedPhase

from .test_attended import consulting, operation
from .test_b2bua_harness import Harness, settle
from .test_b2bua_harness import sdp as sdp_of
from .test_transfer import answered_call, dial, info_digits, invites, requests_to

NO_EVENTS_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6301 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


async def test_the_completion_code_by_info_hands_over(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    dial(desk, "*3")
    await settle()
    (moved,) = invites(bob)
    bob.answer(moved, 200, sdp_of(6301))
    await settle()
    assert "BYE" in requests_to(desk)
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert info_digits(carol) == []
    assert requests_to(carol) == []


async def test_the_cancel_code_by_info_returns_the_desk(h: Harness) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    call = h.only_call()
    assert call.media is not None
    dial(desk, "*4")
    assert "BYE" in requests_to(bob)
    await settle()
    (back,) = invites(desk)
    desk.answer(back, 200, sdp_of(6201))
    await settle()
    assert call.operation is None
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.reason == "cancelled"
    assert info_digits(carol) == []


async def test_other_info_keys_reach_the_target_by_info_when_it_takes_no_events(
    h: Harness,
) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    dial(desk, "**301#")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6211))
    await settle()
    bob.answer(invites(bob)[0], 200, NO_EVENTS_SDP)
    await settle()
    assert operation(h).phase is AttendedPhase.TALKING
    dial(desk, "5")
    await settle()
    assert info_digits(bob) == ["5"]
    assert info_digits(carol) == []
    assert operation(h).phase is AttendedPhase.TALKING


async def test_info_keys_never_reach_the_held_party_and_the_held_partys_go_nowhere(
    h: Harness,
) -> None:
    carol, desk, bob, _ringing = await consulting(h)
    dial(desk, "7")
    dial(carol, "9")
    await settle()
    assert info_digits(carol) == []
    assert info_digits(desk) == []
    assert info_digits(bob) == []  # bob takes telephone-events: the 7 went on its stream
    assert operation(h).phase is AttendedPhase.TALKING


async def test_keys_by_info_pass_through_again_once_the_consultation_is_over(
    h: Harness,
) -> None:
    carol, desk, _bob, _ringing = await consulting(h)
    dial(desk, "*4")
    await settle()
    desk.answer(invites(desk)[0], 200, sdp_of(6201))
    await settle()
    assert h.only_call().operation is None
    dial(desk, "8")
    await settle()
    assert info_digits(carol) == ["8"]
