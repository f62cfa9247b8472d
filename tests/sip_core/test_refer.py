"""REFER from a phone in a call (RFC 3515, with Replaces from RFC 3891), on the harness.

Carol (401) calls Alice's desk (201); the desk's own transfer button sends REFER. The PBX
answers it itself: 202, NOTIFYs with message/sipfrag in the desk's dialog, and the transfer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from sip_core.calls import TransferKind
from sip_core.events import TransferEnded
from sip_core.message import Request, Response

from .test_b2bua_harness import DOMAIN, Harness, Phone, sdp, sdp_port, settle
from .test_transfer import answered_call, invites, requests_to


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def refer(phone: Phone, refer_to: str, *extra: tuple[str, str]) -> Request:
    headers = (("Refer-To", refer_to), *extra) if refer_to else extra
    return phone.request("REFER", extra=headers)


def answer_to(phone: Phone, request: Request) -> Response:
    found = [
        m
        for m in phone.inbox()
        if isinstance(m, Response)
        and m.cseq.method == request.method
        and m.cseq.number == request.cseq.number
    ]
    assert found, f"no response to {request.method}"
    return found[-1]


def notifies(phone: Phone) -> list[tuple[str, str, str]]:
    """(sipfrag status line, Subscription-State, Event) of each NOTIFY transaction, in order."""
    seen: dict[str, tuple[str, str, str]] = {}
    for message in phone.inbox():
        if isinstance(message, Request) and message.method == "NOTIFY":
            assert message.headers.get("Content-Type") == "message/sipfrag;version=2.0"
            seen.setdefault(
                message.top_via.branch or "",
                (
                    message.body.decode().strip(),
                    message.headers.get("Subscription-State") or "",
                    message.headers.get("Event") or "",
                ),
            )
    return list(seen.values())


async def test_a_blind_refer_is_a_blind_transfer_with_its_notifies(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    request = refer(desk, f"<sip:301@{DOMAIN}>", ("Referred-By", f"<sip:201@{DOMAIN}>"))
    assert answer_to(desk, request).status == 202
    event = f"refer;id={request.cseq.number}"
    assert notifies(desk) == [("SIP/2.0 100 Trying", "active;expires=60", event)]
    (ringing,) = invites(bob)
    assert "BYE" not in requests_to(desk)  # the desk keeps its dialog until the target answers
    bob.answer(ringing, 200, sdp(6301))
    await settle()
    assert notifies(desk)[-1] == ("SIP/2.0 200 OK", "terminated;reason=noresource", event)
    assert "BYE" in requests_to(desk)
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "301"
    assert requests_to(carol) == []
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.succeeded
    assert ended.record.referred_by == f"<sip:201@{DOMAIN}>"


async def test_a_failed_blind_refer_leaves_the_caller_with_the_phone(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    refer(desk, f"<sip:301@{DOMAIN}>")
    bob.answer(invites(bob)[0], 486)
    assert notifies(desk)[-1][0] == "SIP/2.0 486 Busy Here"
    assert notifies(desk)[-1][1].startswith("terminated")
    call = h.only_call()
    assert call.operation is None
    assert call.callee is not None
    assert call.callee.device == "201"
    assert invites(desk) == []  # no recall: the desk never left
    assert requests_to(carol) == []


async def test_the_phone_hanging_up_after_refer_lets_the_transfer_go_on(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    refer(desk, f"<sip:301@{DOMAIN}>")
    desk.request("BYE")
    assert h.only_call().active
    bob.answer(invites(bob)[0], 200, sdp(6301))
    await settle()
    assert h.only_call().callee is not None
    assert h.only_call().callee.device == "301"  # type: ignore[union-attr]


async def test_refer_sub_false_gets_no_notify(h: Harness) -> None:
    _carol, desk = await answered_call(h)
    h.phone("301", 5301)
    request = refer(desk, f"<sip:301@{DOMAIN}>", ("Refer-Sub", "false"))
    response = answer_to(desk, request)
    assert response.status == 202
    assert response.headers.get("Refer-Sub") == "false"
    assert notifies(desk) == []


@pytest.mark.parametrize(
    ("refer_to", "status"),
    [
        ("<sip:301@example.com>", 403),  # another domain
        (f"<sip:999@{DOMAIN}>", 403),  # nobody here
        ("<tel:+15551234>", 403),
        ("", 400),
        ("<sip:bad uri", 400),
    ],
)
async def test_bad_refers_are_refused_and_the_call_goes_on(
    h: Harness, refer_to: str, status: int
) -> None:
    carol, desk = await answered_call(h)
    request = refer(desk, refer_to)
    assert answer_to(desk, request).status == status
    assert h.only_call().operation is None
    assert notifies(desk) == []
    assert requests_to(carol) == []


async def test_refer_while_an_operation_runs_gets_491(h: Harness) -> None:
    carol, desk = await answered_call(h)
    h.phone("301", 5301)
    h.b2bua.transfer(h.only_call().id, "301", device="401")
    request = refer(desk, f"<sip:301@{DOMAIN}>")
    assert answer_to(desk, request).status in (481, 491)  # 481 once the desk was released
    _ = carol


async def two_calls(h: Harness) -> tuple[Phone, Phone, Phone, Request]:
    """Carol talks to the desk (call 1); the desk calls Bob (call 2) and Bob answers."""
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    second = desk.invite("301")
    await settle()
    bob.answer(invites(bob)[0], 200, sdp(6301))
    desk.confirm(second, [r for r in desk.responses(200) if r.call_id == second.call_id][-1])
    desk.seen = len(desk.inbox())
    bob.seen = len(bob.inbox())
    return carol, desk, bob, second


def replaces_for(desk: Phone, invite: Request) -> str:
    dialog = desk.dialogs[invite.call_id]
    value = f"{invite.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
    return quote(value, safe="")


async def test_refer_with_replaces_joins_the_two_far_parties(h: Harness) -> None:
    carol, desk, bob, second = await two_calls(h)
    assert len(h.b2bua.calls()) == 2
    first_call = next(c for c in h.b2bua.calls() if c.caller and c.caller.device == "401")
    assert first_call.media is not None
    # The REFER goes in the first dialog (with Carol) and names the second (with Bob).
    first_dialog = next(d for k, d in desk.dialogs.items() if k != second.call_id)
    request = desk.in_dialog_request(
        first_dialog,
        "REFER",
        extra=(("Refer-To", f"<sip:301@{DOMAIN}?Replaces={replaces_for(desk, second)}>"),),
    )
    desk.send(request)
    assert answer_to(desk, request).status == 202
    await settle()
    (moved,) = invites(bob)  # a re-INVITE in Bob's dialog, to the first call's relay
    assert moved.to.tag
    assert sdp_port(moved.body) != first_call.media.a.local_rtp.port
    bob.answer(moved, 200, sdp(6301))
    await settle()
    assert notifies(desk)[-1][0] == "SIP/2.0 200 OK"
    byes = [m for m in desk.inbox() if isinstance(m, Request) and m.method == "BYE"]
    assert {bye.call_id for bye in byes} == {request.call_id, second.call_id}
    (call,) = h.b2bua.calls()
    assert call is first_call
    assert call.callee is not None
    assert call.callee.device == "301"
    assert requests_to(carol) == []
    (ended,) = h.events_of(TransferEnded)
    assert ended.record.kind is TransferKind.ATTENDED
    assert ended.record.succeeded
    # The call goes on between Carol and Bob: Bob hangs up, Carol gets the BYE.
    bob.request("BYE")
    assert requests_to(carol) == ["BYE"]


async def test_replaces_naming_another_users_dialog_is_refused(h: Harness) -> None:
    carol, desk = await answered_call(h)
    bob = h.phone("301", 5301)
    other = h.phone("302", 5302)
    bobs_call = bob.invite("302")
    await settle()
    other.answer(invites(other)[0], 200, sdp(6302))
    bob.confirm(bobs_call, bob.responses(200)[-1])
    value = quote(
        f"{bobs_call.call_id};to-tag={bob.dialogs[bobs_call.call_id].remote_tag};"
        f"from-tag={bob.dialogs[bobs_call.call_id].local_tag}",
        safe="",
    )
    first = next(iter(desk.dialogs.values()))
    request = desk.in_dialog_request(
        first, "REFER", extra=(("Refer-To", f"<sip:302@{DOMAIN}?Replaces={value}>"),)
    )
    desk.send(request)
    assert answer_to(desk, request).status == 403
    assert len(h.b2bua.calls()) == 2
    assert requests_to(carol) == []
