"""Keeping a trunk registered with its provider: a REGISTER client (RFC 3261 §10) per trunk.

Each ``TrunkRegistration`` sends REGISTER on the PBX's transaction layer, answers the provider's
digest challenges (``sip_core.digest_client``), follows a 423's Min-Expires, refreshes before the
registration runs out, and backs off when attempts fail. Its state (``TrunkStatus`` with the
reason) is published as a ``TrunkStateChanged`` event whenever it changes or fails once more.

One attempt is one REGISTER plus what it takes to answer it: at most two digest challenges (a
fresh one, then a stale one) and at most two 423s. Whatever else comes back ends the attempt.

Back-off, after the n-th failed attempt in a row:

- credentials refused (a challenge answered and challenged again without ``stale``, or 403):
  ``min(300 * 2**(n-1), 3600)`` seconds: 5, 10, 20, 40 minutes, then hourly. A provider sees at
  most one refused answer per attempt (the remembered nonce is dropped after a refusal, so the
  next attempt starts without credentials), that is 4 in the first hour and at most 24 a day
  after that: far below what provider-side bans (typically several failures within minutes)
  react to. A wrong password is not fixed by retrying; the retries are only for a provider
  that refused by mistake.
- anything else (no answer, transport error, 5xx, other refusals): ``min(30 * 2**(n-1), 1800)``
  seconds: 30 s, 1, 2, 4, 8, 16 minutes, then every 30 minutes.

A Retry-After in the failure response lengthens the wait to what it asks (never shortens it).
Success resets the count. Refresh happens ``min(granted / 2, 60)`` seconds before the granted
lifetime ends, so that even a retransmitted REGISTER (Timer F: 32 s) arrives in time.

Over TCP and TLS the registration's connection is also the way in for the provider's calls; a
CRLF keep-alive every ``KEEPALIVE_INTERVAL`` seconds while registered keeps it from being closed
as idle (by either side, or by a NAT) between refreshes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from sip_core.dialog import LocalEndpoint, build_request, first_cseq
from sip_core.digest_client import AuthOutcome, ClientCredentials, DigestClient
from sip_core.events import PbxEvent, TrunkFailure, TrunkStateChanged, TrunkStatus
from sip_core.message import new_call_id, new_tag
from sip_core.transport import Address, CertificateError, TransportKind
from sip_core.trunk.config import Trunk
from sip_core.trunk.nat import advertised_endpoint
from sip_core.uri import SipUri

if TYPE_CHECKING:
    from sip_core.clock import Clock, TimerHandle
    from sip_core.message import Request, Response

__all__ = [
    "AUTH_BACKOFF",
    "BACKOFF",
    "Backoff",
    "RequestSender",
    "TrunkRegistration",
    "TrunkRegistrations",
    "TrunkState",
    "refresh_delay",
]

_LOGGER = logging.getLogger(__name__)

#: Challenges answered within one attempt: a fresh one, then one marked stale.
MAX_CHALLENGES = 2
#: 423 Interval Too Brief answers followed within one attempt.
MAX_INTERVAL_RETRIES = 2
#: The longest registration we ask for after a 423 (a provider asking for more is refused).
MAX_INTERVAL = 86400
#: Seconds between CRLF keep-alives on a TCP or TLS trunk's connection while registered
#: (RFC 5626 §4.4.1 suggests 95 to 120 s for connection-oriented transports): the provider's
#: calls arrive on that connection, so neither side may close it as idle between refreshes.
KEEPALIVE_INTERVAL = 120.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """``min(first * 2**(n-1), cap)`` seconds after the n-th failure in a row."""

    first: float
    cap: float

    def delay(self, failures: int) -> float:
        return min(self.first * 2.0 ** max(failures - 1, 0), self.cap)


#: After failures other than refused credentials.
BACKOFF = Backoff(30.0, 1800.0)
#: After refused credentials: slow, so that a provider never bans us for a wrong password.
AUTH_BACKOFF = Backoff(300.0, 3600.0)


def refresh_delay(granted: float) -> float:
    """When to refresh a registration granted for ``granted`` seconds (see the module doc)."""
    return granted - min(granted / 2, 60.0)


class RequestSender(Protocol):
    """What a registration needs of the transaction layer (``TransactionLayer`` is one)."""

    def send_request(
        self,
        request: Request,
        destination: Address,
        kind: TransportKind,
        *,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_transport_error: Callable[[Exception], None] | None = None,
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class TrunkState:
    """A trunk's registration as it stands (what the last ``TrunkStateChanged`` said)."""

    trunk: str
    status: TrunkStatus
    failure: TrunkFailure | None = None
    detail: str = ""
    failures: int = 0
    auth_failures: int = 0


def _request_uri(trunk: Trunk) -> SipUri:
    """RFC 3261 §10.2: the Request-URI names the registrar's domain (no user part)."""
    if trunk.domain and trunk.domain != trunk.host:
        return SipUri.parse(f"sip:{_host(trunk.domain)}")
    port = "" if trunk.port == 5060 else f":{trunk.port}"
    return SipUri.parse(f"sip:{_host(trunk.host)}{port}")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    digits = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(digits) if digits.isdigit() else None


class TrunkRegistration:
    """Registers one trunk and keeps it registered; see the module doc for the schedule.

    ``local_host`` gives our address as the provider reaches it (Via and Contact), for the host
    it is given; ``local_port`` our SIP port.
    """

    def __init__(
        self,
        trunk: Trunk,
        *,
        sender: RequestSender,
        clock: Clock,
        local_host: Callable[[str], str],
        local_port: Callable[[], int],
        publish: Callable[[PbxEvent], None],
        tls_port: Callable[[], int | None] | None = None,
        keepalive: Callable[[Address, TransportKind], object] | None = None,
    ) -> None:
        self.trunk = trunk
        self._keepalive = keepalive
        self._keepalive_timer: TimerHandle | None = None
        self._sender = sender
        self._clock = clock
        self._local_host = local_host
        self._local_port = local_port
        self._publish = publish
        self._digest = DigestClient(ClientCredentials(trunk.auth_user, trunk.password, trunk.realm))
        self._kind = trunk.transport.kind
        self._tls_port = tls_port
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = first_cseq()
        self._interval = trunk.register_interval
        self._timer: TimerHandle | None = None
        self._pending: Request | None = None
        self._challenges = 0
        self._too_brief = 0
        self._expires_at: float | None = None
        self._running = False
        self.state = TrunkState(trunk.name, TrunkStatus.REGISTERING)

    @property
    def interval(self) -> int:
        """The lifetime asked for (``register_interval``, raised by a 423's Min-Expires)."""
        return self._interval

    @property
    def registered(self) -> bool:
        """Whether the provider still holds our registration, by what it granted."""
        return self._expires_at is not None and self._clock.monotonic() < self._expires_at

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Send the first REGISTER now."""
        if self._running:
            return
        self._running = True
        self._set(TrunkStatus.REGISTERING)
        self._attempt()

    def stop(self) -> None:
        """Stop every timer; if registered, send a REGISTER with Expires 0 (not waited for)."""
        if not self._running:
            return
        self._running = False
        self._cancel_timer()
        self._cancel_keepalive()
        self._pending = None
        if self.registered:
            request = self._build(expires=0)
            self._digest.authorize(request)
            try:
                self._send(request, lambda _r: None, lambda: None, lambda _e: None)
            except Exception as exc:  # the PBX is going down: say so and go on
                _LOGGER.info("Trunk %s: could not unregister: %s", self.trunk.name, exc)
        self._expires_at = None
        self._set(TrunkStatus.STOPPED)

    # -- one attempt --------------------------------------------------------------------------

    def _attempt(self) -> None:
        self._timer = None
        if not self._running:
            return
        self._challenges = 0
        self._too_brief = 0
        request = self._build(expires=self._interval)
        self._digest.authorize(request)  # the remembered nonce, if any: saves a round trip
        self._send_register(request)

    def _build(self, *, expires: int) -> Request:
        trunk = self.trunk
        hop = trunk.next_hop
        local_port = self._port()
        endpoint = advertised_endpoint(trunk, local_port, self._kind) or LocalEndpoint(
            self._local_host(hop.host), local_port, self._kind
        )
        host, port = endpoint.host, endpoint.port
        aor = f"<sip:{trunk.username}@{_host(trunk.aor_domain)}>"
        transport = "" if self._kind is TransportKind.UDP else f";transport={trunk.transport}"
        contact = f"<sip:{trunk.username}@{_host(host)}:{port}{transport}>"
        routes = () if trunk.outbound_proxy is None else (f"<sip:{hop};lr>",)
        self._cseq += 1
        return build_request(
            "REGISTER",
            _request_uri(trunk),
            endpoint=endpoint,
            from_value=f"{aor};tag={self._from_tag}",
            to_value=aor,
            call_id=self._call_id,
            cseq=self._cseq,
            routes=routes,
            extra=(("Contact", contact), ("Expires", str(expires))),
        )

    def _port(self) -> int:
        """Our port for this trunk's transport: the TLS listener's for TLS when there is one
        (without one the provider must answer on our connection, which providers do), else the
        SIP port."""
        if self._kind is TransportKind.TLS and self._tls_port is not None:
            return self._tls_port() or self._local_port()
        return self._local_port()

    def _send_register(self, request: Request) -> None:
        self._pending = request
        try:
            self._send(
                request,
                lambda response: self._on_response(request, response),
                lambda: self._on_failure(request, TrunkFailure.TIMEOUT, "", None),
                lambda exc: self._on_transport_error(request, exc),
            )
        except Exception as exc:
            self._on_failure(request, TrunkFailure.TRANSPORT, str(exc), None)

    def _on_transport_error(self, request: Request, exc: Exception) -> None:
        """A refused TLS certificate is its own reason (the fix is the CA file or the
        provider's certificate, not the network); backed off like every other failure."""
        if isinstance(exc, CertificateError):
            self._on_failure(request, TrunkFailure.CERTIFICATE, exc.detail, None)
        else:
            self._on_failure(request, TrunkFailure.TRANSPORT, str(exc), None)

    def _send(
        self,
        request: Request,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        hop = self.trunk.next_hop
        self._sender.send_request(
            request,
            Address(hop.host, hop.port),
            self._kind,
            on_response=on_response,
            on_timeout=on_timeout,
            on_transport_error=on_error,
        )

    def _resend(self) -> None:
        """The same registration again, with the next CSeq and fresh credentials."""
        fresh = self._build(expires=self._interval)
        self._digest.authorize(fresh)
        self._send_register(fresh)

    def _on_response(self, request: Request, response: Response) -> None:
        if request is not self._pending or not self._running:
            return  # an answer to an attempt that was given up, or after stop()
        status = response.status
        if status < 200:
            return
        if 200 <= status < 300:
            self._on_registered(response)
        elif status in (401, 407):
            self._on_challenge(request, response)
        elif status == 423:
            self._on_too_brief(request, response)
        elif status == 403:
            self._digest.forget()  # as after a refused answer: start the next attempt afresh
            self._on_failure(request, TrunkFailure.AUTHENTICATION, "403 Forbidden", response)
        else:
            detail = f"{status} {response.reason}"
            self._on_failure(request, TrunkFailure.REFUSED, detail, response)

    def _on_challenge(self, request: Request, response: Response) -> None:
        outcome = self._digest.handle(request, response)
        if outcome is AuthOutcome.RETRY:
            self._challenges += 1
            if self._challenges <= MAX_CHALLENGES:
                self._resend()
                return
            outcome = AuthOutcome.REJECTED
        if outcome is AuthOutcome.REJECTED:
            # The next attempt starts without credentials: the provider sees one refused
            # answer per attempt, not two.
            self._digest.forget()
            self._on_failure(request, TrunkFailure.AUTHENTICATION, "", response)
        elif outcome is AuthOutcome.WRONG_REALM:
            detail = f"not {self.trunk.realm!r}"
            self._on_failure(request, TrunkFailure.WRONG_REALM, detail, response)
        else:
            self._on_failure(request, TrunkFailure.UNSUPPORTED_CHALLENGE, "", response)

    def _on_too_brief(self, request: Request, response: Response) -> None:
        minimum = response.headers.get("Min-Expires")
        value = int(minimum.strip()) if minimum and minimum.strip().isdigit() else None
        self._too_brief += 1
        if (
            value is None
            or value <= self._interval
            or value > MAX_INTERVAL
            or self._too_brief > MAX_INTERVAL_RETRIES
        ):
            detail = f"Min-Expires {minimum!r}" if minimum is not None else "no Min-Expires"
            self._on_failure(request, TrunkFailure.INTERVAL, detail, response)
            return
        _LOGGER.info(
            "Trunk %s: the provider wants registrations of at least %d s", self.trunk.name, value
        )
        self._interval = value
        self._resend()

    def _on_registered(self, response: Response) -> None:
        self._pending = None
        granted = self._granted(response)
        now = self._clock.monotonic()
        if granted <= 0:
            self._expires_at = None
            self._on_failure(None, TrunkFailure.REFUSED, "registration granted for 0 s", None)
            return
        self._expires_at = now + granted
        self._schedule(refresh_delay(granted))
        if self._keepalive is not None and self._kind.reliable and self._keepalive_timer is None:
            self._keepalive_timer = self._clock.call_later(KEEPALIVE_INTERVAL, self._ping)
        self.state = TrunkState(self.trunk.name, TrunkStatus.REGISTERED)
        self._publish(
            TrunkStateChanged(
                self.trunk.name,
                TrunkStatus.REGISTERED,
                retry_in=refresh_delay(granted),
                expires_in=float(granted),
            )
        )
        _LOGGER.info("Trunk %s registered for %d s", self.trunk.name, granted)

    def _granted(self, response: Response) -> int:
        """The lifetime the 2xx grants our contact (its ``expires``, else Expires, else ours)."""
        port = self._port()
        try:
            contacts = response.contacts
        except ValueError:
            contacts = []
        for contact in contacts:
            uri = contact.uri
            if (
                isinstance(uri, SipUri)
                and uri.user == self.trunk.username
                and uri.port in (port, None)
            ):
                value = contact.params.get("expires")
                if value is not None and value.strip().isdigit():
                    return int(value)
        if response.expires is not None:
            return response.expires
        return self._interval

    def _on_failure(
        self,
        request: Request | None,
        failure: TrunkFailure,
        detail: str,
        response: Response | None,
    ) -> None:
        if request is not None and request is not self._pending:
            return
        if not self._running:
            return
        self._pending = None
        previous = self.state
        failures = previous.failures + 1
        auth = previous.auth_failures + 1 if failure is TrunkFailure.AUTHENTICATION else 0
        schedule = AUTH_BACKOFF if failure is TrunkFailure.AUTHENTICATION else BACKOFF
        delay = schedule.delay(auth if auth else failures)
        asked = _retry_after(response) if response is not None else None
        if asked is not None:
            delay = max(delay, min(asked, MAX_INTERVAL))
        if self._expires_at is not None and self._clock.monotonic() >= self._expires_at:
            self._expires_at = None
        self.state = TrunkState(
            self.trunk.name, TrunkStatus.FAILING, failure, detail, failures, auth
        )
        self._schedule(delay)
        _LOGGER.warning(
            "Trunk %s: registration failed (%s%s); attempt %d, next in %d s",
            self.trunk.name,
            failure.value,
            f": {detail}" if detail else "",
            failures,
            delay,
        )
        self._publish(
            TrunkStateChanged(
                self.trunk.name,
                TrunkStatus.FAILING,
                failure,
                detail,
                failures,
                auth,
                retry_in=delay,
                expires_in=self._remaining(),
            )
        )

    def _remaining(self) -> float | None:
        if self._expires_at is None:
            return None
        left = self._expires_at - self._clock.monotonic()
        return left if left > 0 else None

    # -- helpers ------------------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._clock.call_later(delay, self._attempt)

    def _ping(self) -> None:
        self._keepalive_timer = None
        if not self._running or self._keepalive is None:
            return
        if self.registered:
            hop = self.trunk.next_hop
            self._keepalive(Address(hop.host, hop.port), self._kind)
        self._keepalive_timer = self._clock.call_later(KEEPALIVE_INTERVAL, self._ping)

    def _cancel_keepalive(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set(self, status: TrunkStatus) -> None:
        self.state = TrunkState(self.trunk.name, status)
        self._publish(TrunkStateChanged(self.trunk.name, status))


def _registers_alike(one: Trunk, other: Trunk) -> bool:
    """Whether two versions of a trunk register the same way (the DIDs and the caller ID play
    no part in a REGISTER)."""
    return replace(one, dids=(), caller_id="") == replace(other, dids=(), caller_id="")


class TrunkRegistrations:
    """One ``TrunkRegistration`` for each trunk with ``register: true``."""

    def __init__(
        self,
        trunks: Iterable[Trunk],
        *,
        sender: RequestSender,
        clock: Clock,
        local_host: Callable[[str], str],
        local_port: Callable[[], int],
        publish: Callable[[PbxEvent], None],
        tls_port: Callable[[], int | None] | None = None,
        keepalive: Callable[[Address, TransportKind], object] | None = None,
    ) -> None:
        def make(trunk: Trunk) -> TrunkRegistration:
            return TrunkRegistration(
                trunk,
                sender=sender,
                clock=clock,
                local_host=local_host,
                local_port=local_port,
                publish=publish,
                tls_port=tls_port,
                keepalive=keepalive,
            )

        self._make = make
        self._registrations = {trunk.name: self._make(trunk) for trunk in trunks if trunk.register}
        self._running = False

    def start(self) -> None:
        self._running = True
        for registration in self._registrations.values():
            registration.start()

    def update(self, trunks: Iterable[Trunk]) -> None:
        """Follow a changed configuration: a trunk that registers as before (only its DIDs or
        caller ID changed, if anything) stays registered as it is (the provider sees nothing);
        a changed, removed or no longer
        registering one unregisters; a new or changed one registers (now, if running)."""
        wanted = {trunk.name: trunk for trunk in trunks if trunk.register}
        for name, registration in list(self._registrations.items()):
            trunk = wanted.get(name)
            if trunk is not None and _registers_alike(trunk, registration.trunk):
                registration.trunk = trunk  # only its numbers or caller ID changed
                continue
            registration.stop()
            del self._registrations[name]
        for name, trunk in wanted.items():
            if name not in self._registrations:
                registration = self._make(trunk)
                self._registrations[name] = registration
                if self._running:
                    registration.start()

    def stop(self) -> None:
        self._running = False
        for registration in self._registrations.values():
            registration.stop()

    def states(self) -> list[TrunkState]:
        return [registration.state for registration in self._registrations.values()]

    def get(self, name: str) -> TrunkRegistration | None:
        return self._registrations.get(name)
