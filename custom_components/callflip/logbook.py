"""Logbook lines for calls, flips and transfers: who called whom, who answered where, and why a
flip or a transfer failed.

Only plain keys are used (``name``, ``message``): importing the logbook component here would
pull the recorder into every installation that merely loads callflip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from homeassistant.core import HomeAssistant, callback

from .const import (
    DOMAIN,
    EVENT_CALL,
    EVENT_GROUP_PRESENCE,
    EVENT_HANDOFF,
    EVENT_TRANSFER,
    TransferEventType,
)
from .handoff import HandoffSummary


class _LoggedEvent(Protocol):
    """The part of the logbook's lazy event a description reads."""

    @property
    def data(self) -> Mapping[str, Any]: ...


def _party(user: str | None, account: str | None) -> str:
    if user and account:
        return f"{user} ({account})"
    return user or account or "unknown"


def _caller(data: Mapping[str, Any]) -> str:
    """The caller: the user and their account, else the name and number presented (an outside
    caller from a trunk), else the account."""
    user = data.get("caller_user")
    name, number = data.get("caller_name"), data.get("caller_number")
    if user is None and (name or number):
        return f"{name} ({number})" if name and number else str(name or number)
    return _party(user, data.get("caller"))


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


OUTCOME_WORDS = {
    "no_answer": "no answer",
    "busy": "busy",
    "declined": "declined",
    "cancelled": "cancelled by the caller",
    "not_found": "number not found",
    "unavailable": "nobody available",
    "failed": "failed",
}


def describe_call(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per call state change, written for a person reading their history."""
    caller = _caller(data)
    callee = _party(data.get("callee_user"), data.get("dialled"))
    accounts = list(data.get("devices", ()))
    labels = list(data.get("device_labels") or accounts)
    if len(labels) != len(accounts):
        labels = accounts
    # The phones by the names people gave them (the labels), the caller's own phone left out.
    devices = [
        label
        for account, label in zip(accounts, labels, strict=True)
        if account != data.get("caller")
    ]
    state = data.get("state")
    if state == "setup":
        message = f"{caller} dialled {data.get('dialled')}"
    elif state == "ringing":
        message = f"{caller} is calling {callee}"
    elif state == "talking" and data.get("previous") == "held":
        message = f"call between {caller} and {callee} taken off hold"
    elif state == "talking" and data.get("previous") == "talking":
        message = f"call between {caller} and {callee} is now on {', '.join(devices)}"
    elif state == "talking":
        answered = data.get("answered_label")
        on = f" on {answered}" if answered else f" on {', '.join(devices)}" if devices else ""
        message = f"{callee} answered {caller}{on}"
    elif state == "held":
        message = f"call between {caller} and {callee} put on hold"
    elif state == "ending":
        message = f"call between {caller} and {callee} is ending"
    else:
        reason = data.get("reason")
        message = f"call between {caller} and {callee} ended"
        if data.get("outcome") == "answered" and data.get("duration") is not None:
            # An answered call says how long it lasted, even when that rounds to 0 s.
            message += f" after {_duration(float(data['duration']))}"
        outcome = OUTCOME_WORDS.get(data.get("outcome") or "")
        if outcome:
            message += f" ({outcome})"
        message += f": {reason}" if reason and reason != outcome else ""
    return {"name": "callflip", "message": message}


def describe_handoff(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per handoff step, in the words of the user's "Last handoff" sensor (and, for a
    flip keyed on a phone, which keys on which phone)."""
    message = HandoffSummary.from_event(data).predicate()
    if data.get("keys") and data.get("pressed_by"):
        pressed_on = data.get("from_label") or data["pressed_by"]
        message += f" ({data['keys']} pressed on {pressed_on})"
    return {"name": data.get("user") or "callflip", "message": message}


def describe_transfer(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per transfer step (keypad, the phone's own button, or the action)."""
    source = data.get("transferring_label") or data.get("transferring")
    passed = data.get("transferred_label") or data.get("transferred")
    target = data.get("target")
    kind = data.get("type")
    if kind == TransferEventType.STARTED:
        message = f"{source} is transferring {passed} to {target}"
    elif kind == TransferEventType.SUCCEEDED:
        message = f"{source} transferred {passed} to {data.get('to_device') or target}"
    elif data.get("recalled"):
        message = (
            f"transfer of {passed} to {target} failed ({data.get('reason')}); "
            f"the call went back to {data.get('recalled')}"
        )
    else:
        message = f"transfer of {passed} to {target} failed: {data.get('reason')}"
    return {"name": data.get("user") or "callflip", "message": message}


def describe_group_presence(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per Group Presence code dialled at a phone: what changed, or why nothing did."""
    phone = data.get("device_label") or data.get("device")
    state = "present" if data.get("present") else "absent"
    dialled = data.get("dialled")
    if data.get("type") == "refused":
        message = f"{phone} dialled {dialled} ({state}); refused: {data.get('reason')}"
    else:
        groups = ", ".join(data.get("groups") or ())
        message = f"{phone} is {state} in {groups} ({dialled} dialled)"
    return {"name": data.get("user") or "callflip", "message": message}


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Any], dict[str, Any]]], None],
) -> None:
    """Tell the logbook how to show callflip's bus events."""

    @callback
    def call(event: _LoggedEvent) -> dict[str, Any]:
        return describe_call(event.data)

    @callback
    def handoff(event: _LoggedEvent) -> dict[str, Any]:
        return describe_handoff(event.data)

    async_describe_event(DOMAIN, EVENT_CALL, call)
    async_describe_event(DOMAIN, EVENT_HANDOFF, handoff)

    @callback
    def transfer(event: _LoggedEvent) -> dict[str, Any]:
        return describe_transfer(event.data)

    async_describe_event(DOMAIN, EVENT_TRANSFER, transfer)

    @callback
    def group_presence(event: _LoggedEvent) -> dict[str, Any]:
        return describe_group_presence(event.data)

    async_describe_event(DOMAIN, EVENT_GROUP_PRESENCE, group_presence)
