"""An ended call leaves nothing of itself behind, yet its late messages are still handled.

The transactions of a call outlive it by up to 64*T1 (Timers L and M); they must not keep the
call's object graph alive (at a few hundred calls a second that is what the garbage collector
would spend its time on), and RFC 3261/6026 still apply to what arrives in that time: a
retransmitted 2xx of the dialog we confirmed is ACKed again, a 2xx from a fork we gave up is ACKed
and BYEd, a retransmitted INVITE is absorbed by its server transaction.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sip_core.calls import Call, CallOutcome, Leg
from sip_core.dialog import Dialog
from sip_core.media import MediaSession
from sip_core.message import Request
from sip_core.transaction import build_ack

from .test_b2bua_harness import Harness, Phone, connect, ring, sdp


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def sent(phone: Phone, method: str) -> list[Request]:
    return phone.requests(method)


def traces(call: Call) -> tuple[str, frozenset[str]]:
    """How to recognise the call's objects later without holding them: its id, its dialogs'."""
    dialogs = frozenset(
        leg.dialog.call_id for leg in (*call.legs(), *call.branches) if leg.dialog is not None
    )
    return call.id, dialogs


def assert_collected(trace: tuple[str, frozenset[str]]) -> None:
    """After a collection, no Call, Leg, Dialog or relay session of that call is alive."""
    call_id, dialogs = trace
    assert len(dialogs) >= 2
    gc.collect()
    alive = [
        obj
        for obj in gc.get_objects()
        if (isinstance(obj, Call) and obj.id == call_id)
        or (isinstance(obj, Leg) and obj.call.id == call_id)
        or (isinstance(obj, Dialog) and obj.call_id in dialogs)
        or (isinstance(obj, MediaSession) and obj.call_id == call_id)
    ]
    assert alive == []


async def test_an_ended_call_is_collectable_and_a_retransmitted_2xx_is_acked_again(
    h: Harness,
) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite, offered = await connect(h, alice, carol, "400")
    trace = traces(h.only_call())
    alice.request("BYE")
    (bye,) = sent(carol, "BYE")
    carol.reply(bye, 200)
    assert h.b2bua.calls() == []
    # Timers M (our INVITE to carol), K (our BYE) and L (alice's INVITE) are still running ...
    assert h.layer.client_count == 2
    assert h.layer.server_count >= 1
    # ... but nothing of the call is kept alive by them.
    assert_collected(trace)

    # Carol did not get our ACK: her 200 comes again, and the same ACK goes out again.
    (ack,) = sent(carol, "ACK")
    carol.answer(offered, 200, sdp(6401))
    first, again = sent(carol, "ACK")
    assert again.to_bytes() == first.to_bytes() == ack.to_bytes()
    assert len(sent(carol, "BYE")) == 1  # the dialog was ended once; no second BYE

    # Alice's INVITE retransmitted: absorbed by its transaction (Accepted), no new call.
    responses = len(alice.responses())
    alice.send(invite)
    assert len(alice.responses()) == responses
    assert h.b2bua.calls() == []
    (record,) = h.b2bua.history.records()
    assert record.outcome is CallOutcome.ANSWERED

    h.clock.advance(32.5)  # Timers L and M, on the expiry wheel (at most T1 late)
    assert h.layer.client_count == 0


async def test_a_fork_answering_after_the_call_ended_is_acked_and_byed(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    invite = await ring(h, carol, "300")
    to_desk, to_mobile = desk.last_request("INVITE"), mobile.last_request("INVITE")
    desk.answer(to_desk, 180)
    mobile.answer(to_mobile, 200, sdp(6302))
    carol.confirm(invite, carol.responses(200)[-1])
    (cancel,) = sent(desk, "CANCEL")
    trace = traces(h.only_call())
    carol.request("BYE")
    mobile.reply(mobile.last_request("BYE"), 200)
    assert h.b2bua.calls() == []
    assert_collected(trace)

    # The desk answered as our CANCEL reached it: its 200 is ACKed and BYEd, long after the call.
    desk.reply(cancel, 200)
    desk.answer(to_desk, 200, sdp(6301))
    (ack,) = sent(desk, "ACK")
    (bye,) = sent(desk, "BYE")
    assert ack.call_id == bye.call_id == to_desk.call_id
    assert ack.cseq.number == to_desk.cseq.number
    assert bye.to.tag == ack.to.tag == desk.dialogs[to_desk.call_id].local_tag
    assert ack.uri == bye.uri  # the desk's Contact in its 200
    # and a 2xx to the mobile again (lost ACK) gets the ACK, not a BYE
    mobile.answer(to_mobile, 200, sdp(6302))
    assert len(sent(mobile, "ACK")) == 2
    assert len(sent(mobile, "BYE")) == 1


async def test_an_unanswered_call_is_collectable_and_its_487_still_acked(h: Harness) -> None:
    alice = h.phone("201", 5201)
    carol = h.phone("401", 5401)
    invite = await ring(h, alice, "400")
    offered = carol.last_request("INVITE")
    carol.answer(offered, 180)
    trace = traces(h.only_call())
    alice.cancel(invite)
    (cancel,) = sent(carol, "CANCEL")
    assert h.b2bua.calls() == []
    assert_collected(trace)
    carol.reply(cancel, 200)
    carol.answer(offered, 487)
    assert len(sent(carol, "ACK")) == 1  # the transaction's own ACK of a non-2xx
    assert sent(carol, "BYE") == []
    final = [r for r in alice.responses() if r.cseq.method == "INVITE"][-1]
    assert final.status == 487
    # Alice's ACK for the 487 (same branch as her INVITE) is absorbed by her INVITE transaction,
    # and so is a retransmission of her INVITE.
    ack = build_ack(invite, final)
    alice.send(ack)
    alice.send(invite)
    assert [r.status for r in alice.responses() if r.cseq.method == "INVITE"][-1] == 487
    assert h.b2bua.calls() == []
