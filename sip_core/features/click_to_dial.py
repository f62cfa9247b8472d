"""Click to dial: ring one phone, and when it answers, call a number for it and connect the two.

"Call grandma from the kitchen phone" on a dashboard: the PBX rings the chosen phone A
(`CallControl.originate`), showing the number it will connect to as the caller, so whoever picks
up knows what the call is. When A answers, A hears ringback (`PlayTone`, from the media engine)
while the PBX calls the number for A (`CallControl.ring_onward`): an extension, a phone's
account, a person by name, or an outside number through the trunks' dial plan when A's user
may call out (the same rules as if A had dialled it). The first of B's phones to answer is
connected to A with media through the relay; the call is recorded as A's call to the number.

The number is checked before A rings: an unknown number, one A may not call out to, or a person
with nothing registered is refused at once (`ClickToDialError`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sip_core.audio import PlayTone, Tone
from sip_core.call.control import CallControl
from sip_core.call.originate import CallerId, OriginateError, UnknownTarget
from sip_core.call.targets import destination
from sip_core.calls import Call
from sip_core.media import RelayError
from sip_core.media.client import Playing
from sip_core.trunk.egress import OutboundRefusal, OutboundTarget

__all__ = [
    "DEFAULT_RING_TIMEOUT",
    "ClickToDial",
    "ClickToDialError",
    "ClickToDialResult",
    "MayNotCallOut",
    "NumberUnavailable",
    "UnknownNumber",
]

_LOGGER = logging.getLogger(__name__)

#: Seconds each side rings before it gives up, unless told otherwise.
DEFAULT_RING_TIMEOUT = 30.0


class ClickToDialError(OriginateError):
    """The number cannot be called for that phone; the text says why."""


class UnknownNumber(ClickToDialError):
    """No extension, device or person has that number, and no trunk route takes it."""


class MayNotCallOut(ClickToDialError):
    """The dial plan refuses the number to the phone's user (no permission to call out)."""


class NumberUnavailable(ClickToDialError):
    """The number is a person or phone of ours with nothing registered."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where the number goes: our devices (and whose they are), or out through a trunk."""

    devices: tuple[str, ...]
    callee_user: str | None
    name: str
    outbound: OutboundTarget | None = None


@dataclass(frozen=True, slots=True)
class ClickToDialResult:
    """How it went: ``answered`` by the phone rung first (``device``); ``connected`` to
    ``to_device`` (a device of ours, or ``trunk:<name>``) once the number answered."""

    call_id: str
    answered: bool
    device: str | None
    connected: bool
    to_device: str | None
    reason: str


class ClickToDial:
    """Click-to-dial calls through call control's API (see the module docstring)."""

    def __init__(self, control: CallControl) -> None:
        self._control = control

    def plan(self, device: str, number: str) -> _Plan:
        """Where ``number`` goes when ``device`` calls it; raises a `ClickToDialError`."""
        config = self._control.config()
        owner = config.user_for_device(device)
        if owner is None:
            raise UnknownTarget(f"no device {device!r}")
        found = destination(config, device, number)
        if found is None:
            user = config.user(number)
            if user is not None:
                found_devices = tuple(d.username for d in user.devices if d.username != device)
                return self._ours(found_devices, user.name, user.name)
            plan = self._control.plan_outbound(number, owner.name)
            if isinstance(plan, OutboundRefusal):
                raise MayNotCallOut(plan.reason)
            if plan is None:
                raise UnknownNumber(f"{number} is no extension, device or person here")
            return _Plan((), None, number, plan)
        return self._ours(found.devices, found.user.name, found.user.name)

    def _ours(self, devices: tuple[str, ...], user: str, name: str) -> _Plan:
        if not any(self._control.is_registered(device) for device in devices):
            raise NumberUnavailable(f"{name} has no registered phone")
        return _Plan(devices, user, name)

    def call(
        self, device: str, number: str, *, ring_timeout: float = DEFAULT_RING_TIMEOUT
    ) -> tuple[Call, asyncio.Future[ClickToDialResult]]:
        """Ring ``device``; when answered, call ``number`` and connect them. Raises a
        `ClickToDialError`, `UnknownTarget`, `NothingToRing` or ValueError before anything
        rings; returns the call and a future that resolves however it went."""
        if ring_timeout <= 0:
            raise ValueError(f"the ring timeout must be positive, not {ring_timeout}")
        if not number:
            raise UnknownNumber("no number to call")
        plan = self.plan(device, number)
        owner = self._control.config().user_for_device(device)
        try:
            shown = CallerId(plan.name, number)
        except ValueError:
            shown = CallerId(plan.name)
        originated = self._control.originate(
            (device,),
            dialled=number,
            callee_user=plan.callee_user,
            ring_timeout=ring_timeout,
            caller_id=shown,
            caller_user=owner.name if owner is not None else None,
            purpose="call",
            onward=True,
        )
        call = originated.call
        result: asyncio.Future[ClickToDialResult] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            first = to = None
            ringback: Playing | None = None
            try:
                first = await originated.answered
                if first is None:
                    return
                ringback = self._control.play(first, PlayTone(Tone.RINGBACK))
                to = await self._control.ring_onward(
                    call,
                    devices=plan.devices,
                    outbound=plan.outbound,
                    callee_user=plan.callee_user,
                    ring_timeout=ring_timeout,
                )
            except RelayError as exc:  # the call's media closed: it is ending anyway
                _LOGGER.info("Click to dial %s: %s", call.id, exc)
            finally:
                if ringback is not None:
                    ringback.stop()
                if not result.done():
                    result.set_result(
                        ClickToDialResult(
                            call.id,
                            first is not None,
                            first.device if first is not None else None,
                            to is not None,
                            to.device if to is not None else None,
                            call.reason,
                        )
                    )

        self._control.spawn(run())
        return call, result
