"""The registrar (RFC 3261 §10.3): who is reachable where.

`Registrar.handle_register` follows §10.3 step by step and is pure: it reads the request and the
clock, updates the `BindingStore`, publishes at most one `RegistrationChanged`, and returns the
response for the caller to send. Choices the RFC leaves open, made here:

- A Request-URI (step 1) or To (step 5) host that is not ours gets 404 (RFC 3261 §21.4.5: "the
  domain ... does not match any of the domains handled"). Ours are the configured domain, the
  configured local hosts (the listen address), the address the request arrived on, and ``localhost``
  when it arrived on a loopback address. A user part in the Request-URI is tolerated.
- Every device registers only its own AOR: the To user must be the authenticated username (403).
- A binding is identified by its ``+sip.instance`` when the Contact has one (a phone that restarts
  on a new port replaces its old binding), else by URI equivalence (RFC 3261 §19.1.4).
- When a device would have more than ``max_contacts`` bindings, the bindings this request did not
  touch that would expire first are removed to make room; a request that alone carries more than
  ``max_contacts`` live contacts gets 503 (Too Many Contacts), as nothing can be evicted for it.
- An out-of-order update (same Call-ID, CSeq not higher: step 7) gets 500 with the reason
  "Out-of-order CSeq" and changes nothing; processing is atomic (all contacts or none).
- Malformed expires values count as the default (RFC 3261 §20.19).
- Challenges come in the order configured for the To user's device (the default order for an
  unknown user), so an unknown user and a wrong password get the same 401. A device configured
  with a non-default order is told apart by that order alone: the price of serving clients that
  read only the first challenge.
- Logging: one line per change of bindings (info) and per refused request (info, or warning for a
  wrong password or unknown user). The routine first 401 of every registration, sent to a
  request without credentials, is not a refusal and logs at debug only.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from .digest import AuthFailure, AuthResult, DigestAuthenticator
from .events import PbxEvent, RegistrationChanged, RegistrationReason
from .headers import NameAddress
from .message import Response, make_response
from .transport import Address, Source, TransportKind

if TYPE_CHECKING:
    from .clock import Clock
    from .message import Request
    from .uri import SipUri

__all__ = [
    "Binding",
    "BindingRecord",
    "BindingStore",
    "Registrar",
    "RegistrarSettings",
]

_LOGGER = logging.getLogger(__name__)

#: A binding as Home Assistant's Store keeps it: JSON types only.
BindingRecord = dict[str, Any]

_MAX_EXPIRES_VALUE = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of one device."""

    username: str
    contact: str  # the Contact header value as registered, without its expires parameter
    expires_at: float  # monotonic clock
    registered_at: float  # wall clock: when this binding was first made (kept across refreshes)
    expires_at_wall: float  # wall clock
    call_id: str
    cseq: int
    source: Source
    q: float | None = None
    user_agent: str | None = None
    instance_id: str | None = None

    @property
    def contact_uri(self) -> SipUri:
        """The contact's URI, parsed (for routing calls to it)."""
        return NameAddress.parse(self.contact).uri

    @property
    def route(self) -> Source:
        """Where requests for this binding are sent: see `route_to_contact`."""
        return route_to_contact(self.contact_uri, self.source)

    def remaining(self, now: float) -> int:
        """Whole seconds left, at least 1 while the binding lives (0 would read as removal)."""
        return max(1, round(self.expires_at - now))

    def to_dict(self) -> BindingRecord:
        """A JSON-able record; monotonic times are not kept (they mean nothing after a restart)."""
        return {
            "username": self.username,
            "contact": self.contact,
            "registered_at": self.registered_at,
            "expires_at_wall": self.expires_at_wall,
            "call_id": self.call_id,
            "cseq": self.cseq,
            "q": self.q,
            "user_agent": self.user_agent,
            "instance_id": self.instance_id,
            "transport": self.source.kind.value,
            "remote_host": self.source.remote.host,
            "remote_port": self.source.remote.port,
            "local_host": self.source.local.host,
            "local_port": self.source.local.port,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], now_wall: float, now: float) -> Binding:
        """Rebuild a binding; its monotonic expiry is placed relative to ``now``.

        A TCP connection does not survive a restart, so the connection id is not restored.
        Raises ``KeyError``, ``TypeError`` or ``ValueError`` on a broken record.
        """
        expires_at_wall = float(record["expires_at_wall"])
        source = Source(
            TransportKind(record["transport"]),
            Address(str(record["remote_host"]), int(record["remote_port"])),
            Address(str(record["local_host"]), int(record["local_port"])),
            None,
        )
        q = record.get("q")
        return cls(
            username=str(record["username"]),
            contact=str(record["contact"]),
            expires_at=now + (expires_at_wall - now_wall),
            registered_at=float(record["registered_at"]),
            expires_at_wall=expires_at_wall,
            call_id=str(record["call_id"]),
            cseq=int(record["cseq"]),
            source=source,
            q=None if q is None else float(q),
            user_agent=_optional_str(record.get("user_agent")),
            instance_id=_optional_str(record.get("instance_id")),
        )


_TRANSPORTS: Mapping[str | None, TransportKind] = {
    None: TransportKind.UDP,  # RFC 3263 §4.1: a sip: URI with a numeric host and no transport
    "udp": TransportKind.UDP,
    "tcp": TransportKind.TCP,
}


def route_to_contact(contact: SipUri, source: Source) -> Source:
    """Where a request for a binding goes: the registered Contact, unless it cannot be reached.

    RFC 3261 §10.3 and §16.5 send a request for an AOR to its registered Contact URI, resolved
    as RFC 3263 says: its host and port (5060 if absent), over its ``transport`` parameter (UDP if
    absent). So a phone that registers from one port and listens on another, or a registration
    made on a device's behalf by another program, gets its calls where it said.

    The Contact cannot be reached from here when its host is not the address the REGISTER came
    from: the device is behind NAT (a private address seen from outside), names itself by a host
    name we would have to resolve, or asks for a transport we do not speak (sips:, TLS, WS). Then
    the request goes back the way the REGISTER came: to its source address over its transport,
    which over TCP reuses the very connection the device opened (the transport layer prefers an
    open connection to the destination). The same holds when the Contact is exactly the source
    address, so a TCP phone whose Contact names its connection's own port is reached on that
    connection, and nothing changes for a phone that registers from the port it listens on.

    The result is a `Source` as a reply from that destination would carry: ``remote`` is where to
    send, ``kind`` how, ``local`` the address of ours the REGISTER reached (for Via and Contact).
    """
    remote = source.remote
    if contact.scheme != "sip" or contact.params.get("maddr") is not None:
        return source
    kind = _TRANSPORTS.get(contact.transport)
    if kind is None or _canonical_host(contact.host) != _canonical_host(remote.host):
        return source
    port = contact.port if contact.port is not None else 5060
    if port == remote.port and (kind is source.kind or contact.transport is None):
        # The address the device sent from: its own flow (a TCP phone whose Contact names its
        # connection's port, even without ";transport=tcp").
        return source
    return Source(kind, Address(remote.host, port), source.local, None)


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


class _Entry:
    """A live binding with its parsed URI (kept for equivalence checks) and a liveness flag for the
    expiry heap's lazy deletion."""

    __slots__ = ("alive", "binding", "uri")

    def __init__(self, binding: Binding, uri: SipUri) -> None:
        self.binding = binding
        self.uri = uri
        self.alive = True

    def matches(self, uri: SipUri, instance_id: str | None) -> bool:
        if instance_id is not None and self.binding.instance_id is not None:
            return instance_id == self.binding.instance_id
        return self.uri.equivalent(uri)


class BindingStore:
    """Every device's bindings, with a heap of expiry times so the next one is found cheaply."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_user: dict[str, list[_Entry]] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def get(self, username: str) -> tuple[Binding, ...]:
        return tuple(e.binding for e in self._by_user.get(username, ()))

    def all(self) -> list[Binding]:
        return [e.binding for entries in self._by_user.values() for e in entries]

    def usernames(self) -> list[str]:
        return list(self._by_user)

    def _entries(self, username: str) -> list[_Entry]:
        return self._by_user.get(username, [])

    def _replace(self, username: str, old: Iterable[_Entry], new: list[_Entry]) -> None:
        """Swap a device's entries for ``new`` (entries in both stay as they are)."""
        keep = {id(e) for e in new}
        for entry in old:
            if id(entry) not in keep:
                entry.alive = False
                self._live -= 1
        if new:
            self._by_user[username] = new
        else:
            self._by_user.pop(username, None)

    def _add_to_heap(self, entry: _Entry) -> None:

        self._live += 1
        self._seq += 1
        heapq.heappush(self._heap, (entry.binding.expires_at, self._seq, entry))
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [item for item in self._heap if item[2].alive]
            heapq.heapify(self._heap)

    def next_expiry(self) -> float | None:
        """The monotonic time at which the earliest binding expires, or ``None``."""

        heap = self._heap
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> dict[str, list[Binding]]:
        """Remove every binding due at or before ``now``; returns the removed ones per device."""

        heap = self._heap
        removed: dict[str, list[Binding]] = {}
        while heap and (heap[0][0] <= now or not heap[0][2].alive):
            _when, _seq, entry = heapq.heappop(heap)
            if not entry.alive:
                continue
            entry.alive = False
            self._live -= 1
            username = entry.binding.username
            removed.setdefault(username, []).append(entry.binding)
            remaining = [e for e in self._by_user.get(username, ()) if e is not entry]
            if remaining:
                self._by_user[username] = remaining
            else:
                self._by_user.pop(username, None)
        return removed

    def remove(self, username: str) -> tuple[Binding, ...]:
        """Drop every binding of a device (it was deleted); returns what was dropped."""
        entries = self._by_user.pop(username, [])
        for entry in entries:
            entry.alive = False
        self._live -= len(entries)
        return tuple(e.binding for e in entries)

    def insert(self, binding: Binding) -> None:
        """Add a binding as it is (used by `restore`); replaces an equivalent one of the device."""
        name_addr = NameAddress.parse(binding.contact)
        entry = _Entry(binding, name_addr.uri)
        old = self._entries(binding.username)
        kept = [e for e in old if not e.matches(entry.uri, binding.instance_id)]
        self._add_to_heap(entry)
        self._replace(binding.username, old, [*kept, entry])

    def records(self) -> list[BindingRecord]:
        """Every binding as a JSON-able record, for Home Assistant's Store."""
        return [binding.to_dict() for binding in self.all()]

    def restore(self, records: Iterable[Mapping[str, Any]], now_wall: float | None = None) -> int:
        """Load saved records, dropping expired and broken ones; returns how many were loaded."""
        if now_wall is None:
            now_wall = self._clock.wall()
        now = self._clock.monotonic()
        loaded = 0
        for record in records:
            try:
                binding = Binding.from_dict(record, now_wall, now)
                if binding.expires_at_wall <= now_wall:
                    continue
                self.insert(binding)
            except (KeyError, TypeError, ValueError) as err:
                _LOGGER.warning(
                    "Dropping a saved binding that cannot be read (%s): %r", err, record
                )
                continue
            loaded += 1
        return loaded


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """How the registrar behaves; see the module docstring for the choices."""

    domain: str
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5
    #: Option tags we support; a Require naming anything else gets 420.
    supported_extensions: frozenset[str] = frozenset()
    #: Other host names and addresses that are ours (e.g. the listen address).
    local_hosts: frozenset[str] = field(default_factory=frozenset)


# Asked twice per REGISTER with the same few hosts (our domain, our address): remembered, bounded.
@functools.lru_cache(maxsize=1024)
def _canonical_host(host: str) -> str:
    """Lower-case, IPv6 without brackets and in compressed form, so equal hosts compare equal."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return host
        # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
        mapped = address.ipv4_mapped
        return address.compressed if mapped is None else str(mapped)
    return host


@functools.lru_cache(maxsize=256)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reject(Exception):
    """A request refused: the status, reason phrase and extra headers to answer with."""

    def __init__(
        self, status: int, reason: str, log: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(log)
        self.status = status
        self.reason = reason
        self.log = log
        self.headers = headers


class Registrar:
    """Handles REGISTER requests for one domain against one `BindingStore`."""

    def __init__(
        self,
        settings: RegistrarSettings,
        authenticator: DigestAuthenticator,
        clock: Clock,
        *,
        store: BindingStore | None = None,
        publish: Callable[[PbxEvent], None] | None = None,
        on_auth: Callable[[Source, Request, AuthResult], None] | None = None,
    ) -> None:
        self.settings = settings
        #: Told every digest verification's outcome (`sip_core.guard` counts the failures).
        self.on_auth = on_auth
        self.authenticator = authenticator
        self.store = store if store is not None else BindingStore(clock)
        self._clock = clock
        self._publish = publish
        self._our_hosts = frozenset(
            _canonical_host(h) for h in (settings.domain, *settings.local_hosts)
        )
        self._supported = frozenset(tag.lower() for tag in settings.supported_extensions)
        self._date_second = -1
        self._date_text = ""

    # -- expiry ---------------------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        """When `expire` next has work to do (monotonic), or ``None``: for the Pbx's timer."""
        return self.store.next_expiry()

    def expire(self, now: float | None = None) -> float | None:
        """Remove the bindings due by ``now``, publish one EXPIRED event per device, and return
        the next expiry time."""
        if now is None:
            now = self._clock.monotonic()
        for username, removed in self.store.expire(now).items():
            current = self.store.get(username)
            _LOGGER.info(
                "Registration of %s expired: %s", username, ", ".join(b.contact for b in removed)
            )
            self._emit(
                RegistrationChanged(username, current, RegistrationReason.EXPIRED, tuple(removed))
            )
        return self.store.next_expiry()

    def _emit(self, event: RegistrationChanged) -> None:
        if self._publish is not None:
            self._publish(event)

    # -- REGISTER -------------------------------------------------------------------------------

    def is_our_host(self, host: str, source: Source) -> bool:
        canonical = _canonical_host(host)
        if canonical in self._our_hosts:
            return True
        local = _canonical_host(source.local.host)
        if canonical == local:
            return True
        return canonical == "localhost" and _is_loopback(local)

    def handle_register(self, request: Request, source: Source) -> Response:
        """Answer one REGISTER (RFC 3261 §10.3); the caller sends the response."""
        try:
            return self._handle(request, source)
        except _Reject as reject:
            return self._refuse(request, source, reject)

    def authenticate(self, request: Request, source: Source) -> Response | str:
        """Steps 1-5 of RFC 3261 §10.3: the device the REGISTER may change bindings for, or the
        final response refusing it (401 challenge, 403, 404, 420, 400).

        The runner's registration workers call this alone and hand an accepted request to the
        main process, which then trusts ``source.identity`` instead of checking the digest again
        (its nonce count was already spent).
        """
        try:
            return self._authenticate(request, source)
        except _Reject as reject:
            return self._refuse(request, source, reject)

    def _refuse(self, request: Request, source: Source, reject: _Reject) -> Response:
        _LOGGER.info(
            "REGISTER from %s %s refused with %d: %s",
            source.kind.value,
            source.remote,
            reject.status,
            reject.log,
        )
        response = make_response(request, reject.status, reject.reason)
        for name, value in reject.headers:
            response.headers.add(name, value)
        return response

    def _handle(self, request: Request, source: Source) -> Response:
        outcome = self._authenticate(request, source)
        if isinstance(outcome, Response):
            return outcome
        # Steps 6-8.
        return self._update(request, source, outcome)

    def _authenticate(self, request: Request, source: Source) -> Response | str:
        # Step 1: the Request-URI names a domain we keep bindings for.
        if not self.is_our_host(request.uri.host, source):
            raise _Reject(404, "Not Found", f"Request-URI domain {request.uri.host} is not ours")
        # Step 2: extensions the client requires.
        unsupported = self._unsupported(request)
        if unsupported:
            raise _Reject(
                420,
                "Bad Extension",
                f"requires unsupported {', '.join(unsupported)}",
                (("Unsupported", ", ".join(unsupported)),),
            )
        try:
            to = request.to
        except ValueError as err:
            raise _Reject(400, "Bad Request", f"unreadable To header: {err}") from err
        aor_user = to.uri.user_unescaped if to.uri.user else None

        # Step 3: authentication, unless a registration worker did it already.
        username = source.identity
        if username is None:
            auth = self.authenticator.verify(request, local_port=source.local.port)
            if self.on_auth is not None:
                self.on_auth(source, request, auth)
            if not auth.ok:
                return self._auth_failed(
                    request=request,
                    source=source,
                    reason=auth.reason,
                    stale=auth.stale,
                    cred_user=auth.username,
                    aor_user=aor_user,
                )
            username = auth.username
            assert username is not None
        # Step 4: the authenticated device may change only its own bindings.
        if aor_user != username:
            raise _Reject(403, "Forbidden", f"{username} may not register the AOR {to.uri}")
        # Step 5: the AOR is in our domain.
        if not self.is_our_host(to.uri.host, source):
            raise _Reject(404, "Not Found", f"AOR {to.uri} is not in our domain")
        return username

    def _unsupported(self, request: Request) -> list[str]:
        values = request.headers.get_all("Require")
        if not values:
            return []
        tags = [t.strip() for v in values for t in v.split(",") if t.strip()]
        return [t for t in tags if t.lower() not in self._supported]

    def _auth_failed(
        self,
        *,
        request: Request,
        source: Source,
        reason: AuthFailure,
        stale: bool,
        cred_user: str | None,
        aor_user: str | None,
    ) -> Response:
        if reason is AuthFailure.URI_MISMATCH:
            # RFC 7616 §3.4.6: a uri unlike the Request-URI is a bad request, not a bad password.
            raise _Reject(400, "Bad Request", f"{cred_user}: {reason.value}")
        # The challenge order is the registering AOR's; an unknown user gets the default order,
        # exactly as a known one with a wrong password does.
        challenges = self.authenticator.challenge(
            self.authenticator.algorithms_for(aor_user), stale
        )
        if reason is AuthFailure.NO_CREDENTIALS:
            _LOGGER.debug("REGISTER for %s from %s: challenged", aor_user, source.remote)
        else:
            level = logging.INFO if stale else logging.WARNING
            _LOGGER.log(
                level,
                "REGISTER for %s from %s %s refused with 401: %s (credentials for %s)",
                aor_user,
                source.kind.value,
                source.remote,
                reason.value,
                cred_user,
            )
        response = make_response(request, 401, "Unauthorized")
        for challenge in challenges:
            response.headers.add("WWW-Authenticate", challenge)
        return response

    def _expires_of(self, contact: NameAddress, header_expires: int | None) -> int:
        raw = contact.params.get("expires")
        if raw is None:
            value = header_expires
        else:
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is not None and value < 0:
                value = None
        if value is None:
            return self.settings.default_expires
        return min(value, _MAX_EXPIRES_VALUE)

    def _update(self, request: Request, source: Source, username: str) -> Response:
        now = self._clock.monotonic()
        try:
            contacts = request.contacts
            header_expires = request.expires
        except ValueError as err:
            raise _Reject(400, "Bad Request", f"unreadable Contact or Expires: {err}") from err
        call_id = request.call_id
        cseq = request.cseq.number
        store = self.store
        # Bindings past their time but not yet collected by the expiry timer count as gone.
        old = store._entries(username)
        current = [e for e in old if e.binding.expires_at > now]

        if contacts:
            new, added, refreshed, removed = self._apply(
                request=request,
                source=source,
                username=username,
                contacts=contacts,
                header_expires=header_expires,
                current=current,
                call_id=call_id,
                cseq=cseq,
                now=now,
            )
        elif request.is_wildcard_contact:
            # Step 6: "*" removes everything, and only with Expires: 0. ("*" beside another
            # contact does not even parse: `request.contacts` raised above and it got 400.)
            if header_expires != 0:
                raise _Reject(400, "Bad Request", "Contact * without Expires: 0")
            for entry in current:
                if entry.binding.call_id == call_id and cseq <= entry.binding.cseq:
                    raise _Reject(500, "Out-of-order CSeq", f"{username}: out-of-order CSeq {cseq}")
            new, added, refreshed = [], [], []
            removed = [e.binding for e in current]
        else:
            return self._ok(request, current, now)

        for entry in added:
            store._add_to_heap(entry)
        store._replace(username, old, new)

        changed: tuple[Binding, ...]
        if len(refreshed) < len(added):
            reason = RegistrationReason.REGISTERED
            changed = tuple(e.binding for e in added)
        elif removed:
            reason = RegistrationReason.UNREGISTERED
            changed = tuple(removed)
        elif added:
            reason = RegistrationReason.REFRESHED
            changed = tuple(e.binding for e in added)
        else:
            return self._ok(request, new, now)
        if _LOGGER.isEnabledFor(logging.INFO):
            self._log_change(
                username, reason=reason, changed=changed, removed=removed, source=source, now=now
            )
        self._emit(RegistrationChanged(username, tuple(e.binding for e in new), reason, changed))
        return self._ok(request, new, now)

    @staticmethod
    def _log_change(
        username: str,
        *,
        reason: RegistrationReason,
        changed: tuple[Binding, ...],
        removed: list[Binding],
        source: Source,
        now: float,
    ) -> None:
        if reason is RegistrationReason.UNREGISTERED:
            what = ", ".join(b.contact for b in changed)
        else:
            what = ", ".join(f"{b.contact} expires {b.remaining(now)}" for b in changed)
            if removed:
                what += f" (removed {', '.join(b.contact for b in removed)})"
        _LOGGER.info(
            "Registration of %s %s: %s from %s %s",
            username,
            reason.value,
            what,
            source.kind.value,
            source.remote,
        )

    def _apply(
        self,
        *,
        request: Request,
        source: Source,
        username: str,
        contacts: list[NameAddress],
        header_expires: int | None,
        current: list[_Entry],
        call_id: str,
        cseq: int,
        now: float,
    ) -> tuple[list[_Entry], list[_Entry], list[_Entry], list[Binding]]:
        """Step 6-7 for each contact, on a copy: nothing changes unless every contact is fine."""
        settings = self.settings
        wall = self._clock.wall()
        user_agent = request.headers.get("User-Agent")
        new = list(current)
        added: list[_Entry] = []  # new entries (new contacts and refreshes)
        refreshed: list[_Entry] = []  # the subset of `added` that refresh a binding
        removed: list[Binding] = []
        touched: set[int] = set()
        live_contacts = 0
        for contact in contacts:
            expires = self._expires_of(contact, header_expires)
            if 0 < expires < settings.min_expires:
                raise _Reject(
                    423,
                    "Interval Too Brief",
                    f"{username}: expires {expires} below {settings.min_expires}",
                    (("Min-Expires", str(settings.min_expires)),),
                )
            expires = min(expires, settings.max_expires)
            instance_id = _instance_id(contact)
            uri = contact.uri
            index = next((i for i, e in enumerate(new) if e.matches(uri, instance_id)), None)
            match = new[index] if index is not None else None
            if match is not None and id(match) not in touched:
                existing = match.binding
                if existing.call_id == call_id and cseq <= existing.cseq:
                    raise _Reject(
                        500,
                        "Out-of-order CSeq",
                        f"{username}: CSeq {cseq} not above {existing.cseq} for {existing.contact}",
                    )
            if expires == 0:
                if match is not None and index is not None:
                    del new[index]
                    if id(match) in touched:
                        added.remove(match)
                    else:
                        removed.append(match.binding)
                continue
            live_contacts += 1
            same_registration = (
                match is not None and id(match) not in touched and match.binding.call_id == call_id
            )
            registered_at = match.binding.registered_at if same_registration and match else wall
            binding = Binding(
                username=username,
                contact=_contact_without_expires(contact),
                expires_at=now + expires,
                registered_at=registered_at,
                expires_at_wall=wall + expires,
                call_id=call_id,
                cseq=cseq,
                source=source,
                q=_q_of(contact),
                user_agent=user_agent,
                instance_id=instance_id,
            )
            entry = _Entry(binding, uri)
            if match is not None and index is not None:
                new[index] = entry
                if id(match) in touched:
                    added.remove(match)
                    if match in refreshed:
                        refreshed.remove(match)
                        refreshed.append(entry)
                elif same_registration:
                    refreshed.append(entry)
                else:
                    removed.append(match.binding)
            else:
                new.append(entry)
            touched.add(id(entry))
            added.append(entry)

        if len(new) > settings.max_contacts:
            if live_contacts > settings.max_contacts:
                raise _Reject(
                    503,
                    "Too Many Contacts",
                    f"{username}: {live_contacts} contacts, at most {settings.max_contacts}",
                )
            evictable = sorted(
                (e for e in new if id(e) not in touched), key=lambda e: e.binding.expires_at
            )
            for entry in evictable[: len(new) - settings.max_contacts]:
                new.remove(entry)
                removed.append(entry.binding)
        return new, added, refreshed, removed

    def _ok(self, request: Request, entries: list[_Entry], now: float) -> Response:
        """Step 8: 200 with every current binding and its remaining time, and a Date."""
        response = make_response(request, 200, "OK")
        headers = response.headers
        for entry in entries:
            binding = entry.binding
            headers.add("Contact", f"{binding.contact};expires={binding.remaining(now)}")
        headers.add("Date", self._date())
        return response

    def _date(self) -> str:
        """The Date header value (RFC 3261 §20.17), formatted once per second."""
        second = int(self._clock.wall())
        if second != self._date_second:
            self._date_second = second
            self._date_text = formatdate(second, usegmt=True)
        return self._date_text


def _instance_id(contact: NameAddress) -> str | None:
    raw = contact.params.get("+sip.instance")
    if not raw:
        return None
    raw = raw.strip('"')
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    return raw or None


def _q_of(contact: NameAddress) -> float | None:
    raw = contact.params.get("q")
    if raw is None:
        return None
    try:
        q = float(raw)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 and math.isfinite(q) else None


def _contact_without_expires(contact: NameAddress) -> str:
    if "expires" not in contact.params:
        return str(contact)
    params = {k: v for k, v in contact.params.items() if k != "expires"}
    return str(NameAddress(contact.display_name, contact.uri, params))
