"""Immutable snapshots of calls in progress, with what each device is doing in one.

Why: Home Assistant (and anything else outside call control) must not hold or read the live
`Call`/`Leg` objects the B2BUA mutates; it gets a `CallSnapshot` instead, taken on the event
loop in one go, so what it reads cannot change under it. And "is this device ringing, talking,
held, transferring" is decided once, by call control (`sip_core.call.activity`, per device in
`CallSnapshot.parties`), so the sensors, the buttons, the actions and the diagnostics cannot
disagree with what call set-up and the features decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sip_core.call.activity import DeviceActivity, DeviceInCall, busiest, call_parties
from sip_core.calls import (
    Call,
    CallState,
    HandoffRecord,
    Leg,
    LegRole,
    LegState,
    OperationView,
    Side,
    TransferRecord,
)

__all__ = [
    "CallSnapshot",
    "DeviceActivity",
    "DeviceInCall",
    "LegSnapshot",
    "OperationSnapshot",
    "busiest",
    "snapshot_of",
]


@dataclass(frozen=True, slots=True)
class LegSnapshot:
    """One leg of a call: its device (None for a trunk's party), how its party is presented,
    its role and relay side, its state, and whether the PBX holds its party (attended transfer)."""

    device: str | None
    party: str
    role: LegRole
    side: Side
    state: LegState
    held_at_pbx: bool

    @property
    def ringing(self) -> bool:
        """Its INVITE is out (or in) and not answered yet."""
        return self.state in (LegState.TRYING, LegState.EARLY)

    @property
    def confirmed(self) -> bool:
        return self.state is LegState.CONFIRMED


@dataclass(frozen=True, slots=True)
class OperationSnapshot:
    """The feature operation under way on a call (`calls.OperationView`, without live legs).

    ``from_device`` is the side being moved (flip, push, pull) or passed on (transfer),
    ``from_released`` whether that leg has already gone (a blind transfer releases it at once);
    ``to_device`` where it goes (a flip's target(s), a group's name, what a transfer dialled);
    ``holds_other``: the party that stays is on hold at the PBX meanwhile.
    """

    kind: str
    from_device: str
    from_released: bool
    to_device: str
    started_at: float
    holds_other: bool


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """A call in progress as it was when the snapshot was taken; times are Unix seconds."""

    id: str
    state: CallState
    caller_device: str
    caller_user: str | None
    caller_party: str  # how the caller was presented to the callee (a name-addr)
    dialled: str
    callee_device: str | None  # the answered leg's device (after a flip: the new one)
    callee_user: str | None
    answered_device: str | None  # the device that first answered
    started_at: float
    answered_at: float | None
    ended_at: float | None
    operation: OperationSnapshot | None
    caller_leg: LegSnapshot | None
    callee_leg: LegSnapshot | None  # the answered leg
    ringing_legs: tuple[LegSnapshot, ...]  # the branches ringing before the answer
    parties: tuple[DeviceInCall, ...]  # every device involved, with its activity
    handoffs: tuple[HandoffRecord, ...]  # flips, pushes and pulls so far
    transfers: tuple[TransferRecord, ...]

    @property
    def legs(self) -> tuple[LegSnapshot, ...]:
        """Every leg attached: the caller's, the answered one or the ringing branches."""
        found = [leg for leg in (self.caller_leg, self.callee_leg) if leg is not None]
        return (*found, *self.ringing_legs)

    @property
    def active(self) -> bool:
        return self.state not in (CallState.ENDING, CallState.ENDED)

    @property
    def answered(self) -> bool:
        return self.state in (CallState.TALKING, CallState.HELD)

    @property
    def held(self) -> bool:
        """One side put the other on hold (the call's own state)."""
        return self.state is CallState.HELD

    @property
    def pending_flip(self) -> OperationSnapshot | None:
        operation = self.operation
        return operation if operation is not None and operation.kind == "flip" else None

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(party.device for party in self.parties))

    def activity(self, device: str) -> DeviceActivity | None:
        """What ``device`` does in this call, None when it is not in it."""
        found = busiest(party for party in self.parties if party.device == device)
        return found.activity if found is not None else None


def _leg(leg: Leg, held: Leg | None) -> LegSnapshot:
    return LegSnapshot(leg.device, leg.party, leg.role, leg.side, leg.state, leg is held)


def _operation(view: OperationView | None) -> OperationSnapshot | None:
    if view is None:
        return None
    return OperationSnapshot(
        view.kind,
        view.from_device,
        view.from_leg.state is LegState.TERMINATED,
        view.to_device,
        view.started_at,
        view.holds_other,
    )


def snapshot_of(call: Call, parties: Sequence[DeviceInCall] | None = None) -> CallSnapshot:
    """Take a snapshot of ``call`` (on the event loop, where the B2BUA changes it).

    ``parties`` are its devices' activities as call control reads them, with the legs only it
    knows (`CallControl.call_parties`); without them, from the call's own legs alone."""
    view = call.operation.view() if call.operation is not None else None
    held = call.other(view.from_leg) if view is not None and view.holds_other else None
    return CallSnapshot(
        id=call.id,
        state=call.state,
        caller_device=call.caller_device,
        caller_user=call.caller_user,
        caller_party=call.caller.party if call.caller is not None else "",
        dialled=call.dialled,
        callee_device=call.callee.device if call.callee is not None else None,
        callee_user=call.callee_user,
        answered_device=call.answered_device,
        started_at=call.started_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        operation=_operation(view),
        caller_leg=_leg(call.caller, held) if call.caller is not None else None,
        callee_leg=_leg(call.callee, held) if call.callee is not None else None,
        ringing_legs=tuple(_leg(leg, held) for leg in call.branches if leg is not call.callee),
        parties=tuple(parties if parties is not None else call_parties(call)),
        handoffs=tuple(call.handoffs),
        transfers=tuple(call.transfers),
    )
