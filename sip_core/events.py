"""The events the PBX publishes, and the small bus that delivers them.

Home Assistant (and the standalone runner's log) subscribe through `Pbx.subscribe`, which is
an `EventBus`. Events are frozen dataclasses so that a subscriber can keep them and hand them to
another thread without copying. `PbxEvent` is the union of every event type: a subscriber narrows
it with `isinstance` or `match`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .calls import (
    CallOutcome,
    CallRecord,
    CallState,
    HandoffRecord,
    TransferKind,
    TransferRecord,
)

if TYPE_CHECKING:
    from .registrar import Binding

__all__ = [
    "AddressBanned",
    "BanEndReason",
    "BanEnded",
    "CallRecorded",
    "CallStateChanged",
    "DtmfMethod",
    "DtmfReceived",
    "EventBus",
    "GroupPresenceDialled",
    "HandoffFailed",
    "HandoffStarted",
    "HandoffSucceeded",
    "PbxEvent",
    "RegistrationChanged",
    "RegistrationReason",
    "TransferEnded",
    "TransferStarted",
    "TrunkFailure",
    "TrunkStateChanged",
    "TrunkStatus",
]

_LOGGER = logging.getLogger(__name__)


class RegistrationReason(StrEnum):
    """Why a device's bindings changed."""

    REGISTERED = (
        "registered"  # at least one new contact (or a contact re-registered after a restart)
    )
    REFRESHED = "refreshed"  # the same contacts, registered again before they expired
    UNREGISTERED = "unregistered"  # removed by the device (expires=0 or Contact: *)
    EXPIRED = "expired"  # not refreshed in time


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """A device's set of registered contacts changed.

    ``bindings`` is the device's complete set after the change (empty: the device is offline);
    ``changed`` are the bindings the change is about: added or refreshed ones for REGISTERED and
    REFRESHED, removed ones for UNREGISTERED and EXPIRED.
    """

    username: str
    bindings: tuple[Binding, ...]
    reason: RegistrationReason
    changed: tuple[Binding, ...] = ()

    @property
    def online(self) -> bool:
        return bool(self.bindings)


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    """A call moved to another state (see `sip_core.calls.CallState`).

    ``devices`` are the devices in the call after the change (the caller's and the answered one,
    or every ringing one); ``reason`` says why for ``ended`` (and is empty otherwise), and
    ``outcome`` says how, the same as the history's record (None before ``ended``), so that a
    subscriber can tell a missed call from an answered one without parsing ``reason``.
    ``caller_user``/``callee_user`` are the configured users' names (None for a caller who is
    nobody's device), so a subscriber need not look the call up to show who talks to whom.
    ``ended_at`` (Unix time) is set for ``ended``: the call is gone from the PBX by then, so its
    snapshot (`Pbx.call_snapshot`) no longer says when.
    """

    call_id: str
    state: CallState
    previous: CallState | None
    caller: str
    dialled: str
    devices: tuple[str, ...]
    reason: str = ""
    caller_user: str | None = None
    callee_user: str | None = None
    outcome: CallOutcome | None = None
    ended_at: float | None = None


class DtmfMethod(StrEnum):
    RFC4733 = "rfc4733"  # telephone-event packets seen by the media relay
    INFO = "info"  # a SIP INFO request (application/dtmf-relay or application/dtmf)


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A key pressed on a device in a call (feature code digits included)."""

    call_id: str
    device: str | None
    digit: str
    method: DtmfMethod


@dataclass(frozen=True, slots=True)
class HandoffStarted:
    """A flip began: ``to_device`` rings while the call stays on ``from_device``."""

    call_id: str
    from_device: str
    to_device: str
    kind: str = "flip"
    """``flip``, or a Personal Ring Group's ``push`` / ``pull`` (``to_device``: the group's
    name while a push rings it)."""


@dataclass(frozen=True, slots=True)
class HandoffSucceeded:
    """``to_device`` answered and now has the call; ``from_device`` was hung up."""

    call_id: str
    from_device: str
    to_device: str
    record: HandoffRecord
    kind: str = "flip"


@dataclass(frozen=True, slots=True)
class HandoffFailed:
    """The flip did not happen (no answer, declined, the call ended); the call stayed put."""

    call_id: str
    from_device: str
    to_device: str
    reason: str
    record: HandoffRecord
    kind: str = "flip"
    refusal: str = ""
    """For a push or pull: why, as a stable key (`sip_core.features.handoff.Refusal`), so that
    Home Assistant can translate it; ``unanswered`` for a push nobody took."""


@dataclass(frozen=True, slots=True)
class CallRecorded:
    """A call ended and its record joined the history."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class AddressBanned:
    """A source address failed to authenticate too often and is ignored until ``until``.

    ``username`` is the last username it tried (None when its credentials named none); ``until``
    is Unix time. Published once per ban (`sip_core.guard`).
    """

    address: str
    username: str | None
    failures: int
    until: float


class BanEndReason(StrEnum):
    """Why a ban ended."""

    EXPIRED = "expired"
    LIFTED = "lifted"  # by `Pbx.unban` (the Home Assistant action)
    EVICTED = "evicted"  # the ban table was full and this ban was the nearest to its end


@dataclass(frozen=True, slots=True)
class BanEnded:
    """A source address is no longer banned."""

    address: str
    reason: BanEndReason


class TrunkStatus(StrEnum):
    """Where a trunk's registration with its provider stands."""

    REGISTERING = "registering"  # the first REGISTER is on its way
    REGISTERED = "registered"
    FAILING = "failing"  # the last attempt failed (``TrunkStateChanged.failure`` says why)
    STOPPED = "stopped"  # the PBX stopped (we unregistered, or tried to)


class TrunkFailure(StrEnum):
    """Why a trunk's last registration attempt failed."""

    AUTHENTICATION = "authentication failed"  # our credentials were refused (401/407 again, 403)
    UNSUPPORTED_CHALLENGE = "unsupported challenge"  # a digest variant we cannot answer
    WRONG_REALM = "challenged for another realm"  # not the configured realm
    INTERVAL = "interval too brief"  # 423 without a usable Min-Expires
    REFUSED = "refused"  # another final response (the status is in ``detail``)
    TIMEOUT = "no answer"  # the provider did not answer (Timer F)
    TRANSPORT = "transport error"  # could not send (unresolvable host, connection refused)
    CERTIFICATE = "certificate verify failed"  # TLS: the provider's certificate was refused


@dataclass(frozen=True, slots=True)
class TrunkStateChanged:
    """A trunk's registration changed state, or failed once more.

    ``failures`` counts the attempts that failed in a row, ``auth_failures`` those among them
    that failed because our credentials were refused (Home Assistant raises a repair issue on
    these). ``retry_in`` is how long until the next attempt (seconds; None when none is planned),
    ``expires_in`` how long the provider keeps the registration (when registered).
    """

    trunk: str
    status: TrunkStatus
    failure: TrunkFailure | None = None
    detail: str = ""
    failures: int = 0
    auth_failures: int = 0
    retry_in: float | None = None
    expires_in: float | None = None


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """``transferring`` passes the call on to ``target`` (what was dialled); ``transferred`` is
    the party who stays in the call and goes with it."""

    call_id: str
    kind: TransferKind
    transferring: str
    transferred: str
    target: str


@dataclass(frozen=True, slots=True)
class TransferEnded:
    """A transfer is over: ``record.succeeded`` says whether the target took the call (if not,
    ``record.recalled`` names the device that took it back, or the call ended)."""

    call_id: str
    record: TransferRecord


@dataclass(frozen=True, slots=True)
class GroupPresenceDialled:
    """A phone dialled a Group Presence code (``dialled``): ``device`` is now ``present`` (or
    absent) in ``groups``; or, with a ``refusal`` (a stable key,
    `sip_core.features.group_presence_codes.PresenceRefusal`) and ``reason`` in words, nothing
    changed and ``groups`` is empty. A change also reaches `GroupPresence.subscribe`."""

    device: str
    dialled: str
    present: bool
    groups: tuple[str, ...]
    refusal: str = ""
    reason: str = ""


#: Every event the PBX publishes: narrow with ``isinstance`` or ``match``.
PbxEvent = (
    AddressBanned
    | BanEnded
    | RegistrationChanged
    | CallStateChanged
    | DtmfReceived
    | HandoffStarted
    | HandoffSucceeded
    | HandoffFailed
    | CallRecorded
    | TrunkStateChanged
    | TransferStarted
    | TransferEnded
    | GroupPresenceDialled
)

Subscriber = Callable[[PbxEvent], None]


class EventBus:
    """Synchronous publish/subscribe: `publish` calls every subscriber in subscription order.

    A subscriber that raises is logged and the others still get the event: one broken automation
    must not stop the registrar. Subscribing or unsubscribing from inside a callback is allowed and
    takes effect from the next event.
    """

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: tuple[_Subscription, ...] = ()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; the returned function removes it (calling it again does nothing)."""
        entry = _Subscription(callback)  # its own identity, even if one callback subscribes twice
        self._subscribers = (*self._subscribers, entry)

        def unsubscribe() -> None:
            self._subscribers = tuple(s for s in self._subscribers if s is not entry)

        return unsubscribe

    def publish(self, event: PbxEvent) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                _LOGGER.exception(
                    "Event subscriber %r failed on %s", subscriber, type(event).__name__
                )

    def __len__(self) -> int:
        return len(self._subscribers)

    def __bool__(self) -> bool:
        """Whether anyone subscribes: publishers may skip building an event nobody would get."""
        return bool(self._subscribers)


class _Subscription:
    """One subscription: a callable wrapper with its own identity."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Subscriber) -> None:
        self._callback = callback

    def __call__(self, event: PbxEvent) -> None:
        self._callback(event)

    def __repr__(self) -> str:
        return repr(self._callback)
