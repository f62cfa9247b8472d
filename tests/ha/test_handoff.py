"""The words of a handoff: one summary behind the sensor, the event attribute and the logbook."""

from __future__ import annotations

import pytest

from custom_components.callflip.handoff import MAX_STATE_LENGTH, HandoffSummary

BASE = {
    "call_id": "c1",
    "from_device": "201",
    "from_label": "Office Desk Phone",
    "to_device": "202",
    "to_label": "Alice's Mobile",
}


@pytest.mark.parametrize(
    ("reason", "readable"),
    [
        ("202 declined", "Alice's Mobile declined"),
        ("202 is busy", "Alice's Mobile is busy"),
        ("no answer within 30 s", "no answer within 30 s"),
        ("2020 declined", "2020 declined"),  # another account that merely starts alike
        ("", ""),
    ],
)
def test_failure_reason_names_the_phone_by_its_label(reason: str, readable: str) -> None:
    summary = HandoffSummary.from_event({**BASE, "type": "flip_failed", "reason": reason})
    assert summary.reason == readable
    expected = "Call stayed on Office Desk Phone: Alice's Mobile did not take it"
    assert summary.sentence() == (f"{expected} ({readable})" if readable else expected)


def test_every_step_has_words() -> None:
    started = HandoffSummary.from_event({**BASE, "type": "flip_started"})
    assert started.sentence() == "Moving the call from Office Desk Phone to Alice's Mobile"
    assert started.attributes() == {
        "kind": "flip",
        "outcome": "started",
        "call_id": "c1",
        "from": "Office Desk Phone",
        "to": "Alice's Mobile",
        "reason": "",
    }
    done = HandoffSummary.from_event({**BASE, "type": "flip_succeeded"})
    assert done.predicate() == "moved the call from Office Desk Phone to Alice's Mobile"


def test_a_long_reason_still_fits_a_state() -> None:
    summary = HandoffSummary.from_event({**BASE, "type": "flip_failed", "reason": "x" * 400})
    assert len(summary.sentence()) == MAX_STATE_LENGTH


def test_an_unknown_step_is_refused() -> None:
    with pytest.raises(ValueError, match="transfer_teleported"):
        HandoffSummary.from_event({**BASE, "type": "transfer_teleported"})
