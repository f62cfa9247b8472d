"""The flip: move one side of an answered call to another device of the same user.

How (`Flip`, only through call control's API, `sip_core.call.control.CallControl`): the target
device's registrations ring (`CallControl.ring`, first answer wins) with an SDP offer of their own:
a spare relay socket pair for the side the target would take (`CallControl.open_spare`) and the
codecs the staying party already agreed to, plus telephone-event. The target's 200 carries the
answer; our ACK has no body, and `CallControl.replace_leg` moves the relay to the target and hangs
up the old device. A delayed offer (INVITE without SDP) would let the target pick codecs the
staying party never agreed to, and needs an answer in the ACK, which many phones handle badly.
The other party's dialog is never touched. While the target rings, the flip is the call's
`Operation`: other features see it, offers get 491 once the target answered, and a BYE from a
ringing target does not end the call.

Which device (`plan_flip`), kept free of SIP so that Home Assistant's service validation and the
`*0` feature code agree on the same rules:

- the device that flips must belong to a user;
- an explicit target must be another device of that same user, and registered;
- without a target, the user must have exactly one other registered device (with several, the
  caller has to say which: `*0` followed by the device's username, or the service's ``target``);
- the user's flip must be enabled (`sip_core.presence.Presence.flip_enabled`: the user's own
  setting, unless the administrator forces it);
- a target must be available (`Presence.available`: not in Do Not Disturb nor Make Busy): such a
  device is not picked automatically, and is refused when named.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sip_core.call.control import CallControl
from sip_core.call.fork import FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import parse_body
from sip_core.calls import Call, HandoffRecord, Leg, LegRole, OperationView
from sip_core.config import PbxConfig
from sip_core.events import HandoffFailed, HandoffStarted, HandoffSucceeded
from sip_core.media import MediaLeg, RelayError
from sip_core.message import Response
from sip_core.sdp import SdpError, SessionDescription, common_codecs, offer_for_new_device

__all__ = [
    "AmbiguousFlipTarget",
    "CallNotFlippable",
    "Flip",
    "FlipDisabled",
    "FlipError",
    "FlipInProgress",
    "FlipOperation",
    "FlipPlan",
    "NoFlipTarget",
    "NoSuchCall",
    "NotUsersDevice",
    "TargetIsCurrentDevice",
    "TargetNotRegistered",
    "TargetUnavailable",
    "UnknownDevice",
    "plan_flip",
]


_LOGGER = logging.getLogger(__name__)


class FlipError(Exception):
    """A flip cannot start; the message is written for the person who asked for it."""


class NoSuchCall(FlipError):
    """No call with that id is in progress."""


class CallNotFlippable(FlipError):
    """The call is not answered yet, is ending, or its device is not one of ours."""


class FlipInProgress(FlipError):
    """The call is already being flipped."""


class UnknownDevice(FlipError):
    """The target names no configured device."""


class NotUsersDevice(FlipError):
    """The target belongs to another user: a flip only moves a call between your own devices."""


class TargetIsCurrentDevice(FlipError):
    """The target is the device that has the call already."""


class TargetNotRegistered(FlipError):
    """The target device is configured but not registered, so it cannot ring."""


class TargetUnavailable(FlipError):
    """The target device is in Do Not Disturb or Make Busy."""


class FlipDisabled(FlipError):
    """The user's flip is turned off (by the user, or forced off by the administrator)."""


class NoFlipTarget(FlipError):
    """The user has no other registered device."""


class AmbiguousFlipTarget(FlipError):
    """The user has several other registered devices and none was named."""


def _anything(_name: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class FlipPlan:
    """A flip that may start: move the call from ``from_device`` to ``to_device``."""

    user: str
    from_device: str
    to_device: str


def plan_flip(
    config: PbxConfig,
    current_device: str,
    target: str | None,
    is_registered: Callable[[str], bool],
    *,
    is_available: Callable[[str], bool] = _anything,
    flip_enabled: Callable[[str], bool] = _anything,
) -> FlipPlan:
    """Check a flip of the call on ``current_device``; raises a `FlipError` subclass if not.

    ``is_available`` says whether a device may be offered the call (DND, Make Busy);
    ``flip_enabled`` whether a user (by name) may flip at all.
    """
    user = config.user_for_device(current_device)
    if user is None:
        raise CallNotFlippable(f"device {current_device} belongs to no user")
    if not flip_enabled(user.name):
        raise FlipDisabled(f"{user.name}'s flip is disabled")
    if target is not None:
        if config.device(target) is None:
            raise UnknownDevice(f"no device is called {target!r}")
        if target == current_device:
            raise TargetIsCurrentDevice(f"the call is already on {target}")
        if all(device.username != target for device in user.devices):
            raise NotUsersDevice(f"{target} is not one of {user.name}'s devices")
        if not is_registered(target):
            raise TargetNotRegistered(f"{target} is not registered")
        if not is_available(target):
            raise TargetUnavailable(f"{target} is in do not disturb or make busy")
        return FlipPlan(user.name, current_device, target)
    candidates = _candidates(
        [d.username for d in sorted(user.devices, key=lambda d: d.priority)],
        current_device,
        lambda name: is_registered(name) and is_available(name),
    )
    if not candidates:
        raise NoFlipTarget(f"{user.name} has no other registered, available device")
    if len(candidates) > 1:
        raise AmbiguousFlipTarget(
            f"{user.name} has several registered devices ({', '.join(candidates)}): name one"
        )
    return FlipPlan(user.name, current_device, candidates[0])


def _candidates(
    devices: Sequence[str], current: str, is_registered: Callable[[str], bool]
) -> list[str]:
    return [name for name in devices if name != current and is_registered(name)]


@dataclass(slots=True)
class FlipOperation:
    """A flip in progress, the call's `Operation`; ``future`` resolves to its `HandoffRecord`
    whether it worked or not."""

    flip: Flip
    call: Call
    from_leg: Leg
    to_device: str
    started_at: float
    future: asyncio.Future[HandoffRecord]
    timeout: float
    fork: ForkGroup | None = None  # the target device's registrations ringing
    offer: SessionDescription | None = None  # what every target was offered (before the relay)
    spare: MediaLeg | None = None  # the relay sockets named in that offer
    done: bool = False
    kind: str = field(default="flip", init=False)

    @property
    def blocks_offers(self) -> bool:
        """Once the target answered, the media is moving: no offer may cross it."""
        return self.fork is not None and self.fork.winner is not None

    def owns(self, leg: Leg) -> bool:
        return self.fork is not None and leg in self.fork.legs

    def on_leg_bye(self, leg: Leg) -> bool:
        """A target hanging up (or its 2xx BYEd) ends only its own leg; the call goes on."""
        return self.owns(leg)

    def on_call_end(self) -> None:
        self.flip.finish(self, None, "the call ended")

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(self.kind, self.from_leg, self.to_device, self.started_at)


class Flip:
    """The flip feature: `flip` (Home Assistant's action) and the ``*0`` code (`on_code`)."""

    def __init__(self, control: CallControl) -> None:
        self._control = control

    def flip(
        self,
        call_id: str,
        target: str | None = None,
        timeout: float | None = None,
        *,
        device: str | None = None,
    ) -> asyncio.Future[HandoffRecord]:
        """Move one side of an answered call to another device of the same user.

        ``device`` picks the side to move when both are devices of users (default: the side whose
        user owns ``target``, else the only side that can flip, else the callee). Raises a
        `FlipError` subclass when the flip cannot start; the future resolves to the handoff record,
        ``succeeded`` or not.
        """
        control = self._control
        call = control.get(call_id)
        if call is None or not call.active:
            raise NoSuchCall(f"no call {call_id} in progress")
        if call.operation is not None:
            raise FlipInProgress(f"call {call_id} is already being flipped")
        if not call.answered or call.caller is None or call.callee is None:
            raise CallNotFlippable(f"call {call_id} is not answered yet")
        config = control.config()
        leg = self._side_to_flip(call, config, target, device)
        try:
            plan = self._plan(config, leg, target)
        except FlipError as exc:
            self._refused(call, leg, target, exc)
            raise
        return self._start(call, leg, plan.to_device, timeout)

    def on_code(self, leg: Leg, target: str | None) -> None:
        """The flip code was dialled on ``leg`` (``target``: the digits after it, if any)."""
        call = leg.call
        if not call.active:
            return
        try:
            if call.operation is not None:
                raise FlipInProgress(f"call {call.id} is already being flipped")
            plan = self._plan(self._control.config(), leg, target)
        except FlipError as exc:
            _LOGGER.info("Call %s: %s dialled the flip code, but %s", call.id, leg.device, exc)
            self._refused(call, leg, target, exc)
            return
        self._start(call, leg, plan.to_device, None)

    def _plan(self, config: PbxConfig, leg: Leg, target: str | None) -> FlipPlan:
        """`plan_flip` with the registrations and the presence of now (DND, Make Busy, the
        user's flip permission)."""
        control = self._control
        return plan_flip(
            config,
            leg.device or "",
            target,
            control.is_registered,
            is_available=control.presence.available,
            flip_enabled=control.presence.flip_enabled,
        )

    def _refused(self, call: Call, leg: Leg, target: str | None, exc: FlipError) -> None:
        """A flip that could not start is still a failed handoff: in the call's record and on
        the bus (``HandoffFailed`` with the reason), like one that rang and failed."""
        now = self._control.clock.wall()
        reason = str(exc)
        record = HandoffRecord(call.id, leg.device or "", target or "", now, now, False, reason)
        call.handoffs.append(record)
        self._control.publish(
            HandoffFailed(call.id, leg.device or "", target or "", reason, record)
        )

    def _side_to_flip(
        self, call: Call, config: PbxConfig, target: str | None, device: str | None
    ) -> Leg:
        legs = [leg for leg in (call.callee, call.caller) if leg is not None]
        if device is not None:
            for leg in legs:
                if leg.device == device:
                    return leg
            raise CallNotFlippable(f"{device} is not in call {call.id}")
        if target is not None:
            owner = config.user_for_device(target)
            for leg in legs:
                if owner is not None and config.user_for_device(leg.device or "") is owner:
                    return leg
        possible = []
        for leg in legs:
            try:
                plan_flip(config, leg.device or "", target, self._control.is_registered)
            except FlipError:
                continue
            possible.append(leg)
        return possible[0] if possible else legs[0]

    def _start(
        self, call: Call, from_leg: Leg, to_device: str, timeout: float | None
    ) -> asyncio.Future[HandoffRecord]:
        control = self._control
        remote = call.other(from_leg)
        assert remote is not None
        wait = float(timeout if timeout is not None else control.config().flip.timeout)
        future: asyncio.Future[HandoffRecord] = asyncio.get_running_loop().create_future()
        op = FlipOperation(self, call, from_leg, to_device, control.clock.wall(), future, wait)
        control.begin(call, op)
        _LOGGER.info("Call %s: flipping from %s to %s", call.id, from_leg.device, to_device)
        control.publish(HandoffStarted(call.id, from_leg.device or "", to_device))
        try:
            if call.media is None or remote.remote_sdp is None or from_leg.remote_sdp is None:
                raise SdpError("the call has no media yet")
            op.offer = offer_for_new_device(remote.remote_sdp, from_leg.remote_sdp)
            op.spare = control.open_spare(call, from_leg.side)
        except SdpError as exc:
            self.finish(op, None, exc.reason)
            return future
        except (RelayError, OSError) as exc:
            self.finish(op, None, f"media relay: {exc}")
            return future
        op.fork = control.ring(
            call,
            control.bindings(to_device),
            role=LegRole.FLIP_TARGET,
            side=from_leg.side,
            party=from_leg.party,
            presented=remote.party,
            offer=op.offer,
            port=op.spare.local_rtp.port,
            on_answer=lambda leg, response: control.spawn(self._complete(op, leg, response)),
            on_fail=lambda summary: self._failed(op, summary),
            on_timeout=lambda: self._no_answer(op),
        )
        if not op.done:
            op.fork.start_timer(wait)
        return future

    async def _complete(self, op: FlipOperation, leg: Leg, response: Response) -> None:
        """The target answered our offer (the fork ACKed it): check the answer, move the media."""
        control = self._control
        call = op.call
        old = op.from_leg
        remote = call.other(old)
        failure = ""
        answer: SessionDescription | None = None
        try:
            answer = parse_body(response)
        except SdpError as exc:
            failure = f"unreadable SDP from {leg.device}: {exc}"
        audio = answer.audio() if answer is not None else None
        remote_audio = (
            remote.remote_sdp.audio() if remote is not None and remote.remote_sdp else None
        )
        offered = op.offer.audio() if op.offer is not None else None
        common = (
            common_codecs(offered.codecs(), audio.codecs())
            if audio is not None and offered is not None
            else []
        )
        if not failure and (answer is None or audio is None):
            failure = f"{leg.device} answered without an SDP answer"
        elif not failure and not any(c.encoding.lower() != "telephone-event" for c in common):
            failure = f"{leg.device} accepted none of the offered codecs"
        media = call.media
        if not failure and (media is None or media.closed or not call.active or op.done):
            failure = "the call ended"
        if failure or answer is None or audio is None or remote_audio is None or media is None:
            control.hangup_leg(leg)
            self.finish(op, None, failure or "the call ended")
            return
        try:
            replaced = await control.replace_leg(old, leg, answer, spare=op.spare)
        except (RelayError, OSError) as exc:
            control.hangup_leg(leg)
            self.finish(op, None, f"media relay: {exc}")
            return
        if not replaced:
            control.hangup_leg(leg)
            self.finish(op, None, "the call ended")
            return
        self.finish(op, leg, "")
        control.publish_state(call)

    def _failed(self, op: FlipOperation, summary: ForkSummary) -> None:
        """Every registration of the target failed: the call stays where it was."""
        kind = summary.kind
        if kind is FailureKind.BUSY:
            reason = f"{op.to_device} is busy"
        elif kind is FailureKind.DECLINED:
            reason = f"{op.to_device} declined"
        elif kind is FailureKind.CANCELLED:
            reason = "cancelled"
        else:
            statuses = ", ".join(map(str, sorted(set(summary.statuses))))
            reason = f"{op.to_device} answered {statuses}"
        self.finish(op, None, reason)

    def _no_answer(self, op: FlipOperation) -> None:
        if not op.done:
            self.finish(op, None, f"no answer within {op.timeout:g} s")

    def finish(self, op: FlipOperation, winner: Leg | None, reason: str) -> None:
        """The flip is over, ``winner`` the target that took the call (None: it failed)."""
        if op.done:
            return
        op.done = True
        control = self._control
        call = op.call
        if op.fork is not None:
            op.fork.close(keep=winner)
        control.end_operation(call, op)
        if op.spare is not None:
            control.discard_spare(call, op.spare)  # nothing when the winner took it
        from_device = op.from_leg.device or ""
        record = HandoffRecord(
            call.id,
            from_device,
            op.to_device,
            op.started_at,
            control.clock.wall(),
            winner is not None,
            reason or "answered",
        )
        call.handoffs.append(record)
        if winner is not None:
            _LOGGER.info("Call %s flipped from %s to %s", call.id, from_device, op.to_device)
            control.publish(HandoffSucceeded(call.id, from_device, op.to_device, record))
        else:
            _LOGGER.info(
                "Call %s: flip from %s to %s failed: %s",
                call.id,
                from_device,
                op.to_device,
                reason,
            )
            control.publish(HandoffFailed(call.id, from_device, op.to_device, reason, record))
        if not op.future.done():
            op.future.set_result(record)
