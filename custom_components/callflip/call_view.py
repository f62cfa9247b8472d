"""How a call in progress looks from one SIP device or one user: the state their sensors show.

What a device is doing in a call is sip_core's to decide (`sip_core.call_snapshot`: each
`CallSnapshot` lists its devices with a `DeviceActivity`); this module only names them for the
sensors (`PhoneState`) and adds who is at the other end as a person sees it (a user's name and
extension), so the sensors, the actions and the diagnostics agree on which call a device or a
user is in. It reads snapshots only, never the live calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sip_core.call_snapshot import CallSnapshot, DeviceActivity, DeviceInCall

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

#: sip_core's activities as the sensors name them (held at the PBX is held to the person, and a
#: party being passed on is in a transfer as much as the device passing it).
PHONE_STATE_OF: dict[DeviceActivity, PhoneState] = {
    DeviceActivity.DIALING: PhoneState.DIALING,
    DeviceActivity.RINGING: PhoneState.RINGING,
    DeviceActivity.TALKING: PhoneState.TALKING,
    DeviceActivity.HELD: PhoneState.HELD,
    DeviceActivity.HELD_AT_PBX: PhoneState.HELD,
    DeviceActivity.TRANSFERRING: PhoneState.TRANSFERRING,
    DeviceActivity.BEING_TRANSFERRED: PhoneState.TRANSFERRING,
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
    activity: DeviceActivity  # sip_core's word for ``state``; its rank picks the busiest call

    @property
    def rank(self) -> int:
        return self.activity.rank


def _view(call: CallSnapshot, party: DeviceInCall, devices: Mapping[str, OwnedDevice]) -> CallView:
    remote = party.remote_device
    owned = devices.get(remote or "")
    if owned is not None:
        name, number = owned.user["name"], owned.user["extension"]
    elif party.outgoing:
        name, number = call.callee_user or call.dialled, call.dialled
    else:
        name = call.caller_user or call.caller_device
        number = call.caller_device
    return CallView(
        call.id,
        PHONE_STATE_OF[party.activity],
        Direction.OUTGOING if party.outgoing else Direction.INCOMING,
        party.device,
        name,
        number,
        remote,
        party.since,
        party.activity,
    )


def views_of(call: CallSnapshot, devices: Mapping[str, OwnedDevice]) -> list[CallView]:
    """Every device this call involves, with what it is doing in it (sip_core's
    `DeviceActivity`, as a `PhoneState`). A flip target ringing is shown as ringing: the person
    sees which phone to pick up."""
    return [_view(call, party, devices) for party in call.parties]


def device_view(
    calls: Iterable[CallSnapshot], devices: Mapping[str, OwnedDevice], username: str
) -> CallView | None:
    """The call a device is busiest in, or None when it is idle."""
    best: CallView | None = None
    for call in calls:
        for view in views_of(call, devices):
            if view.username == username and (best is None or view.rank > best.rank):
                best = view
    return best


def user_view(
    calls: Iterable[CallSnapshot], devices: Mapping[str, OwnedDevice], user_id: str
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
