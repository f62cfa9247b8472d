"""How a call in progress looks from one SIP device or one user: the state their sensors show.

sip_core knows a call (setup, ringing, talking...) but not "what is this phone doing": the same
call is *dialing* on the caller's phone and *ringing* on the callee's. These pure functions read
the PBX's calls and answer per device and per user, so the sensors, the actions and the
diagnostics agree on which call a device or a user is in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from sip_core.calls import Call, CallState, LegState

from .users import OwnedDevice


class PhoneState(StrEnum):
    """What a device (or a user, on their busiest device) is doing; the sensors' options."""

    IDLE = "idle"
    RINGING = "ringing"
    DIALING = "dialing"
    TALKING = "talking"
    HELD = "held"
    TRANSFERRING = "transferring"


PHONE_STATES = [state.value for state in PhoneState]

# The most important call wins when a device or a user is in several (a second one ringing).
_RANK = {
    PhoneState.TRANSFERRING: 5,
    PhoneState.TALKING: 4,
    PhoneState.HELD: 3,
    PhoneState.RINGING: 2,
    PhoneState.DIALING: 1,
    PhoneState.IDLE: 0,
}


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


@dataclass(frozen=True, slots=True)
class CallView:
    """One call as seen from one device of ours."""

    call_id: str
    state: PhoneState
    direction: Direction
    username: str  # our device in the call
    remote_party: str  # a person's name, or the number or account when we know no name
    remote_number: str  # extension, dialled number or device account
    remote_device: str | None  # the other side's device account, once known
    since: float  # Unix time: answered (talking, held) or started (ringing, dialing)

    @property
    def rank(self) -> int:
        return _RANK[self.state]


def _remote_of_caller(
    call: Call, devices: Mapping[str, OwnedDevice]
) -> tuple[str, str, str | None]:
    """Who the caller's device is talking to (or calling)."""
    remote_device = call.callee.device if call.callee is not None else None
    owned = devices.get(remote_device or "")
    if owned is not None:
        return owned.user["name"], owned.user["extension"], remote_device
    return call.callee_user or call.dialled, call.dialled, remote_device


def _remote_of_callee(
    call: Call, devices: Mapping[str, OwnedDevice]
) -> tuple[str, str, str | None]:
    """Who is calling (or talking to) the callee's device."""
    caller_device = call.caller_device or None
    owned = devices.get(caller_device or "")
    if owned is not None:
        return owned.user["name"], owned.user["extension"], caller_device
    return call.caller_user or call.caller_device, call.caller_device, caller_device


def _answered_state(call: Call) -> PhoneState:
    return PhoneState.HELD if call.state is CallState.HELD else PhoneState.TALKING


def views_of(call: Call, devices: Mapping[str, OwnedDevice]) -> list[CallView]:
    """Every device of ours that this call involves, with what it is doing in it.

    A flip target ringing is shown as ringing: the person sees which phone to pick up.
    """
    if not call.active:
        return []
    answered = call.state in (CallState.TALKING, CallState.HELD)
    since = call.answered_at if answered and call.answered_at is not None else call.started_at
    views: list[CallView] = []
    caller = call.caller_device
    if caller:
        party, number, remote = _remote_of_caller(call, devices)
        state = _answered_state(call) if answered else PhoneState.DIALING
        views.append(
            CallView(call.id, state, Direction.OUTGOING, caller, party, number, remote, since)
        )
    party, number, remote = _remote_of_callee(call, devices)
    if answered and call.callee is not None and call.callee.device:
        callee_state = _answered_state(call)
        callees: Iterable[str] = (call.callee.device,)
    else:
        callee_state = PhoneState.RINGING
        callees = (leg.device for leg in call.branches if leg.device)
    for username in dict.fromkeys(callees):
        views.append(
            CallView(
                call.id, callee_state, Direction.INCOMING, username, party, number, remote, since
            )
        )
    operation = call.operation.view() if call.operation is not None else None
    if operation is not None and operation.kind == "transfer":
        gone = operation.from_leg.state is LegState.TERMINATED
        views = _transferring(views, operation.from_leg.device, operation.holds_other, gone=gone)
    flip = call.pending_flip
    if flip is not None:
        moving = flip.from_leg
        other = call.other(moving)
        owned = devices.get(other.device or "") if other is not None else None
        views.append(
            CallView(
                call.id,
                PhoneState.RINGING,
                Direction.INCOMING if moving is call.callee else Direction.OUTGOING,
                flip.to_device,
                owned.user["name"] if owned else (other.device or "") if other else "",
                owned.user["extension"] if owned else (other.device or "") if other else "",
                other.device if other is not None else None,
                flip.started_at,
            )
        )
    return views


def _transferring(
    views: list[CallView], device: str | None, holds_other: bool, *, gone: bool
) -> list[CallView]:
    """A transfer under way: the device passing the call on shows "transferring" (nothing once
    it was released), the party passed on "held" while the transferring device consults the
    target (attended) and "transferring" while the target rings for it (blind)."""
    shown: list[CallView] = []
    for view in views:
        if view.username == device:
            if gone:
                continue
            state = PhoneState.TRANSFERRING
        else:
            state = PhoneState.HELD if holds_other else PhoneState.TRANSFERRING
        shown.append(replace(view, state=state))
    return shown


def device_view(
    calls: Iterable[Call], devices: Mapping[str, OwnedDevice], username: str
) -> CallView | None:
    """The call a device is busiest in, or None when it is idle."""
    best: CallView | None = None
    for call in calls:
        for view in views_of(call, devices):
            if view.username == username and (best is None or view.rank > best.rank):
                best = view
    return best


def user_view(
    calls: Iterable[Call], devices: Mapping[str, OwnedDevice], user_id: str
) -> CallView | None:
    """The call a user is busiest in, on any of their devices, or None."""
    best: CallView | None = None
    for call in calls:
        for view in views_of(call, devices):
            owned = devices.get(view.username)
            if owned is None or owned.user["id"] != user_id:
                continue
            if best is None or view.rank > best.rank:
                best = view
    return best
