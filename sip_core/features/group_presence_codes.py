"""Group Presence by feature code: a phone makes itself present in, or absent from, its groups.

A Personal Ring Group member's Group Presence decides whether group calls and pushes ring it.
Home Assistant has a switch per membership; at the phone itself the person dials a code from idle
(an INVITE to the code, like a pull), as on a PBX with Group Presence feature codes:

- ``group_presence.present_code`` (``*61``) alone: present in every group the phone is a member
  of; followed by a group's pilot number (``*61250``): present in that group only;
- ``group_presence.absent_code`` (``*60``) the same way, for absent.

The change goes through `GroupPresence.set_present`, the path Home Assistant's switch takes: it is
kept in the runtime state, the switch follows, and a group call or push that is ringing picks up a
member made present at its next re-check (`sip_core.features.ring_group.RECHECK_INTERVAL`).

What the phone sees: the PBX answers, plays the confirmation tone (`Tone.CONFIRM`), and hangs up
(`CallControl.answer_with`), which desk phones show as a finished call. A refusal -- the phone is
no member of any group (or of the group named by the pilot), or it is not registered -- gets the
error tone as early media, then 403 with the reason (`CallControl.refuse_with`, as a refused
pull). Either way a `GroupPresenceDialled` event says what happened, a refusal with its stable key.
A code followed by digits that are no pilot is not ours: the number goes on (dial plan, or 404).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from sip_core.audio.playback import PlayTone
from sip_core.audio.tones import Tone
from sip_core.call.control import CallControl
from sip_core.config import PbxConfig, RingGroup
from sip_core.events import GroupPresenceDialled
from sip_core.message import Request
from sip_core.prg.presence import GroupPresence, GroupPresenceError
from sip_core.transaction import ServerTransaction

__all__ = ["GroupPresenceCodes", "PresenceCode", "PresenceRefusal", "parse_presence_code"]

_LOGGER = logging.getLogger(__name__)


class PresenceRefusal(StrEnum):
    """Why a Group Presence code changed nothing (stable keys: Home Assistant translates them)."""

    NOT_MEMBER = "not_member"
    NOT_REGISTERED = "not_registered"


@dataclass(frozen=True, slots=True)
class PresenceCode:
    """What a dialled number asks: ``present`` or absent, in ``group`` (None: every group)."""

    present: bool
    group: RingGroup | None


def parse_presence_code(config: PbxConfig, dialled: str) -> PresenceCode | None:
    """The Group Presence request ``dialled`` is, or None when it is none (a code followed by
    digits that are no group's pilot is none either)."""
    codes = config.group_presence
    for code, present in ((codes.present_code, True), (codes.absent_code, False)):
        if dialled == code:
            return PresenceCode(present, None)
        if dialled.startswith(code):
            group = config.group_by_pilot(dialled[len(code) :])
            if group is not None:
                return PresenceCode(present, group)
    return None


class _Refused(Exception):
    def __init__(self, refusal: PresenceRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


class GroupPresenceCodes:
    """The feature: `on_dialled` is a `FeatureRegistry.add_dialled` handler."""

    def __init__(self, control: CallControl, presence: GroupPresence) -> None:
        self._control = control
        self._presence = presence

    def on_dialled(
        self, request: Request, txn: ServerTransaction, caller_device: str, dialled: str
    ) -> bool:
        """An INVITE from idle: a Group Presence code is carried out (True), anything else is
        left to others (False)."""
        control = self._control
        config = control.config()
        asked = parse_presence_code(config, dialled)
        if asked is None:
            return False
        try:
            groups = self._groups(config, caller_device, asked)
            for group in groups:
                self._presence.set_present(group.name, caller_device, asked.present)
        except _Refused as exc:
            self._refuse(
                request, txn, caller_device, dialled, asked, refusal=exc.refusal, reason=str(exc)
            )
            return True
        except GroupPresenceError as exc:  # the configuration changed under us
            self._refuse(
                request,
                txn,
                caller_device,
                dialled,
                asked,
                refusal=PresenceRefusal.NOT_MEMBER,
                reason=str(exc),
            )
            return True
        names = tuple(group.name for group in groups)
        state = "present" if asked.present else "absent"
        _LOGGER.info("%s dialled %s: %s in %s", caller_device, dialled, state, ", ".join(names))
        control.publish(GroupPresenceDialled(caller_device, dialled, asked.present, names))
        control.answer_with(
            request,
            txn,
            PlayTone(Tone.CONFIRM),
            status_without_media=480,
            why=f"{state} in {', '.join(names)}",
        )
        return True

    def _groups(self, config: PbxConfig, device: str, asked: PresenceCode) -> tuple[RingGroup, ...]:
        """The groups the code changes for ``device``, or `_Refused`."""
        if asked.group is not None:
            if device not in asked.group.members:
                raise _Refused(
                    PresenceRefusal.NOT_MEMBER, f"{device} is not a member of {asked.group.name}"
                )
            groups: tuple[RingGroup, ...] = (asked.group,)
        else:
            groups = config.groups_of(device)
            if not groups:
                raise _Refused(
                    PresenceRefusal.NOT_MEMBER, f"{device} is not a member of a ring group"
                )
        if not self._control.is_registered(device):
            raise _Refused(PresenceRefusal.NOT_REGISTERED, f"{device} is not registered")
        return groups

    def _refuse(
        self,
        request: Request,
        txn: ServerTransaction,
        device: str,
        dialled: str,
        asked: PresenceCode,
        *,
        refusal: PresenceRefusal,
        reason: str,
    ) -> None:
        control = self._control
        _LOGGER.info("Group Presence code %s from %s refused: %s", dialled, device, reason)
        control.publish(
            GroupPresenceDialled(device, dialled, asked.present, (), refusal.value, reason)
        )
        control.refuse_with(
            request=request, txn=txn, status=403, why=reason, play=PlayTone(Tone.ERROR)
        )
