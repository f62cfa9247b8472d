"""Logbook lines for calls and flips: who called whom, who answered where, and why a flip failed.

Only plain keys are used (``name``, ``message``): importing the logbook component here would
pull the recorder into every installation that merely loads callflip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from homeassistant.core import HomeAssistant, callback

from .const import DOMAIN, EVENT_CALL, EVENT_HANDOFF
from .handoff import HandoffSummary


class _LoggedEvent(Protocol):
    """The part of the logbook's lazy event a description reads."""

    @property
    def data(self) -> Mapping[str, Any]: ...


def _party(user: str | None, account: str | None) -> str:
    if user and account:
        return f"{user} ({account})"
    return user or account or "unknown"


def describe_call(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per call state change, written for a person reading their history."""
    caller = _party(data.get("caller_user"), data.get("caller"))
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
        on = f" on {', '.join(devices)}" if devices else ""
        message = f"{callee} answered {caller}{on}"
    elif state == "held":
        message = f"call between {caller} and {callee} put on hold"
    elif state == "ending":
        message = f"call between {caller} and {callee} is ending"
    else:
        reason = data.get("reason")
        message = f"call between {caller} and {callee} ended" + (f": {reason}" if reason else "")
    return {"name": "callflip", "message": message}


def describe_handoff(data: Mapping[str, Any]) -> dict[str, str]:
    """One line per handoff step, in the words of the user's "Last handoff" sensor (and, for a
    flip keyed on a phone, which keys on which phone)."""
    message = HandoffSummary.from_event(data).predicate()
    if data.get("keys") and data.get("pressed_by"):
        pressed_on = data.get("from_label") or data["pressed_by"]
        message += f" ({data['keys']} pressed on {pressed_on})"
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
