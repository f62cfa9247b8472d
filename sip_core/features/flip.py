"""The flip: move one side of an answered call to another device of the same user.

How (`Flip`, only through call control's API, `sip_core.call.control.CallControl`): the target
device's registrations ring (`CallControl.ring`, first answer wins) with an SDP offer of their own:
a spare relay socket pair for the side the target would take (`CallControl.open_spare`) and the
codecs the staying party already agreed to, plus telephone-event. The target's 200 carries the
answer; our ACK has no body, and `CallControl.replace_leg` moves the relay to the target and hangs
up the old device (or, with the user's auto-hangup off, leaves its dialog up without media). A
delayed offer (INVITE without SDP) would let the target pick codecs the staying party never agreed
to, and needs an answer in the ACK, which many phones handle badly. The other party's dialog is
never touched; the target sees the other party as the caller. While the flip runs (menu included)
it is the call's `Operation`: other features see it, offers get 491 once the target answered, and a
BYE from a ringing target does not end the call.

The rules, kept free of SIP where they can be (`plan_flip`, `flip_candidates`) so that Home
Assistant's action and the ``*0`` code agree:

- the call must be answered and talking (not held by either side), with no operation under way;
- the device that flips must belong to a user, whose flip is enabled;
- a target must be another device of that same user, registered, not in a call and available
  (`sip_core.presence.Presence.available`: not in Do Not Disturb nor Make Busy); the user's
  flip permission is `Presence.flip_enabled` (the user's own switch unless the administrator
  forces it);
- ``*0`` with one such device (or with the user's simultaneous ring on: all of them) rings at once;
  with several, the device that keyed it hears a menu (`sip_core.features.flip_menu`, which also
  says how a device number keyed after ``*0`` is told from a menu choice);
- Home Assistant's action without a target: simultaneous ring when the user has it on, else the
  first device in menu order (priority, then label);
- no answer within the user's flip timeout, busy, declined or unreachable: the target is
  cancelled, the call stays where it was, and the device that keyed the code hears a failure tone;
- a refused ``*0`` (any rule above) plays the error tone to the device that keyed it; every
  refusal and failure is a `HandoffFailed` with the reason and a `HandoffRecord` in the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from sip_core.audio import PlayFile, PlayPrompts, PlaySequence, PlayTone, Tone
from sip_core.audio.playback import Playback
from sip_core.call.control import CallControl
from sip_core.call.fork import FailureKind, ForkGroup, ForkSummary
from sip_core.call.messages import parse_body
from sip_core.calls import Call, CallState, HandoffRecord, Leg, LegRole, OperationView
from sip_core.config import Device, PbxConfig, User, UserFlipOptions
from sip_core.events import HandoffFailed, HandoffStarted, HandoffSucceeded
from sip_core.features.flip_menu import (
    MAX_CHOICES,
    Decision,
    DecisionKind,
    FlipMenu,
    MenuEntry,
    MenuPart,
    device_numbers,
    menu_order,
    menu_prompt,
)
from sip_core.media import MediaLeg, RelayError
from sip_core.media.client import Playing
from sip_core.message import Response
from sip_core.sdp import SdpError, SessionDescription, common_codecs, offer_for_new_device

__all__ = [
    "AmbiguousFlipTarget",
    "CallNotFlippable",
    "CallNotTalking",
    "Flip",
    "FlipDisabled",
    "FlipError",
    "FlipFailure",
    "FlipInProgress",
    "FlipOperation",
    "FlipPlan",
    "FlipWay",
    "NoAvailableTarget",
    "NoFlipTarget",
    "NoFreeTarget",
    "NoSuchCall",
    "NotUsersDevice",
    "TargetBusy",
    "TargetIsCurrentDevice",
    "TargetNotRegistered",
    "TargetUnavailable",
    "UnknownDevice",
    "flip_candidates",
    "flip_options",
    "plan_flip",
]


_LOGGER = logging.getLogger(__name__)


class FlipFailure(StrEnum):
    """Why a flip was refused or failed, in one word (`HandoffRecord.code`)."""

    NO_SUCH_CALL = "no_such_call"
    NOT_FLIPPABLE = "not_flippable"  # not answered yet, or not a user's device
    NOT_TALKING = "not_talking"  # held by either side
    IN_PROGRESS = "in_progress"  # a flip, transfer ... is already under way
    DISABLED = "flip_disabled"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_OWN_DEVICE = "not_own_device"
    CURRENT_DEVICE = "current_device"
    NOT_REGISTERED = "target_not_registered"
    TARGET_BUSY = "target_busy"  # in another call
    TARGET_UNAVAILABLE = "target_unavailable"  # Do Not Disturb (or Make Busy)
    NO_TARGET = "no_target"
    AMBIGUOUS = "ambiguous_target"
    CANCELLED = "cancelled"  # "*" in the menu, or no choice in time
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    DECLINED = "declined"
    UNREACHABLE = "unreachable"
    FAILED = "failed"  # an answer without usable SDP, the relay ...
    CALL_ENDED = "call_ended"


class FlipWay(StrEnum):
    """How the target was chosen (`HandoffRecord.how`)."""

    AUTOMATIC = "automatic"  # the one other available device
    MENU = "menu"
    DIRECT = "direct"  # a device number after the code
    SIMULTANEOUS = "simultaneous"
    ACTION = "action"  # Home Assistant's action (or the facade's flip)


class FlipError(Exception):
    """A flip cannot start; the message is written for the person who asked for it."""

    code: ClassVar[FlipFailure] = FlipFailure.FAILED


class NoSuchCall(FlipError):
    """No call with that id is in progress."""

    code = FlipFailure.NO_SUCH_CALL


class CallNotFlippable(FlipError):
    """The call is not answered yet, is ending, or its device is not one of ours."""

    code = FlipFailure.NOT_FLIPPABLE


class CallNotTalking(CallNotFlippable):
    """The call is on hold (either side held it): a flip waits until it is resumed."""

    code = FlipFailure.NOT_TALKING


class FlipInProgress(FlipError):
    """The call is already being flipped (or another feature operation runs on it)."""

    code = FlipFailure.IN_PROGRESS


class UnknownDevice(FlipError):
    """The target names no configured device."""

    code = FlipFailure.UNKNOWN_DEVICE


class NotUsersDevice(FlipError):
    """The target belongs to another user: a flip only moves a call between your own devices."""

    code = FlipFailure.NOT_OWN_DEVICE


class TargetIsCurrentDevice(FlipError):
    """The target is the device that has the call already."""

    code = FlipFailure.CURRENT_DEVICE


class TargetNotRegistered(FlipError):
    """The target device is configured but not registered, so it cannot ring."""

    code = FlipFailure.NOT_REGISTERED


class TargetBusy(FlipError):
    """The target device is in another call."""

    code = FlipFailure.TARGET_BUSY


class TargetUnavailable(FlipError):
    """The target device is in Do Not Disturb or Make Busy."""

    code = FlipFailure.TARGET_UNAVAILABLE


class FlipDisabled(FlipError):
    """The user's flip is turned off (by the user, or forced off by the administrator)."""

    code = FlipFailure.DISABLED


class NoFlipTarget(FlipError):
    """The user has no other registered device."""

    code = FlipFailure.NO_TARGET


class NoAvailableTarget(NoFlipTarget):
    """The user's other registered devices are all in Do Not Disturb or Make Busy."""

    code = FlipFailure.TARGET_UNAVAILABLE


class NoFreeTarget(NoFlipTarget):
    """The user's other registered devices are all in calls."""

    code = FlipFailure.TARGET_BUSY


class AmbiguousFlipTarget(FlipError):
    """The user has several other registered devices and none was named."""

    code = FlipFailure.AMBIGUOUS


def _anything(_name: str) -> bool:
    return True


def _nothing(_name: str) -> bool:
    return False


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
    in_call: Callable[[str], bool] = _nothing,
) -> FlipPlan:
    """Check a flip of the call on ``current_device``; raises a `FlipError` subclass if not.

    ``is_available`` says whether a device may be offered the call (DND, Make Busy);
    ``flip_enabled`` whether a user (by name) may flip at all; ``in_call`` whether a device is
    in a call already. Without ``target`` the user must have exactly one candidate
    (`flip_candidates`); the ``*0`` code and the action handle several themselves.
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
        if in_call(target):
            raise TargetBusy(f"{target} is in another call")
        return FlipPlan(user.name, current_device, target)
    candidates = flip_candidates(
        user, current_device, is_registered, is_available=is_available, in_call=in_call
    )
    if not candidates:
        raise NoFlipTarget(f"{user.name} has no other registered, available device")
    if len(candidates) > 1:
        names = ", ".join(device.username for device in candidates)
        raise AmbiguousFlipTarget(f"{user.name} has several registered devices ({names}): name one")
    return FlipPlan(user.name, current_device, candidates[0].username)


def flip_candidates(
    user: User,
    current_device: str,
    is_registered: Callable[[str], bool],
    *,
    is_available: Callable[[str], bool] = _anything,
    in_call: Callable[[str], bool] = _nothing,
) -> list[Device]:
    """The user's devices a flip from ``current_device`` may go to, in menu order (priority,
    then label): registered, available, and not in a call."""
    return [
        device
        for device in menu_order(user.devices)
        if device.username != current_device
        and is_registered(device.username)
        and is_available(device.username)
        and not in_call(device.username)
    ]


def flip_options(config: PbxConfig, user: User | None) -> UserFlipOptions:
    """The user's flip settings with the timeout filled in from ``flip.timeout``."""
    options = user.flip_options if user is not None else UserFlipOptions()
    if options.timeout is None:
        return UserFlipOptions(
            config.flip.timeout,
            options.auto_hangup,
            options.announcement,
            options.simultaneous_ring,
        )
    return options


@dataclass(slots=True)
class FlipOperation:
    """A flip in progress, the call's `Operation`; ``future`` resolves to its `HandoffRecord`
    whether it worked or not. It starts with a menu (``menu``) or ringing (``fork``)."""

    flip: Flip
    call: Call
    from_leg: Leg
    started_at: float
    future: asyncio.Future[HandoffRecord]
    options: UserFlipOptions
    how: FlipWay
    pressed_by: str = ""
    keys: str = ""
    targets: tuple[str, ...] = ()
    menu: FlipMenu | None = None
    fork: ForkGroup | None = None  # the target devices' registrations ringing
    offer: SessionDescription | None = None  # what every target was offered (before the relay)
    spare: MediaLeg | None = None  # the relay sockets named in that offer
    wait: float | None = None  # the action's own timeout
    done: bool = False
    kind: str = field(default="flip", init=False)

    @property
    def to_device(self) -> str:
        return ", ".join(self.targets)

    @property
    def timeout(self) -> float:
        """How long the target rings: the action's timeout, else the user's flip timeout."""
        if self.wait is not None:
            return self.wait
        return float(self.options.timeout or 0)

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
        self.flip.finish(self, None, "the call ended", FlipFailure.CALL_ENDED)

    def view(self) -> OperationView | None:
        if self.done:
            return None
        return OperationView(self.kind, self.from_leg, self.to_device, self.started_at)


def _unplayable(reason: str) -> bool:
    """Whether a playback ended because its audio could not be had (a file gone bad)."""
    return reason.startswith("cannot play")


class _MenuPrompt:
    """The menu's prompt: the label recordings' sequence, replaced by the bundled prompts when
    it cannot play; `stop` ends whichever is playing (a key barged in, the menu closed)."""

    __slots__ = ("playing", "stopped")

    def __init__(self) -> None:
        self.playing: Playing | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.playing is not None:
            self.playing.stop()


#: Captures a leg's keys for the menu (`FeatureRegistry.capture` / ``release``).
Capture = Callable[[Leg, Callable[[str], None]], None]
Release = Callable[[Leg, Callable[[str], None]], None]


class Flip:
    """The flip feature: `flip` (Home Assistant's action) and the flip code (`on_code`).

    ``is_available(device)`` (Do Not Disturb, Make Busy) and ``flip_enabled(user)`` (the user's
    permission) come from the runtime settings (`sip_core.presence.Presence`, call control's
    ``presence``, by default); ``capture``/``release`` let the menu read the keying device's keys
    (the feature registry's).
    """

    def __init__(
        self,
        control: CallControl,
        *,
        is_available: Callable[[str], bool] | None = None,
        flip_enabled: Callable[[str], bool] | None = None,
        capture: Capture | None = None,
        release: Release | None = None,
    ) -> None:
        self._control = control
        presence = control.presence
        self.is_available = is_available if is_available is not None else presence.available
        self.flip_enabled = flip_enabled if flip_enabled is not None else presence.flip_enabled
        self._capture = capture
        self._release = release
        self._labels: dict[str, str] = {}

    # -- label recordings for the menu -----------------------------------------------------------

    def set_label_prompt(self, device: str, wav_path: str | None) -> None:
        """The menu says ``device``'s line with this WAV file (its label, spoken) from the next
        menu on; None: with the bundled type prompt again. The file must stay readable while it
        is set (a menu whose recording cannot be played falls back to the bundled prompts)."""
        if wav_path:
            self._labels[device] = wav_path
        else:
            self._labels.pop(device, None)

    @property
    def label_prompts(self) -> dict[str, str]:
        """Device username -> the WAV file its menu line uses (a copy)."""
        return dict(self._labels)

    # -- rules -----------------------------------------------------------------------------------

    def _plan(self, config: PbxConfig, device: str, target: str | None) -> FlipPlan:
        return plan_flip(
            config,
            device,
            target,
            self._control.is_registered,
            is_available=self.is_available,
            flip_enabled=self.flip_enabled,
            in_call=self._control.in_call,
        )

    def _candidates(self, user: User, device: str) -> list[Device]:
        return flip_candidates(
            user,
            device,
            self._control.is_registered,
            is_available=self.is_available,
            in_call=self._control.in_call,
        )

    def _no_candidate(self, user: User, device: str) -> FlipError:
        """Why a user has no device to flip to: the most telling reason."""
        others = [d.username for d in user.devices if d.username != device]
        registered = [name for name in others if self._control.is_registered(name)]
        if any(not self.is_available(name) for name in registered):
            return NoAvailableTarget(
                f"{user.name}'s other registered devices are in do not disturb or make busy"
            )
        if registered:
            return NoFreeTarget(f"{user.name}'s other registered devices are in calls")
        return NoFlipTarget(f"{user.name} has no other registered device")

    @staticmethod
    def _check_call(call: Call) -> None:
        if call.operation is not None:
            raise FlipInProgress(f"call {call.id}: a {call.operation.kind} is already in progress")
        if not call.answered or call.caller is None or call.callee is None:
            raise CallNotFlippable(f"call {call.id} is not answered yet")
        if call.state is not CallState.TALKING:
            raise CallNotTalking(f"call {call.id} is {call.state.value}, not talking")

    # -- Home Assistant's action -----------------------------------------------------------------

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
        user owns ``target``, else the only side that can flip, else the callee). Without
        ``target``: the one candidate; with several, all at once when the user has simultaneous
        ring on, else the first in menu order. Raises a `FlipError` subclass when the flip cannot
        start; the future resolves to the handoff record, ``succeeded`` or not.
        """
        control = self._control
        call = control.get(call_id)
        if call is None or not call.active:
            raise NoSuchCall(f"no call {call_id} in progress")
        self._check_call(call)
        config = control.config()
        leg = self._side_to_flip(call, config, target, device)
        try:
            targets = self._action_targets(config, leg, target)
        except FlipError as exc:
            self._record_refusal(call, leg, exc, "", target or "")
            raise
        options = flip_options(config, config.user_for_device(leg.device or ""))
        op = self._begin(call, leg, options, FlipWay.ACTION)
        self._ring(op, targets, timeout)
        return op.future

    def _action_targets(self, config: PbxConfig, leg: Leg, target: str | None) -> Sequence[str]:
        """Whom the action rings: ``target``, else the one candidate, else every candidate with
        simultaneous ring on, else the first in menu order."""
        user = config.user_for_device(leg.device or "")
        options = flip_options(config, user)
        if target is not None or user is None:
            plan = self._plan(config, leg.device or "", target)
            targets: Sequence[str] = (plan.to_device,)
        else:
            if not self.flip_enabled(user.name):
                raise FlipDisabled(f"{user.name}'s flip is disabled")
            candidates = self._candidates(user, leg.device or "")
            if not candidates:
                raise self._no_candidate(user, leg.device or "")
            if options.simultaneous_ring:
                targets = [d.username for d in candidates]
            else:
                targets = [candidates[0].username]
        return targets

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
        for leg in legs:
            user = config.user_for_device(leg.device or "")
            if user is not None and self._candidates(user, leg.device or ""):
                return leg
        return legs[0]

    # -- the flip code ---------------------------------------------------------------------------

    def on_code(self, leg: Leg, code: str) -> None:
        """The flip code ``code`` was keyed on ``leg``: ring at once, or offer the menu."""
        call = leg.call
        if not call.active:
            return
        device = leg.device or ""
        try:
            self._check_call(call)
            config = self._control.config()
            user = config.user_for_device(device)
            if user is None:
                raise CallNotFlippable(f"device {device} belongs to no user")
            if not self.flip_enabled(user.name):
                raise FlipDisabled(f"{user.name}'s flip is disabled")
            candidates = self._candidates(user, device)
            if not candidates:
                raise self._no_candidate(user, device)
        except FlipError as exc:
            self._refuse(call, leg, exc, code)
            return
        options = flip_options(config, user)
        if options.simultaneous_ring or len(candidates) == 1:
            how = FlipWay.SIMULTANEOUS if len(candidates) > 1 else FlipWay.AUTOMATIC
            op = self._begin(call, leg, options, how, keys=code)
            self._ring(op, [d.username for d in candidates])
            return
        op = self._begin(call, leg, options, FlipWay.MENU, keys=code)
        self._offer_menu(op, config, user, candidates[:MAX_CHOICES])

    def _refuse(self, call: Call, leg: Leg, exc: FlipError, keys: str, target: str = "") -> None:
        """A flip the code asked for cannot start: the error tone to the device, and a failed
        handoff with the reason (in the call's record and on the bus)."""
        _LOGGER.info("Call %s: %s keyed the flip code, but %s", call.id, leg.device, exc)
        self._record_refusal(call, leg, exc, keys, target)
        self._play(leg, PlayTone(Tone.ERROR))

    def _record_refusal(
        self, call: Call, leg: Leg, exc: FlipError, keys: str, target: str = ""
    ) -> None:
        """A flip that could not start is still a failed handoff: in the call's record and on
        the bus (``HandoffFailed`` with the reason), like one that rang and failed."""
        now = self._control.clock.wall()
        device = leg.device or ""
        reason = str(exc)
        how = "" if keys else FlipWay.ACTION.value
        pressed = device if keys else ""
        record = HandoffRecord(
            call.id,
            device,
            target,
            now,
            now,
            False,
            reason,
            code=exc.code.value,
            pressed_by=pressed,
            keys=keys,
            how=how,
        )
        call.handoffs.append(record)
        self._control.publish(HandoffFailed(call.id, device, target, reason, record))

    # -- the menu --------------------------------------------------------------------------------

    def _offer_menu(
        self, op: FlipOperation, config: PbxConfig, user: User, candidates: Sequence[Device]
    ) -> None:
        leg = op.from_leg
        entries = [MenuEntry(number, device) for number, device in enumerate(candidates, 1)]

        def play(parts: tuple[MenuPart, ...]) -> _MenuPrompt:
            prompt = _MenuPrompt()

            def start(playback: Playback, fallback: Playback | None) -> None:
                playing = self._play(leg, playback)
                prompt.playing = playing
                if playing is None:
                    self._control.clock.call_later(0, menu.prompt_finished)
                    return

                def ended(done: asyncio.Future[str]) -> None:
                    reason = done.result() if not done.cancelled() else "stopped"
                    if fallback is not None and not prompt.stopped and _unplayable(reason):
                        _LOGGER.warning(
                            "Call %s: the menu's label recordings cannot be played (%s); "
                            "playing the bundled prompts",
                            op.call.id,
                            reason,
                        )
                        start(fallback, None)
                    else:
                        menu.prompt_finished()

                playing.done.add_done_callback(ended)

            if any(isinstance(part, PlayFile) for part in parts):
                bundled = PlayPrompts(tuple(map(str, menu_prompt(menu.entries))))
                start(PlaySequence(parts), bundled)
            else:
                start(PlayPrompts(tuple(map(str, parts))), None)
            return prompt

        menu = FlipMenu(
            self._control.clock,
            entries,
            device_numbers(user),
            menu_timeout=config.flip.menu_timeout,
            digit_timeout=config.flip.digit_timeout,
            play=play,
            on_decided=lambda decision: self._menu_decided(op, decision),
            labels=self._labels,
        )
        op.menu = menu
        if self._capture is not None:
            self._capture(leg, menu.feed)
        _LOGGER.info(
            "Call %s: %s keyed the flip code; menu: %s",
            op.call.id,
            leg.device,
            ", ".join(f"{e.number} {e.device.username}" for e in entries),
        )
        menu.start()

    def _end_menu(self, op: FlipOperation) -> None:
        menu = op.menu
        if menu is None:
            return
        menu.close()
        if self._release is not None:
            self._release(op.from_leg, menu.feed)

    def _menu_decided(self, op: FlipOperation, decision: Decision) -> None:
        self._end_menu(op)
        if op.done:
            return
        op.keys = f"{op.keys} {decision.keys}".rstrip()
        leg = op.from_leg
        kind = decision.kind
        if kind is DecisionKind.CANCEL:
            self.finish(op, None, "cancelled from the menu", FlipFailure.CANCELLED)
            self._play(leg, PlayPrompts(("flip_cancelled",)))
            return
        call = op.call
        config = self._control.config()
        target = decision.device if kind is not DecisionKind.INVALID else decision.keys
        try:
            if not call.active:
                raise NoSuchCall(f"call {call.id} ended")
            if call.state is not CallState.TALKING:  # put on hold while the menu played
                raise CallNotTalking(f"call {call.id} is {call.state.value}, not talking")
            plan = self._plan(config, leg.device or "", target)
        except FlipError as exc:
            op.targets = (target,)
            self.finish(op, None, str(exc), exc.code)
            self._play(leg, PlayPrompts(("not_available", "flip_cancelled")))
            return
        op.how = FlipWay.MENU if kind is DecisionKind.CHOICE else FlipWay.DIRECT
        self._ring(op, [plan.to_device])

    # -- ringing and the switch ------------------------------------------------------------------

    def _begin(
        self,
        call: Call,
        from_leg: Leg,
        options: UserFlipOptions,
        how: FlipWay,
        *,
        keys: str = "",
    ) -> FlipOperation:
        control = self._control
        future: asyncio.Future[HandoffRecord] = asyncio.get_running_loop().create_future()
        pressed = from_leg.device or "" if keys else ""
        op = FlipOperation(
            self, call, from_leg, control.clock.wall(), future, options, how, pressed, keys
        )
        control.begin(call, op)
        return op

    def _ring(
        self, op: FlipOperation, targets: Sequence[str], timeout: float | None = None
    ) -> None:
        control = self._control
        call = op.call
        from_leg = op.from_leg
        op.targets = tuple(targets)
        remote = call.other(from_leg)
        if timeout is not None:
            op.wait = float(timeout)
        wait = op.timeout
        _LOGGER.info("Call %s: flipping from %s to %s", call.id, from_leg.device, op.to_device)
        started = HandoffStarted(call.id, from_leg.device or "", op.to_device)
        try:
            if (
                remote is None
                or call.media is None
                or remote.remote_sdp is None
                or from_leg.remote_sdp is None
            ):
                raise SdpError("the call has no media yet")
            op.offer = offer_for_new_device(remote.remote_sdp, from_leg.remote_sdp)
            op.spare = control.open_spare(call, from_leg.side)
        except SdpError as exc:
            control.publish(started)
            self._failback(op, exc.reason, FlipFailure.FAILED)
            return
        except (RelayError, OSError) as exc:
            control.publish(started)
            self._failback(op, f"media relay: {exc}", FlipFailure.FAILED)
            return
        bindings = [b for device in op.targets for b in control.bindings(device)]
        op.fork = control.ring(
            call,
            bindings,
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
        # Told once the targets' legs exist (a fork reports nothing before the loop runs again):
        # what reads the call on this event -- Home Assistant's sensors -- sees them ringing.
        control.publish(started)
        if not op.done:
            if not op.fork.legs:
                self._failback(op, f"{op.to_device} has no registration", FlipFailure.UNREACHABLE)
                return
            op.fork.start_timer(wait)

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
        ended = media is None or media.closed or not call.active or op.done
        if not failure and ended:
            failure = "the call ended"
        if failure or answer is None or audio is None or remote_audio is None or media is None:
            control.hangup_leg(leg)
            code = FlipFailure.CALL_ENDED if ended else FlipFailure.FAILED
            self._failback(op, failure or "the call ended", code)
            return
        try:
            replaced = await control.replace_leg(
                old, leg, answer, spare=op.spare, keep_old=not op.options.auto_hangup
            )
        except (RelayError, OSError) as exc:
            control.hangup_leg(leg)
            self._failback(op, f"media relay: {exc}", FlipFailure.FAILED)
            return
        if not replaced:
            control.hangup_leg(leg)
            self.finish(op, None, "the call ended", FlipFailure.CALL_ENDED)
            return
        op.targets = (leg.device or "",)
        self.finish(op, leg, "")
        if op.options.announcement and remote is not None:
            self._play(remote, PlayTone(Tone.BEEP))  # the other party hears the switch
        control.publish_state(call)

    def _failed(self, op: FlipOperation, summary: ForkSummary) -> None:
        """Every registration of every target failed: the call stays where it was."""
        kind = summary.kind
        if kind is FailureKind.BUSY:
            reason, code = f"{op.to_device} is busy", FlipFailure.BUSY
        elif kind is FailureKind.DECLINED:
            reason, code = f"{op.to_device} declined", FlipFailure.DECLINED
        elif kind is FailureKind.CANCELLED:
            reason, code = "cancelled", FlipFailure.CANCELLED
        elif kind is FailureKind.UNREACHABLE:
            reason, code = f"{op.to_device} is unreachable", FlipFailure.UNREACHABLE
        else:
            statuses = ", ".join(map(str, sorted(set(summary.statuses))))
            reason, code = f"{op.to_device} answered {statuses}", FlipFailure.FAILED
        self._failback(op, reason, code)

    def _no_answer(self, op: FlipOperation) -> None:
        if not op.done:
            self._failback(op, f"no answer within {op.timeout:g} s", FlipFailure.NO_ANSWER)

    def _failback(self, op: FlipOperation, reason: str, code: FlipFailure) -> None:
        """The flip failed while the call goes on: the device that keyed it hears so."""
        was_done = op.done
        self.finish(op, None, reason, code)
        if not was_done and op.pressed_by and op.call.active:
            self._play(op.from_leg, PlayTone(Tone.ERROR))

    def _play(self, leg: Leg, play: Playback) -> Playing | None:
        """Generated audio to ``leg``'s device; None when the call has no media any more."""
        if not leg.call.active:
            return None
        try:
            return self._control.play(leg, play)
        except (RelayError, OSError) as exc:
            _LOGGER.info("Call %s: cannot play to %s: %s", leg.call.id, leg.device, exc)
            return None

    def finish(
        self,
        op: FlipOperation,
        winner: Leg | None,
        reason: str,
        code: FlipFailure | None = None,
    ) -> None:
        """The flip is over, ``winner`` the target that took the call (None: it failed)."""
        if op.done:
            return
        op.done = True
        self._end_menu(op)
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
            code="" if winner is not None else (code or FlipFailure.FAILED).value,
            pressed_by=op.pressed_by,
            keys=op.keys,
            how=op.how.value,
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
