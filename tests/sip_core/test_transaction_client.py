"""Client transactions (RFC 3261 §17.1, RFC 6026), ACK for non-2xx (§17.1.1.3) and CANCEL (§9.1).

Time is a ManualClock and the transport a recorder; responses are fed in by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sip_core.clock import ManualClock
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
    Timers,
    TransactionLayer,
    TransactionState,
)
from sip_core.transport import Address, Source, TransportKind

US = Address("127.0.0.1", 5070)
UAS = Address("127.0.0.1", 5060)
FROM_UAS = Source(TransportKind.UDP, UAS, US, None)


def outgoing(
    method: str = "INVITE", *, branch: str = "z9hG4bKclient1", transport: str = "UDP"
) -> Request:
    text = (
        f"{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:proxy1.example;lr>, <sip:proxy2.example;lr>\r\n"
        'From: "Alice" <sip:alice@127.0.0.1>;tag=alice1\r\n'
        "To: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: call-9@127.0.0.1\r\n"
        f"CSeq: 17 {method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 3\r\n\r\nv=0"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def reply(req: Request, status: int, tag: str | None = "bob1") -> Response:
    """The response as the far side would send it, through the wire format."""
    response = make_response(req, status, to_tag=tag if status != 100 else None)
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


@dataclass
class Recorder:
    requests: list[tuple[Request, Address, TransportKind]] = field(default_factory=list)
    fail: Exception | None = None
    failure_callbacks: list[Callable[[Exception], None]] = field(default_factory=list)

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        if self.fail is not None:
            raise self.fail
        if on_failure is not None:
            self.failure_callbacks.append(on_failure)
        # Through the wire format, as a real transport would: what is built must serialise.
        parsed = parse_message(request.to_bytes())
        assert isinstance(parsed, Request)
        self.requests.append((parsed, destination, kind))

    def send_response(self, response: Response, source: Source | None = None) -> None:
        raise AssertionError("a client sends no responses")

    @property
    def methods(self) -> list[str]:
        return [r.method for r, _, _ in self.requests]


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock(start=0.0)
        self.transport = Recorder()
        self.stray: list[Response] = []
        self.layer = TransactionLayer(
            self.transport,
            self.clock,
            on_request=lambda *a: None,
            on_stray_response=lambda r, s: self.stray.append(r),
            timers=Timers(),
        )
        self.responses: list[int] = []
        self.timeouts = 0

    def on_response(self, response: Response) -> None:
        self.responses.append(response.status)

    def on_timeout(self) -> None:
        self.timeouts += 1

    def send(self, req: Request, kind: TransportKind = TransportKind.UDP) -> ClientTransaction:
        return self.layer.send_request(
            req, UAS, kind, on_response=self.on_response, on_timeout=self.on_timeout
        )

    def feed(self, response: Response) -> None:
        self.layer.receive(response, FROM_UAS)

    def sent_times(self, until: float, step: float = 0.25) -> list[float]:
        """Advance to `until`, noting when each request was sent."""
        times: list[float] = []
        seen = len(self.transport.requests)
        while self.clock.monotonic() < until:
            self.clock.advance(step)
            while seen < len(self.transport.requests):
                times.append(self.clock.monotonic())
                seen += 1
        return times

    def assert_clean(self) -> None:
        assert self.layer.client_count == 0
        assert self.layer.server_count == 0
        assert self.clock.pending == 0


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- non-INVITE ---------------------------------------------------------------------------------


def test_non_invite_timer_e_doubles_to_t2_and_timer_f_times_out(h: Harness) -> None:
    txn = h.send(outgoing("OPTIONS"))
    assert isinstance(txn, NonInviteClientTransaction)
    assert txn.state is TransactionState.TRYING
    assert h.transport.methods == ["OPTIONS"]
    times = h.sent_times(31.75)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert h.timeouts == 0
    h.clock.advance(0.25)  # Timer F = 64*T1
    assert h.timeouts == 1
    assert txn.state is TransactionState.TERMINATED
    h.clock.advance(100)
    assert h.timeouts == 1
    h.assert_clean()


def test_non_invite_provisional_makes_timer_e_use_t2(h: Harness) -> None:
    req = outgoing("OPTIONS")
    txn = h.send(req)
    h.clock.advance(1.0)  # one retransmission at 0.5; next one due at 1.5
    h.feed(reply(req, 100))
    assert txn.state is TransactionState.PROCEEDING
    assert h.responses == [100]
    times = h.sent_times(10)
    assert times == [1.5, 5.5, 9.5]


def test_non_invite_final_is_delivered_once_and_timer_k_cleans_up(h: Harness) -> None:
    req = outgoing("REGISTER")
    txn = h.send(req)
    h.feed(reply(req, 200))
    h.feed(reply(req, 200))  # retransmission: absorbed in Completed
    assert h.responses == [200]
    assert txn.state is TransactionState.COMPLETED
    assert txn.last_response is not None
    h.clock.advance(4.9)
    assert h.layer.client_count == 1
    assert h.transport.methods == ["REGISTER"]  # no retransmission once completed
    h.clock.advance(0.1)  # Timer K = T4
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()
    h.feed(reply(req, 200))
    assert len(h.stray) == 1


def test_non_invite_over_tcp_never_retransmits_and_ends_on_the_final(h: Harness) -> None:
    req = outgoing("REGISTER", transport="TCP")
    txn = h.send(req, TransportKind.TCP)
    h.clock.advance(20)
    assert h.transport.methods == ["REGISTER"]
    h.feed(reply(req, 200))
    assert txn.state is TransactionState.TERMINATED
    assert h.responses == [200]
    h.assert_clean()


def test_non_invite_over_tcp_still_times_out(h: Harness) -> None:
    h.send(outgoing("BYE", transport="TCP"), TransportKind.TCP)
    h.clock.advance(32)
    assert h.timeouts == 1
    assert h.transport.methods == ["BYE"]
    h.assert_clean()


# -- INVITE -------------------------------------------------------------------------------------


def test_invite_timer_a_doubles_uncapped_and_timer_b_times_out(h: Harness) -> None:
    txn = h.send(outgoing())
    assert isinstance(txn, InviteClientTransaction)
    assert txn.state is TransactionState.CALLING
    times = h.sent_times(31.75)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    h.clock.advance(0.25)
    assert h.timeouts == 1
    h.assert_clean()


def test_invite_provisional_stops_retransmission_and_timer_b(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    h.feed(reply(req, 100))
    h.feed(reply(req, 180))
    assert txn.state is TransactionState.PROCEEDING
    assert h.responses == [100, 180]
    h.clock.advance(200)
    assert h.transport.methods == ["INVITE"]
    assert h.timeouts == 0
    assert h.layer.client_count == 1


def test_invite_non_2xx_is_acked_by_the_transaction(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    h.feed(reply(req, 180))
    busy = reply(req, 486)
    h.feed(busy)
    assert txn.state is TransactionState.COMPLETED
    assert h.responses == [180, 486]
    assert h.transport.methods == ["INVITE", "ACK"]
    ack = h.transport.requests[-1][0]
    assert h.transport.requests[-1][1] == UAS
    # §17.1.1.3: same branch, Request-URI, From, Call-ID and Route; To from the response.
    assert len(ack.vias) == 1
    assert ack.top_via.branch == "z9hG4bKclient1"
    assert str(ack.uri) == str(req.uri)
    assert ack.call_id == req.call_id
    assert ack.from_.tag == "alice1"
    assert ack.to.tag == "bob1"
    assert ack.cseq.number == 17
    assert ack.cseq.method == "ACK"
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.body == b""
    assert "Contact" not in ack.headers
    # The 486 again (our ACK was lost): ACK again, the TU does not hear of it twice.
    h.feed(busy)
    assert h.transport.methods == ["INVITE", "ACK", "ACK"]
    assert h.responses == [180, 486]
    h.clock.advance(31.9)
    assert h.layer.client_count == 1
    h.clock.advance(0.1)  # Timer D = 32 s
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_invite_non_2xx_over_tcp_ends_at_once(h: Harness) -> None:
    req = outgoing(transport="TCP")
    txn = h.send(req, TransportKind.TCP)
    h.feed(reply(req, 404))
    assert h.transport.methods == ["INVITE", "ACK"]
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_invite_2xx_enters_accepted_and_passes_every_2xx_up_until_timer_m(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    ok = reply(req, 200)
    h.feed(ok)
    assert txn.state is TransactionState.ACCEPTED
    h.feed(ok)  # retransmitted 2xx: to the TU, which ACKs it
    h.feed(reply(req, 200, tag="fork2"))  # a forked 2xx: also to the TU
    h.feed(reply(req, 486))  # non-2xx in Accepted: discarded
    assert h.responses == [200, 200, 200]
    assert h.transport.methods == ["INVITE"]  # the transaction never ACKs a 2xx
    h.clock.advance(31.9)
    assert txn.state is TransactionState.ACCEPTED
    h.clock.advance(0.1)  # Timer M = 64*T1
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()
    h.feed(ok)
    assert len(h.stray) == 1  # after Timer M the core sees it as stray


# -- CANCEL -------------------------------------------------------------------------------------


def test_cancel_waits_for_a_provisional_response(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    txn.cancel()
    assert h.transport.methods == ["INVITE"]  # nothing to cancel at the far end yet
    h.feed(reply(req, 100))
    assert h.transport.methods == ["INVITE", "CANCEL"]
    cancel = h.transport.requests[-1][0]
    # §9.1: same branch, Request-URI, Call-ID, To, From, CSeq number, Route.
    assert cancel.top_via.branch == req.top_via.branch
    assert len(cancel.vias) == 1
    assert str(cancel.uri) == str(req.uri)
    assert cancel.call_id == req.call_id
    assert cancel.to.tag is None
    assert cancel.from_.tag == "alice1"
    assert (cancel.cseq.number, cancel.cseq.method) == (17, "CANCEL")
    assert cancel.headers.get_all("Route") == req.headers.get_all("Route")
    assert cancel.body == b""
    assert h.layer.client_count == 2  # the CANCEL runs its own non-INVITE transaction
    assert isinstance(txn, InviteClientTransaction)
    assert txn.cancel_transaction is not None
    txn.cancel()  # a second cancel does nothing
    assert h.transport.methods == ["INVITE", "CANCEL"]
    h.feed(reply(cancel, 200))
    h.feed(reply(req, 487))
    assert h.responses == [100, 487]
    assert h.transport.methods == ["INVITE", "CANCEL", "ACK"]
    h.clock.advance(40)
    h.assert_clean()


def test_cancel_after_a_provisional_is_sent_at_once(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    h.feed(reply(req, 180))
    got: list[int] = []
    txn.cancel(on_response=lambda r: got.append(r.status))
    assert h.transport.methods == ["INVITE", "CANCEL"]
    h.feed(reply(h.transport.requests[-1][0], 200))
    assert got == [200]


def test_cancel_after_a_final_response_sends_nothing(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    h.feed(reply(req, 200))
    txn.cancel()
    assert h.transport.methods == ["INVITE"]


def test_pending_cancel_is_dropped_when_a_final_arrives_first(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    txn.cancel()
    h.feed(reply(req, 603))
    h.feed(reply(req, 180))  # late provisional: ignored in Completed
    assert h.transport.methods == ["INVITE", "ACK"]


def test_cancelled_invite_without_final_gives_up_after_64_t1(h: Harness) -> None:
    req = outgoing()
    txn = h.send(req)
    h.feed(reply(req, 180))
    txn.cancel()
    h.feed(reply(h.transport.requests[-1][0], 200))
    h.clock.advance(31.9)
    assert h.timeouts == 0
    h.clock.advance(0.1)
    assert h.timeouts == 1
    assert txn.state is TransactionState.TERMINATED
    h.clock.advance(10)
    h.assert_clean()


def test_only_invite_can_be_cancelled(h: Harness) -> None:
    txn = h.send(outgoing("OPTIONS"))
    with pytest.raises(TypeError):
        txn.cancel()


# -- errors and robustness ----------------------------------------------------------------------


def test_requests_need_a_magic_cookie_branch_and_ack_has_no_transaction(h: Harness) -> None:
    with pytest.raises(ValueError, match="branch"):
        h.send(outgoing("OPTIONS", branch="nocookie"))
    with pytest.raises(ValueError, match="ACK"):
        h.send(outgoing("ACK"))
    h.send(outgoing("OPTIONS"))
    with pytest.raises(ValueError, match="already"):
        h.send(outgoing("OPTIONS"))
    assert h.layer.client_count == 1


def test_exception_in_on_response_is_logged_and_the_layer_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    req = outgoing("OPTIONS")

    def broken(response: Response) -> None:
        raise RuntimeError("TU bug")

    txn = h.layer.send_request(
        req, UAS, TransportKind.UDP, on_response=broken, on_timeout=h.on_timeout
    )
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.feed(reply(req, 200))
    assert "TU bug" in caplog.text
    assert txn.state is TransactionState.COMPLETED
    other = outgoing("OPTIONS", branch="z9hG4bKclient2")
    h.send(other)
    h.feed(reply(other, 200))
    assert h.responses == [200]
    h.clock.advance(10)
    h.assert_clean()


def test_transport_failure_reported_later_ends_the_transaction(h: Harness) -> None:
    txn = h.send(outgoing("OPTIONS", transport="TCP"), TransportKind.TCP)
    h.transport.failure_callbacks[0](OSError("connection refused"))
    assert txn.state is TransactionState.TERMINATED
    assert h.timeouts == 1  # no on_transport_error given: told as a timeout
    h.assert_clean()


def test_transport_failure_at_once_goes_to_on_transport_error(h: Harness) -> None:
    h.transport.fail = OSError("too large")
    errors: list[Exception] = []
    txn = h.layer.send_request(
        outgoing(),
        UAS,
        TransportKind.UDP,
        on_response=h.on_response,
        on_timeout=h.on_timeout,
        on_transport_error=errors.append,
    )
    assert [str(e) for e in errors] == ["too large"]
    assert h.timeouts == 0
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_response_matching_uses_branch_and_cseq_method(h: Harness) -> None:
    req = outgoing("OPTIONS")
    h.send(req)
    other_method = reply(req, 200)
    other_method.headers.set("CSeq", "17 INFO")
    h.feed(other_method)
    assert h.responses == []
    assert len(h.stray) == 1


def test_failing_retransmission_goes_to_on_transport_error(h: Harness) -> None:
    errors: list[Exception] = []
    txn = h.layer.send_request(
        outgoing(),
        UAS,
        TransportKind.UDP,
        on_response=h.on_response,
        on_timeout=h.on_timeout,
        on_transport_error=errors.append,
    )
    h.transport.fail = OSError("network down")
    h.clock.advance(0.5)  # Timer A fires and the resend fails
    assert len(errors) == 1
    assert txn.state is TransactionState.TERMINATED
    h.assert_clean()


def test_failing_timeout_handler_is_logged(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("timeout bug")

    h.layer.send_request(
        outgoing("OPTIONS"), UAS, TransportKind.UDP, on_response=h.on_response, on_timeout=broken
    )
    with caplog.at_level(logging.ERROR, logger="sip_core.transaction"):
        h.clock.advance(40)
    assert "timeout bug" in caplog.text
    h.assert_clean()
