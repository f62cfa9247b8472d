"""The PBX's gatekeeper: who may talk to it at all, and who has forfeited that right.

A PBX whose port is reachable is scanned and attacked within days: SIPVicious and its relatives
map the server, enumerate extensions and then guess passwords as fast as the server answers. The
`Guard` sits in front of everything above the transport (`Pbx` consults it once per message) and
applies four rules, cheapest first:

1. **Bans.** ``max_failures`` failed authentications from one source address within
   ``failure_window`` seconds ban the address for ``ban_time`` seconds: every datagram from it is
   dropped before it is even parsed, and a TCP message from it is dropped once framed. Only
   failures that test a password count (wrong password, unknown user, algorithm not allowed: the
   three must count alike, or the ban itself would tell which usernames exist). A stale nonce is
   not a failure: the client proved it knows the password. Networks in ``never_ban`` are never
   banned (empty by default, so a scanner on the same host or the home network is stopped too).
   Each ban is logged once and published (`AddressBanned`); `unban` lifts one early.
2. **Known scanners.** A request whose User-Agent names a scanning tool is dropped unanswered
   (answering only confirms that something listens). A scanner that lies about its name is
   handled by the other rules.
3. **Scope.** Unless ``allow_public`` is set, only loopback, private and link-local addresses may
   send requests: a PBX for a home has no business answering the internet.
4. **Floods.** Each source address has a budget for requests that are not (yet) authenticated:
   every request outside a dialog costs one token, and an authentication that is only stale gives
   back two, the request's own and the challenge before it. A source that authenticated
   successfully is not charged for ``TRUST_TIME`` seconds afterwards: it holds a password, and
   its challenges are the first half of its next logins (the benchmarks' clients, thousands a
   second from one address with hundreds of challenges outstanding, included). A sender that
   never authenticates is held to ``FLOOD_RATE`` requests a second after a burst of
   ``FLOOD_BURST``, and the rest of the household is served. Requests inside a dialog cost
   nothing here: they are matched against existing dialogs in one lookup. Failed logins always
   count towards a ban, trusted source or not.

Everything is bounded: the per-address tables keep at most ``MAX_TRACKED`` addresses and the ban
table ``MAX_BANS`` bans, so spoofed UDP sources cannot grow memory without limit. Time comes from
the injected clock; one timer ends the ban that ends first.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from .digest import AuthFailure, AuthResult, parse_credentials
from .events import AddressBanned, BanEnded, BanEndReason, PbxEvent
from .message import Request, Response

if TYPE_CHECKING:
    from .clock import Clock, TimerHandle
    from .config import SecuritySettings
    from .transport import Source

__all__ = [
    "FLOOD_BURST",
    "FLOOD_RATE",
    "Ban",
    "Guard",
    "Refusal",
    "in_default_scope",
    "normalise_address",
    "scanner_agent",
]

_LOGGER = logging.getLogger(__name__)

#: Unauthenticated requests a second one source address may send once its burst is spent.
FLOOD_RATE: Final = 20.0
#: Unauthenticated requests one source address may send at once (a phone's reboot sends a few).
FLOOD_BURST: Final = 200.0
#: Seconds after a successful authentication during which a source's requests are not charged.
TRUST_TIME: Final = 300.0
#: Source addresses tracked for failures, floods and the once-only log lines, each.
MAX_TRACKED: Final = 16384
#: Bans kept at once; a new one evicts the ban nearest to its end.
MAX_BANS: Final = 4096
#: Failures that tested a password: they count towards a ban, and all alike.
COUNTED_FAILURES: Final = frozenset(
    {AuthFailure.WRONG_PASSWORD, AuthFailure.UNKNOWN_USER, AuthFailure.ALGORITHM_NOT_ALLOWED}
)
#: User-Agent words of well-known SIP scanners (matched as words, case-insensitively).
SCANNER_AGENTS: Final = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "sip-scan",
    "sipscan",
    "iwar",
    "smap",
    "pplsip",
    "sipptk",
)
_SCANNER = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(name) for name in SCANNER_AGENTS) + r")(?![\w-])",
    re.IGNORECASE,
)


class Refusal(StrEnum):
    """Why a message was dropped (for the log and the tests)."""

    BANNED = "banned"
    SCANNER = "scanner"
    OUT_OF_SCOPE = "out of scope"
    FLOODING = "flooding"


@dataclass(frozen=True, slots=True)
class Ban:
    """One banned address. ``since``/``until`` are Unix time; ``username`` the last one tried."""

    address: str
    username: str | None
    failures: int
    since: float
    until: float


def normalise_address(text: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); ValueError if not one."""
    address = ipaddress.ip_address(text.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=4096)
def in_default_scope(host: str) -> bool:
    """Whether an address is loopback, private or link-local (who may use the PBX by default)."""
    try:
        address = ipaddress.ip_address(normalise_address(host))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def scanner_agent(request: Request) -> str | None:
    """The scanner named in the request's User-Agent, if it names one."""
    agent = request.headers.get("User-Agent")
    if not agent:
        return None
    found = _SCANNER.search(agent)
    return found.group(1) if found else None


class _OnceLog:
    """Addresses already logged about, so that a flood makes one log line, not thousands."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def first(self, address: str) -> bool:
        if address in self._seen:
            return False
        if len(self._seen) >= MAX_TRACKED:
            del self._seen[next(iter(self._seen))]
        self._seen[address] = None
        return True

    def forget(self, address: str) -> None:
        self._seen.pop(address, None)


class Guard:
    """Decides, per message, whether the PBX listens; counts failed logins and bans.

    ``publish`` receives `AddressBanned` and `BanEnded`. Call `close` to cancel the timer.
    """

    def __init__(
        self,
        settings: SecuritySettings,
        clock: Clock,
        publish: Callable[[PbxEvent], None],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._publish = publish
        self._never_ban = tuple(ipaddress.ip_network(net) for net in settings.never_ban)
        self._never_ban_cache: dict[str, bool] = {}
        self._failures: dict[str, deque[float]] = {}
        self._bans: dict[str, Ban] = {}
        self._ban_ends: dict[str, float] = {}  # address -> monotonic end
        self._buckets: dict[str, list[float]] = {}  # address -> [tokens, last refill]
        self._trusted: dict[str, float] = {}  # address -> monotonic end of its trust
        self._limited = _OnceLog()
        self._scanners = _OnceLog()
        self._outsiders = _OnceLog()
        self._timer: TimerHandle | None = None
        self._timer_due: float | None = None
        self.dropped: dict[Refusal, int] = dict.fromkeys(Refusal, 0)

    @property
    def settings(self) -> SecuritySettings:
        return self._settings

    def update(self, settings: SecuritySettings) -> None:
        """New settings from now on; bans in force stay until they end (or are lifted)."""
        self._settings = settings
        self._never_ban = tuple(ipaddress.ip_network(net) for net in settings.never_ban)
        self._never_ban_cache.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_due = None

    # -- admission ----------------------------------------------------------------------------

    def drops_datagram(self, data: bytes, source: Source) -> bool:
        """Before parsing: true (drop it) when the datagram comes from a banned address."""
        if self._bans and source.remote.host in self._bans:
            return self._still_banned(source.remote.host)
        return False

    def admit(self, message: Request | Response, source: Source) -> Refusal | None:
        """None when the message may go on; else why it is dropped (it is then not answered)."""
        host = source.remote.host
        if self._bans and host in self._bans and self._still_banned(host):
            return self._drop(Refusal.BANNED)
        if not isinstance(message, Request) or source.identity is not None:
            # Responses answer what we sent; a worker already vetted what it hands over.
            return None
        agent = scanner_agent(message)
        if agent is not None:
            if self._scanners.first(host):
                _LOGGER.warning(
                    "Ignoring %s: its requests come from the SIP scanner %r", host, agent
                )
            return self._drop(Refusal.SCANNER)
        if not self._settings.allow_public and not in_default_scope(host):
            if self._outsiders.first(host):
                _LOGGER.warning(
                    "Ignoring %s: only loopback, private and link-local addresses may use this"
                    " PBX (security.allow_public opens it)",
                    host,
                )
            return self._drop(Refusal.OUT_OF_SCOPE)
        if self._never_banned(host) or self._is_trusted(host):
            return None
        if message.method in ("ACK", "CANCEL") or _in_dialog(message):
            return None
        if not self._spend(host):
            if self._limited.first(host):
                _LOGGER.warning(
                    "Limiting %s: more than %d unauthenticated requests (then %g a second);"
                    " the excess is dropped",
                    host,
                    int(FLOOD_BURST),
                    FLOOD_RATE,
                )
            return self._drop(Refusal.FLOODING)
        return None

    def _drop(self, why: Refusal) -> Refusal:
        self.dropped[why] += 1
        return why

    # -- authentication outcomes ------------------------------------------------------------

    def authenticated(self, source: Source, request: Request, result: AuthResult) -> None:
        """Every digest verification of a request from ``source`` reports here."""
        host = source.remote.host
        if result.ok:
            self._trust(host)
            return
        if result.stale:
            self._refund(host, 2.0)
            return
        if result.reason not in COUNTED_FAILURES or self._never_banned(host):
            return
        now = self._clock.monotonic()
        window = float(self._settings.failure_window)
        times = self._failures.get(host)
        if times is None:
            if len(self._failures) >= MAX_TRACKED:
                self._prune_failures(now)
            times = self._failures[host] = deque()
        times.append(now)
        while times and now - times[0] > window:
            times.popleft()
        if len(times) >= self._settings.max_failures:
            del self._failures[host]
            self._ban(host, result.username or _username_tried(request), len(times))

    def _prune_failures(self, now: float) -> None:
        window = float(self._settings.failure_window)
        for host in [h for h, t in self._failures.items() if not t or now - t[-1] > window]:
            del self._failures[host]
        while len(self._failures) >= MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    # -- bans ---------------------------------------------------------------------------------

    def bans(self) -> list[Ban]:
        """Current bans, oldest first."""
        self._expire()
        return list(self._bans.values())

    def is_banned(self, address: str) -> bool:
        try:
            host = normalise_address(address)
        except ValueError:
            return False
        return host in self._bans and self._still_banned(host)

    def unban(self, address: str) -> bool:
        """Lift the ban on ``address`` (and forget its failures); false when it is not banned.

        Raises ValueError when ``address`` is not an IP address.
        """
        host = normalise_address(address)
        self._failures.pop(host, None)
        if host not in self._bans:
            return False
        self._end(host, BanEndReason.LIFTED)
        _LOGGER.info("Ban of %s lifted", host)
        self._reschedule()
        return True

    def _ban(self, host: str, username: str | None, failures: int) -> None:
        if host in self._bans:
            return
        if len(self._bans) >= MAX_BANS:
            nearest = min(self._ban_ends, key=self._ban_ends.__getitem__)
            self._end(nearest, BanEndReason.EVICTED)
        duration = float(self._settings.ban_time)
        wall = self._clock.wall()
        ban = Ban(host, username, failures, wall, wall + duration)
        self._bans[host] = ban
        self._ban_ends[host] = self._clock.monotonic() + duration
        self._buckets.pop(host, None)
        self._trusted.pop(host, None)
        _LOGGER.warning(
            "Banned %s for %d s after %d failed authentications within %d s (last username"
            " tried: %s)",
            host,
            int(duration),
            failures,
            self._settings.failure_window,
            username if username is not None else "none",
        )
        self._publish(AddressBanned(host, username, failures, ban.until))
        self._reschedule()

    def _still_banned(self, host: str) -> bool:
        if self._ban_ends[host] > self._clock.monotonic():
            return True
        self._expire()
        return host in self._bans

    def _end(self, host: str, reason: BanEndReason) -> None:
        del self._bans[host]
        del self._ban_ends[host]
        self._publish(BanEnded(host, reason))

    def _expire(self) -> None:
        now = self._clock.monotonic()
        ended = [host for host, end in self._ban_ends.items() if end <= now]
        for host in ended:
            _LOGGER.info("Ban of %s ended", host)
            self._end(host, BanEndReason.EXPIRED)
        if ended:
            self._reschedule()

    def _reschedule(self) -> None:
        due = min(self._ban_ends.values(), default=None)
        if due == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = due
        if due is not None:
            delay = max(0.0, due - self._clock.monotonic())
            self._timer = self._clock.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        self._expire()
        self._reschedule()

    # -- networks and budgets -----------------------------------------------------------------

    def _never_banned(self, host: str) -> bool:
        if not self._never_ban:
            return False
        known = self._never_ban_cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(normalise_address(host))
            except ValueError:
                known = False
            else:
                known = any(address in network for network in self._never_ban)
            if len(self._never_ban_cache) >= MAX_TRACKED:
                self._never_ban_cache.clear()
            self._never_ban_cache[host] = known
        return known

    def _spend(self, host: str) -> bool:
        now = self._clock.monotonic()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._prune_buckets(now)
            self._buckets[host] = [FLOOD_BURST - 1.0, now]
            return True
        tokens = min(FLOOD_BURST, bucket[0] + (now - bucket[1]) * FLOOD_RATE)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        if tokens >= FLOOD_BURST / 2:
            self._limited.forget(host)  # recovered: a new flood is worth a new log line
        return True

    def _trust(self, host: str) -> None:
        trusted = self._trusted
        if host not in trusted and len(trusted) >= MAX_TRACKED:
            now = self._clock.monotonic()
            for stale in [h for h, end in trusted.items() if end <= now]:
                del trusted[stale]
            while len(trusted) >= MAX_TRACKED:
                del trusted[next(iter(trusted))]
        trusted[host] = self._clock.monotonic() + TRUST_TIME

    def _is_trusted(self, host: str) -> bool:
        end = self._trusted.get(host)
        if end is None:
            return False
        if end > self._clock.monotonic():
            return True
        del self._trusted[host]
        return False

    def _refund(self, host: str, amount: float) -> None:
        bucket = self._buckets.get(host)
        if bucket is not None:
            bucket[0] = min(FLOOD_BURST, bucket[0] + amount)

    def _prune_buckets(self, now: float) -> None:
        """Forget the addresses whose budget is full again (they owe nothing), else the oldest."""
        for host in [
            h
            for h, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * FLOOD_RATE >= FLOOD_BURST
        ]:
            del self._buckets[host]
        while len(self._buckets) >= MAX_TRACKED:
            del self._buckets[next(iter(self._buckets))]


def _username_tried(request: Request) -> str | None:
    """The username in a request's digest credentials (for the ban's log line)."""
    for name in ("Authorization", "Proxy-Authorization"):
        for value in request.headers.get_all(name):
            credentials = parse_credentials(value)
            if credentials is not None and credentials.get("username"):
                return credentials.get("username")
    return None


def _in_dialog(request: Request) -> bool:
    """Whether the request claims a dialog (a To tag); an unreadable To claims none."""
    try:
        return bool(request.to.tag)
    except ValueError:
        return False
