"""The call model: a `Call` with its `Leg`s, one state machine, and the records a call leaves.

Why one place: Home Assistant shows calls, the B2BUA drives them and the history keeps them; if
each kept its own idea of "is this call ringing", they would disagree. The B2BUA is the only writer
(`Call.transition`), and every transition it makes is published as an event.

State machine::

    setup -> ringing -> talking <-> held
      |         |          |          |
      +---------+----------+----------+--> ending -> ended    (or straight to ended)

``setup``: the INVITE is authorised and routed, nothing rings yet; ``ringing``: a device rings
(180/183); ``talking``: answered; ``held``: one side has put the other on hold (sendonly or
inactive); ``ending``: BYE/CANCEL sent, waiting for the far ends; ``ended``: final, with an
`CallOutcome` and a reason for the log and the history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sip_core.clock import TimerHandle
    from sip_core.dialog import Dialog, SentInvite
    from sip_core.media import MediaSession
    from sip_core.message import Request
    from sip_core.sdp import Origin, SessionDescription
    from sip_core.transaction import (
        ClientTransaction,
        InviteServerTransaction,
        ServerTransaction,
    )

__all__ = [
    "Call",
    "CallHistory",
    "CallOutcome",
    "CallRecord",
    "CallState",
    "HandoffRecord",
    "InvalidTransition",
    "Leg",
    "LegRole",
    "LegState",
    "Operation",
    "OperationView",
    "PendingFlip",
    "Refresher",
    "SessionTimer",
    "TransferKind",
    "TransferRecord",
]


class CallState(StrEnum):
    SETUP = "setup"
    RINGING = "ringing"
    TALKING = "talking"
    HELD = "held"
    ENDING = "ending"
    ENDED = "ended"


_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.SETUP: frozenset(
        {CallState.RINGING, CallState.TALKING, CallState.ENDING, CallState.ENDED}
    ),
    CallState.RINGING: frozenset({CallState.TALKING, CallState.ENDING, CallState.ENDED}),
    CallState.TALKING: frozenset({CallState.HELD, CallState.ENDING, CallState.ENDED}),
    CallState.HELD: frozenset({CallState.TALKING, CallState.ENDING, CallState.ENDED}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class CallOutcome(StrEnum):
    """How a call ended, for the history and the log line."""

    ANSWERED = "answered"  # it was answered (and later hung up by someone)
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    DECLINED = "declined"
    CANCELLED = "cancelled"  # the caller gave up before an answer
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"  # nothing registered to ring
    FAILED = "failed"  # a media, transport or protocol failure


class InvalidTransition(RuntimeError):
    """The B2BUA asked for a state change the machine does not allow (a bug, never user input)."""


class LegRole(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    FLIP_TARGET = "flip_target"
    TRANSFER_TARGET = "transfer_target"
    PUSH_TARGET = "push_target"  # a group member rung by a push
    PULLER = "puller"  # a group member's device taking a call by a pull


class LegState(StrEnum):
    """A leg's own progress: its INVITE sent or received, early, confirmed, gone."""

    TRYING = "trying"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


Side = Literal["a", "b"]


class Refresher(StrEnum):
    """Which end of a dialog refreshes its session (RFC 4028 ``refresher`` parameter)."""

    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """A session timer agreed with one device (RFC 4028): how long, who refreshes.

    ``required`` says the device supports timers, so our responses may carry Require: timer.
    """

    interval: int
    refresher: Refresher
    required: bool


class Leg:
    """One side of a call: one device, one dialog, and the B2BUA's bookkeeping for it.

    ``side`` is the media relay leg it uses ("a" for the caller, "b" for the callee; a flip target
    takes the side of the device it replaces). ``party`` is how this leg's party is presented to
    the other side (a name-addr without tag). Fields after ``dialog`` belong to the B2BUA.
    """

    __slots__ = (
        "ack_pending",
        "ack_sent",
        "call",
        "client_txn",
        "deferred_ack",
        "device",
        "dialog",
        "failed_status",
        "incoming_offer",
        "invite_cseq",
        "local_sdp",
        "offer_txn",
        "origin",
        "outgoing_offer",
        "party",
        "peer_allows_update",
        "remote_sdp",
        "role",
        "sent_invite",
        "server_txn",
        "session",
        "session_deadline",
        "session_timer",
        "side",
        "state",
    )

    def __init__(
        self, call: Call, role: LegRole, side: Side, device: str | None, party: str
    ) -> None:
        self.call = call
        self.role = role
        self.side: Side = side
        self.device = device
        self.party = party
        self.state = LegState.TRYING
        self.dialog: Dialog | None = None
        # B2BUA bookkeeping
        self.server_txn: InviteServerTransaction | None = None  # the caller's initial INVITE
        self.client_txn: ClientTransaction | None = None  # our initial INVITE to a device
        self.sent_invite: SentInvite | None = None  # ... and what its answers' dialogs need
        self.remote_sdp: SessionDescription | None = None  # the device's latest description
        self.incoming_offer = False  # a re-INVITE/UPDATE from this device awaits its answer
        self.offer_txn: ServerTransaction | None = None  # ... and its transaction
        self.outgoing_offer = False  # a re-INVITE/UPDATE of ours to this device awaits its answer
        self.ack_pending = False  # we sent a 2xx to this device's INVITE, no ACK yet
        self.ack_sent: dict[int, Request] = {}  # INVITE CSeq -> ACK we sent (resent on a 2xx copy)
        self.deferred_ack: int | None = None  # INVITE CSeq whose 2xx we ACK once the peer ACKs
        self.invite_cseq = 0
        self.failed_status: int | None = None
        self.session: SessionTimer | None = None  # RFC 4028, with the device we are UAS for
        self.session_timer: TimerHandle | None = None  # our refresh, or the expiry check
        self.session_deadline = 0.0  # monotonic time the session expires without a refresh
        self.local_sdp = b""  # the last description we sent this device (resent by a refresh)
        self.peer_allows_update = False  # its Allow lists UPDATE: refresh with a bodiless UPDATE
        self.origin: Origin | None = None  # our o= line towards this device (version grows)

    def __repr__(self) -> str:
        return f"<Leg {self.role} {self.device} {self.state}>"


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """One flip, push or pull: which device gave the call away and which took it (or was meant
    to). The shape of a transfer record: ``from_device`` is the transferring party (the pusher;
    for a pull, the device pulled from), ``to_device`` the transferred-to party (the member who
    answered a push; the puller).

    For a flip that failed, ``to_device`` is the device (or, comma-separated, the devices) it rang
    or was refused, "" when none was chosen. ``code`` says why it failed in one word
    (``sip_core.features.flip.FlipFailure``; "" when it worked); ``pressed_by`` is the device whose
    keys asked for it ("" for Home Assistant's action), ``keys`` what it keyed (``*0``, ``*0 2``,
    ``*0 202#``), ``how`` how the target was chosen (automatic, menu, direct, simultaneous, action).
    """

    call_id: str
    from_device: str
    to_device: str
    started_at: float
    ended_at: float | None
    succeeded: bool
    reason: str
    kind: str = "flip"  # "flip", "push" or "pull"
    group: str = ""  # the Personal Ring Group of a push or pull
    code: str = ""
    pressed_by: str = ""
    keys: str = ""
    how: str = ""


class TransferKind(StrEnum):
    """How a call was passed to another party."""

    BLIND = "blind"  # the transferring party left at once; the target rang for the other party
    ATTENDED = "attended"  # the transferring party talked to the target first


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """One transfer of a call: who passed it, who stayed in it, and to whom it went.

    The shape is the one every "this party handed the call to that one" record takes (a Personal
    Ring Group handoff too): ``transferring`` is the device that gave the call away,
    ``transferred`` the party's device that stayed and was passed on, ``target`` what was dialled
    and ``to_device`` the device that answered (None when nobody did). ``recalled`` is the
    transferring device that took the call back after the target failed (None otherwise);
    ``reason`` says how it ended ("answered", or why not).
    """

    call_id: str
    kind: TransferKind
    transferring: str
    transferred: str
    target: str
    to_device: str | None
    started_at: float
    ended_at: float
    succeeded: bool
    reason: str
    recalled: str | None = None
    referred_by: str | None = None


@dataclass(frozen=True, slots=True)
class OperationView:
    """A feature operation under way, as the outside (Home Assistant) may see it.

    ``kind`` names the feature ("flip", "transfer"); ``from_leg`` is the side being moved, and
    `Call.other` of it the party that stays; ``to_device`` is where it goes (a transfer: what was
    dialled); ``started_at`` is wall-clock time; ``holds_other``: the party that stays is on hold
    at the PBX meanwhile (an attended transfer's consultation). Which devices an operation rings
    is read from its legs (`sip_core.call.activity`), not from here.
    """

    kind: str
    from_leg: Leg
    to_device: str
    started_at: float
    holds_other: bool = False

    @property
    def from_device(self) -> str:
        return self.from_leg.device or ""


#: A flip under way, as Home Assistant reads it (`Call.pending_flip`).
PendingFlip = OperationView


class Operation(Protocol):
    """The one feature operation a call may carry at a time (flip now; transfer, push next).

    Why a slot on the call: features must see each other (a transfer refuses while a flip runs),
    and call control must ask the operation about the few things that are its business, without
    knowing which feature it is. Call control asks:
    - ``blocks_offers``: answer a device's re-INVITE/UPDATE with 491 meanwhile;
    - ``owns(leg)``: a leg the operation added (ringing, not yet part of the call);
    - ``on_leg_bye(leg)``: a BYE on that leg; True means the operation took it and the call goes on;
    - ``on_call_end()``: the call is ending: stop, and leave the slot (`CallControl.end_operation`);
    - ``view()``: what the outside may see, None once it is over.
    """

    @property
    def kind(self) -> str: ...

    @property
    def blocks_offers(self) -> bool: ...

    def owns(self, leg: Leg) -> bool: ...

    def on_leg_bye(self, leg: Leg) -> bool: ...

    def on_call_end(self) -> None: ...

    def view(self) -> OperationView | None: ...


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What a finished call leaves in the history; times are Unix seconds (wall clock)."""

    call_id: str
    caller: str  # the calling device's username
    caller_user: str | None
    dialled: str
    callee_user: str | None
    callee_device: str | None  # the device that answered (after flips: the last one)
    answered_device: str | None  # the device that first answered
    started_at: float
    answered_at: float | None
    ended_at: float
    outcome: CallOutcome
    reason: str
    handoffs: tuple[HandoffRecord, ...] = ()
    #: How the caller was presented to the callee (a name-addr): for a call from a trunk, the
    #: outside caller's number and name.
    caller_party: str = ""
    transfers: tuple[TransferRecord, ...] = ()

    @property
    def duration(self) -> float:
        """Seconds talking (0 for an unanswered call)."""
        return 0.0 if self.answered_at is None else max(0.0, self.ended_at - self.answered_at)


class Call:
    """One call through the B2BUA: the caller's leg, the ringing branches, the answered leg."""

    __slots__ = (
        "answered_at",
        "answered_device",
        "branches",
        "callee",
        "callee_user",
        "caller",
        "caller_user",
        "dialled",
        "ended_at",
        "handoffs",
        "hops",
        "id",
        "media",
        "operation",
        "outcome",
        "reason",
        "started_at",
        "state",
        "transfers",
    )

    def __init__(
        self,
        call_id: str,
        *,
        caller_user: str | None,
        dialled: str,
        callee_user: str | None,
        started_at: float,
    ) -> None:
        self.id = call_id
        self.caller_user = caller_user
        self.dialled = dialled
        self.callee_user = callee_user
        self.started_at = started_at
        self.state = CallState.SETUP
        self.caller: Leg | None = None
        self.callee: Leg | None = None  # the answered leg (replaced by a flip)
        self.branches: list[Leg] = []  # legs ringing before the answer (forks)
        self.answered_at: float | None = None
        self.answered_device: str | None = None
        self.ended_at: float | None = None
        self.outcome: CallOutcome | None = None
        self.reason = ""
        self.handoffs: list[HandoffRecord] = []
        self.transfers: list[TransferRecord] = []
        self.media: MediaSession | None = None
        self.operation: Operation | None = None  # the feature operation in progress
        #: Max-Forwards left on the caller's INVITE: what we send for this call never has more.
        self.hops: int | None = None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.state}>"

    @property
    def active(self) -> bool:
        return self.state is not CallState.ENDED and self.state is not CallState.ENDING

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def pending_flip(self) -> PendingFlip | None:
        """The flip in progress, if any (the view of a flip ``operation``)."""
        operation = self.operation
        if operation is None or operation.kind != "flip":
            return None
        return operation.view()

    def transition(self, new: CallState) -> CallState:
        """Move to ``new``; returns the previous state. Same state: no change, no error."""
        old = self.state
        if new is old:
            return old
        if new not in _TRANSITIONS[old]:
            raise InvalidTransition(f"call {self.id}: {old} -> {new} is not allowed")
        self.state = new
        return old

    def legs(self) -> list[Leg]:
        """Every leg still attached: the caller, the answered leg or the ringing branches."""
        found = [leg for leg in (self.caller, self.callee) if leg is not None]
        found.extend(leg for leg in self.branches if leg is not self.callee)
        return found

    def other(self, leg: Leg) -> Leg | None:
        """The leg across the call from ``leg`` once answered (None while ringing)."""
        if leg is self.caller:
            return self.callee
        if leg is self.callee:
            return self.caller
        return None

    @property
    def caller_device(self) -> str:
        return self.caller.device or "" if self.caller is not None else ""

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices in the call now: the caller's and the answered one (or all ringing ones)."""
        names = [leg.device for leg in self.legs() if leg.device]
        return tuple(dict.fromkeys(names))

    def record(self) -> CallRecord:
        """The history entry; only meaningful once ended."""
        return CallRecord(
            call_id=self.id,
            caller=self.caller_device,
            caller_user=self.caller_user,
            dialled=self.dialled,
            callee_user=self.callee_user,
            callee_device=self.callee.device if self.callee is not None else None,
            answered_device=self.answered_device,
            started_at=self.started_at,
            answered_at=self.answered_at,
            ended_at=self.ended_at if self.ended_at is not None else self.started_at,
            outcome=self.outcome or CallOutcome.FAILED,
            reason=self.reason,
            handoffs=tuple(self.handoffs),
            caller_party=self.caller.party if self.caller is not None else "",
            transfers=tuple(self.transfers),
        )


@dataclass(slots=True)
class CallHistory:
    """The most recent call records, oldest first, bounded so a busy PBX cannot grow forever."""

    limit: int = 1000
    _records: deque[CallRecord] = field(init=False)

    def __post_init__(self) -> None:
        self._records = deque(maxlen=self.limit)

    def add(self, record: CallRecord) -> None:
        self._records.append(record)

    def extend(self, records: Iterable[CallRecord]) -> None:
        self._records.extend(records)

    def records(self) -> list[CallRecord]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)
