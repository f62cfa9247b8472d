"""One handoff as a person reads it: what moved where, whether it worked, and why not.

A handoff is any move of a call between phones: a flip today, and transfers, pushes and pulls as
they arrive. The PBX reports each step as a bus event (``callflip_handoff``) whose data this
module turns into a `HandoffSummary`; the "Last handoff" sensor shows its sentence as its state,
the handoff event entity carries it as an attribute, and the logbook shows the same words, so
the three never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .const import HandoffType

MAX_STATE_LENGTH: Final = 255
"""Home Assistant refuses longer states."""


class HandoffKind(StrEnum):
    """How a call moves. Only ``flip`` exists so far; the others follow as the PBX learns them."""

    FLIP = "flip"


class HandoffOutcome(StrEnum):
    """Where a handoff stands."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Each bus event type is one step of one kind of handoff.
_STEPS: Final[dict[HandoffType, tuple[HandoffKind, HandoffOutcome]]] = {
    HandoffType.STARTED: (HandoffKind.FLIP, HandoffOutcome.STARTED),
    HandoffType.SUCCEEDED: (HandoffKind.FLIP, HandoffOutcome.SUCCEEDED),
    HandoffType.FAILED: (HandoffKind.FLIP, HandoffOutcome.FAILED),
}


@dataclass(frozen=True, slots=True)
class HandoffSummary:
    """One step of a handoff, in the words and names a person knows (device labels)."""

    kind: HandoffKind
    outcome: HandoffOutcome
    call_id: str
    source: str
    target: str
    reason: str

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> HandoffSummary:
        """Read the data of a ``callflip_handoff`` bus event (or a handoff listener's data with
        its ``type``); ValueError for a type that is not a handoff step."""
        kind, outcome = _STEPS[HandoffType(str(data.get("type")))]
        source_account = str(data.get("from_device") or "")
        target_account = str(data.get("to_device") or "")
        source = str(data.get("from_label") or source_account or "?")
        target = str(data.get("to_label") or target_account or "?")
        return cls(
            kind=kind,
            outcome=outcome,
            call_id=str(data.get("call_id") or ""),
            source=source,
            target=target,
            reason=_readable_reason(str(data.get("reason") or ""), target_account, target),
        )

    def sentence(self) -> str:
        """A short sentence for a state or a notification: "Call moved from A to B"."""
        if self.outcome is HandoffOutcome.STARTED:
            text = f"Moving the call from {self.source} to {self.target}"
        elif self.outcome is HandoffOutcome.SUCCEEDED:
            text = f"Call moved from {self.source} to {self.target}"
        else:
            text = f"Call stayed on {self.source}: {self.target} did not take it"
            if self.reason:
                text += f" ({self.reason})"
        return text[:MAX_STATE_LENGTH]

    def predicate(self) -> str:
        """The same after a person's name, as the logbook shows it: "Alice moved the call..."."""
        if self.outcome is HandoffOutcome.STARTED:
            return f"is moving the call from {self.source} to {self.target}"
        if self.outcome is HandoffOutcome.SUCCEEDED:
            return f"moved the call from {self.source} to {self.target}"
        text = f"could not move the call from {self.source} to {self.target}"
        return f"{text}: {self.reason}" if self.reason else text

    def attributes(self) -> dict[str, str]:
        """The summary's parts, for automations that want more than the sentence."""
        return {
            "kind": self.kind.value,
            "outcome": self.outcome.value,
            "call_id": self.call_id,
            "from": self.source,
            "to": self.target,
            "reason": self.reason,
        }


def _readable_reason(reason: str, target_account: str, target_label: str) -> str:
    """The PBX names devices by account ("202 declined"); say the label the person gave it."""
    if target_account and target_account != target_label and reason.startswith(target_account):
        rest = reason[len(target_account) :]
        if not rest or rest[0] == " ":
            return f"{target_label}{rest}"
    return reason
