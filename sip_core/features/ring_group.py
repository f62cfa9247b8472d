"""Calls to a Personal Ring Group's pilot number: every present, available member rings at once.

Call control asks (`CallHooks.route_number`) about a number that is no device or user; for a
group's pilot this feature answers with a `RingPlan`: the members that are present in the group,
available (registered, not in a call, and not refusing calls: Do Not Disturb or Make Busy, when
the PBX knows them) and not the caller, for the group's ring timer. While the call rings, who may
ring is checked again every `RECHECK_INTERVAL` seconds, so a member who becomes present and
available starts ringing. When nobody answers in time (or nobody could ring at all, every member
absent, busy or in Make Busy), the call goes to the group's no-answer destination (Call Forward No
Answer: a user's devices, a device, or another group's present members), which rings for the
PBX's no-answer timeout; without one, the caller gets 480 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

from sip_core.call.control import CallControl
from sip_core.call.dial import RECHECK_INTERVAL
from sip_core.call.fork import ForkGroup, ForkSummary
from sip_core.call.targets import RingPlan
from sip_core.calls import Call, CallOutcome, Leg, LegRole, LegState
from sip_core.clock import TimerHandle
from sip_core.config import NoAnswerKind, PbxConfig, RingGroup
from sip_core.dialog import name_address
from sip_core.prg.presence import GroupPresence

__all__ = ["RECHECK_INTERVAL", "GroupCalls", "no_answer_devices"]

_LOGGER = logging.getLogger(__name__)


def no_answer_devices(
    config: PbxConfig, group: RingGroup, present: Callable[[str, str], bool]
) -> list[str]:
    """The devices a group's no-answer destination rings, in order (a group: its present
    members; a user: their devices by priority)."""
    target = group.no_answer
    if target is None:
        return []
    if target.kind is NoAnswerKind.DEVICE:
        return [target.name] if config.device(target.name) is not None else []
    if target.kind is NoAnswerKind.USER:
        user = next((u for u in config.users if u.name == target.name), None)
        if user is None:
            return []
        return [d.username for d in sorted(user.devices, key=lambda d: d.priority)]
    other = config.group(target.name)
    if other is None:
        return []
    return [m for m in other.members if present(other.name, m)]


class GroupCalls:
    """Rings a group for a call to its pilot (see the module docstring).

    ``available(device)`` says whether a device takes calls it did not ask for (not in Do Not
    Disturb nor Make Busy); registration and being in a call are checked here.
    """

    def __init__(
        self,
        control: CallControl,
        presence: GroupPresence,
        available: Callable[[str], bool] | None = None,
    ) -> None:
        self._control = control
        self._presence = presence
        self._available = available or (lambda _device: True)

    def route(self, caller_device: str, dialled: str) -> RingPlan | None:
        """The hook: a pilot number rings its group; anything else is not ours (None)."""
        group = self._control.config().group_by_pilot(dialled)
        if group is None:
            return None
        devices = tuple(self.members_to_ring(group, caller_device))
        _LOGGER.info(
            "Call from %s to group %s rings %s",
            caller_device,
            group.name,
            ", ".join(devices) or "nobody",
        )
        return RingPlan(
            group.name,
            devices,
            float(group.ring_timer),
            on_ringing=partial(self._ringing, group, caller_device),
            on_no_answer=partial(self._no_answer, group),
            available=lambda: tuple(self.members_to_ring(group, caller_device)),
        )

    def members_to_ring(self, group: RingGroup, caller_device: str) -> list[str]:
        """Members a call to the group rings now: present, available, registered, free."""
        control = self._control
        return [
            member
            for member in group.members
            if member != caller_device
            and self._presence.present(group.name, member)
            and self._available(member)
            and control.is_registered(member)
            and not control.in_call(member)
        ]

    def _ringing(self, group: RingGroup, caller_device: str, call: Call, fork: ForkGroup) -> None:
        """Re-check the group every `RECHECK_INTERVAL` while the call rings it; the timer ends
        with the fork (an answer, or every branch gone)."""
        clock = self._control.clock
        timer: list[TimerHandle] = []  # the pending re-check, replaced at each one

        def recheck() -> None:
            if self._recheck(group, caller_device, call, fork):
                timer[0] = clock.call_later(RECHECK_INTERVAL, recheck)

        def stop() -> None:
            timer[0].cancel()

        timer.append(clock.call_later(RECHECK_INTERVAL, recheck))
        fork.when_decided(stop)

    def _recheck(self, group: RingGroup, caller_device: str, call: Call, fork: ForkGroup) -> bool:
        """One re-check: absent members stop ringing, newly available ones start. False when the
        call no longer rings the group (nothing more to re-check)."""
        if not call.active or call.callee is not None or not fork.deciding:
            return False
        control = self._control
        caller = call.caller
        if caller is None or caller.remote_sdp is None:
            return False
        ringing = {leg.device for leg in fork.legs if leg.state is not LegState.TERMINATED}
        for leg in list(fork.legs):
            if leg.state is not LegState.TERMINATED and not self._presence.present(
                group.name, leg.device or ""
            ):
                _LOGGER.info("Call %s: %s is absent now; it stops ringing", call.id, leg.device)
                control.cancel_branch(leg)
        party = self._party(group)
        for member in self.members_to_ring(group, caller_device):
            if member in ringing:
                continue
            for binding in control.bindings(member):
                leg = Leg(call, LegRole.CALLEE, "b", member, party)
                fork.ring(leg, binding, presented=caller.party, offer=caller.remote_sdp)
            _LOGGER.info("Call %s: %s is available now and rings", call.id, member)
        return True

    def _party(self, group: RingGroup) -> str:
        domain = self._control.config().sip.domain
        return name_address(group.name, f"sip:{group.pilot}@{domain}")

    def _no_answer(self, group: RingGroup, call: Call) -> bool:
        """The group did not answer: ring its no-answer destination (False: there is none)."""
        control = self._control
        config = control.config()
        caller = call.caller
        if caller is None or caller.remote_sdp is None:
            return False
        devices = self.free(no_answer_devices(config, group, self._presence.present))
        targets = [b for device in devices for b in control.bindings(device)]
        if not targets:
            _LOGGER.info(
                "Call %s: nobody in %s answered and no one can take it", call.id, group.name
            )
            return False
        _LOGGER.info(
            "Call %s: nobody in %s answered; forwarded to %s", call.id, group.name, group.no_answer
        )
        seconds = config.calls.no_answer_timeout
        fork = control.ring(
            call,
            targets,
            role=LegRole.CALLEE,
            side="b",
            party=self._party(group),
            presented=caller.party,
            offer=caller.remote_sdp,
            on_early=partial(control.early_media, call),
            on_answer=partial(control.connect, call),
            on_fail=partial(self._forward_failed, group, call),
            on_timeout=lambda: control.terminate(
                call,
                CallOutcome.NO_ANSWER,
                f"nobody in {group.name} nor {group.no_answer} answered within {seconds} s",
                480,
            ),
            legs=call.branches,
        )
        fork.start_timer(seconds)
        return True

    def free(self, devices: Sequence[str]) -> list[str]:
        """Of ``devices``, those registered, free and available."""
        control = self._control
        return [
            d
            for d in devices
            if control.is_registered(d) and not control.in_call(d) and self._available(d)
        ]

    def _forward_failed(self, group: RingGroup, call: Call, summary: ForkSummary) -> None:
        statuses = ", ".join(map(str, summary.statuses))
        self._control.terminate(
            call,
            CallOutcome.NO_ANSWER,
            f"{group.no_answer}, the no-answer destination of {group.name}, answered {statuses}",
            480,
        )
