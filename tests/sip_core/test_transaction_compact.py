"""What a completed server transaction keeps, and Timer J in buckets (ManualClock throughout)."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from sip_core.clock import ManualClock
from sip_core.message import Request, Response, make_response, parse_message
from sip_core.transaction import ServerTransaction, TransactionLayer, TransactionState
from sip_core.transport import Address, ResponseRoute, Source, TransportKind

UDP = Source(TransportKind.UDP, Address("127.0.0.1", 5070), Address("127.0.0.1", 5060), None)


def register(branch: str) -> Request:
    text = (
        "REGISTER sip:home.arpa SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};received=127.0.0.1;rport=5070\r\n"
        "From: <sip:1@home.arpa>;tag=a\r\nTo: <sip:1@home.arpa>\r\n"
        f"Call-ID: {branch}@t\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


@dataclass
class BytesTransport:
    """A transport offering the bytes path, as TransportLayer does; records what goes out."""

    sent: list[tuple[bytes, ResponseRoute]] = field(default_factory=list)

    def send_request(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no requests here")

    def send_response(self, response: Response, source: Source | None = None) -> None:
        self.send_response_bytes(response.to_bytes(), self.response_route(response, source))

    def response_route(self, response: Response, source: Source | None = None) -> ResponseRoute:
        via = response.top_via
        return ("UDP", via.received or via.host, int(via.rport or 5060), None, None)

    def send_response_bytes(self, data: bytes, route: ResponseRoute) -> None:
        self.sent.append((data, route))


class Harness:
    def __init__(self) -> None:
        self.clock = ManualClock(start=0.0)
        self.transport = BytesTransport()
        self.txns: list[ServerTransaction] = []
        self.layer = TransactionLayer(self.transport, self.clock, on_request=self.answer)

    def answer(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        assert txn is not None
        self.txns.append(txn)
        txn.respond(make_response(request, 200, to_tag="b"))


def test_a_completed_transaction_holds_bytes_not_a_parsed_response() -> None:
    h = Harness()
    h.layer.receive(register("z9hG4bKc1"), UDP)
    txn = h.txns[0]
    assert txn.state is TransactionState.COMPLETED
    assert not any(isinstance(obj, Response) for obj in gc.get_referents(txn))
    h.layer.receive(register("z9hG4bKc1"), UDP)  # a retransmission
    assert len(h.transport.sent) == 2
    assert h.transport.sent[1] == h.transport.sent[0]  # the same bytes to the same route
    assert h.transport.sent[0][1] == ("UDP", "127.0.0.1", 5070, None, None)
    last = txn.last_response
    assert last is not None
    assert (last.status, last.to.tag) == (200, "b")
    assert len(h.txns) == 1


def test_a_completed_transaction_lets_go_of_the_parsed_request() -> None:
    h = Harness()
    request = register("z9hG4bKr1")
    h.layer.receive(request, UDP)
    txn = h.txns[0]
    assert txn.state is TransactionState.COMPLETED
    # Only the request line is left: no headers, no parsed Vias for the collector to walk.
    assert txn.request is not request
    assert (txn.request.method, txn.request.uri) == ("REGISTER", request.uri)
    assert len(txn.request.headers) == 0
    assert txn.method == "REGISTER"
    h.layer.receive(register("z9hG4bKr1"), UDP)  # still matched and answered as before
    assert len(h.txns) == 1
    assert h.transport.sent[1] == h.transport.sent[0]


class ProvisionalHarness(Harness):
    def answer(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        assert txn is not None
        self.txns.append(txn)
        txn.respond(make_response(request, 100))


def test_a_provisional_answer_keeps_the_whole_request() -> None:
    h = ProvisionalHarness()
    request = register("z9hG4bKr2")
    h.layer.receive(request, UDP)
    txn = h.txns[0]
    assert txn.state is TransactionState.PROCEEDING
    assert txn.request is request  # the TU still has to answer it


def test_timer_j_fires_at_the_next_t1_boundary_never_before_64_t1() -> None:
    h = Harness()
    h.clock.advance(0.3)
    h.layer.receive(register("z9hG4bKj1"), UDP)  # completed at 0.3: due at 32.3
    h.clock.advance(32.29 - 0.3)
    assert h.layer.server_count == 1
    h.clock.advance(0.02)  # 32.31: due, but its bucket is 32.5
    assert h.layer.server_count == 1
    h.clock.advance(0.19)  # 32.5
    assert h.layer.server_count == 0
    assert h.txns[0].state is TransactionState.TERMINATED
    assert h.clock.pending == 0


def test_transactions_in_one_bucket_share_one_clock_timer() -> None:
    h = Harness()
    h.clock.advance(0.1)  # deadlines 32.1 to 32.345: all in the 32.5 bucket
    for n in range(50):
        h.layer.receive(register(f"z9hG4bKs{n}"), UDP)
        h.clock.advance(0.005)  # all within one T1
    assert h.layer.server_count == 50
    assert h.clock.pending == 1
    h.clock.advance(33)
    assert h.layer.server_count == 0
    assert h.clock.pending == 0


def test_close_cancels_the_bucket_timers() -> None:
    h = Harness()
    h.layer.receive(register("z9hG4bKx1"), UDP)
    h.clock.advance(1.0)
    h.layer.receive(register("z9hG4bKx2"), UDP)
    assert h.clock.pending == 2
    h.layer.close()
    assert h.clock.pending == 0
    assert all(txn.state is TransactionState.TERMINATED for txn in h.txns)
