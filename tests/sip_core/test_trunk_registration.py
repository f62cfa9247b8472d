"""A trunk's REGISTER client on a ManualClock: every state, the 423 and digest paths, refresh,
and the back-off schedule (counted over a window), with a recording sender in place of the
transaction layer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sip_core.clock import ManualClock
from sip_core.digest import parse_credentials
from sip_core.events import PbxEvent, TrunkFailure, TrunkStateChanged, TrunkStatus
from sip_core.message import Request, Response, make_response
from sip_core.transport import Address, TransportKind
from sip_core.trunk.config import HostPort, Trunk, TrunkTransport
from sip_core.trunk.registration import (
    AUTH_BACKOFF,
    BACKOFF,
    TrunkRegistration,
    TrunkRegistrations,
    refresh_delay,
)

CHALLENGE = 'Digest realm="sip.example", nonce="{nonce}", qop="auth", algorithm=MD5'


@dataclass
class Sent:
    request: Request
    destination: Address
    kind: TransportKind
    on_response: Callable[[Response], None]
    on_timeout: Callable[[], None]
    on_transport_error: Callable[[Exception], None] | None


@dataclass
class Recorder:
    sent: list[Sent] = field(default_factory=list)
    fail_with: Exception | None = None

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_transport_error: Callable[[Exception], None] | None = None,
    ) -> object:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(
            Sent(request, destination, kind, on_response, on_timeout, on_transport_error)
        )
        return object()

    @property
    def last(self) -> Sent:
        return self.sent[-1]

    def answer(self, status: int, *headers: tuple[str, str]) -> None:
        last = self.last
        response = make_response(last.request, status, to_tag="prov")
        for name, value in headers:
            response.headers.add(name, value)
        last.on_response(response)


def trunk(**changes: Any) -> Trunk:
    values: dict[str, Any] = {
        "name": "provider",
        "host": "sip.example",
        "username": "4930",
        "password": "right",
    }
    values.update(changes)
    return Trunk(**values)


@dataclass
class Harness:
    clock: ManualClock
    sender: Recorder
    events: list[PbxEvent]
    registration: TrunkRegistration

    @property
    def states(self) -> list[tuple[TrunkStatus, TrunkFailure | None]]:
        return [(e.status, e.failure) for e in self.events if isinstance(e, TrunkStateChanged)]

    @property
    def last_event(self) -> TrunkStateChanged:
        event = self.events[-1]
        assert isinstance(event, TrunkStateChanged)
        return event


def harness(**changes: Any) -> Harness:
    clock = ManualClock()
    sender = Recorder()
    events: list[PbxEvent] = []
    registration = TrunkRegistration(
        trunk(**changes),
        sender=sender,
        clock=clock,
        local_host=lambda _host: "192.0.2.5",
        local_port=lambda: 5070,
        publish=events.append,
    )
    return Harness(clock, sender, events, registration)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def credentials(request: Request) -> dict[str, str]:
    lines = request.headers.get_lines("Authorization")
    assert len(lines) == 1
    parsed = parse_credentials(lines[0])
    assert parsed is not None
    return parsed.params


def register_ok(h: Harness, expires: int = 600) -> None:
    """Walk the first REGISTER through a challenge to a 200 granting ``expires``."""
    h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce="n1")))
    h.sender.answer(200, ("Contact", f"<sip:4930@192.0.2.5:5070>;expires={expires}"))


def test_registers_with_a_digest_answer_and_refreshes_before_expiry() -> None:
    h = harness()
    h.registration.start()
    first = h.sender.last
    request = first.request
    assert first.destination == Address("sip.example", 5060)
    assert first.kind is TransportKind.UDP
    assert str(request.uri) == "sip:sip.example"
    assert str(request.to.uri) == "sip:4930@sip.example"
    assert str(request.from_.uri) == "sip:4930@sip.example"
    assert request.from_.tag
    assert request.headers.get("Contact") == "<sip:4930@192.0.2.5:5070>"
    assert request.headers.get("Expires") == "600"
    assert "Authorization" not in request.headers
    assert h.states == [(TrunkStatus.REGISTERING, None)]

    h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce="n1")))
    answered = h.sender.last.request
    params = credentials(answered)
    ha1 = md5("4930:sip.example:right")
    ha2 = md5("REGISTER:sip:sip.example")
    assert params["response"] == md5(f"{ha1}:n1:00000001:{params['cnonce']}:auth:{ha2}")
    assert answered.cseq.number == request.cseq.number + 1
    assert answered.call_id == request.call_id
    assert answered.top_via.branch != request.top_via.branch

    h.sender.answer(200, ("Contact", "<sip:4930@192.0.2.5:5070>;expires=300"))
    assert h.registration.state.status is TrunkStatus.REGISTERED
    assert h.registration.registered
    assert h.last_event == TrunkStateChanged(
        "provider", TrunkStatus.REGISTERED, retry_in=240.0, expires_in=300.0
    )
    count = len(h.sender.sent)
    h.clock.advance(239)
    assert len(h.sender.sent) == count
    h.clock.advance(1)
    refresh = h.sender.last.request
    assert len(h.sender.sent) == count + 1
    # The refresh reuses the nonce with the next count: no extra round trip.
    assert credentials(refresh)["nonce"] == "n1"
    assert credentials(refresh)["nc"] == "00000002"
    assert refresh.call_id == request.call_id
    assert refresh.from_.tag == request.from_.tag
    assert refresh.cseq.number == answered.cseq.number + 1


def test_the_refresh_schedule() -> None:
    assert refresh_delay(3600) == 3540
    assert refresh_delay(600) == 540
    assert refresh_delay(60) == 30


def test_granted_lifetime_from_expires_header_or_our_own() -> None:
    h = harness(register_interval=900)
    h.registration.start()
    h.sender.answer(200, ("Expires", "120"))
    assert h.last_event.expires_in == 120.0
    h.clock.advance(refresh_delay(120))
    h.sender.answer(200)
    assert h.last_event.expires_in == 900.0


def test_423_raises_the_interval_to_min_expires() -> None:
    h = harness(register_interval=60)
    h.registration.start()
    h.sender.answer(423, ("Min-Expires", "1800"))
    assert h.sender.last.request.headers.get("Expires") == "1800"
    assert h.registration.interval == 1800
    h.sender.answer(200)
    assert h.registration.state.status is TrunkStatus.REGISTERED


@pytest.mark.parametrize(
    "headers",
    [(), (("Min-Expires", "60"),), (("Min-Expires", "soon"),), (("Min-Expires", "999999"),)],
)
def test_423_without_a_usable_min_expires_fails(headers: tuple[tuple[str, str], ...]) -> None:
    h = harness(register_interval=60)
    h.registration.start()
    h.sender.answer(423, *headers)
    assert h.registration.state.status is TrunkStatus.FAILING
    assert h.registration.state.failure is TrunkFailure.INTERVAL
    assert h.last_event.retry_in == BACKOFF.delay(1)


def test_wrong_password_backs_off_on_a_capped_schedule() -> None:
    """Over six hours a wrong password costs the provider only a handful of refused answers."""
    h = harness(password="wrong")
    h.registration.start()
    refused = 0
    attempts_at: list[float] = []
    start = h.clock.monotonic()
    while h.clock.monotonic() - start < 6 * 3600:
        request = h.sender.last.request
        attempts_at.append(h.clock.monotonic() - start)
        # A new attempt starts without credentials (the refused nonce was forgotten).
        assert "Authorization" not in request.headers
        h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce=f"a{len(attempts_at)}")))
        assert "Authorization" in h.sender.last.request.headers
        h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce=f"b{len(attempts_at)}")))
        refused += 1
        state = h.registration.state
        assert state.status is TrunkStatus.FAILING
        assert state.failure is TrunkFailure.AUTHENTICATION
        assert state.auth_failures == refused
        count = len(h.sender.sent)
        delay = h.last_event.retry_in
        assert delay == AUTH_BACKOFF.delay(refused)
        assert delay is not None
        h.clock.advance(delay - 0.5)
        assert len(h.sender.sent) == count  # nothing before the delay is up
        h.clock.advance(0.5)
        assert len(h.sender.sent) == count + 1
    assert attempts_at[:6] == [0, 300, 900, 2100, 4500, 8100]
    assert sum(1 for t in attempts_at if t < 3600) == 4
    assert refused == 9  # six hours: at 0, 5, 15, 35, 75 min, then hourly
    assert AUTH_BACKOFF.delay(50) == 3600


def test_a_stale_challenge_is_answered_but_not_forever() -> None:
    h = harness()
    h.registration.start()
    h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce="n1")))
    stale = CHALLENGE.format(nonce="n2") + ", stale=true"
    h.sender.answer(401, ("WWW-Authenticate", stale))
    assert credentials(h.sender.last.request)["nonce"] == "n2"
    h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce="n3") + ", stale=true"))
    assert h.registration.state.failure is TrunkFailure.AUTHENTICATION
    assert len(h.sender.sent) == 3


@pytest.mark.parametrize(
    ("challenge", "failure"),
    [
        (
            'Digest realm="sip.example", nonce="n", qop="auth-int"',
            TrunkFailure.UNSUPPORTED_CHALLENGE,
        ),
        ('Digest realm="elsewhere", nonce="n", qop="auth"', TrunkFailure.WRONG_REALM),
    ],
)
def test_challenges_that_cannot_be_answered(challenge: str, failure: TrunkFailure) -> None:
    h = harness(realm="sip.example")
    h.registration.start()
    h.sender.answer(401, ("WWW-Authenticate", challenge))
    assert h.registration.state.failure is failure
    assert len(h.sender.sent) == 1


def test_forbidden_counts_as_refused_credentials() -> None:
    h = harness()
    h.registration.start()
    h.sender.answer(401, ("WWW-Authenticate", CHALLENGE.format(nonce="n1")))
    h.sender.answer(403)
    assert h.registration.state.failure is TrunkFailure.AUTHENTICATION
    assert h.last_event.retry_in == AUTH_BACKOFF.delay(1)
    h.clock.advance(AUTH_BACKOFF.delay(1))
    assert "Authorization" not in h.sender.last.request.headers  # the nonce was dropped


def test_timeouts_back_off_exponentially_then_recover() -> None:
    h = harness()
    h.registration.start()
    delays = []
    for _ in range(8):
        h.sender.last.on_timeout()
        assert h.registration.state.failure is TrunkFailure.TIMEOUT
        delay = h.last_event.retry_in
        assert delay is not None
        delays.append(delay)
        h.clock.advance(delay)
    assert delays == [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert h.registration.state.failures == 8
    assert h.registration.state.auth_failures == 0
    register_ok(h)
    assert h.registration.state.status is TrunkStatus.REGISTERED
    assert h.registration.state.failures == 0
    h.clock.advance(refresh_delay(600))
    h.sender.last.on_timeout()
    assert h.last_event.retry_in == 30  # the count started again
    # The registration granted before is still held while the refresh fails.
    assert h.last_event.expires_in == pytest.approx(60)


def test_a_transport_error_fails_the_attempt() -> None:
    h = harness()
    h.registration.start()
    callback = h.sender.last.on_transport_error
    assert callback is not None
    callback(OSError("connection refused"))
    assert h.registration.state.failure is TrunkFailure.TRANSPORT
    assert "connection refused" in h.registration.state.detail
    h.sender.fail_with = OSError("no route")
    h.clock.advance(30)
    assert h.registration.state.failures == 2
    assert h.last_event.retry_in == 60


def test_retry_after_lengthens_the_wait() -> None:
    h = harness()
    h.registration.start()
    h.sender.answer(503, ("Retry-After", "900 (maintenance)"))
    assert h.registration.state.failure is TrunkFailure.REFUSED
    assert h.registration.state.detail == "503 Service Unavailable"
    assert h.last_event.retry_in == 900
    h.clock.advance(900)
    h.sender.answer(503, ("Retry-After", "5"))
    assert h.last_event.retry_in == 60  # never shorter than the back-off


def test_a_registration_granted_for_zero_seconds_is_a_failure() -> None:
    h = harness()
    h.registration.start()
    h.sender.answer(200, ("Expires", "0"))
    assert h.registration.state.status is TrunkStatus.FAILING
    assert not h.registration.registered


def test_tcp_and_the_outbound_proxy() -> None:
    h = harness(
        transport=TrunkTransport.TCP,
        domain="example.net",
        outbound_proxy=HostPort("10.0.0.1", 5080),
    )
    h.registration.start()
    sent = h.sender.last
    assert sent.destination == Address("10.0.0.1", 5080)
    assert sent.kind is TransportKind.TCP
    assert str(sent.request.uri) == "sip:example.net"
    assert sent.request.headers.get("Route") == "<sip:10.0.0.1:5080;lr>"
    assert sent.request.headers.get("Contact") == "<sip:4930@192.0.2.5:5070;transport=tcp>"
    assert sent.request.top_via.transport == "TCP"
    h.sender.answer(407, ("Proxy-Authenticate", CHALLENGE.format(nonce="p")))
    assert "Proxy-Authorization" in h.sender.last.request.headers


def test_stop_unregisters_and_leaves_no_timer() -> None:
    h = harness()
    h.registration.start()
    register_ok(h)
    h.registration.stop()
    bye = h.sender.last.request
    assert bye.headers.get("Expires") == "0"
    assert credentials(bye)["nonce"] == "n1"
    assert h.registration.state.status is TrunkStatus.STOPPED
    assert h.clock.pending == 0
    count = len(h.events)
    h.sender.answer(200)  # late answers change nothing
    assert len(h.events) == count
    h.registration.stop()
    assert len(h.events) == count


def test_stop_while_failing_sends_nothing() -> None:
    h = harness()
    h.registration.start()
    h.sender.last.on_timeout()
    count = len(h.sender.sent)
    h.registration.stop()
    assert len(h.sender.sent) == count
    assert h.clock.pending == 0


def test_a_late_answer_to_an_abandoned_attempt_is_ignored() -> None:
    h = harness()
    h.registration.start()
    first = h.sender.last
    first.on_timeout()
    h.clock.advance(30)
    first.on_response(make_response(first.request, 200, to_tag="x"))
    assert h.registration.state.status is TrunkStatus.FAILING


def test_only_trunks_that_register_get_a_registration() -> None:
    clock = ManualClock()
    sender = Recorder()
    registrations = TrunkRegistrations(
        [trunk(), trunk(name="fritz", register=False)],
        sender=sender,
        clock=clock,
        local_host=lambda _host: "127.0.0.1",
        local_port=lambda: 5060,
        publish=lambda _event: None,
    )
    registrations.start()
    assert [s.trunk for s in registrations.states()] == ["provider"]
    assert registrations.get("fritz") is None
    assert len(sender.sent) == 1
    registrations.stop()
    assert clock.pending == 0
