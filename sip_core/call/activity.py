"""What a device is doing in a call: the one rule, from the live calls and legs.

Why one rule: "is this device in a call", "is it busy", "is it ringing, talking, held" are asked
by call set-up (a busy device is not rung), by every feature that picks a device to ring (a flip's
target, a push's group members, a ring group's members, a transfer's target) and by what Home
Assistant shows (`sip_core.call_snapshot`). Asked separately they disagreed: one view looked at
the devices a call names, another at the legs in the dialog index, a third at the call's
caller and callee only, so a branch that had already failed, a flip's ringing target or a
device moved out of a call counted for some and not for others.

The rule looks at the legs that are live -- not terminated -- in a call in progress:
- the caller's leg dials until the answer, then talks (held while the call is held);
- the callee's ringing branches (every fork of the set-up, with or without a dialog yet) ring;
  the answered leg talks (or is held);
- a leg an operation added (a flip's, a push's or a transfer's target, a pull's puller, an
  attended transfer's consultation) rings until it answers, then talks, facing the party that
  stays; a leg a flip kept up without media (auto-hangup off) talks until its device hangs up;
- a transfer makes its device "transferring" and the party that stays "held at the PBX"
  (attended) or "being transferred" (blind).

Two answers are read from it: a device is **in a call** when it has any activity (it is not
offered as a target), and **engaged** when it has an activity other than ringing (a new call
finds it busy; a device that only rings may be rung for another call too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sip_core.calls import Call, CallState, Leg, LegState, OperationView

__all__ = ["DeviceActivity", "DeviceInCall", "busiest", "call_parties"]


class DeviceActivity(StrEnum):
    """What one device is doing in one call."""

    DIALING = "dialing"  # the caller's device, before the answer
    RINGING = "ringing"  # rung: a callee's branch, a flip's target
    TALKING = "talking"  # answered, media flowing
    HELD = "held"  # answered, one side put the other on hold (its own re-INVITE)
    HELD_AT_PBX = "held_at_pbx"  # the party an attended transfer keeps on hold meanwhile
    TRANSFERRING = "transferring"  # the device passing the call on (a transfer)
    BEING_TRANSFERRED = "being_transferred"  # the party passed on while the target rings

    @property
    def rank(self) -> int:
        """How much this activity matters when a device is in several calls (a second one
        ringing while it talks): the highest is the one to show."""
        return _RANK[self]

    @property
    def engaged(self) -> bool:
        """The device is in the call rather than being rung for it: a new call finds it busy."""
        return self is not DeviceActivity.RINGING


_RANK = {
    DeviceActivity.TRANSFERRING: 5,
    DeviceActivity.BEING_TRANSFERRED: 5,
    DeviceActivity.TALKING: 4,
    DeviceActivity.HELD: 3,
    DeviceActivity.HELD_AT_PBX: 3,
    DeviceActivity.RINGING: 2,
    DeviceActivity.DIALING: 1,
}


@dataclass(frozen=True, slots=True)
class DeviceInCall:
    """One device in one call and what it is doing there (the one definition of it).

    ``outgoing``: the device is on the caller's side; ``remote_device`` the device across
    from it, once known; ``since`` (Unix time) the answer for talking and held, else when this
    activity began (the call's start, a flip's start).
    """

    device: str
    activity: DeviceActivity
    outgoing: bool
    remote_device: str | None
    since: float


def busiest(parties: Iterable[DeviceInCall]) -> DeviceInCall | None:
    """The entry with the highest-ranked activity (the first of equals), or None."""
    best: DeviceInCall | None = None
    for party in parties:
        if best is None or party.activity.rank > best.activity.rank:
            best = party
    return best


def _live(leg: Leg | None) -> bool:
    return leg is not None and bool(leg.device) and leg.state is not LegState.TERMINATED


def call_parties(call: Call, added: Iterable[Leg] = ()) -> list[DeviceInCall]:
    """Every device in ``call`` with its activity (see the module's rules), one entry per device.

    ``added`` are the call's other live legs, which only call control knows: the legs an
    operation rang or took in, and the legs a flip kept up (`CallControl.call_parties`)."""
    if not call.active:
        return []
    operation = call.operation
    view = operation.view() if operation is not None else None
    answered = call.state in (CallState.TALKING, CallState.HELD)
    since = call.answered_at if answered and call.answered_at is not None else call.started_at
    talk = DeviceActivity.HELD if call.state is CallState.HELD else DeviceActivity.TALKING
    callee = call.callee.device if _live(call.callee) and call.callee is not None else None
    found: list[DeviceInCall] = []
    caller = call.caller_device if _live(call.caller) else ""
    if caller:
        found.append(
            DeviceInCall(caller, talk if answered else DeviceActivity.DIALING, True, callee, since)
        )
    if answered:
        callees = [callee] if callee else []
        state = talk
    else:
        callees = [leg.device for leg in call.branches if _live(leg) and leg.device]
        state = DeviceActivity.RINGING
    for device in dict.fromkeys(callees):
        found.append(DeviceInCall(device, state, False, caller or None, since))
    if view is not None and view.kind == "transfer":
        found = _transferring(found, view)
    known = {party.device for party in found}
    for leg in added:
        if not _live(leg) or leg.device is None or leg.device in known:
            continue
        known.add(leg.device)
        found.append(_added(call, leg, view))
    return found


def _transferring(found: list[DeviceInCall], view: OperationView) -> list[DeviceInCall]:
    """A transfer: its device passes the call on (gone once released), the other party is held
    at the PBX (attended) or being passed on (blind)."""
    moving = view.from_leg.device
    kept = DeviceActivity.HELD_AT_PBX if view.holds_other else DeviceActivity.BEING_TRANSFERRED
    shown: list[DeviceInCall] = []
    for party in found:
        if party.device == moving:
            if view.from_leg.state is not LegState.TERMINATED:
                shown.append(_with(party, DeviceActivity.TRANSFERRING))
        else:
            shown.append(_with(party, kept))
    return shown


def _added(call: Call, leg: Leg, view: OperationView | None) -> DeviceInCall:
    """A leg outside the call's own: rung (or answered) for the operation, facing the party
    that stays; without an operation, a leg a flip kept up."""
    assert leg.device is not None
    activity = (
        DeviceActivity.RINGING
        if leg.state in (LegState.TRYING, LegState.EARLY)
        else DeviceActivity.TALKING
    )
    if view is None:
        return DeviceInCall(leg.device, activity, False, None, call.started_at)
    other = call.other(view.from_leg)
    remote = other.device if other is not None else None
    if activity is DeviceActivity.TALKING and view.holds_other:
        remote = view.from_device or None  # an attended transfer's consultation
    return DeviceInCall(leg.device, activity, view.from_leg is call.caller, remote, view.started_at)


def _with(party: DeviceInCall, activity: DeviceActivity) -> DeviceInCall:
    return DeviceInCall(party.device, activity, party.outgoing, party.remote_device, party.since)
