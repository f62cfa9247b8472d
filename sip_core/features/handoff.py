"""Handoff in Personal Ring Groups: push a call to the group, pull a call from another member.

One feature code (``handoff.code``, ``*5`` by default) does both, as the device's state says:

- **Push** (the code dialled in a call, or `Handoff.push`): every present member of the pusher's
  group other than the pusher, registered and not in a call, rings at once with an offer of its
  own (a spare relay port, the codecs the staying party agreed to), overriding the members' Do
  Not Disturb, Make Busy and Call Forward Always, never their Group Presence. The pusher keeps
  talking; the first member to answer takes the call (`CallControl.replace_leg`: the other party
  hears one continuous stream, its dialog untouched) and the pusher gets a BYE. Who may ring is
  checked again every `RECHECK_INTERVAL` seconds while the push rings, so a member who becomes
  present and free starts ringing (and one made absent stops). If the pusher hangs up first, the
  other party hears ringback from the PBX and the pusher's own device rings too, now that it is
  free. At the group's ring timer: with the pusher still on, the others stop ringing and the call
  stays; with the pusher gone, the call goes to the group's no-answer destination (Call Forward
  No Answer), or ends with a reason saying so when there is none.
- **Pull** (the code dialled from an idle device: an INVITE to the code): the first call that can
  be pulled from another member of the puller's groups (groups in file order, members in their
  programmed order; held, ringing, transferring or otherwise busy calls are skipped) is answered
  towards the puller -- our 200 answers the puller's own offer with the codecs the staying party
  agreed to -- and once the puller's ACK comes, the relay moves to it and only then does the
  pulled-from device get its BYE. If anything fails before that, the call stays where it was.
  DND, Make Busy and Group Presence do not stop a pull, from or to a device.

Every refusal has a stable reason (`Refusal`), is logged, is published as `HandoffFailed`
(``kind`` ``push``/``pull``, ``refusal``), and is heard: the error tone to a pusher in its call,
an error status with the reason to a puller's INVITE (the phone plays its own error tone). Each
handoff that happened, or was tried, is a `HandoffRecord` on the call (``kind`` push/pull) in the
shape of a transfer record. A push or pull is the call's `Operation`, so no flip or transfer
starts while it runs, and it refuses to start while one of those runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from sip_core.audio.playback import PlayTone
from sip_core.audio.tones import Tone
from sip_core.call.control import CallControl
from sip_core.call.fork import FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import parse_body
from sip_core.calls import (
    Call,
    CallOutcome,
    CallState,
    HandoffRecord,
    Leg,
    LegRole,
    LegState,
    OperationView,
)
from sip_core.clock import TimerHandle
from sip_core.config import PbxConfig, RingGroup
from sip_core.dialog import DialogError
from sip_core.events import HandoffFailed, HandoffStarted, HandoffSucceeded
from sip_core.features.ring_group import RECHECK_INTERVAL, no_answer_devices
from sip_core.media import MediaLeg, RelayError
from sip_core.media.client import Playing
from sip_core.message import Request, Response
from sip_core.prg.presence import GroupPresence
from sip_core.sdp import (
    SdpError,
    SessionDescription,
    common_codecs,
    offer_for_new_device,
    restrict_codecs,
)
from sip_core.transaction import ServerTransaction

__all__ = [
    "RECHECK_INTERVAL",
    "Handoff",
    "HandoffError",
    "PullOperation",
    "PushOperation",
    "Refusal",
]

_LOGGER = logging.getLogger(__name__)


class Refusal(StrEnum):
    """Why a push or pull did not happen (stable keys: Home Assistant translates them)."""

    NO_SUCH_CALL = "no_such_call"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_MEMBER = "not_member"
    NOT_REGISTERED = "not_registered"
    NOT_TALKING = "not_talking"
    NOT_TWO_PARTY = "not_two_party"
    GROUP_RINGING = "group_ringing"
    OPERATION_IN_PROGRESS = "operation_in_progress"
    NO_MEMBER_AVAILABLE = "no_member_available"
    NOTHING_TO_PULL = "nothing_to_pull"
    PULLER_BUSY = "puller_busy"
    NO_COMMON_CODEC = "no_common_codec"
    UNANSWERED = "unanswered"
    FAILED = "failed"


#: The status a puller's INVITE gets for each refusal (the reason phrase says the rest).
_PULL_STATUS: Final[dict[Refusal, int]] = {
    Refusal.NOT_MEMBER: 403,
    Refusal.NOT_REGISTERED: 403,
    Refusal.PULLER_BUSY: 486,
    Refusal.NOTHING_TO_PULL: 404,
    Refusal.NO_COMMON_CODEC: 488,
    Refusal.NOT_TALKING: 480,
    Refusal.FAILED: 500,
}


class HandoffError(Exception):
    """A push or pull cannot start; the message is for the person who asked."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


def _operation_name(call: Call) -> str:
    operation = call.operation
    return operation.kind if operation is not None else ""


@dataclass(slots=True)
class PushOperation:
    """A push in progress, the call's `Operation`."""

    handoff: Handoff
    call: Call
    group: RingGroup
    from_leg: Leg
    started_at: float
    offer: SessionDescription
    spare: MediaLeg
    fork: ForkGroup | None = None
    released: bool = False  # the pusher hung up: the other party hears ringback
    forwarded: bool = False  # the ring timer ran out with the pusher gone: no-answer destination
    ringback: Playing | None = None
    timer: TimerHandle | None = None
    recheck: TimerHandle | None = None
    answering: Leg | None = None
    done: bool = False
    forks: list[ForkGroup] = field(default_factory=list)
    kind: str = field(default="push", init=False)

    @property
    def pusher(self) -> str:
        return self.from_leg.device or ""

    @property
    def blocks_offers(self) -> bool:
        """No offer may cross while the media moves, nor while the pusher is gone."""
        return self.released or self.answering is not None

    def owns(self, leg: Leg) -> bool:
        return any(leg in fork.legs for fork in self.forks)

    def on_leg_bye(self, leg: Leg) -> bool:
        if leg is self.from_leg and not self.done:
            self.handoff.pusher_released(self)
            return True
        return self.owns(leg)

    def on_call_end(self) -> None:
        self.handoff.finish_push(self, None, "the call ended", Refusal.FAILED)

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(
            self.kind,
            self.from_leg,
            self.group.name,
            self.started_at,
        )

    def ringing_devices(self) -> set[str]:
        fork = self.fork
        if fork is None or not fork.deciding:
            return set()
        return {leg.device or "" for leg in fork.legs if leg.state is not LegState.TERMINATED}


@dataclass(slots=True)
class PullOperation:
    """A pull in progress (the puller answered, its ACK awaited, the media about to move)."""

    handoff: Handoff
    call: Call
    group: RingGroup
    from_leg: Leg
    puller: str
    started_at: float
    spare: MediaLeg
    answer: SessionDescription
    leg: Leg | None = None
    fork: ForkGroup | None = None  # the puller's registrations ringing (a pull by action)
    done: bool = False
    kind: str = field(default="pull", init=False)

    @property
    def blocks_offers(self) -> bool:
        return True

    def owns(self, leg: Leg) -> bool:
        return leg is self.leg or (self.fork is not None and leg in self.fork.legs)

    def on_leg_bye(self, leg: Leg) -> bool:
        if self.owns(leg):
            self.handoff.finish_pull(self, False, f"{self.puller} hung up", Refusal.FAILED)
            return True
        return False

    def on_call_end(self) -> None:
        self.handoff.finish_pull(self, False, "the call ended", Refusal.FAILED)

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(self.kind, self.from_leg, self.puller, self.started_at)


class Handoff:
    """The Handoff feature: push and pull by code (`on_code`, `on_dialled`) and by action.

    ``presence`` is the members' Group Presence. A push overrides Do Not Disturb, Make Busy and
    Call Forward Always, so it needs nothing else about a device: a member may ring when it is
    present, registered and not in a call.
    """

    def __init__(self, control: CallControl, presence: GroupPresence) -> None:
        self._control = control
        self._presence = presence
        self._pushing: dict[str, PushOperation] = {}  # group name -> its push

    # -- what others may ask -------------------------------------------------------------------

    def pushing(self, group: str) -> PushOperation | None:
        """The push ringing ``group``, if any."""
        return self._pushing.get(group)

    def rings(self, group: RingGroup) -> bool:
        """Whether a call rings ``group`` now: a push, or a call to its pilot not yet answered
        (a push is refused meanwhile: the group has a call waiting already)."""
        if group.name in self._pushing:
            return True
        return any(
            call.active and not call.answered and call.dialled == group.pilot
            for call in self._control.calls()
        )

    def call_holder(self, group: RingGroup) -> str | None:
        """The member (in the group's order) that holds an answered call now, if any."""
        for member in group.members:
            for leg in self._legs_of(member):
                if leg.call.answered and leg.state is LegState.CONFIRMED:
                    return member
        return None

    def may_ring(self, group: RingGroup, device: str) -> bool:
        """A member a push may ring now: present in ``group``, registered, not in a call."""
        control = self._control
        return (
            self._presence.present(group.name, device)
            and control.is_registered(device)
            and not control.in_call(device)
        )

    # -- push ----------------------------------------------------------------------------------

    def push(
        self, call_id: str, device: str | None = None, group: str | None = None
    ) -> PushOperation:
        """Push ``device``'s side of the call (default: the side that is a group member) to its
        group (default: the first of its groups with a member that may ring). Raises
        `HandoffError` when the push cannot start."""
        call = self._control.get(call_id)
        if call is None or not call.active:
            raise HandoffError(Refusal.NO_SUCH_CALL, f"no call {call_id} in progress")
        leg = self._pushing_side(call, device)
        return self._push(leg, group)

    def on_code(self, leg: Leg) -> None:
        """The handoff code was dialled on ``leg`` in a call: push it (or play the error tone)."""
        if not leg.call.active:
            return
        try:
            self._push(leg, None)
        except HandoffError as exc:
            self._refused("push", leg.call.id, leg.device or "", "", exc)
            self._error_tone(leg)

    def _pushing_side(self, call: Call, device: str | None) -> Leg:
        config = self._control.config()
        legs = [leg for leg in (call.callee, call.caller) if leg is not None]
        if device is not None:
            for leg in legs:
                if leg.device == device:
                    return leg
            raise HandoffError(Refusal.NOT_MEMBER, f"{device} is not in call {call.id}")
        for leg in legs:
            if config.groups_of(leg.device or ""):
                return leg
        raise HandoffError(
            Refusal.NOT_MEMBER, f"no device in call {call.id} is a member of a ring group"
        )

    def _check_call(self, call: Call, leg: Leg) -> None:
        """The call rules push and pull share: talking, two-party, no other feature at work."""
        if call.operation is not None:
            raise HandoffError(
                Refusal.OPERATION_IN_PROGRESS,
                f"a {_operation_name(call)} is in progress on call {call.id}",
            )
        if not call.answered or call.state is not CallState.TALKING:
            what = "on hold" if call.state is CallState.HELD else "not talking"
            raise HandoffError(Refusal.NOT_TALKING, f"call {call.id} is {what}")
        other = call.other(leg)
        if (
            other is None
            or leg.state is not LegState.CONFIRMED
            or other.state is not LegState.CONFIRMED
            or call.media is None
            or call.media.closed
        ):
            raise HandoffError(Refusal.NOT_TWO_PARTY, f"call {call.id} is not a two-party call")
        if leg.remote_sdp is None or other.remote_sdp is None:
            raise HandoffError(Refusal.NOT_TWO_PARTY, f"call {call.id} has no media yet")

    def _push(self, leg: Leg, group_name: str | None) -> PushOperation:
        control = self._control
        config = control.config()
        call = leg.call
        pusher = leg.device or ""
        groups = config.groups_of(pusher)
        if not groups:
            raise HandoffError(Refusal.NOT_MEMBER, f"{pusher} is not a member of a ring group")
        if group_name is not None:
            groups = tuple(g for g in groups if g.name == group_name)
            if not groups:
                raise HandoffError(Refusal.NOT_MEMBER, f"{pusher} is not a member of {group_name}")
        if not control.is_registered(pusher):
            raise HandoffError(Refusal.NOT_REGISTERED, f"{pusher} is not registered")
        self._check_call(call, leg)
        free = [g for g in groups if not self.rings(g)]
        if not free:
            raise HandoffError(
                Refusal.GROUP_RINGING,
                f"a call already rings {', '.join(g.name for g in groups)}",
            )
        group = next((g for g in free if self._candidates(g, pusher, with_pusher=False)), None)
        if group is None:
            raise HandoffError(
                Refusal.NO_MEMBER_AVAILABLE,
                f"no other member of {', '.join(g.name for g in free)} is present and available",
            )
        other = call.other(leg)
        assert other is not None
        assert other.remote_sdp is not None
        assert leg.remote_sdp is not None
        try:
            offer = offer_for_new_device(other.remote_sdp, leg.remote_sdp)
            spare = control.open_spare(call, leg.side)
        except SdpError as exc:
            raise HandoffError(Refusal.NO_COMMON_CODEC, exc.reason) from None
        except (RelayError, OSError) as exc:
            raise HandoffError(Refusal.FAILED, f"media relay: {exc}") from None
        op = PushOperation(self, call, group, leg, control.clock.wall(), offer, spare)
        control.begin(call, op)
        self._pushing[group.name] = op
        _LOGGER.info("Call %s: %s pushes the call to %s", call.id, pusher, group.name)
        control.publish(HandoffStarted(call.id, pusher, group.name, kind="push"))
        self._ring_candidates(op)
        if not op.done:
            op.timer = control.clock.call_later(group.ring_timer, lambda: self._ring_timer(op))
            op.recheck = control.clock.call_later(RECHECK_INTERVAL, lambda: self._recheck(op))
            control.publish_state(call)
        return op

    def _candidates(self, group: RingGroup, pusher: str, *, with_pusher: bool) -> list[str]:
        found = [m for m in group.members if m != pusher and self.may_ring(group, m)]
        control = self._control
        if with_pusher and control.is_registered(pusher) and not control.in_call(pusher):
            found.append(pusher)  # the pusher's own line, once free, whatever its presence
        return found

    def _ring_candidates(self, op: PushOperation) -> None:
        """Ring every member that may ring and does not yet; stop those made absent."""
        if op.done or op.forwarded or op.answering is not None:
            return
        control = self._control
        call = op.call
        if op.fork is not None and op.fork.deciding:
            for leg in list(op.fork.legs):
                device = leg.device or ""
                if (
                    leg.state is not LegState.TERMINATED
                    and device != op.pusher
                    and not self._presence.present(op.group.name, device)
                ):
                    _LOGGER.info("Call %s: %s is absent now; it stops ringing", call.id, device)
                    control.cancel_branch(leg)
        ringing = op.ringing_devices()
        wanted = [
            d
            for d in self._candidates(op.group, op.pusher, with_pusher=op.released)
            if d not in ringing
        ]
        if wanted:
            self._ring(op, wanted)

    def _ring(self, op: PushOperation, devices: list[str]) -> None:
        control = self._control
        call = op.call
        remote = call.other(op.from_leg)
        if remote is None:
            return
        fork = op.fork
        if fork is None or not fork.deciding:
            fork = control.ring(
                call,
                (),
                role=LegRole.PUSH_TARGET,
                side=op.from_leg.side,
                party=op.from_leg.party,
                presented=remote.party,
                offer=op.offer,
                on_answer=lambda leg, response: self._answered(op, leg, response),
                on_fail=lambda summary: self._all_failed(op, summary),
                on_timeout=lambda: None,  # the push keeps its own timers
            )
            op.fork = fork
            op.forks.append(fork)
        for device in devices:
            for binding in control.bindings(device):
                if not call.active or not fork.deciding:
                    return
                leg = Leg(call, LegRole.PUSH_TARGET, op.from_leg.side, device, op.from_leg.party)
                fork.ring(
                    leg,
                    binding,
                    presented=remote.party,
                    offer=op.offer,
                    port=op.spare.local_rtp.port,
                )
            _LOGGER.info("Call %s: push rings %s", call.id, device)

    def _recheck(self, op: PushOperation) -> None:
        op.recheck = None
        if op.done:
            return
        self._ring_candidates(op)
        op.recheck = self._control.clock.call_later(RECHECK_INTERVAL, lambda: self._recheck(op))

    def _all_failed(self, op: PushOperation, summary: ForkSummary) -> None:
        """Every ringing member failed (busy, declined, unreachable, made absent)."""
        if op.done:
            return
        if op.forwarded:
            self._forward_failed(op, summary)
            return
        op.fork = None
        if op.released:
            return  # ringback goes on; the next check or the ring timer decides
        if self._candidates(op.group, op.pusher, with_pusher=False):
            self._ring_candidates(op)
            return
        self.finish_push(op, None, f"no member took the call ({_summary(summary)})", None)

    def pusher_released(self, op: PushOperation) -> None:
        """The pusher hung up before a member answered: ringback, and its own line rings too."""
        control = self._control
        call = op.call
        op.released = True
        _LOGGER.info("Call %s: %s hung up during the push; ringback", call.id, op.pusher)
        control.release(op.from_leg)
        remote = call.other(op.from_leg)
        if remote is not None:
            try:
                op.ringback = control.play(remote, PlayTone(Tone.RINGBACK))
            except RelayError as exc:
                _LOGGER.warning("Call %s: no ringback for the caller: %s", call.id, exc)
        control.publish_state(call)
        self._ring_candidates(op)

    def _ring_timer(self, op: PushOperation) -> None:
        op.timer = None
        if op.done or op.answering is not None:
            return
        seconds = op.group.ring_timer
        if not op.released:
            self.finish_push(op, None, f"no member answered within {seconds} s", None)
            return
        self._forward_no_answer(op)

    def _forward_no_answer(self, op: PushOperation) -> None:
        """The pusher is gone and the group did not answer: the group's no-answer destination."""
        control = self._control
        call = op.call
        group = op.group
        op.forwarded = True
        if op.fork is not None:
            op.fork.close()
            op.fork = None
        target = group.no_answer
        devices = self.no_answer_devices(control.config(), group) if target is not None else []
        devices = [d for d in devices if control.is_registered(d) and not control.in_call(d)]
        if not devices:
            why = f"nobody in {group.name} answered the push within {group.ring_timer} s" + (
                f" and {target} cannot take it"
                if target is not None
                else "; the group has no no-answer destination"
            )
            self._end_unanswered(op, why)
            return
        _LOGGER.info("Call %s: push unanswered; forwarded to %s", call.id, target)
        self._ring(op, devices)
        seconds = control.config().calls.no_answer_timeout
        op.timer = control.clock.call_later(
            seconds,
            lambda: self._forward_timeout(op, f"{target} did not answer within {seconds} s"),
        )

    def _forward_timeout(self, op: PushOperation, why: str) -> None:
        op.timer = None
        if not op.done and op.answering is None:
            self._end_unanswered(op, why)

    def _forward_failed(self, op: PushOperation, summary: ForkSummary) -> None:
        self._end_unanswered(
            op,
            f"the no-answer destination {op.group.no_answer} did not take the call "
            f"({_summary(summary)})",
        )

    def _end_unanswered(self, op: PushOperation, why: str) -> None:
        self.finish_push(op, None, why, None)
        self._control.terminate(op.call, CallOutcome.NO_ANSWER, why)

    def no_answer_devices(self, config: PbxConfig, group: RingGroup) -> list[str]:
        """The devices a group's no-answer destination rings (`ring_group.no_answer_devices`)."""
        return no_answer_devices(config, group, self._presence.present)

    def _answered(self, op: PushOperation, leg: Leg, response: Response) -> None:
        if op.done:
            self._control.hangup_leg(leg)
            return
        op.answering = leg
        self._control.spawn(self._complete_push(op, leg, response))

    async def _complete_push(self, op: PushOperation, leg: Leg, response: Response) -> None:
        control = self._control
        call = op.call
        failure, answer = _check_answer(leg, response, op.offer)
        if not failure and (not call.active or op.done):
            failure = "the call ended"
        if failure or answer is None:
            control.hangup_leg(leg)
            op.answering = None
            if op.released and call.active and not op.done and not op.forwarded:
                op.fork = None
                self._ring_candidates(op)  # the others ring again
                return
            self.finish_push(op, None, failure or "the call ended", Refusal.FAILED)
            return
        if op.ringback is not None:
            op.ringback.stop()
            op.ringback = None
        try:
            replaced = await control.replace_leg(op.from_leg, leg, answer, spare=op.spare)
        except (RelayError, OSError) as exc:
            control.hangup_leg(leg)
            self.finish_push(op, None, f"media relay: {exc}", Refusal.FAILED)
            return
        if not replaced:
            control.hangup_leg(leg)
            self.finish_push(op, None, "the call ended", Refusal.FAILED)
            return
        self.finish_push(op, leg, "", None)
        control.publish_state(call)

    def finish_push(
        self, op: PushOperation, winner: Leg | None, reason: str, refusal: Refusal | None
    ) -> None:
        """The push is over: ``winner`` took the call, or nobody did (``reason``)."""
        if op.done:
            return
        op.done = True
        control = self._control
        call = op.call
        for timer in (op.timer, op.recheck):
            if timer is not None:
                timer.cancel()
        op.timer = op.recheck = None
        for fork in op.forks:
            fork.close(keep=winner)
        if op.ringback is not None:
            op.ringback.stop()
            op.ringback = None
        control.end_operation(call, op)
        control.discard_spare(call, op.spare)
        if self._pushing.get(op.group.name) is op:
            del self._pushing[op.group.name]
        to_device = winner.device or "" if winner is not None else op.group.name
        record = HandoffRecord(
            call.id,
            op.pusher,
            to_device,
            op.started_at,
            control.clock.wall(),
            winner is not None,
            reason or "answered",
            kind="push",
            group=op.group.name,
        )
        call.handoffs.append(record)
        if winner is not None:
            _LOGGER.info("Call %s pushed from %s to %s", call.id, op.pusher, to_device)
            control.publish(HandoffSucceeded(call.id, op.pusher, to_device, record, kind="push"))
        else:
            refusal = refusal or Refusal.UNANSWERED
            _LOGGER.info("Call %s: push from %s ended: %s", call.id, op.pusher, reason)
            control.publish(
                HandoffFailed(
                    call.id,
                    op.pusher,
                    to_device,
                    reason,
                    record,
                    kind="push",
                    refusal=refusal.value,
                )
            )
        if call.active:
            control.publish_state(call)

    # -- pull ----------------------------------------------------------------------------------

    def on_dialled(
        self, request: Request, txn: ServerTransaction, caller_device: str, dialled: str
    ) -> bool:
        """An INVITE to the handoff code from an idle device: pull (the hook's answer: True)."""
        control = self._control
        if dialled != control.config().handoff.code:
            return False
        try:
            self._pull(request, txn, caller_device)
        except HandoffError as exc:
            self._refused("pull", "", caller_device, "", exc)
            status = _PULL_STATUS.get(exc.refusal, 480)
            control.refuse_with(
                txn=txn, request=request, status=status, why=str(exc), play=PlayTone(Tone.ERROR)
            )
        return True

    def pullable(self, puller: str) -> tuple[RingGroup, Leg] | None:
        """The call ``puller`` would pull now: (its group, the leg pulled from), or None."""
        found, _skipped = self._find_pullable(puller)
        return found

    def _find_pullable(self, puller: str) -> tuple[tuple[RingGroup, Leg] | None, list[str]]:
        control = self._control
        skipped: list[str] = []
        for group in control.config().groups_of(puller):
            for member in group.members:
                if member == puller:
                    continue
                for leg in self._legs_of(member):
                    try:
                        if not control.is_registered(member):
                            raise HandoffError(
                                Refusal.NOT_REGISTERED, f"{member} is not registered"
                            )
                        self._check_call(leg.call, leg)
                    except HandoffError as exc:
                        skipped.append(str(exc))
                        continue
                    return (group, leg), skipped
        return None, skipped

    def _legs_of(self, device: str) -> Iterator[Leg]:
        for call in self._control.calls():
            if not call.active:
                continue
            for leg in (call.caller, call.callee):
                if leg is not None and leg.device == device:
                    yield leg
            for leg in call.branches:
                if leg.device == device and leg is not call.callee:
                    yield leg  # a ringing call on the member: never pullable, but said so

    def _pull_source(self, puller: str) -> tuple[RingGroup, Leg]:
        """The rules of a pull: the call ``puller`` may take, or `HandoffError`."""
        control = self._control
        config = control.config()
        if config.device(puller) is None:
            raise HandoffError(Refusal.UNKNOWN_DEVICE, f"no device is called {puller!r}")
        if not config.groups_of(puller):
            raise HandoffError(Refusal.NOT_MEMBER, f"{puller} is not a member of a ring group")
        if not control.is_registered(puller):
            raise HandoffError(Refusal.NOT_REGISTERED, f"{puller} is not registered")
        if control.in_call(puller):
            raise HandoffError(Refusal.PULLER_BUSY, f"{puller} is in a call or ringing")
        found, skipped = self._find_pullable(puller)
        if found is None:
            detail = f" ({'; '.join(skipped)})" if skipped else ""
            raise HandoffError(Refusal.NOTHING_TO_PULL, f"no call to pull{detail}")
        return found

    def pull(self, device: str) -> PullOperation:
        """Pull for ``device`` by action (Home Assistant): the call it would pull by code rings
        it (an offer with the call's codecs on a spare relay port, for the group's ring timer);
        when it answers, the call moves to it and the pulled-from device gets its BYE. Raises
        `HandoffError` when the pull cannot start; its end is a `HandoffSucceeded` or
        `HandoffFailed` event (the call then stays where it was)."""
        control = self._control
        group, from_leg = self._pull_source(device)
        call = from_leg.call
        remote = call.other(from_leg)
        assert remote is not None
        assert remote.remote_sdp is not None
        assert from_leg.remote_sdp is not None
        try:
            offer = offer_for_new_device(remote.remote_sdp, from_leg.remote_sdp)
            spare = control.open_spare(call, from_leg.side)
        except SdpError as exc:
            raise HandoffError(Refusal.NO_COMMON_CODEC, exc.reason) from None
        except (RelayError, OSError) as exc:
            raise HandoffError(Refusal.FAILED, f"media relay: {exc}") from None
        from_device = from_leg.device or ""
        op = PullOperation(self, call, group, from_leg, device, control.clock.wall(), spare, offer)
        control.begin(call, op)
        _LOGGER.info("Call %s: %s pulls the call from %s (rung)", call.id, device, from_device)
        control.publish(HandoffStarted(call.id, from_device, device, kind="pull"))
        seconds = group.ring_timer
        op.fork = control.ring(
            call,
            control.bindings(device),
            role=LegRole.PULLER,
            side=from_leg.side,
            party=from_leg.party,
            presented=remote.party,
            offer=offer,
            port=spare.local_rtp.port,
            on_answer=lambda leg, response: control.spawn(
                self._complete_rung_pull(op, leg, response)
            ),
            on_fail=lambda summary: self.finish_pull(
                op, False, f"{device} did not take the call ({_summary(summary)})", Refusal.FAILED
            ),
            on_timeout=lambda: self.finish_pull(
                op, False, f"{device} did not answer within {seconds} s", Refusal.UNANSWERED
            ),
        )
        if not op.done:
            op.fork.start_timer(seconds)
        return op

    async def _complete_rung_pull(self, op: PullOperation, leg: Leg, response: Response) -> None:
        control = self._control
        failure, answer = _check_answer(leg, response, op.answer)
        if failure or answer is None or op.done or not op.call.active:
            control.hangup_leg(leg)
            self.finish_pull(op, False, failure or "the call ended", Refusal.FAILED)
            return
        op.leg = leg
        try:
            replaced = await control.replace_leg(op.from_leg, leg, answer, spare=op.spare)
        except (RelayError, OSError) as exc:
            self.finish_pull(op, False, f"media relay: {exc}", Refusal.FAILED)
            return
        if not replaced:
            self.finish_pull(op, False, "the call ended", Refusal.FAILED)
            return
        self.finish_pull(op, True, "", None)
        control.publish_state(op.call)

    def _pull(self, request: Request, txn: ServerTransaction, puller: str) -> None:
        control = self._control
        group, from_leg = self._pull_source(puller)
        call = from_leg.call
        remote = call.other(from_leg)
        assert remote is not None
        assert remote.remote_sdp is not None
        assert from_leg.remote_sdp is not None
        try:
            offer = parse_body(request)
        except SdpError as exc:
            raise HandoffError(Refusal.NO_COMMON_CODEC, f"unreadable SDP: {exc}") from None
        if offer is None or offer.audio() is None:
            raise HandoffError(Refusal.NO_COMMON_CODEC, "a pull needs an SDP offer with audio")
        try:
            agreed = offer_for_new_device(remote.remote_sdp, from_leg.remote_sdp)
        except SdpError as exc:
            raise HandoffError(Refusal.NO_COMMON_CODEC, exc.reason) from None
        answer = _answer_within(offer, agreed)
        if answer is None:
            raise HandoffError(
                Refusal.NO_COMMON_CODEC, f"{puller} offers none of the call's codecs"
            )
        try:
            spare = control.open_spare(call, from_leg.side)
        except (RelayError, OSError) as exc:
            raise HandoffError(Refusal.FAILED, f"media relay: {exc}") from None
        from_device = from_leg.device or ""
        op = PullOperation(self, call, group, from_leg, puller, control.clock.wall(), spare, answer)
        control.begin(call, op)
        _LOGGER.info("Call %s: %s pulls the call from %s", call.id, puller, from_device)
        control.publish(HandoffStarted(call.id, from_device, puller, kind="pull"))
        audio = answer.audio()
        assert audio is not None
        try:
            op.leg = control.answer_incoming(
                call,
                request,
                txn,
                txn.source,
                role=LegRole.PULLER,
                side=from_leg.side,
                device=puller,
                party=from_leg.party,
                answer=answer,
                port=spare.local_rtp.port,
                on_ack=lambda _leg: control.spawn(self._complete_pull(op)),
                on_ack_timeout=lambda _leg: self.finish_pull(
                    op, False, f"no ACK from {puller}", Refusal.FAILED
                ),
            )
        except DialogError as exc:
            self.finish_pull(op, False, str(exc), Refusal.FAILED)
            control.reply(txn, request, 400, str(exc))

    async def _complete_pull(self, op: PullOperation) -> None:
        control = self._control
        leg = op.leg
        if op.done or leg is None or not op.call.active:
            return
        try:
            replaced = await control.replace_leg(op.from_leg, leg, op.answer, spare=op.spare)
        except (RelayError, OSError) as exc:
            self.finish_pull(op, False, f"media relay: {exc}", Refusal.FAILED)
            return
        if not replaced:
            self.finish_pull(op, False, "the call ended", Refusal.FAILED)
            return
        self.finish_pull(op, True, "", None)
        control.publish_state(op.call)

    def finish_pull(
        self, op: PullOperation, succeeded: bool, reason: str, refusal: Refusal | None
    ) -> None:
        """The pull is over; when it failed, the puller's leg goes and the call stays."""
        if op.done:
            return
        op.done = True
        control = self._control
        call = op.call
        control.end_operation(call, op)
        if op.fork is not None:
            op.fork.close(keep=op.leg if succeeded else None)
        if not succeeded:
            if op.leg is not None:
                control.let_go(op.leg)
            control.discard_spare(call, op.spare)
        from_device = op.from_leg.device or ""
        record = HandoffRecord(
            call.id,
            from_device,
            op.puller,
            op.started_at,
            control.clock.wall(),
            succeeded,
            reason or "pulled",
            kind="pull",
            group=op.group.name,
        )
        call.handoffs.append(record)
        if succeeded:
            _LOGGER.info("Call %s pulled from %s to %s", call.id, from_device, op.puller)
            control.publish(HandoffSucceeded(call.id, from_device, op.puller, record, kind="pull"))
        else:
            _LOGGER.info("Call %s: pull by %s failed: %s", call.id, op.puller, reason)
            control.publish(
                HandoffFailed(
                    call.id,
                    from_device,
                    op.puller,
                    reason,
                    record,
                    kind="pull",
                    refusal=(refusal or Refusal.FAILED).value,
                )
            )

    # -- refusals ------------------------------------------------------------------------------

    def _refused(
        self, kind: str, call_id: str, from_device: str, to_device: str, exc: HandoffError
    ) -> None:
        control = self._control
        now = control.clock.wall()
        _LOGGER.info("%s by %s refused: %s", kind.capitalize(), from_device, exc)
        record = HandoffRecord(
            call_id, from_device, to_device, now, now, False, str(exc), kind=kind
        )
        control.publish(
            HandoffFailed(
                call_id,
                from_device,
                to_device,
                str(exc),
                record,
                kind=kind,
                refusal=exc.refusal.value,
            )
        )

    def _error_tone(self, leg: Leg) -> None:
        """The error tone to ``leg``'s device (it ends by itself; the call goes on)."""
        try:
            self._control.play(leg, PlayTone(Tone.ERROR))
        except RelayError as exc:
            _LOGGER.info("No error tone for %s: %s", leg.device, exc)


def _summary(summary: ForkSummary) -> str:
    if summary.kind is FailureKind.BUSY:
        return "busy"
    if summary.kind is FailureKind.DECLINED:
        return "declined"
    if summary.kind is FailureKind.CANCELLED:
        return "cancelled"
    return "answered " + ", ".join(map(str, sorted(set(summary.statuses))))


def _check_answer(
    leg: Leg, response: Response, offer: SessionDescription
) -> tuple[str, SessionDescription | None]:
    """A pushed-to member's 200: an answer with an audio codec of our offer, or why not."""
    try:
        answer = parse_body(response)
    except SdpError as exc:
        return f"unreadable SDP from {leg.device}: {exc}", None
    audio = answer.audio() if answer is not None else None
    if answer is None or audio is None:
        return f"{leg.device} answered without an SDP answer", None
    offered = offer.audio()
    common = common_codecs(offered.codecs(), audio.codecs()) if offered is not None else []
    if not any(c.encoding.lower() != "telephone-event" for c in common):
        return f"{leg.device} accepted none of the offered codecs", None
    return "", answer


def _answer_within(
    offer: SessionDescription, agreed: SessionDescription
) -> SessionDescription | None:
    """The puller's offer cut down to the codecs the call has agreed (in the puller's own
    payload numbering: it is the answer to its offer), audio only; None without a voice codec."""
    agreed_audio = agreed.audio()
    answer = offer.copy()
    audio = answer.audio()
    if audio is None or agreed_audio is None:
        return None
    restrict_codecs(audio, agreed_audio.codecs())
    if audio.rejected or not any(c.encoding.lower() != "telephone-event" for c in audio.codecs()):
        return None
    for media in answer.media:
        if media is not audio:
            media.port = 0
    return answer
