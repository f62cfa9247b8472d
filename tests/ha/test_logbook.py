"""Logbook lines for callflip's bus events read as sentences about people and phones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.core import HomeAssistant

from custom_components.callflip.const import (
    DOMAIN,
    EVENT_CALL,
    EVENT_GROUP_PRESENCE,
    EVENT_HANDOFF,
    EVENT_TRANSFER,
)
from custom_components.callflip.logbook import (
    async_describe_events,
    describe_call,
    describe_handoff,
)

CALL = {
    "call_id": "c1",
    "caller": "bob-soft",
    "caller_user": "Bob",
    "dialled": "101",
    "callee_user": "Alice",
    "devices": ["bob-soft", "alice-desk"],
    "reason": "",
}


@pytest.mark.parametrize(
    ("state", "previous", "reason", "message"),
    [
        ("setup", None, "", "Bob (bob-soft) dialled 101"),
        ("ringing", "setup", "", "Bob (bob-soft) is calling Alice (101)"),
        ("talking", "ringing", "", "Alice (101) answered Bob (bob-soft) on alice-desk"),
        ("held", "talking", "", "call between Bob (bob-soft) and Alice (101) put on hold"),
        ("talking", "held", "", "call between Bob (bob-soft) and Alice (101) taken off hold"),
        (
            "talking",
            "talking",
            "",
            "call between Bob (bob-soft) and Alice (101) is now on alice-desk",
        ),
        ("ending", "talking", "", "call between Bob (bob-soft) and Alice (101) is ending"),
        ("ended", "ending", "BYE", "call between Bob (bob-soft) and Alice (101) ended: BYE"),
        ("ended", "ringing", "", "call between Bob (bob-soft) and Alice (101) ended"),
    ],
)
def test_call_lines(state: str, previous: str | None, reason: str, message: str) -> None:
    data = {**CALL, "state": state, "previous": previous, "reason": reason}
    assert describe_call(data) == {"name": "callflip", "message": message}


def test_call_lines_with_the_steps_fields() -> None:
    """The caller as a trunk presented them, the phone that answered, how long and how the call
    ended (the reason is left out when it only repeats the outcome)."""
    outside = {
        **CALL,
        "caller": "trunk:provider",
        "caller_user": None,
        "caller_name": "Grandma",
        "caller_number": "+4930123",
    }
    assert describe_call({**outside, "state": "ringing"})["message"] == (
        "Grandma (+4930123) is calling Alice (101)"
    )
    answered = {**outside, "state": "talking", "answered_label": "Alice desk phone"}
    assert describe_call(answered)["message"] == (
        "Alice (101) answered Grandma (+4930123) on Alice desk phone"
    )
    ended = {**CALL, "state": "ended", "reason": "the caller hung up", "outcome": "answered"}
    assert describe_call({**ended, "duration": 65.2})["message"] == (
        "call between Bob (bob-soft) and Alice (101) ended after 1 min 5 s: the caller hung up"
    )
    busy = {**CALL, "state": "ended", "reason": "busy", "outcome": "busy", "duration": 0.0}
    assert describe_call(busy)["message"] == (
        "call between Bob (bob-soft) and Alice (101) ended (busy)"
    )


def test_call_line_of_an_unknown_caller_and_no_device() -> None:
    data = {"caller": "", "caller_user": None, "dialled": "999", "state": "talking"}
    assert describe_call(data)["message"] == "999 answered unknown"


def test_handoff_lines() -> None:
    base = {
        "from_label": "Alice desk phone",
        "to_label": "Alice mobile",
        "from_device": "alice-desk",
        "to_device": "alice-mobile",
        "user": "Alice",
    }
    started = describe_handoff({**base, "type": "flip_started"})
    assert started == {
        "name": "Alice",
        "message": "is moving the call from Alice desk phone to Alice mobile",
    }
    done = describe_handoff({**base, "type": "flip_succeeded"})
    assert done["message"] == "moved the call from Alice desk phone to Alice mobile"
    failed = describe_handoff({**base, "type": "flip_failed", "reason": "alice-mobile declined"})
    assert failed == {
        "name": "Alice",
        "message": "could not move the call from Alice desk phone to Alice mobile: "
        "Alice mobile declined",
    }
    unknown = describe_handoff(
        {"from_device": "a", "to_device": "b", "type": "flip_failed", "reason": "cancelled"}
    )
    assert unknown == {
        "name": "callflip",
        "message": "could not move the call from a to b: cancelled",
    }
    # a flip keyed on a phone says which keys, on which phone
    pressed = describe_handoff(
        {**base, "type": "flip_succeeded", "pressed_by": "alice-desk", "keys": "*0 2"}
    )
    assert pressed["message"] == (
        "moved the call from Alice desk phone to Alice mobile (*0 2 pressed on Alice desk phone)"
    )


class _Event:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


async def test_both_events_are_described(hass: HomeAssistant) -> None:
    described: dict[str, Callable[[Any], dict[str, Any]]] = {}

    def register(domain: str, event_type: str, describe: Callable[[Any], dict[str, Any]]) -> None:
        assert domain == DOMAIN
        described[event_type] = describe

    async_describe_events(hass, register)
    assert set(described) == {EVENT_CALL, EVENT_HANDOFF, EVENT_TRANSFER, EVENT_GROUP_PRESENCE}
    call = described[EVENT_CALL](_Event({**CALL, "state": "ringing"}))
    assert call["message"] == "Bob (bob-soft) is calling Alice (101)"
    handoff = described[EVENT_HANDOFF](_Event({"type": "flip_started", "to_device": "x"}))
    assert handoff["message"].endswith("to x")


def test_call_line_names_phones_by_their_labels() -> None:
    data = {
        **CALL,
        "state": "talking",
        "previous": "talking",
        "device_labels": ["Bob softphone", "Alice desk phone"],
    }
    assert describe_call(data)["message"] == (
        "call between Bob (bob-soft) and Alice (101) is now on Alice desk phone"
    )
