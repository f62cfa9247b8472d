"""The Personal Ring Group model: frozen values the configuration holds (`PbxConfig.groups`).

A Personal Ring Group (PRG) is a set of devices that act as one: dialling the group's pilot number
rings every present, available member at once, and the Handoff feature moves a call between
members (push: hand the call to the group; pull: take another member's call). The first member is
the group's *prime* member. A device may belong to several groups. The loader that checks these
values is `sip_core.config` (one set of rules for the runner's file and Home Assistant).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sip_core.dialled_codes import CodeScope, feature_code

__all__ = [
    "DEFAULT_ABSENT_CODE",
    "DEFAULT_HANDOFF_CODE",
    "DEFAULT_PRESENT_CODE",
    "DEFAULT_RING_TIMER",
    "GroupPresenceCodes",
    "HandoffSettings",
    "NoAnswerKind",
    "NoAnswerTarget",
    "RingGroup",
]

DEFAULT_HANDOFF_CODE = "*5"
DEFAULT_RING_TIMER = 20
#: Group Presence codes, dialled from an idle phone: alone, every group of the phone; followed
#: by a group's pilot number, that group.
DEFAULT_PRESENT_CODE = "*61"
DEFAULT_ABSENT_CODE = "*60"


class NoAnswerKind(StrEnum):
    """What a group's Call Forward No Answer destination is."""

    USER = "user"
    DEVICE = "device"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class NoAnswerTarget:
    """Where a group's unanswered calls go (Call Forward No Answer): ``kind:name``."""

    kind: NoAnswerKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"


@dataclass(frozen=True, slots=True)
class RingGroup:
    """One Personal Ring Group.

    ``members`` are device usernames in their programmed order (the order a pull searches; the
    first is the prime member). ``ring_timer``: seconds a group call or a push rings before it
    gives up (a push whose pusher still holds the call stops ringing the others; otherwise the call
    goes to ``no_answer``, the Call Forward No Answer destination, or ends when that is None).
    """

    name: str
    pilot: str
    members: tuple[str, ...]
    ring_timer: int = DEFAULT_RING_TIMER
    no_answer: NoAnswerTarget | None = None

    @property
    def prime(self) -> str:
        return self.members[0]

    def to_mapping(self) -> dict[str, Any]:
        """The group in the configuration schema."""
        return {
            "name": self.name,
            "pilot": self.pilot,
            "members": list(self.members),
            "ring_timer": self.ring_timer,
            "no_answer": str(self.no_answer) if self.no_answer is not None else "none",
        }


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    """The one feature code for both push (dialled in a call) and pull (dialled from idle)."""

    code: str = feature_code(DEFAULT_HANDOFF_CODE, CodeScope.BOTH)


@dataclass(frozen=True, slots=True)
class GroupPresenceCodes:
    """The Group Presence feature codes (``group_presence`` in the configuration).

    Dialled from an idle phone (an INVITE to the code), ``present_code`` makes the phone present
    and ``absent_code`` absent: the code alone in every group the phone is a member of, the code
    followed by a group's pilot number (``*61250``) in that group only.
    """

    present_code: str = feature_code(DEFAULT_PRESENT_CODE, CodeScope.IDLE)
    absent_code: str = feature_code(DEFAULT_ABSENT_CODE, CodeScope.IDLE)
