"""Announcements: ring a phone, a person or a group from the PBX, play a message when answered,
hang up.

"Dinner is ready" on the kitchen phone: the PBX places the call itself (`CallControl.originate`,
the caller shown as "Home Assistant" unless told otherwise), and every registration of the chosen
device, of every device of the chosen user, or of every present, available member of the chosen
Personal Ring Group rings (a group as a call to its pilot rings it, `CallControl.route_number`:
a member who becomes present and available while it rings starts ringing too). The first to
answer hears the message ``repeat`` times (a short pause first, so the phone's audio path is
open before the first word, and between repetitions), then gets a BYE. The result says whether
anybody answered and which device. The device hanging up early ends it too (the result still
says it was answered).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sip_core.audio import PlaySilence
from sip_core.audio.playback import Playback
from sip_core.call.control import CallControl
from sip_core.call.originate import CallerId, UnknownTarget
from sip_core.call.targets import RingPlan
from sip_core.calls import CallOutcome
from sip_core.media import PLAY_FINISHED, RelayError

__all__ = ["DEFAULT_RING_TIMEOUT", "Announce", "AnnounceResult"]

_LOGGER = logging.getLogger(__name__)

#: Seconds an announcement rings before it gives up, unless told otherwise.
DEFAULT_RING_TIMEOUT = 30.0
#: The pause before the message and between repetitions (ms).
PAUSE_MS = 600
#: The most repetitions one announcement may ask for.
MAX_REPEAT = 10


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    """How an announcement went: ``answered`` by ``device`` (None if nobody), the message
    ``played`` in full that many times; ``reason`` is why the call ended."""

    call_id: str
    answered: bool
    device: str | None
    played: int
    reason: str


class Announce:
    """Places announcement calls through call control's API (see the module docstring)."""

    def __init__(self, control: CallControl) -> None:
        self._control = control

    def targets(
        self, *, device: str | None, user: str | None, group: str | None = None
    ) -> tuple[tuple[str, ...], str]:
        """The devices to ring for ``device``, ``user`` or ``group``, and who that is (the
        dialled name: a device, a user's extension, a group's pilot).

        Raises `UnknownTarget` for a name the configuration does not have, ValueError unless
        exactly one is named."""
        if sum(name is not None for name in (device, user, group)) != 1:
            raise ValueError("name a device, a user or a group: one, not both or neither")
        config = self._control.config()
        if group is not None:
            plan, pilot = self._group(group)
            return plan.devices, pilot
        if device is not None:
            if config.user_for_device(device) is None:
                raise UnknownTarget(f"no device {device!r}")
            return (device,), device
        assert user is not None
        found = config.user(user)
        if found is None:
            raise UnknownTarget(f"no user {user!r}")
        return tuple(d.username for d in found.devices), found.extension

    def _group(self, group: str) -> tuple[RingPlan, str]:
        """How a call to ``group``'s pilot rings now, and the pilot; `UnknownTarget` if none."""
        found = self._control.config().group(group)
        plan = self._control.route_number("", found.pilot) if found is not None else None
        if found is None or plan is None:
            raise UnknownTarget(f"no group {group!r}")
        return plan, found.pilot

    def announce(
        self,
        playback: Playback,
        *,
        device: str | None = None,
        user: str | None = None,
        group: str | None = None,
        repeat: int = 1,
        caller_id: CallerId | None = None,
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
    ) -> asyncio.Future[AnnounceResult]:
        """Ring ``device``, ``user`` or ``group``; when answered, play ``playback`` ``repeat``
        times, then hang up. Raises `UnknownTarget`, `NothingToRing` or ValueError (repeat,
        timeout) before anything rings; the future resolves however the call went. Must be
        called on the loop."""
        if not 1 <= repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be 1 to {MAX_REPEAT}, not {repeat}")
        if ring_timeout <= 0:
            raise ValueError(f"the ring timeout must be positive, not {ring_timeout}")
        plan: RingPlan | None = None
        if group is not None and device is None and user is None:
            plan, dialled = self._group(group)  # one look at who may ring
            devices = plan.devices
        else:
            devices, dialled = self.targets(device=device, user=user, group=group)
        config = self._control.config()
        callee = config.user_for_device(devices[0]) if devices and group is None else None
        originated = self._control.originate(
            devices,
            dialled=dialled,
            callee_user=callee.name if callee is not None else None,
            ring_timeout=ring_timeout,
            caller_id=caller_id,
            purpose="announce",
            plan=plan,
        )
        result: asyncio.Future[AnnounceResult] = asyncio.get_running_loop().create_future()
        call = originated.call

        async def run() -> None:
            played = 0
            leg = None
            try:
                leg = await originated.answered
                if leg is None:
                    return
                for number in range(repeat):
                    pause = self._control.play(leg, PlaySilence(PAUSE_MS))
                    if await pause.done != PLAY_FINISHED:
                        break
                    why = await self._control.play(leg, playback).done
                    if why != PLAY_FINISHED:
                        _LOGGER.info("Announcement %s stopped (%d): %s", call.id, number + 1, why)
                        break
                    played += 1
            except RelayError as exc:  # the call's media closed: it is ending anyway
                _LOGGER.info("Announcement %s: %s", call.id, exc)
            finally:
                if leg is not None:  # played, stopped or cut short: the PBX hangs up
                    self._control.terminate(call, CallOutcome.ANSWERED, "announcement played")
                if not result.done():
                    result.set_result(
                        AnnounceResult(
                            call.id,
                            leg is not None,
                            leg.device if leg is not None else None,
                            played,
                            call.reason or "stopped",
                        )
                    )

        self._control.spawn(run())
        return result
