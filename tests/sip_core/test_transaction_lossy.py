"""Two transaction layers talking over a simulated network that loses and duplicates packets.

Every packet goes through its wire form (to_bytes / parse_message) and arrives 10 ms later on the
shared ManualClock. The transaction users must each see every request and final response exactly
once, whatever the network does, and both layers must end with empty tables and no timers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip_core.clock import ManualClock
from sip_core.message import Request, Response, make_response, new_branch, parse_message
from sip_core.transaction import (
    InviteServerTransaction,
    ServerTransaction,
    TransactionLayer,
)
from sip_core.transport import Address, Source, TransportKind

ALICE = Address("127.0.0.1", 5070)
BOB = Address("127.0.0.1", 5060)
LATENCY = 0.01

Rule = Callable[[Request | Response], bool]


def first_line(message: Request | Response) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.cseq.method}"


@dataclass
class Network:
    """Carries packets between endpoints; rules say which packets to lose or duplicate."""

    clock: ManualClock
    endpoints: dict[Address, TransactionLayer] = field(default_factory=dict)
    drops: list[tuple[str, int]] = field(default_factory=list)
    duplicate_all: bool = False
    log: list[str] = field(default_factory=list)

    def drop(self, what: str, times: int = 1) -> None:
        """Lose the next `times` packets whose first line is `what` ("INVITE", "486 INVITE")."""
        self.drops.append((what, times))

    def carry(self, message: Request | Response, origin: Address, target: Address) -> None:
        line = first_line(message)
        for index, (what, times) in enumerate(self.drops):
            if what == line and times > 0:
                self.drops[index] = (what, times - 1)
                self.log.append(f"lost {line}")
                return
        self.log.append(line)
        data = message.to_bytes()
        copies = 2 if self.duplicate_all else 1
        for _ in range(copies):
            self.clock.call_later(LATENCY, lambda: self._arrive(data, origin, target))

    def _arrive(self, data: bytes, origin: Address, target: Address) -> None:
        layer = self.endpoints.get(target)
        if layer is not None:
            layer.receive(parse_message(data), Source(TransportKind.UDP, origin, target, None))


@dataclass
class Port:
    """One endpoint's transport on the network."""

    network: Network
    local: Address

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.network.carry(request, self.local, destination)

    def send_response(self, response: Response, source: Source | None = None) -> None:
        assert source is not None
        self.network.carry(response, self.local, source.remote)


class World:
    """Alice (a UAC) and Bob (a UAS whose behaviour each test sets)."""

    def __init__(self) -> None:
        self.clock = ManualClock(start=0.0)
        self.net = Network(self.clock)
        self.bob_seen: list[str] = []
        self.bob_answer: Callable[[Request, ServerTransaction], None] | None = None
        self.bob_txns: list[ServerTransaction] = []
        self.alice_got: list[int] = []
        self.alice_timeouts = 0
        self.alice = TransactionLayer(
            Port(self.net, ALICE), self.clock, on_request=self._alice_request
        )
        self.bob = TransactionLayer(Port(self.net, BOB), self.clock, on_request=self._bob_request)
        self.net.endpoints = {ALICE: self.alice, BOB: self.bob}

    def _alice_request(self, request: Request, txn: ServerTransaction | None, src: Source) -> None:
        raise AssertionError(f"Alice got a request: {request.method}")

    def _bob_request(self, request: Request, txn: ServerTransaction | None, src: Source) -> None:
        self.bob_seen.append(request.method)
        if txn is not None:
            self.bob_txns.append(txn)
            if self.bob_answer is not None:
                self.bob_answer(request, txn)

    def request(self, method: str) -> Request:
        text = (
            f"{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={new_branch()}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=alice1\r\n"
            "To: <sip:bob@127.0.0.1>\r\n"
            "Call-ID: lossy@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        message = parse_message(text.encode())
        assert isinstance(message, Request)
        return message

    def send(self, request: Request, on_response: Callable[[Response], None] | None = None) -> None:
        def got(response: Response) -> None:
            self.alice_got.append(response.status)
            if on_response is not None:
                on_response(response)

        def timeout() -> None:
            self.alice_timeouts += 1

        self.alice.send_request(
            request, BOB, TransportKind.UDP, on_response=got, on_timeout=timeout
        )

    def settle(self) -> None:
        self.clock.advance(120)
        for layer in (self.alice, self.bob):
            assert layer.server_count == 0
            assert layer.client_count == 0
            assert layer.pending_2xx_count == 0
        assert self.clock.pending == 0


def answer(status: int) -> Callable[[Request, ServerTransaction], None]:
    def respond(request: Request, txn: ServerTransaction) -> None:
        txn.respond(make_response(request, status, to_tag="bob1"))

    return respond


def test_lost_request_and_lost_response_non_invite() -> None:
    w = World()
    w.bob_answer = answer(200)
    w.net.drop("OPTIONS")  # the first transmission is lost: Timer E resends it
    w.net.drop("200 OPTIONS", times=2)  # Bob's answer is lost twice: his transaction resends it
    w.send(w.request("OPTIONS"))
    w.clock.advance(10)
    assert w.bob_seen == ["OPTIONS"]  # the retransmissions never reached Bob's TU
    assert w.alice_got == [200]
    assert w.net.log.count("lost 200 OPTIONS") == 2
    assert w.alice_timeouts == 0
    w.settle()


def test_invite_rejected_with_lost_final_and_lost_ack() -> None:
    w = World()
    w.bob_answer = answer(486)
    w.net.drop("486 INVITE", times=2)
    w.net.drop("ACK")
    w.send(w.request("INVITE"))
    # 486 lost at 0, 0.5; through at 1.5; its ACK lost; 486 again at 3.5, ACKed: Confirmed.
    w.clock.advance(4)
    assert w.bob_seen == ["INVITE"]  # the ACK is absorbed by Bob's transaction
    assert w.alice_got == [486]
    assert w.net.log.count("ACK") == 1  # the lost one, then Alice's ACK to the 486 that got through
    txn = w.bob_txns[0]
    assert txn.state == "Confirmed"
    w.settle()


def test_invite_accepted_with_lost_2xx_is_retransmitted_until_ack() -> None:
    w = World()
    w.bob_answer = answer(200)
    w.net.drop("200 INVITE", times=2)
    acks: list[Request] = []

    def ack_2xx(response: Response) -> None:
        # The UAC core ACKs each 2xx itself, on a new transaction (branch).
        if response.status == 200:
            ack = w.request("ACK")
            ack.headers.set("To", response.headers.get("To") or "")
            acks.append(ack)
            Port(w.net, ALICE).send_request(ack, BOB, TransportKind.UDP)

    w.send(w.request("INVITE"), on_response=ack_2xx)
    w.clock.advance(10)
    assert w.alice_got == [200]
    assert len(acks) == 1
    assert w.bob_seen == ["INVITE", "ACK"]  # Bob's TU gets the 2xx's ACK
    assert w.bob.pending_2xx_count == 0  # and the 2xx retransmission stopped
    sent = w.net.log.count("200 INVITE") + w.net.log.count("lost 200 INVITE")
    w.clock.advance(20)
    assert w.net.log.count("200 INVITE") + w.net.log.count("lost 200 INVITE") == sent
    w.settle()


def test_every_packet_duplicated() -> None:
    w = World()
    w.net.duplicate_all = True

    def ring_then_reject(request: Request, txn: ServerTransaction) -> None:
        if isinstance(txn, InviteServerTransaction):
            txn.respond(make_response(request, 180, to_tag="bob1"))
            w.clock.call_later(1.0, lambda: txn.respond(make_response(request, 603)))

    w.bob_answer = ring_then_reject
    w.send(w.request("INVITE"))
    w.clock.advance(5)
    assert w.bob_seen == ["INVITE"]
    # Bob answers each INVITE copy with his last provisional, and Alice's TU sees each 180 that
    # arrives (provisionals are not deduplicated), but the final exactly once.
    assert w.alice_got.count(603) == 1
    assert w.alice_got[-1] == 603
    assert set(w.alice_got[:-1]) == {180}
    w.settle()
    # And a non-INVITE under duplication too.
    w.bob_answer = answer(200)
    w.send(w.request("MESSAGE"))
    w.clock.advance(5)
    assert w.bob_seen == ["INVITE", "MESSAGE"]
    assert w.alice_got[-1:] == [200]
    assert w.alice_got.count(200) == 1
    w.settle()


def test_cancel_end_to_end() -> None:
    w = World()
    invite_txns: list[ServerTransaction] = []

    def bob(request: Request, txn: ServerTransaction) -> None:
        if request.method == "INVITE":
            invite_txns.append(txn)
            txn.respond(make_response(request, 180, to_tag="bob1"))
        elif request.method == "CANCEL":
            cancelled = txn.cancelled_transaction
            assert cancelled is invite_txns[0]
            cancelled.respond(make_response(cancelled.request, 487, to_tag="bob1"))

    w.bob_answer = bob
    invite = w.request("INVITE")
    client = w.alice.send_request(
        invite,
        BOB,
        TransportKind.UDP,
        on_response=lambda r: w.alice_got.append(r.status),
        on_timeout=lambda: None,
    )
    client.cancel()  # before any provisional: held back until the 180
    w.net.drop("CANCEL")  # and the first CANCEL is lost: its own Timer E resends it
    w.clock.advance(5)
    assert w.bob_seen == ["INVITE", "CANCEL"]
    assert w.alice_got == [180, 487]
    assert w.net.log.index("lost CANCEL") > w.net.log.index("180 INVITE")
    assert "200 CANCEL" in w.net.log
    w.settle()


def test_request_that_never_gets_through_times_out_once() -> None:
    w = World()
    w.net.drop("INVITE", times=100)
    w.send(w.request("INVITE"))
    w.clock.advance(40)
    assert w.alice_timeouts == 1
    assert w.net.log.count("lost INVITE") == 7  # 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert w.bob_seen == []
    w.settle()
