"""Every step of a call as Home Assistant shows it: on the bus, in event entities, in triggers.

sip_core reports a call's state changes (`CallStateChanged`: setup, ringing, talking, held,
ending, ended) and its flips (`HandoffStarted`/`Succeeded`/`Failed`). Here they become *steps*
a person thinks in: a call came in (or was dialled), phones ring, a phone answered, the call was
put on hold and taken off it, moved to another phone, transferred (`TransferStep`, from the
transfer events), ended (why, how, how long). The tracker
adds what a step needs and the state change does not carry: the caller's name and number as
they were presented (the caller's party), which phone answered, and the talk time. It reads them
from a snapshot of the call taken at each state change (`Pbx.call_snapshot`), keeping the latest
one from the call's first state to its end only.

Each step goes to the listeners of every user and SIP device in the call (the event entities),
and its fields join the ``callflip_call`` bus event, which the device triggers and the logbook
read. The same names everywhere: what a trigger offers as variables is what the entity's event
attributes and the bus event hold.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from homeassistant.core import callback

from sip_core.call_snapshot import CallSnapshot
from sip_core.calls import CallOutcome, CallState
from sip_core.events import CallStateChanged
from sip_core.headers import NameAddress
from sip_core.uri import ParseError

from .const import HandoffType, TransferEventType

if TYPE_CHECKING:
    from .hub import CallflipHub


class CallStep(StrEnum):
    """What happened to a call, from the point of view of one of its parties."""

    INCOMING = "incoming"  # a call for this user (or their phone) came in
    DIALLED = "dialled"  # this user (or phone) placed a call
    RINGING = "ringing"  # phones ring (``ringing_phones``)
    ANSWERED = "answered"  # a phone answered (``answered_device``)
    HELD = "held"  # a phone put the call on hold (its own re-INVITE)
    RESUMED = "resumed"  # ... and took it off hold
    MOVED = "moved"  # the call is now on another phone (a flip completed)
    ENDING = "ending"
    ENDED = "ended"  # ``reason``, ``outcome``, ``duration``


class TransferStep(StrEnum):
    """A transfer of a call as a step of it (from the transfer bus event's ``type``)."""

    TRANSFERRING = "transferring"  # a party passes the call on; the target rings
    TRANSFERRED = "transferred"  # the target answered: the call is theirs now
    TRANSFER_FAILED = "transfer_failed"  # the target did not take it (``reason``, ``recalled``)


#: The transfer bus event's ``type`` (`TransferEventType`) -> the step it is.
TRANSFER_STEPS: dict[str, TransferStep] = {
    TransferEventType.STARTED.value: TransferStep.TRANSFERRING,
    TransferEventType.SUCCEEDED.value: TransferStep.TRANSFERRED,
    TransferEventType.FAILED.value: TransferStep.TRANSFER_FAILED,
}

#: The event types of the call event entities: call steps, then flips, then transfers.
EVENT_TYPES: tuple[str, ...] = (
    *(step.value for step in CallStep if step is not CallStep.ENDING),
    *(kind.value for kind in HandoffType),
    *(step.value for step in TransferStep),
)

MISSED_OUTCOMES = frozenset(
    {CallOutcome.NO_ANSWER.value, CallOutcome.BUSY.value, CallOutcome.DECLINED.value}
)

type StepListener = Callable[[str, dict[str, Any]], None]


def step_of(state: CallState, previous: CallState | None) -> CallStep:
    """The step a state change is (``setup`` is ``incoming``; the tracker tells a caller's
    ``dialled`` apart)."""
    if state is CallState.SETUP:
        return CallStep.INCOMING
    if state is CallState.RINGING:
        return CallStep.RINGING
    if state is CallState.TALKING:
        if previous is CallState.HELD:
            return CallStep.RESUMED
        if previous is CallState.TALKING:
            return CallStep.MOVED
        return CallStep.ANSWERED
    if state is CallState.HELD:
        return CallStep.HELD
    if state is CallState.ENDING:
        return CallStep.ENDING
    return CallStep.ENDED


def presented(party: str) -> tuple[str | None, str | None]:
    """The caller's name and number as they were presented (display name, URI user)."""
    if not party:
        return None, None
    try:
        address = NameAddress.parse(party)
    except (ParseError, ValueError):
        return None, None
    return address.display_name or None, address.uri.user_unescaped or None


class CallStepTracker:
    """Turns the PBX's call events into steps for the bus, the entities and the triggers."""

    def __init__(self, hub: CallflipHub) -> None:
        self._hub = hub
        self._calls: dict[str, CallSnapshot] = {}
        self._listeners: dict[str, list[StepListener]] = {}

    @callback
    def async_add_listener(self, key: str, listener: StepListener) -> Callable[[], None]:
        """Call ``listener(event_type, data)`` for each step of a call of ``key`` (a user id or
        a SIP device id); returns the function that removes it."""
        self._listeners.setdefault(key, []).append(listener)

        def remove() -> None:
            self._listeners[key].remove(listener)

        return remove

    def call_changed(self, event: CallStateChanged, data: dict[str, Any]) -> None:
        """Add the step's fields to the bus event's ``data`` and tell the parties' listeners."""
        call = self._hub.pbx.call_snapshot(event.call_id)
        if call is not None:
            self._calls[event.call_id] = call
        else:  # ended (the PBX no longer holds it): the last snapshot, taken while it ran
            call = self._calls.get(event.call_id)
        if event.state is CallState.ENDED:
            self._calls.pop(event.call_id, None)
        step = step_of(event.state, event.previous)
        data.update(self._fields(event, call, step))
        if step is CallStep.ENDING:
            return  # a moment before ``ended``: on the bus and in the logbook only
        caller_keys = self._keys((event.caller,) if event.caller else (), event.caller_user)
        for key in self._party_keys(data, event):
            kind = step.value
            if step is CallStep.INCOMING and key in caller_keys:
                kind = CallStep.DIALLED.value
            self._tell(key, kind, {**data, "direction": self._direction(key, caller_keys)})

    def handoff(self, kind: HandoffType, data: dict[str, Any], user_id: str | None) -> None:
        """A flip step goes to the user's and both phones' listeners."""
        keys: list[str] = [user_id] if user_id else []
        by_username = self._hub.by_username()
        for username in (data.get("from_device"), data.get("to_device")):
            owned = by_username.get(username) if username else None
            if owned is not None:
                keys.append(owned.device["id"])
        for key in dict.fromkeys(keys):
            self._tell(key, kind.value, {**data, "step": kind.value})

    def transfer(self, kind: str, data: dict[str, Any]) -> None:
        """A transfer step (``kind``: the transfer bus event's ``type``) goes to the phones it
        involves (transferring, transferred, the one that answered) and to their users; ``data``
        (the bus event's) gets its ``step``."""
        step = TRANSFER_STEPS[kind]
        data["step"] = step.value
        to_device = data.get("to_device")
        data["to_label"] = self._hub.device_label(to_device) if to_device else None
        by_username = self._hub.by_username()
        keys: list[str] = []
        for username in (data.get("transferring"), data.get("transferred"), data.get("to_device")):
            owned = by_username.get(username) if username else None
            if owned is not None:
                keys += [owned.user["id"], owned.device["id"]]
        for key in dict.fromkeys(keys):
            self._tell(key, step.value, dict(data))

    # -- internals -------------------------------------------------------------------------------

    def _tell(self, key: str, kind: str, data: dict[str, Any]) -> None:
        for listener in list(self._listeners.get(key, ())):
            listener(kind, data)

    @staticmethod
    def _direction(key: str, caller_keys: set[str]) -> str:
        return "outgoing" if key in caller_keys else "incoming"

    def _keys(self, usernames: tuple[str, ...], user: str | None) -> set[str]:
        """Listener keys of these phones and of the user with this (sip_core) name."""
        keys: set[str] = set()
        by_username = self._hub.by_username()
        for username in usernames:
            owned = by_username.get(username)
            if owned is not None:
                keys.add(owned.device["id"])
        for each in self._hub.users:
            if user is not None and each["name"] == user:
                keys.add(each["id"])
        return keys

    def _party_keys(self, data: dict[str, Any], event: CallStateChanged) -> list[str]:
        phones = [*data["phones"], *([data["answered_device"]] if data["answered_device"] else [])]
        keys = self._keys((event.caller, *phones), event.caller_user)
        keys |= self._keys((), event.callee_user)
        return sorted(keys)

    def _phone_id(self, username: str | None) -> str | None:
        """The device registry id of one of our phones (None for a trunk or a stranger)."""
        from .hub import device_identifier  # noqa: PLC0415  (hub imports this module)

        owned = self._hub.by_username().get(username) if username else None
        if owned is None:
            return None
        return self._hub.ha_device_id(device_identifier(owned.device["id"]))

    def _fields(
        self, event: CallStateChanged, call: CallSnapshot | None, step: CallStep
    ) -> dict[str, Any]:
        hub = self._hub
        party = call.caller_party if call is not None else ""
        name, number = presented(party)
        answered: str | None = None
        duration: float | None = None
        if call is not None and step in (
            CallStep.ANSWERED,
            CallStep.HELD,
            CallStep.RESUMED,
            CallStep.MOVED,
            CallStep.ENDING,
            CallStep.ENDED,
        ):
            answered = (
                call.callee_device if call.callee_device is not None else call.answered_device
            )
            if step is CallStep.ENDED and call.answered_at is not None:
                ended = event.ended_at if event.ended_at is not None else call.answered_at
                duration = round(max(0.0, ended - call.answered_at), 1)
        if step is CallStep.ENDED and duration is None:
            duration = 0.0
        phones = [device for device in event.devices if device != event.caller]
        ids = [
            found
            for username in dict.fromkeys((event.caller, *phones, answered))
            if (found := self._phone_id(username)) is not None
        ]
        return {
            "step": step.value,
            "caller_name": name or event.caller_user,
            "caller_number": number,
            "phones": phones,
            "phone_labels": [hub.device_label(device) for device in phones],
            "answered_device": answered,
            "answered_label": hub.device_label(answered) if answered else None,
            "answered_phone_id": self._phone_id(answered),
            "caller_phone_id": self._phone_id(event.caller),
            "phone_ids": ids,
            "duration": duration,
            "missed": event.outcome is not None
            and event.outcome.value in MISSED_OUTCOMES
            and event.callee_user is not None,
        }


#: What a call event entity's event carries (the bus event has these and more: ids, lists).
ENTITY_FIELDS = (
    "call_id",
    "step",
    "direction",
    "caller",
    "caller_user",
    "caller_name",
    "caller_number",
    "dialled",
    "callee_user",
    "phone_labels",
    "answered_label",
    "reason",
    "outcome",
    "duration",
    "missed",
    "from_label",
    "to_label",
    "transfer",
    "target",
    "transferring_label",
    "transferred_label",
    "recalled",
    "kind",  # a push or pull: which, the group, and why it was refused
    "group",
    "refusal",
)


def entity_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a step a call event entity shows (those the step has)."""
    return {key: data[key] for key in ENTITY_FIELDS if key in data}
