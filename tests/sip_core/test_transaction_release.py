"""What transactions keep once their final response is out, and the timers that then end them.

A transaction outlives its final response by up to 64*T1 only to absorb retransmissions; it keeps
neither the parsed request nor the parsed responses for that (the TU keeps what it needs), and the
timers that end it (D, I, K, L, M) share the layer's expiry wheel: never early, at most T1 late.
ManualClock throughout; nothing is timed.
"""

from __future__ import annotations

import gc
import sys

import pytest

from sip_core.message import Request, Response, make_response
from sip_core.transaction import (
    Invite2xxRetransmitter,
    InviteServerTransaction,
    ServerTransaction,
    TransactionLayer,
    TransactionState,
    build_ack,
)
from sip_core.transport import Address, Source, TransportKind

from .test_transaction_client import Harness, outgoing, reply

US = Address("127.0.0.1", 5070)
CALLER = Source(TransportKind.UDP, Address("127.0.0.1", 5090), US, None)


@pytest.fixture
def h() -> Harness:
    return Harness()


def request_line_only(request: Request, original: Request) -> bool:
    return (
        request is not original
        and (request.method, str(request.uri)) == (original.method, str(original.uri))
        and len(request.headers) == 0
        and request.body == b""
    )


# -- client transactions -------------------------------------------------------------------------


def test_a_released_invite_keeps_its_request_until_the_answer_then_only_the_line(
    h: Harness,
) -> None:
    invite = outgoing("INVITE")
    txn = h.send(invite)
    txn.release_messages()
    h.feed(reply(invite, 180))
    assert txn.request is invite  # Timer A and a CANCEL may still need it
    assert txn.last_response is None
    ok = reply(invite, 200)
    h.feed(ok)
    assert txn.state is TransactionState.ACCEPTED
    assert request_line_only(txn.request, invite)
    assert txn.last_response is None
    assert not any(isinstance(obj, Response) for obj in gc.get_referents(txn))
    h.feed(ok)  # a retransmitted 2xx still goes to the TU, which ACKs it
    assert h.responses == [180, 200, 200]


def test_a_released_invite_cancelled_before_any_response_still_sends_its_cancel(
    h: Harness,
) -> None:
    invite = outgoing("INVITE")
    txn = h.send(invite)
    txn.release_messages()
    txn.cancel()
    h.clock.advance(0.5)  # Timer A: the whole INVITE again
    assert h.transport.methods == ["INVITE", "INVITE"]
    assert h.transport.requests[1][0].body == b"v=0"
    h.feed(reply(invite, 180))
    assert h.transport.methods[-1] == "CANCEL"
    cancel = h.transport.requests[-1][0]
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.routes == invite.routes
    h.feed(reply(invite, 487))
    assert h.transport.methods[-1] == "ACK"
    assert txn.state is TransactionState.COMPLETED
    assert request_line_only(txn.request, invite)
    assert txn.ack is not None
    h.feed(reply(invite, 487))  # the 487 again: our ACK again (Timer D still running)
    assert h.transport.methods[-2:] == ["ACK", "ACK"]


def test_an_unreleased_transaction_keeps_request_and_last_response(h: Harness) -> None:
    invite = outgoing("INVITE")
    txn = h.send(invite)
    ok = reply(invite, 200)
    h.feed(ok)
    assert txn.request is invite
    assert txn.last_response is ok


def test_releasing_after_the_final_response_lets_go_at_once(h: Harness) -> None:
    bye = outgoing("BYE")
    txn = h.send(bye)
    h.feed(reply(bye, 200))
    assert txn.request is bye
    assert txn.last_response is not None
    txn.release_messages()
    assert request_line_only(txn.request, bye)
    assert txn.last_response is None


def test_timer_m_ends_an_accepted_invite_at_the_next_t1_boundary(h: Harness) -> None:
    invite = outgoing("INVITE")
    h.clock.advance(0.2)
    txn = h.send(invite)
    h.feed(reply(invite, 200))  # Accepted at 0.2: Timer M due at 32.2, its bucket is 32.5
    h.clock.advance(32.19 - 0.2)
    assert txn.state is TransactionState.ACCEPTED
    h.clock.advance(0.02)
    assert txn.state is TransactionState.ACCEPTED
    h.clock.advance(0.3)
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_timer_d_and_k_end_completed_client_transactions(h: Harness) -> None:
    invite = outgoing("INVITE")
    bye = outgoing("BYE", branch="z9hG4bKbye1")
    invite_txn = h.send(invite)
    bye_txn = h.send(bye)
    h.feed(reply(invite, 486))
    h.feed(reply(bye, 200))
    h.clock.advance(4.99)
    assert bye_txn.state is TransactionState.COMPLETED
    h.clock.advance(0.51)  # Timer K = T4 (5 s), in its bucket
    assert bye_txn.state is TransactionState.TERMINATED
    h.clock.advance(31.99 - 5.5)
    assert invite_txn.state is TransactionState.COMPLETED
    h.clock.advance(0.51)  # Timer D = 32 s
    assert invite_txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_transactions_ending_in_one_bucket_share_one_clock_timer(h: Harness) -> None:
    for n in range(20):
        invite = outgoing("INVITE", branch=f"z9hG4bKm{n}")
        h.send(invite)
        h.feed(reply(invite, 200))
    assert h.layer.client_count == 20
    assert h.clock.pending == 1  # Timer A and B were cancelled by the 2xx; one bucket for M
    h.layer.close()
    assert h.clock.pending == 0


# -- server transactions -------------------------------------------------------------------------


def caller_invite() -> Request:
    request = outgoing("INVITE", branch="z9hG4bKcaller1")
    request.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKcaller1;rport")
    return request


class ServerHarness:
    def __init__(self, h: Harness, status: int) -> None:
        self.h = h
        self.status = status
        self.txns: list[ServerTransaction] = []
        h.layer.on_request = self.answer
        self.acks: list[Request] = []

    def answer(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        if txn is None:
            self.acks.append(request)
            return
        self.txns.append(txn)
        txn.respond(make_response(request, self.status, to_tag="us1"))


class BytesRecorder:
    """A transport that records responses (the client Recorder refuses them)."""

    def __init__(self) -> None:
        self.responses: list[Response] = []

    def send_request(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no requests here")

    def send_response(self, response: Response, source: Source | None = None) -> None:
        self.responses.append(response)


@pytest.mark.parametrize("status", [200, 486])
def test_an_invite_server_transaction_keeps_only_the_request_line_after_its_final(
    status: int,
) -> None:
    h = Harness()
    transport = BytesRecorder()
    h.layer = TransactionLayer(transport, h.clock, on_request=lambda *a: None)
    server = ServerHarness(h, status)
    invite = caller_invite()
    h.layer.receive(invite, CALLER)
    (txn,) = server.txns
    assert isinstance(txn, InviteServerTransaction)
    assert request_line_only(txn.request, invite)
    last = txn.last_response
    assert last is not None
    assert last.status == status
    h.layer.receive(invite, CALLER)  # a retransmission: absorbed (2xx) or answered again
    assert len(server.txns) == 1
    assert len(transport.responses) == (1 if status == 200 else 2)
    if status >= 300:
        h.layer.receive(build_ack(invite, last), CALLER)
        assert txn.state is TransactionState.CONFIRMED
        h.clock.advance(5.0)  # Timer I
        assert txn.state is TransactionState.TERMINATED
    else:
        h.clock.advance(32.0)  # Timer L
        assert txn.state is TransactionState.TERMINATED


def test_a_stopped_2xx_retransmitter_is_freed_without_the_collector(h: Harness) -> None:
    h.layer = TransactionLayer(BytesRecorder(), h.clock, on_request=lambda *a: None)
    ServerHarness(h, 200)
    h.layer.receive(caller_invite(), CALLER)
    assert h.layer.pending_2xx_count == 1
    (retransmitter,) = h.layer._pending_2xx.values()
    assert isinstance(retransmitter, Invite2xxRetransmitter)
    ack = outgoing("ACK", branch="z9hG4bKack1")
    ack.headers.set("To", "<sip:bob@127.0.0.1>;tag=us1")
    ack.headers.set("CSeq", "17 ACK")
    h.layer.receive(ack, CALLER)
    assert h.layer.pending_2xx_count == 0
    assert retransmitter.on_done is None
    assert retransmitter.on_timeout is None
    # Only this frame refers to it now: no cycle waits for the garbage collector.
    assert sys.getrefcount(retransmitter) == 2


def test_timer_b_and_f_give_up_on_the_wheel_not_before_64_t1(h: Harness) -> None:
    h.clock.advance(0.1)
    h.send(outgoing("INVITE"))
    h.send(outgoing("OPTIONS", branch="z9hG4bKopt1"))
    h.clock.advance(32.09)  # 32.19: due at 32.1, their bucket is 32.5
    assert h.timeouts == 0
    h.clock.advance(0.31)
    assert h.timeouts == 2
    h.assert_clean()


def test_a_provisional_takes_the_invite_off_timer_b(h: Harness) -> None:
    invite = outgoing("INVITE")
    txn = h.send(invite)
    h.feed(reply(invite, 180))
    h.clock.advance(600)
    assert h.timeouts == 0
    assert txn.state is TransactionState.PROCEEDING
    assert h.clock.pending == 0  # no timer at all while the callee rings
    txn.cancel()  # §9.1: 64*T1 from the CANCEL for a final response
    assert h.transport.methods[-1] == "CANCEL"
    h.clock.advance(31.9)
    assert h.timeouts == 0
    h.clock.advance(0.2)
    assert h.timeouts == 1
    assert txn.state is TransactionState.TERMINATED


class FailingHarness(ServerHarness):
    """Answers every INVITE with a failure and notes when its transaction reports Timer H."""

    def __init__(self, h: Harness) -> None:
        super().__init__(h, 486)
        self.failed = 0

    def answer(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        super().answer(request, txn, source)
        if txn is not None:
            txn.on_timeout = self.on_timeout

    def on_timeout(self) -> None:
        self.failed += 1


def test_timer_h_on_the_wheel_reports_a_missing_ack() -> None:
    h = Harness()
    h.layer = TransactionLayer(BytesRecorder(), h.clock, on_request=lambda *a: None)
    server = FailingHarness(h)
    h.layer.receive(caller_invite(), CALLER)
    (txn,) = server.txns
    h.clock.advance(31.99)
    assert server.failed == 0
    assert txn.state is TransactionState.COMPLETED
    h.clock.advance(0.51)
    assert server.failed == 1
    assert txn.state is TransactionState.TERMINATED
    assert h.layer.server_count == 0
    assert h.clock.pending == 0
