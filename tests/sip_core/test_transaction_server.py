"""Server transactions (RFC 3261 §17.2, RFC 6026), the 2xx retransmitter and request matching.

Time is a ManualClock, the transport a recorder: every test drives the timers by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from sip_core.clock import ManualClock
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transaction import (
    Invite2xxRetransmitter,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
    TransactionState,
)
from sip_core.transport import Address, Source, TransportKind

UAC = Address("127.0.0.1", 5070)
US = Address("127.0.0.1", 5060)
UDP = Source(TransportKind.UDP, UAC, US, None)
TCP = Source(TransportKind.TCP, UAC, US, 7)


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKserver1",
    sent_by: str = "127.0.0.1:5070",
    cseq: int = 1,
    cseq_method: str | None = None,
    call_id: str = "call-1@127.0.0.1",
    to_tag: str | None = None,
    transport: str = "UDP",
) -> Request:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=alice1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


@dataclass
class Recorder:
    """A transport that records what it is asked to send, and can be told to fail."""

    responses: list[tuple[Response, Source | None]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    fail: Exception | None = None

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: object = None,
    ) -> None:
        self.requests.append(request)

    def send_response(self, response: Response, source: Source | None = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.responses.append((response, source))

    @property
    def statuses(self) -> list[int]:
        return [r.status for r, _ in self.responses]

    def clear(self) -> None:
        self.responses.clear()


@dataclass
class Tu:
    """A transaction user that records what it is given and answers as told."""

    seen: list[tuple[Request, ServerTransaction | None]] = field(default_factory=list)
    answer: int | None = None
    raise_error: bool = False

    def __call__(self, req: Request, txn: ServerTransaction | None, source: Source) -> None:
        self.seen.append((req, txn))
        if self.raise_error:
            raise RuntimeError("TU bug")
        if txn is not None and self.answer is not None:
            txn.respond(make_response(req, self.answer, to_tag="bob1"))

    @property
    def methods(self) -> list[str]:
        return [r.method for r, _ in self.seen]


class Harness:
    def __init__(self, timers: Timers | None = None) -> None:
        self.clock = ManualClock(start=0.0)
        self.transport = Recorder()
        self.tu = Tu()
        self.layer = TransactionLayer(
            self.transport, self.clock, on_request=self.tu, timers=timers or Timers()
        )

    def receive(self, message: Request, source: Source = UDP) -> None:
        self.layer.receive(message, source)

    def txn(self, index: int = -1) -> ServerTransaction:
        txn = self.tu.seen[index][1]
        assert txn is not None
        return txn

    def assert_clean(self) -> None:
        assert self.layer.server_count == 0
        assert self.layer.client_count == 0
        assert self.layer.pending_2xx_count == 0
        assert self.clock.pending == 0


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- non-INVITE ---------------------------------------------------------------------------------


def test_non_invite_retransmissions_are_absorbed_and_answered_with_the_last_response(
    h: Harness,
) -> None:
    options = request("OPTIONS")
    h.receive(options)
    assert h.tu.methods == ["OPTIONS"]
    txn = h.txn()
    assert isinstance(txn, NonInviteServerTransaction)
    assert txn.state is TransactionState.TRYING
    h.receive(request("OPTIONS"))  # retransmission in Trying: nothing to answer with yet
    assert h.transport.responses == []
    txn.respond(make_response(options, 100))
    assert txn.state is TransactionState.PROCEEDING
    h.receive(request("OPTIONS"))
    assert h.transport.statuses == [100, 100]
    txn.respond(make_response(options, 200, to_tag="b"))
    assert txn.state is TransactionState.COMPLETED
    for _ in range(3):
        h.receive(request("OPTIONS"))
    assert h.transport.statuses == [100, 100, 200, 200, 200, 200]
    assert h.tu.methods == ["OPTIONS"]  # the TU saw it once
    assert h.layer.server_count == 1
    h.clock.advance(31.9)
    assert h.layer.server_count == 1
    h.clock.advance(0.1)  # Timer J = 64*T1
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()
    h.receive(request("OPTIONS"))  # after Timer J it is a new request again
    assert h.tu.methods == ["OPTIONS", "OPTIONS"]


def test_non_invite_over_tcp_ends_at_once_without_timers(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request("REGISTER", transport="TCP"), TCP)
    assert h.transport.statuses == [200]
    assert h.transport.responses[0][1] is TCP
    assert h.txn().state is TransactionState.TERMINATED
    h.assert_clean()


def test_a_second_final_response_is_dropped(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request("REGISTER"))
    h.txn().respond(make_response(h.txn().request, 500))
    assert h.transport.statuses == [200]


def test_tu_exception_is_logged_and_answered_500(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.tu.raise_error = True
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.receive(request("OPTIONS"))
    assert "Error handling OPTIONS" in caplog.text
    assert h.transport.statuses == [500]
    h.tu.raise_error = False
    h.tu.answer = 200
    h.receive(request("OPTIONS", branch="z9hG4bKother"))
    assert h.transport.statuses == [500, 200]


def test_unanswered_non_invite_is_dropped_after_64_t1(h: Harness) -> None:
    h.receive(request("BYE"))
    assert h.layer.server_count == 1
    h.clock.advance(32)
    assert h.txn().state is TransactionState.TERMINATED
    h.assert_clean()
    h.txn().respond(make_response(h.txn().request, 200))  # too late: dropped, no error
    assert h.transport.responses == []


def test_transport_error_on_response_terminates_and_informs_tu(h: Harness) -> None:
    h.receive(request("OPTIONS"))
    failures: list[str] = []
    h.txn().on_timeout = lambda: failures.append("failed")
    h.transport.fail = OSError("unreachable")
    h.txn().respond(make_response(h.txn().request, 200))
    assert failures == ["failed"]
    h.assert_clean()


# -- INVITE: provisional and non-2xx ------------------------------------------------------------


def test_invite_sends_100_trying_when_tu_is_silent_for_200ms(h: Harness) -> None:
    h.receive(request())
    assert isinstance(h.txn(), InviteServerTransaction)
    h.clock.advance(0.19)
    assert h.transport.responses == []
    h.clock.advance(0.01)
    assert h.transport.statuses == [100]
    assert h.transport.responses[0][0].to.tag is None
    h.receive(request())  # a retransmitted INVITE is answered with the last provisional
    assert h.transport.statuses == [100, 100]
    assert h.tu.methods == ["INVITE"]


def test_no_100_trying_when_tu_answers_in_time(h: Harness) -> None:
    h.receive(request())
    h.clock.advance(0.1)
    h.txn().respond(make_response(h.txn().request, 180, to_tag="bob1"))
    h.clock.advance(1)
    assert h.transport.statuses == [180]
    h.tu.answer = 180
    h.receive(request(branch="z9hG4bKsecond"))  # answered inside on_request: no timer at all
    h.clock.advance(1)
    assert h.transport.statuses == [180, 180]


def test_invite_non_2xx_is_retransmitted_by_timer_g_until_ack() -> None:
    h = Harness()
    h.tu.answer = 486
    h.receive(request())
    txn = h.txn()
    assert txn.state is TransactionState.COMPLETED
    sent_at: list[float] = []
    h.transport.responses.clear()
    for _ in range(60):
        h.clock.advance(0.25)
        while len(sent_at) < len(h.transport.responses):
            sent_at.append(h.clock.monotonic())
    # Timer G: T1, then doubling, capped at T2 = 4 s.
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5]
    h.receive(request("ACK", to_tag="bob1", cseq_method="ACK"))
    assert txn.state is TransactionState.CONFIRMED
    count = len(h.transport.responses)
    h.clock.advance(4.9)
    assert len(h.transport.responses) == count  # no more retransmissions
    h.receive(request("ACK", to_tag="bob1", cseq_method="ACK"))  # absorbed
    assert h.tu.methods == ["INVITE"]
    h.clock.advance(0.1)  # Timer I = T4
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_invite_retransmission_in_completed_resends_the_final(h: Harness) -> None:
    h.tu.answer = 404
    h.receive(request())
    h.receive(request())
    assert h.transport.statuses == [404, 404]
    assert h.tu.methods == ["INVITE"]


def test_timer_h_gives_up_without_ack_and_tells_the_tu(h: Harness) -> None:
    h.receive(request())
    timeouts: list[str] = []
    txn = h.txn()
    txn.on_timeout = lambda: timeouts.append("H")
    txn.respond(make_response(txn.request, 603, to_tag="bob1"))
    h.clock.advance(31.9)
    assert timeouts == []
    h.clock.advance(0.1)
    assert timeouts == ["H"]
    assert txn.state is TransactionState.TERMINATED
    assert h.transport.statuses.count(603) > 5
    h.assert_clean()


def test_invite_non_2xx_over_tcp_is_not_retransmitted_and_ack_ends_it(h: Harness) -> None:
    h.tu.answer = 486
    h.receive(request(transport="TCP"), TCP)
    h.clock.advance(10)
    assert h.transport.statuses == [486]
    h.receive(request("ACK", to_tag="bob1", cseq_method="ACK", transport="TCP"), TCP)
    assert h.txn().state is TransactionState.TERMINATED
    h.assert_clean()


# -- INVITE: 2xx, Accepted (RFC 6026) and the 2xx retransmitter ---------------------------------


def test_2xx_is_retransmitted_until_the_ack_and_accepted_absorbs_invites(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request())
    txn = h.txn()
    assert txn.state is TransactionState.ACCEPTED
    assert h.layer.pending_2xx_count == 1
    sent_at: list[float] = []
    h.transport.responses.clear()
    for _ in range(40):
        h.clock.advance(0.25)
        while len(sent_at) < len(h.transport.responses):
            sent_at.append(h.clock.monotonic())
    assert sent_at == [0.5, 1.5, 3.5, 7.5]  # T1 doubling up to T2
    h.receive(request())  # a retransmitted INVITE: absorbed, not answered, not dispatched
    assert len(h.transport.responses) == 4
    assert h.tu.methods == ["INVITE"]
    # The ACK for a 2xx has its own branch: no transaction matches, it goes to the TU.
    h.receive(request("ACK", branch="z9hG4bKack", to_tag="bob1", cseq_method="ACK"))
    assert h.tu.seen[-1][0].method == "ACK"
    assert h.tu.seen[-1][1] is None
    assert h.layer.pending_2xx_count == 0
    h.clock.advance(10)
    assert len(h.transport.responses) == 4  # retransmission stopped
    assert txn.state is TransactionState.ACCEPTED
    h.clock.advance(22)  # Timer L = 64*T1 from the 2xx
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_2xx_without_ack_is_reported_after_64_t1(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request())
    lost: list[int] = []
    txn = h.txn()
    assert isinstance(txn, InviteServerTransaction)
    txn.on_ack_timeout = lambda response: lost.append(response.status)
    h.clock.advance(31.9)
    assert lost == []
    h.clock.advance(0.2)
    assert lost == [200]
    count = len(h.transport.responses)
    assert count > 8
    h.clock.advance(60)
    assert len(h.transport.responses) == count
    h.assert_clean()


def test_2xx_over_tcp_is_not_retransmitted_but_a_missing_ack_is_reported(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request(transport="TCP"), TCP)
    lost: list[int] = []
    txn = h.txn()
    assert isinstance(txn, InviteServerTransaction)
    txn.on_ack_timeout = lambda response: lost.append(response.status)
    h.clock.advance(40)
    assert h.transport.statuses == [200]
    assert lost == [200]
    h.assert_clean()


def test_ack_with_the_invite_branch_in_accepted_goes_to_the_tu(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request())
    h.receive(request("ACK", to_tag="bob1", cseq_method="ACK"))
    assert h.tu.methods == ["INVITE", "ACK"]
    assert h.layer.pending_2xx_count == 0


def test_tu_retransmitting_2xx_in_accepted_is_sent(h: Harness) -> None:
    h.tu.answer = 200
    h.receive(request())
    h.txn().respond(make_response(h.txn().request, 200, to_tag="bob1"))
    h.txn().respond(make_response(h.txn().request, 486, to_tag="bob1"))  # too late: dropped
    assert h.transport.statuses == [200, 200]


def test_standalone_2xx_retransmitter() -> None:
    clock = ManualClock(start=0.0)
    transport = Recorder()
    invite = request()
    ok = make_response(invite, 200, to_tag="bob1")
    done: list[str] = []
    retransmitter = Invite2xxRetransmitter(
        transport,
        clock,
        ok,
        UDP,
        timers=Timers(t1=0.1, t2=0.4),
        on_timeout=lambda r: done.append("timeout"),
        on_done=lambda: done.append("done"),
    )
    retransmitter.start()
    clock.advance(1.0)  # 0.1, 0.3, 0.7
    assert len(transport.responses) == 3
    retransmitter.ack_received()
    retransmitter.ack_received()
    clock.advance(100)
    assert len(transport.responses) == 3
    assert done == ["done"]
    assert clock.pending == 0


# -- CANCEL (§9.2) ------------------------------------------------------------------------------


def test_cancel_matching_an_invite_is_answered_200_and_passed_to_the_tu(h: Harness) -> None:
    h.receive(request())
    invite_txn = h.txn()
    invite_txn.respond(make_response(invite_txn.request, 180, to_tag="bob1"))
    h.receive(request("CANCEL"))
    assert h.transport.statuses == [180, 200]
    ok = h.transport.responses[-1][0]
    assert ok.cseq.method == "CANCEL"
    assert ok.to.tag == "bob1"  # §9.2: the same To tag as the INVITE's responses
    cancel, cancel_txn = h.tu.seen[-1]
    assert cancel.method == "CANCEL"
    assert cancel_txn is not None
    assert cancel_txn is not invite_txn
    assert cancel_txn.cancelled_transaction is invite_txn
    h.receive(request("CANCEL"))  # retransmitted CANCEL: same answer, not dispatched again
    assert h.transport.statuses == [180, 200, 200]
    assert h.tu.methods == ["INVITE", "CANCEL"]
    invite_txn.respond(make_response(invite_txn.request, 487, to_tag="bob1"))
    h.receive(request("ACK", to_tag="bob1", cseq_method="ACK"))
    assert invite_txn.state is TransactionState.CONFIRMED
    h.clock.advance(40)
    h.assert_clean()


def test_cancel_matching_nothing_gets_481(h: Harness) -> None:
    h.receive(request("CANCEL"))
    assert h.transport.statuses == [481]
    assert h.tu.seen == []
    h.receive(request())
    h.receive(request("CANCEL", sent_by="127.0.0.1:5999"))  # another sent-by: no match
    assert h.transport.statuses[-1] == 481
    h.clock.advance(40)
    h.txn().respond(make_response(h.txn().request, 486, to_tag="x"))
    h.receive(request("ACK", to_tag="x", cseq_method="ACK"))
    h.clock.advance(40)
    h.assert_clean()


def test_cancel_after_the_final_response_is_answered_but_not_passed_on(h: Harness) -> None:
    h.tu.answer = 486
    h.receive(request())
    h.receive(request("CANCEL"))
    assert h.transport.statuses == [486, 200]
    assert h.tu.methods == ["INVITE"]


# -- matching (§17.2.3) -------------------------------------------------------------------------


def test_matching_uses_branch_sent_by_and_method(h: Harness) -> None:
    h.receive(request("OPTIONS"))
    h.receive(request("OPTIONS", sent_by="127.0.0.1:5071"))
    h.receive(request("OPTIONS", branch="z9hG4bKserver2"))
    h.receive(request("INFO"))
    h.receive(request("OPTIONS", sent_by="127.0.0.1:5070"))  # a retransmission of the first
    assert h.tu.methods == ["OPTIONS", "OPTIONS", "OPTIONS", "INFO"]
    assert h.layer.server_count == 4
    h.clock.advance(40)
    h.assert_clean()


def test_rfc2543_requests_without_magic_cookie_match_on_dialog_ids(h: Harness) -> None:
    h.tu.answer = 486
    h.receive(request(branch="oldstyle1"))
    h.receive(request(branch="oldstyle1"))
    assert h.tu.methods == ["INVITE"]
    assert h.transport.statuses == [486, 486]
    h.receive(request("ACK", branch="oldstyle1", to_tag="bob1", cseq_method="ACK"))
    assert h.txn().state is TransactionState.CONFIRMED
    h.receive(request(branch="oldstyle1", call_id="other"))
    assert h.tu.methods == ["INVITE", "INVITE"]


def test_stray_ack_goes_to_the_tu_and_its_errors_are_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.tu.raise_error = True
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.receive(request("ACK", branch="z9hG4bKlone", to_tag="t", cseq_method="ACK"))
    assert h.tu.methods == ["ACK"]
    assert "Error handling ACK" in caplog.text
    assert h.transport.responses == []
    h.assert_clean()


def test_garbage_never_escapes_receive(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    broken = request("OPTIONS")
    broken.headers.remove("Via")
    h.receive(broken)  # must not raise
    assert h.tu.seen == []
    h.tu.answer = 200
    h.receive(request("OPTIONS"))
    assert h.transport.statuses == [200]


def test_invite_tu_exception_is_answered_500_and_failing_callbacks_are_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.tu.raise_error = True
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.receive(request())
        txn = h.txn()

        def broken() -> None:
            raise RuntimeError("timeout handler bug")

        txn.on_timeout = broken
        h.clock.advance(32)  # Timer H: no ACK for the 500; the broken handler must not escape
    assert h.transport.statuses[0] == 500
    assert "timeout handler bug" in caplog.text
    h.assert_clean()


def test_failing_ack_timeout_handler_is_logged(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.tu.answer = 200
    h.receive(request())
    txn = h.txn()
    assert isinstance(txn, InviteServerTransaction)

    def broken(response: Response) -> None:
        raise RuntimeError("ack handler bug")

    txn.on_ack_timeout = broken
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.clock.advance(40)
    assert "ack handler bug" in caplog.text
    h.assert_clean()


def test_close_terminates_everything_and_leaves_no_timer(h: Harness) -> None:
    """Shutting the stack down must leave nothing that could fire on a closed transport."""
    h.tu.answer = None
    h.receive(request("OPTIONS", branch="z9hG4bKclose1"))  # Trying, unanswered
    h.receive(request("INVITE", branch="z9hG4bKclose2"))  # Proceeding, 100 Trying timer
    h.tu.answer = 200
    h.receive(request("INVITE", branch="z9hG4bKclose3", call_id="call-2@127.0.0.1"))  # 2xx
    assert h.layer.server_count == 3
    assert h.layer.pending_2xx_count == 1
    assert h.clock.pending > 0
    h.layer.close()
    h.assert_clean()
    sent = len(h.transport.responses)
    h.clock.advance(64.0)
    assert len(h.transport.responses) == sent
