"""The SIP transaction layer: RFC 3261 §17 with the RFC 6026 corrections.

Four state machines, all driven by an injected `Clock` (so tests move time by hand):

- `InviteClientTransaction`: Calling -> Proceeding -> Completed | Accepted -> Terminated.
  Timer A retransmits over UDP (T1, doubling), Timer B (64*T1) gives up while Calling. A 3xx-6xx is
  ACKed here (§17.1.1.3) and Timer D (32 s on UDP, 0 on TCP) absorbs its retransmissions. A 2xx
  moves to Accepted (RFC 6026): every further 2xx (retransmissions, forks) goes to the TU, which
  ACKs it; Timer M (64*T1) ends the transaction.
- `NonInviteClientTransaction`: Trying -> Proceeding -> Completed -> Terminated. Timer E
  retransmits over UDP (T1 doubling up to T2; T2 once a provisional came), Timer F (64*T1) gives
  up, Timer K (T4 on UDP, 0 on TCP) absorbs retransmitted finals.
- `InviteServerTransaction`: Proceeding -> Completed -> Confirmed | Accepted -> Terminated. 100
  Trying goes out if the TU has sent nothing within 200 ms (§17.2.1). A 3xx-6xx is retransmitted by
  Timer G (UDP) until the ACK; Timer H (64*T1) gives up and tells the TU (`on_timeout`); Timer I
  (T4 on UDP, 0 on TCP) absorbs ACK retransmissions. A 2xx moves to Accepted (RFC 6026): INVITE
  retransmissions are absorbed for Timer L (64*T1), a matching ACK is passed to the TU.
- `NonInviteServerTransaction`: Trying -> Proceeding -> Completed -> Terminated; Timer J (64*T1 on
  UDP, 0 on TCP) absorbs request retransmissions, answering each with the last response.

Reliable transports (TCP) never retransmit and use zero for D, I, J and K, so a transaction over
TCP that ends at once schedules no timer at all. A terminated transaction leaves its table at once.
The long timers (B, F, H, D, I, J, K, L, M) run on one coarse wheel per layer: each fires between 0
and T1 after its deadline, never before (`_ExpiryWheel`).

How the TU is called (every callback is guarded: an exception is logged and the layer goes on):

- New requests: ``on_request(request, txn, source)`` exactly once per transaction; retransmissions
  are absorbed (answered again with the last response when there is one).
- ACK: an ACK that matches an INVITE server transaction in Completed/Confirmed is absorbed. Any
  other ACK -- the ACK for a 2xx, which is its own transaction -- is passed as
  ``on_request(ack, None, source)``; it also stops the 2xx retransmission for that response.
- CANCEL (§9.2): a CANCEL gets its own non-INVITE server transaction, and the layer answers it
  itself: 481 when it matches no INVITE server transaction (the TU never sees it); otherwise 200,
  with the To tag of the INVITE's responses. If that INVITE has no final response yet, the CANCEL
  is then passed as ``on_request(cancel, cancel_txn, source)`` with
  ``cancel_txn.cancelled_transaction`` the matched `InviteServerTransaction`, so the TU answers
  the INVITE with 487. A CANCEL for an INVITE already answered has no effect and is not passed on.
- Responses: ``on_response(response)`` for every response that the client transaction passes up
  (provisionals, the final, each 2xx in Accepted); ``on_timeout()`` when Timer B/F fires (or a
  CANCELled INVITE got no final response within 64*T1, §9.1); ``on_transport_error(exc)`` when the
  transport fails (``on_timeout()`` if not given). Responses matching no transaction go to
  ``on_stray_response`` (RFC 6026 §7.1: a UAC core may want a stray 2xx; a proxy must not forward).
- A 2xx sent through an `InviteServerTransaction` is retransmitted by an
  `Invite2xxRetransmitter` (§13.3.1.4, the UAS core's duty, kept here because the layer sees the
  ACKs): T1 doubling up to T2 over UDP, until the ACK arrives or 64*T1 passes; then the
  transaction's ``on_ack_timeout(response)`` is called so the dialog can send BYE. Over TCP the
  2xx is not resent, but a missing ACK is still reported after 64*T1. The ACK is found by
  (Call-ID, CSeq number, To tag).
- A server transaction's ``on_timeout`` attribute (set by the TU) hears of Timer H and transport
  errors. A request whose TU handler raises before answering is answered 500 by the layer. A
  non-INVITE the TU leaves unanswered for 64*T1 is dropped (its client gave up at Timer F).
- Outgoing requests carry their own top Via with a ``new_branch()`` branch (the TU knows the
  transport and address). A send that fails at once is reported through the callbacks before
  `TransactionLayer.send_request` returns.

Matching: responses by (top Via branch, CSeq method) (§17.1.3); requests by (branch, sent-by,
method), ACK counting as INVITE and CANCEL as itself (§17.2.3). Requests whose branch lacks the
magic cookie are matched RFC 2543 style on (Call-ID, From tag, CSeq number, sent-by, method) --
looser than §17.2.3 (no Request-URI or To tag), which is enough to absorb retransmissions and
match the ACK to a non-2xx whose To tag the INVITE lacked.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sip_core.clock import Clock, TimerHandle
from sip_core.headers import Headers
from sip_core.message import Request, Response, make_response, new_tag, parse_message
from sip_core.transport import Address, ResponseRoute, Source, TransportKind

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransaction",
    "Invite2xxRetransmitter",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "Timers",
    "TransactionLayer",
    "TransactionState",
    "TransportLike",
    "build_ack",
    "build_cancel",
    "server_key",
]

_LOGGER = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"
_DEFAULT_PORT = 5060

RequestHandler = Callable[[Request, "ServerTransaction | None", Source], None]
ResponseHandler = Callable[[Response], None]
StrayResponseHandler = Callable[[Response, Source], None]
TimeoutHandler = Callable[[], None]
ErrorHandler = Callable[[Exception], None]


class TransportLike(Protocol):
    """What the transaction layer needs from a transport (`sip_core.transport.TransportLayer`).

    ``on_failure`` reports failures found later (a TCP connection that cannot be opened); failures
    found at once are raised.

    A transport that also has ``response_route(response, source)`` and
    ``send_response_bytes(data, route)`` (as `TransportLayer` does) lets a server transaction keep
    the serialised response and its route instead of the parsed response; without them a
    retransmission is parsed back from those bytes and goes through ``send_response``.
    """

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None: ...

    def send_response(self, response: Response, source: Source | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values (Table 4), in seconds. B, F, H, J, L and M are all 64*T1."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0
    """Timer D over unreliable transports (at least 32 s)."""
    trying: float = 0.2
    """How long an INVITE server transaction waits for the TU before it sends 100 Trying."""

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J, L and M."""
        return 64 * self.t1


class TransactionState(StrEnum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


_CALLING = TransactionState.CALLING
_TRYING = TransactionState.TRYING
_PROCEEDING = TransactionState.PROCEEDING
_COMPLETED = TransactionState.COMPLETED
_CONFIRMED = TransactionState.CONFIRMED
_ACCEPTED = TransactionState.ACCEPTED
_TERMINATED = TransactionState.TERMINATED
_UDP = TransportKind.UDP

ServerKey = tuple[str | int, ...]
"""(branch, method, host, port), or for RFC 2543 requests ("", method, host, port, Call-ID, From
tag, CSeq number): the method is always second so a CANCEL finds its INVITE by swapping it."""


def server_key(request: Request) -> ServerKey:
    """The key that matches a request to its server transaction (RFC 3261 §17.2.3): the top
    Via's branch, sent-by and the method (an ACK's is its INVITE's); without the magic cookie,
    RFC 2543's dialog ids and CSeq as well."""
    via = request.top_via
    branch = via.branch
    method = "INVITE" if request.method == "ACK" else request.method
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, method, via.host.lower(), via.port or _DEFAULT_PORT)
    return (
        "",
        method,
        via.host.lower(),
        via.port or _DEFAULT_PORT,
        request.call_id or "",
        request.from_.tag or "",
        request.cseq.number,
    )


def _cancel(handle: TimerHandle | None) -> None:
    if handle is not None:
        handle.cancel()


def _request_line(request: Request) -> Request:
    """What a transaction keeps of its request once the final response is settled: the method
    and Request-URI, to match retransmissions and ACKs by its key. The parsed headers, Vias, body
    and typed views would otherwise stay in the garbage collector's sight for up to 64*T1."""
    return Request(request.method, request.uri)


# --------------------------------------------------------------------------------------------
# Building ACK (§17.1.1.3) and CANCEL (§9.1)
# --------------------------------------------------------------------------------------------


def _copy_for(request: Request, method: str, to_value: str | None) -> Request:
    """A request sharing the original's transaction identity: same top Via, URI, ids and Route."""
    src = request.headers
    headers = Headers()
    vias = src.get_all("Via")
    headers.add("Via", vias[0])
    max_forwards = src.get("Max-Forwards")
    headers.add("Max-Forwards", max_forwards if max_forwards is not None else "70")
    for name in ("From", "Call-ID"):
        value = src.get(name)
        if value is not None:
            headers.add(name, value)
    to = to_value if to_value is not None else src.get("To")
    if to is not None:
        headers.add("To", to)
    headers.add("CSeq", f"{request.cseq.number} {method}")
    for route in src.get_all("Route"):
        headers.add("Route", route)
    return Request(method, request.uri, headers)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a 3xx-6xx response to `invite` (§17.1.1.3): To from the response."""
    return _copy_for(invite, "ACK", response.headers.get("To"))


def build_cancel(invite: Request) -> Request:
    """The CANCEL for `invite` (§9.1): same branch, URI, Call-ID, From, To, CSeq number, Route."""
    return _copy_for(invite, "CANCEL", None)


# --------------------------------------------------------------------------------------------
# Server transactions
# --------------------------------------------------------------------------------------------


class ServerTransaction:
    """The server side of one transaction. The TU answers with `respond()`.

    ``on_timeout`` (set by the TU if it cares) is called when the transaction fails: Timer H fired
    without an ACK, or the transport could not send. ``cancelled_transaction`` is set on a CANCEL's
    transaction to the INVITE transaction it cancels.

    ``request`` is the request that created the transaction, until the transaction has sent its
    final response (a non-INVITE one over UDP; over TCP it ends at once): from then on it holds
    only the method and Request-URI, with no headers or body, since the transaction has nothing
    left to do with them. A TU that needs the request later keeps it itself.
    """

    __slots__ = (
        "_expiry",
        "_key",
        "_layer",
        "_route",
        "_wire",
        "cancelled_transaction",
        "on_timeout",
        "reliable",
        "request",
        "source",
        "state",
    )

    def __init__(
        self, layer: TransactionLayer, request: Request, source: Source, key: ServerKey
    ) -> None:
        self._layer = layer
        self._key = key
        self.request = request
        self.source = source
        self.reliable = source.kind is not _UDP
        self.on_timeout: TimeoutHandler | None = None
        self.cancelled_transaction: InviteServerTransaction | None = None
        # The last response as sent, and where it went. Not the parsed Response: over UDP a
        # completed transaction lives 64*T1 only to repeat it, and at thousands of requests a
        # second those parsed objects are what the garbage collector would spend its time on.
        self._wire: bytes | None = None
        self._route: ResponseRoute | None = None
        self._expiry: int | None = None  # its bucket in the layer's expiry wheel
        self.state = _TRYING

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def last_response(self) -> Response | None:
        """The last response sent on this transaction, or None.

        Parsed again from the bytes that were sent, so each access gives a new object (the
        transaction keeps only the bytes).
        """
        wire = self._wire
        if wire is None:
            return None
        response = parse_message(wire)
        assert isinstance(response, Response)
        return response

    def respond(self, response: Response) -> None:
        raise NotImplementedError

    def _retransmission(self, request: Request) -> None:
        raise NotImplementedError

    def _send(self, response: Response) -> bool:
        try:
            self._wire, self._route = self._layer._send_response(response, self.source)
        except Exception as exc:
            _LOGGER.info("Cannot send %d for %s: %s", response.status, self.method, exc)
            self._fail()
            return False
        return True

    def _resend(self) -> bool:
        """Send the last response again (a retransmitted request, Timer G)."""
        wire = self._wire
        if wire is None:
            return True
        try:
            self._layer._resend_response(wire, self._route, self.source)
        except Exception as exc:
            _LOGGER.info("Cannot resend %r for %s: %s", wire[:12], self.method, exc)
            self._fail()
            return False
        return True

    def _fail(self) -> None:
        self._terminate()
        if self.on_timeout is not None:
            self._layer._guard(self.on_timeout)

    def _terminate(self) -> None:
        if self.state is not _TERMINATED:
            self.state = _TERMINATED
            if self._expiry is not None:
                self._layer._wheel.discard(self)
            self._layer._server.pop(self._key, None)

    @property
    def key(self) -> ServerKey:
        """What matches retransmissions of the request to this transaction (`server_key`)."""
        return self._key

    def forget(self) -> None:
        """End this transaction without answering: the request was handed to another process of
        ours, which answers it. Retransmissions of the request then reach the TU again, so that
        it can hand them over too."""
        if self.state is _TRYING:
            self._terminate()

    def _expire(self) -> None:
        """Its time on the layer's expiry wheel is up: what that means depends on the state."""
        if self.state is _TRYING or self.state is _PROCEEDING:
            self._abandon()
        else:
            self._terminate()  # Timer J (I and L for INVITE)

    def _abandon(self) -> None:
        """The TU never gave a final answer: the client gave up long ago, so do we."""
        if self.state is _TRYING or self.state is _PROCEEDING:
            _LOGGER.warning("%s transaction left unanswered for 64*T1; dropping it", self.method)
            self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state}>"


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying -> Proceeding -> Completed -> Terminated (Timer J)."""

    __slots__ = ()

    def respond(self, response: Response) -> None:
        state = self.state
        if state is _COMPLETED or state is _TERMINATED:
            _LOGGER.warning(
                "Dropping %d for %s: transaction already %s", response.status, self.method, state
            )
            return
        if response.status < 200:
            self.state = _PROCEEDING
            self._send(response)
            return
        self.state = _COMPLETED
        if not self._send(response):
            return
        if self.reliable:
            self._terminate()
        else:
            self.request = _request_line(self.request)
            self._layer._wheel.add(self, self._layer.timers.timeout)  # Timer J

    def _retransmission(self, request: Request) -> None:
        if self._wire is not None and self.state is not _TERMINATED:
            self._resend()


class InviteServerTransaction(ServerTransaction):
    """§17.2.1 with RFC 6026: Proceeding -> Completed -> Confirmed | Accepted -> Terminated.

    ``on_ack_timeout(response)`` is called when a 2xx sent here saw no ACK within 64*T1.
    """

    __slots__ = ("_g_interval", "_retransmit", "_trying_timer", "on_ack_timeout")

    def __init__(
        self, layer: TransactionLayer, request: Request, source: Source, key: ServerKey
    ) -> None:
        super().__init__(layer, request, source, key)
        self.state = _PROCEEDING
        self._retransmit: TimerHandle | None = None
        self._trying_timer: TimerHandle | None = None
        self._g_interval = 0.0
        self.on_ack_timeout: Callable[[Response], None] | None = None

    def respond(self, response: Response) -> None:
        state = self.state
        status = response.status
        if state is _ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.5: further 2xx from the TU (retransmissions) go straight out.
            self._send(response)
            return
        if state is not _PROCEEDING:
            _LOGGER.warning("Dropping %d for INVITE: transaction already %s", status, state)
            return
        _cancel(self._trying_timer)
        self._trying_timer = None
        if status < 200:
            self._send(response)
            return
        layer = self._layer
        timers = layer.timers
        if status < 300:
            self.state = _ACCEPTED
            if self._send(response):
                self.request = _request_line(self.request)
                layer._wheel.add(self, timers.timeout)  # Timer L
                layer._start_2xx_retransmitter(self, response)
            return
        self.state = _COMPLETED
        if not self._send(response):
            return
        self.request = _request_line(self.request)
        clock = layer.clock
        if not self.reliable:
            self._g_interval = timers.t1
            self._retransmit = clock.call_later(timers.t1, self._timer_g)
        layer._wheel.add(self, timers.timeout)  # Timer H

    def _retransmission(self, request: Request) -> None:
        state = self.state
        if state is _PROCEEDING or state is _COMPLETED:
            self._resend()
        # Confirmed and Accepted absorb the retransmission silently.

    def _ack(self, ack: Request, source: Source) -> None:
        state = self.state
        if state is _COMPLETED:
            self.state = _CONFIRMED
            _cancel(self._retransmit)
            self._retransmit = None
            if self.reliable:
                self._terminate()
            else:
                self._layer._wheel.add(self, self._layer.timers.t4)  # Timer I (replaces H)
        elif state is _ACCEPTED:
            # RFC 6026: an ACK matching the transaction in Accepted goes to the TU.
            self._layer._ack_without_transaction(ack, source)

    def _start_trying_timer(self) -> None:
        if self.state is _PROCEEDING and self._wire is None:
            self._trying_timer = self._layer.clock.call_later(
                self._layer.timers.trying, self._send_trying
            )

    def _send_trying(self) -> None:
        self._trying_timer = None
        if self.state is _PROCEEDING and self._wire is None:
            self._send(make_response(self.request, 100))

    def _timer_g(self) -> None:
        if self.state is not _COMPLETED or self._wire is None:
            return
        if not self._resend():
            return
        self._g_interval = min(2 * self._g_interval, self._layer.timers.t2)
        self._retransmit = self._layer.clock.call_later(self._g_interval, self._timer_g)

    def _expire(self) -> None:
        if self.state is _COMPLETED:
            self._timer_h()
        else:
            self._terminate()  # Timer I or L

    def _timer_h(self) -> None:
        if self.state is _COMPLETED:
            last = self.last_response
            _LOGGER.info("No ACK for the final response to INVITE %s", last and last.call_id)
            self._fail()

    def _terminate(self) -> None:
        if self.state is not _TERMINATED:
            _cancel(self._retransmit)
            self._retransmit = None
            _cancel(self._trying_timer)
            self._trying_timer = None
        super()._terminate()


# --------------------------------------------------------------------------------------------
# The 2xx retransmitter (UAS core, §13.3.1.4)
# --------------------------------------------------------------------------------------------


class Invite2xxRetransmitter:
    """Retransmits a 2xx to INVITE until its ACK arrives, or reports after 64*T1 (§13.3.1.4).

    Over UDP it resends at T1, 2*T1, ... capped at T2. Over reliable transports it does not resend
    (the hop is reliable; proxies on the path retransmit as they need) but still waits 64*T1 for the
    ACK so the dialog learns of a missing one. `ack_received()` stops it; ``on_timeout(response)``
    is called if the ACK never came; ``on_done()`` in both cases (the layer unregisters there).
    """

    __slots__ = (
        "_clock",
        "_giveup",
        "_interval",
        "_resend",
        "_timers",
        "_transport",
        "active",
        "on_done",
        "on_timeout",
        "response",
        "source",
    )

    def __init__(
        self,
        transport: TransportLike,
        clock: Clock,
        response: Response,
        source: Source,
        *,
        timers: Timers = Timers(),
        on_timeout: Callable[[Response], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._timers = timers
        self.response = response
        self.source = source
        self.on_timeout = on_timeout
        self.on_done = on_done
        self.active = False
        self._interval = timers.t1
        self._resend: TimerHandle | None = None
        self._giveup: TimerHandle | None = None

    def start(self) -> None:
        """Begin after the first transmission (which the caller has made)."""
        if self.active:
            return
        self.active = True
        if self.source.kind is _UDP:
            self._resend = self._clock.call_later(self._interval, self._retransmit)
        self._giveup = self._clock.call_later(self._timers.timeout, self._expire)

    def ack_received(self) -> None:
        if self.active:
            self._stop()
            self.on_timeout = None

    def stop(self) -> None:
        """Stop without waiting for the ACK (the dialog ended another way)."""
        if self.active:
            self._stop()
            self.on_timeout = None

    def _stop(self) -> None:
        self.active = False
        _cancel(self._resend)
        _cancel(self._giveup)
        self._resend = self._giveup = None
        # Callbacks are let go once they can no longer be called: the layer's ``on_done``
        # refers back to this retransmitter, and the cycle would wait for the garbage collector.
        on_done = self.on_done
        self.on_done = None
        if on_done is not None:
            on_done()

    def _retransmit(self) -> None:
        if not self.active:
            return
        try:
            self._transport.send_response(self.response, self.source)
        except Exception as exc:
            _LOGGER.info("Cannot retransmit 2xx: %s", exc)
        self._interval = min(2 * self._interval, self._timers.t2)
        self._resend = self._clock.call_later(self._interval, self._retransmit)

    def _expire(self) -> None:
        if not self.active:
            return
        self._giveup = None
        self._stop()
        _LOGGER.info("No ACK for 2xx to INVITE %s within 64*T1", self.response.call_id)
        on_timeout = self.on_timeout
        self.on_timeout = None
        if on_timeout is not None:
            try:
                on_timeout(self.response)
            except Exception:
                _LOGGER.exception("Error in the 2xx ACK timeout callback")


# --------------------------------------------------------------------------------------------
# Timer J in coarse buckets
# --------------------------------------------------------------------------------------------


type _Expiring = ServerTransaction | ClientTransaction
"""What the expiry wheel runs: anything with an ``_expiry`` slot and ``_expire()``."""


class _ExpiryWheel:
    """Runs every transaction's long timer, a bucket at a time; a transaction has one at most.

    Those are the 64*T1 give-ups -- B, F, H, the CANCELled INVITE's (§9.1) and the unanswered
    request's -- and the timers that end a transaction after its final response: J, I, L, K, D
    and M. Short ones (A, E, G, 100 Trying) stay on the clock. A registrar at 2,000 requests a
    second has some 128,000 transactions waiting out Timer J over UDP, a B2BUA at 300 calls a
    second some 40,000 waiting out the others, plus a give-up timer per request, almost all
    cancelled within milliseconds. One clock timer each would be, on the asyncio loop, a
    TimerHandle, a bound method and a context copy per transaction, in a heap that large (a
    cancelled asyncio timer stays in it until it is due). Instead a transaction joins the bucket of
    the first multiple of ``granularity`` (T1) at or after its deadline, and one clock timer per
    bucket runs them all (``_expire()``, which acts on the transaction's state): each of those
    timers fires between 0 and T1 late (at most 1/10 of the shortest, T4), never early. Buckets
    are dicts, so a transaction ended or answered another way leaves its bucket at once, and a
    bucket left empty cancels its timer.
    """

    __slots__ = ("_buckets", "_clock", "_granularity", "_handles")

    def __init__(self, clock: Clock, granularity: float) -> None:
        self._clock = clock
        self._granularity = granularity
        self._buckets: dict[int, dict[_Expiring, None]] = {}
        self._handles: dict[int, TimerHandle] = {}

    def add(self, txn: _Expiring, delay: float) -> None:
        """Call ``txn._expire()`` no earlier than ``delay`` seconds from now (instead of any
        earlier deadline it had here)."""
        if txn._expiry is not None:
            self.discard(txn)
        now = self._clock.monotonic()
        granularity = self._granularity
        slot = math.ceil((now + delay) / granularity)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            self._handles[slot] = self._clock.call_later(
                slot * granularity - now, functools.partial(self._fire, slot)
            )
        bucket[txn] = None
        txn._expiry = slot

    def discard(self, txn: _Expiring) -> None:
        slot = txn._expiry
        txn._expiry = None
        if slot is None:
            return
        bucket = self._buckets.get(slot)
        if bucket is None:
            return
        bucket.pop(txn, None)
        if not bucket:
            del self._buckets[slot]
            _cancel(self._handles.pop(slot, None))

    def clear(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._buckets.clear()

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def _fire(self, slot: int) -> None:
        self._handles.pop(slot, None)
        bucket = self._buckets.pop(slot, None)
        if bucket is None:
            return
        for txn in bucket:
            txn._expiry = None
            txn._expire()


# --------------------------------------------------------------------------------------------
# Client transactions
# --------------------------------------------------------------------------------------------


class ClientTransaction:
    """The client side of one transaction, made by `TransactionLayer.send_request`."""

    __slots__ = (
        "_expiry",
        "_interval",
        "_keep",
        "_key",
        "_layer",
        "_retransmit",
        "destination",
        "kind",
        "last_response",
        "on_response",
        "on_timeout",
        "on_transport_error",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        destination: Address,
        kind: TransportKind,
        key: tuple[str, str],
        *,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        on_transport_error: ErrorHandler | None,
    ) -> None:
        self._layer = layer
        self._key = key
        self.request = request
        self.destination = destination
        self.kind = kind
        self.reliable = kind is not _UDP
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.on_transport_error = on_transport_error
        self.last_response: Response | None = None
        self._retransmit: TimerHandle | None = None
        self._interval = layer.timers.t1
        self._expiry: int | None = None  # its bucket in the layer's expiry wheel
        self._keep = True
        self.state = _TRYING

    @property
    def method(self) -> str:
        return self.request.method

    def release_messages(self) -> None:
        """The TU has taken what it needs of the request and of the responses.

        From now on `last_response` stays None, and once the final response has come (nothing is
        retransmitted or CANCELled after it) `request` holds only the method and Request-URI.
        Why: a transaction outlives its final response by up to 64*T1 (Timer M, D, K), only to
        absorb or pass on retransmissions, and a B2BUA with hundreds of calls a second would keep
        every one of those parsed requests and responses in the garbage collector's sight.
        """
        self._keep = False
        self.last_response = None
        state = self.state
        if state is _ACCEPTED or state is _COMPLETED or state is _TERMINATED:
            self.request = _request_line(self.request)

    def _finished(self, delay: float) -> None:
        """The final response came: wait ``delay`` (Timer D, K or M) for retransmissions."""
        if not self._keep:
            self.request = _request_line(self.request)
        self._layer._wheel.add(self, delay)

    def cancel(self) -> None:
        raise TypeError(f"only INVITE can be cancelled, not {self.method}")

    def _start(self) -> None:
        raise NotImplementedError

    def _response(self, response: Response) -> None:
        raise NotImplementedError

    def _send_request(self, request: Request) -> bool:
        try:
            self._layer.transport.send_request(
                request, self.destination, self.kind, on_failure=self._transport_failed
            )
        except Exception as exc:
            self._transport_failed(exc)
            return False
        return True

    def _transport_failed(self, exc: Exception) -> None:
        if self.state is _TERMINATED or self.state is _COMPLETED or self.state is _ACCEPTED:
            return
        _LOGGER.info("Transport error for %s to %s: %s", self.method, self.destination, exc)
        self._terminate()
        if self.on_transport_error is not None:
            self._layer._guard(self.on_transport_error, exc)
        else:
            self._layer._guard(self.on_timeout)

    def _deliver(self, response: Response) -> None:
        if self._keep:
            self.last_response = response
        self._layer._guard(self.on_response, response)

    def _timed_out(self) -> None:
        self._terminate()
        self._layer._guard(self.on_timeout)

    def _terminate(self) -> None:
        if self.state is not _TERMINATED:
            self.state = _TERMINATED
            _cancel(self._retransmit)
            self._retransmit = None
            if self._expiry is not None:
                self._layer._wheel.discard(self)
            self._layer._client.pop(self._key, None)

    def _expire(self) -> None:
        """Its time on the layer's expiry wheel is up: Timer B or F while the request is
        unanswered (or 64*T1 after a CANCEL), else D, K or M."""
        state = self.state
        if state is _CALLING or state is _TRYING or state is _PROCEEDING:
            self._timed_out()
        else:
            self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state}>"


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying -> Proceeding -> Completed -> Terminated (Timers E, F, K)."""

    __slots__ = ()

    def _start(self) -> None:
        self.state = _TRYING
        layer = self._layer
        clock = layer.clock
        if not self.reliable:
            self._retransmit = clock.call_later(self._interval, self._timer_e)
        layer._wheel.add(self, layer.timers.timeout)  # Timer F
        self._send_request(self.request)

    def _response(self, response: Response) -> None:
        state = self.state
        if state is not _TRYING and state is not _PROCEEDING:
            return  # Completed absorbs retransmitted finals.
        if response.status < 200:
            self.state = _PROCEEDING
            self._deliver(response)
            return
        self.state = _COMPLETED
        _cancel(self._retransmit)
        self._retransmit = None
        if self.reliable:
            self._terminate()
        else:
            self._finished(self._layer.timers.t4)  # Timer K (replaces F)
        self._deliver(response)

    def _timer_e(self) -> None:
        state = self.state
        if state is not _TRYING and state is not _PROCEEDING:
            return
        if not self._send_request(self.request):
            return
        t2 = self._layer.timers.t2
        self._interval = min(2 * self._interval, t2) if state is _TRYING else t2
        self._retransmit = self._layer.clock.call_later(self._interval, self._timer_e)


class InviteClientTransaction(ClientTransaction):
    """§17.1.1 with RFC 6026: Calling -> Proceeding -> Completed | Accepted -> Terminated.

    ``cancel_transaction`` is the CANCEL's own client transaction once it has been sent.
    """

    __slots__ = (
        "_cancel_handlers",
        "_cancel_pending",
        "ack",
        "cancel_transaction",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        destination: Address,
        kind: TransportKind,
        key: tuple[str, str],
        *,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        on_transport_error: ErrorHandler | None,
    ) -> None:
        super().__init__(
            layer,
            request,
            destination,
            kind,
            key,
            on_response=on_response,
            on_timeout=on_timeout,
            on_transport_error=on_transport_error,
        )
        self.state = _CALLING
        self.ack: Request | None = None
        self.cancel_transaction: ClientTransaction | None = None
        self._cancel_pending = False
        self._cancel_handlers: tuple[ResponseHandler | None, TimeoutHandler | None] = (None, None)

    def _start(self) -> None:
        layer = self._layer
        clock = layer.clock
        if not self.reliable:
            self._retransmit = clock.call_later(self._interval, self._timer_a)
        layer._wheel.add(self, layer.timers.timeout)  # Timer B
        self._send_request(self.request)

    def cancel(
        self,
        *,
        on_response: ResponseHandler | None = None,
        on_timeout: TimeoutHandler | None = None,
    ) -> None:
        """Cancel the INVITE (§9.1).

        The CANCEL goes out on its own non-INVITE transaction once a provisional response has been
        received (at once if one has; else when the first one arrives). Once a final response has
        arrived there is nothing to cancel and this does nothing. ``on_response`` and
        ``on_timeout`` follow the CANCEL's own transaction.
        """
        if self._cancel_pending or self.cancel_transaction is not None:
            return
        if self.state is _CALLING:
            self._cancel_pending = True
            self._cancel_handlers = (on_response, on_timeout)
        elif self.state is _PROCEEDING:
            self._cancel_handlers = (on_response, on_timeout)
            self._send_cancel()

    def _send_cancel(self) -> None:
        self._cancel_pending = False
        on_response, on_timeout = self._cancel_handlers
        layer = self._layer
        self.cancel_transaction = layer.send_request(
            build_cancel(self.request),
            self.destination,
            self.kind,
            on_response=on_response or _ignore_response,
            on_timeout=on_timeout or _ignore_timeout,
        )
        # §9.1: no final response to the INVITE within 64*T1 of the CANCEL: give the INVITE up.
        layer._wheel.add(self, layer.timers.timeout)

    def _response(self, response: Response) -> None:
        state = self.state
        status = response.status
        if status < 200:
            if state is _CALLING:
                self.state = _PROCEEDING
                _cancel(self._retransmit)
                self._retransmit = None
                self._layer._wheel.discard(self)  # Timer B
                self._deliver(response)
                if self._cancel_pending and self.state is _PROCEEDING:
                    self._send_cancel()
            elif state is _PROCEEDING:
                self._deliver(response)
            return
        layer = self._layer
        if status < 300:
            if state is _CALLING or state is _PROCEEDING:
                self._cancel_pending = False
                self.state = _ACCEPTED
                _cancel(self._retransmit)
                self._retransmit = None
                layer._wheel.discard(self)  # Timer B, or the CANCEL's 64*T1
                self._deliver(response)
                if self.state is _ACCEPTED:
                    self._finished(layer.timers.timeout)  # Timer M
            elif state is _ACCEPTED:
                self._deliver(response)  # retransmitted or forked 2xx: the TU ACKs each
            return
        if state is _CALLING or state is _PROCEEDING:
            self._cancel_pending = False
            self.state = _COMPLETED
            _cancel(self._retransmit)
            self._retransmit = None
            layer._wheel.discard(self)  # Timer B, or the CANCEL's 64*T1
            self.ack = build_ack(self.request, response)
            self._send_request(self.ack)
            if self.reliable:
                self._terminate()
            else:
                self._finished(layer.timers.d)  # Timer D
            self._deliver(response)
        elif state is _COMPLETED and self.ack is not None:
            self._send_request(self.ack)  # the final was retransmitted: our ACK was lost

    def _timer_a(self) -> None:
        if self.state is not _CALLING:
            return
        if not self._send_request(self.request):
            return
        self._interval *= 2
        self._retransmit = self._layer.clock.call_later(self._interval, self._timer_a)


def _ignore_response(response: Response) -> None:
    return None


def _ignore_timeout() -> None:
    return None


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


class TransactionLayer:
    """Matches messages to transactions, creates them, and keeps the tables clean."""

    def __init__(
        self,
        transport: TransportLike,
        clock: Clock,
        *,
        on_request: RequestHandler,
        on_stray_response: StrayResponseHandler | None = None,
        timers: Timers = Timers(),
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.on_request = on_request
        self.on_stray_response = on_stray_response
        self.timers = timers
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._pending_2xx: dict[tuple[str, int, str], Invite2xxRetransmitter] = {}
        self._wheel = _ExpiryWheel(clock, timers.t1)
        route = getattr(transport, "response_route", None)
        send_bytes = getattr(transport, "send_response_bytes", None)
        self._response_route: Callable[[Response, Source | None], ResponseRoute] | None = (
            route if send_bytes is not None else None
        )
        self._send_response_bytes: Callable[[bytes, ResponseRoute], None] | None = send_bytes

    # -- introspection (tests, diagnostics) ---------------------------------------------------

    @property
    def server_count(self) -> int:
        return len(self._server)

    @property
    def client_count(self) -> int:
        return len(self._client)

    @property
    def pending_2xx_count(self) -> int:
        """2xx responses still being retransmitted while their ACK is awaited."""
        return len(self._pending_2xx)

    @property
    def wheel_count(self) -> int:
        """Transactions waiting on the shared expiry wheel (a long timer each)."""
        return len(self._wheel)

    def close(self) -> None:
        """Terminate every transaction and stop every timer, without telling the TU.

        Called when the stack shuts down: nothing may fire on a closed transport afterwards.
        """
        for server in list(self._server.values()):
            server._terminate()
        for client in list(self._client.values()):
            client._terminate()
        for retransmitter in list(self._pending_2xx.values()):
            retransmitter.stop()
        self._wheel.clear()
        self._server.clear()
        self._client.clear()
        self._pending_2xx.clear()

    # -- incoming -----------------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Source) -> None:
        """Take a message from the transport. Never raises."""
        try:
            if isinstance(message, Request):
                self._receive_request(message, source)
            else:
                self._receive_response(message, source)
        except ValueError as exc:  # ParseError included: headers are parsed lazily
            _LOGGER.debug("Dropping a malformed message from %s: %s", source.remote, exc)
        except Exception:
            _LOGGER.exception("Transaction layer failed on a message from %s", source.remote)

    def _receive_request(self, request: Request, source: Source) -> None:
        method = request.method
        key = server_key(request)
        txn = self._server.get(key)
        if txn is not None:
            if method == "ACK":
                if isinstance(txn, InviteServerTransaction):
                    txn._ack(request, source)
            else:
                txn._retransmission(request)
            return
        if method == "ACK":
            self._ack_without_transaction(request, source)
            return
        if method == "CANCEL":
            self._receive_cancel(request, source, key)
            return
        if method == "INVITE":
            invite = InviteServerTransaction(self, request, source, key)
            self._server[key] = invite
            self._dispatch(request, invite, source)
            invite._start_trying_timer()
            return
        txn = NonInviteServerTransaction(self, request, source, key)
        self._server[key] = txn
        self._dispatch(request, txn, source)
        if txn.state is _TRYING or txn.state is _PROCEEDING:
            self._wheel.add(txn, self.timers.timeout)  # ends it unanswered (_abandon)

    def _dispatch(self, request: Request, txn: ServerTransaction, source: Source) -> None:
        try:
            self.on_request(request, txn, source)
        except Exception:
            _LOGGER.exception("Error handling %s from %s", request.method, source.remote)
            if txn.state is _TRYING or txn.state is _PROCEEDING:
                txn.respond(make_response(request, 500, to_tag=new_tag()))

    def _receive_cancel(self, cancel: Request, source: Source, key: ServerKey) -> None:
        invite_key = (key[0], "INVITE", *key[2:])
        txn = NonInviteServerTransaction(self, cancel, source, key)
        self._server[key] = txn
        invite = self._server.get(invite_key)
        if not isinstance(invite, InviteServerTransaction):
            txn.respond(make_response(cancel, 481, to_tag=new_tag()))
            return
        txn.cancelled_transaction = invite
        last = invite.last_response
        tag = last.to.tag if last is not None and last.status > 100 else None
        txn.respond(make_response(cancel, 200, to_tag=tag or new_tag()))
        if invite.state is _PROCEEDING:
            self._dispatch(cancel, txn, source)

    def _ack_without_transaction(self, ack: Request, source: Source) -> None:
        """An ACK for a 2xx (its own transaction): stop that 2xx's retransmission, tell the TU."""
        if self._pending_2xx:
            try:
                pending = self._pending_2xx.get(
                    (ack.call_id or "", ack.cseq.number, ack.to.tag or "")
                )
            except ValueError:
                pending = None
            if pending is not None:
                pending.ack_received()
        try:
            self.on_request(ack, None, source)
        except Exception:
            _LOGGER.exception("Error handling ACK from %s", source.remote)

    def _receive_response(self, response: Response, source: Source) -> None:
        via = response.top_via
        txn = self._client.get((via.branch or "", response.cseq.method))
        if txn is not None:
            txn._response(response)
            return
        if self.on_stray_response is not None:
            self._guard(self.on_stray_response, response, source)
        else:
            _LOGGER.debug("Dropping a response matching no transaction from %s", source.remote)

    # -- outgoing -----------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        on_transport_error: ErrorHandler | None = None,
    ) -> ClientTransaction:
        """Send `request` on a new client transaction.

        The request must carry its top Via with a fresh branch (``new_branch()``). ACK is not
        sent through a transaction: send a 2xx's ACK with the transport directly.
        """
        method = request.method
        if method == "ACK":
            raise ValueError("ACK has no client transaction; send it through the transport")
        branch = request.top_via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise ValueError("a request needs a top Via with a z9hG4bK branch (new_branch())")
        key = (branch, method)
        if key in self._client:
            raise ValueError(f"a {method} transaction with branch {branch} is already running")
        cls = InviteClientTransaction if method == "INVITE" else NonInviteClientTransaction
        txn = cls(
            self,
            request,
            destination,
            kind,
            key,
            on_response=on_response,
            on_timeout=on_timeout,
            on_transport_error=on_transport_error,
        )
        self._client[key] = txn
        txn._start()
        return txn

    # -- helpers ------------------------------------------------------------------------------

    def _send_response(
        self, response: Response, source: Source
    ) -> tuple[bytes, ResponseRoute | None]:
        """Send a server transaction's response; what it needs to send it again."""
        route_of = self._response_route
        send_bytes = self._send_response_bytes
        if route_of is not None and send_bytes is not None:
            route = route_of(response, source)
            data = response.to_bytes()
            send_bytes(data, route)
            return data, route
        self.transport.send_response(response, source)
        return response.to_bytes(), None

    def _resend_response(self, data: bytes, route: ResponseRoute | None, source: Source) -> None:
        send_bytes = self._send_response_bytes
        if route is not None and send_bytes is not None:
            send_bytes(data, route)
            return
        response = parse_message(data)
        assert isinstance(response, Response)
        self.transport.send_response(response, source)

    def _start_2xx_retransmitter(self, txn: InviteServerTransaction, response: Response) -> None:
        key = (response.call_id or "", response.cseq.number, response.to.tag or "")
        old = self._pending_2xx.pop(key, None)
        if old is not None:
            old.on_done = None
            old.stop()

        def done() -> None:
            if self._pending_2xx.get(key) is retransmitter:
                del self._pending_2xx[key]

        def timeout(resp: Response) -> None:
            if txn.on_ack_timeout is not None:
                self._guard(txn.on_ack_timeout, resp)

        retransmitter = Invite2xxRetransmitter(
            self.transport,
            self.clock,
            response,
            txn.source,
            timers=self.timers,
            on_timeout=timeout,
            on_done=done,
        )
        self._pending_2xx[key] = retransmitter
        retransmitter.start()

    def _guard[*Ts](self, callback: Callable[[*Ts], None], *args: *Ts) -> None:
        try:
            callback(*args)
        except Exception:
            _LOGGER.exception("Error in a transaction callback %r", callback)
