"""Per-device and per-user runtime settings that decide who a call rings: Do Not Disturb, Make
Busy, Call Forward Always, and whether a user may flip.

These are what a person switches on and off while the PBX runs (from a phone's feature, Home
Assistant's switches, the runner's API), so they live in the runtime state (`sip_core.state`), not
in the frozen configuration: a `Presence` registers the ``presence`` section and calls
`RuntimeState.changed` on every change, and whoever persists the state (the runner's state file,
Home Assistant's Store) saves it. The configuration only holds what an administrator decides: a
user's flip may be forced on or off there (`sip_core.config.FlipPermission`), which overrides the
user's own setting.

How the B2BUA applies them to every call (one place, `route`):

- **Call Forward Always** is followed first, through `sip_core.forwarding.resolve_targets`, so
  loops are cut there (482, the chain named). A device that forwards is not rung itself, whatever
  its other settings; the forward's target is rung according to its own settings.
- **Do Not Disturb**: the device is not rung. A call to a user rings their other devices; when
  none is left the caller gets 486 Busy Here, as from a busy line: a phone in DND answers busy,
  which is what callers of a desk phone with DND pressed hear on most PBXs, and it tells a caller
  (or a later Call Forward Busy) the person is there but not taking calls, unlike 480.
- **Make Busy**: the device looks busy: it is not rung and counts as busy, so a call that finds
  no other device gets 486. (Groups will tell the two apart: a member in Make Busy sends group
  calls to the group's no-answer destination.)

A flip target must be available: registered, not in DND, not in Make Busy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sip_core.config import FlipPermission, PbxConfig
from sip_core.state import RuntimeState

__all__ = [
    "PRESENCE_SECTION",
    "DeviceStates",
    "ForwardKind",
    "ForwardTarget",
    "Presence",
    "PresenceError",
    "UnknownDeviceError",
    "UnknownUserError",
]

_LOGGER = logging.getLogger(__name__)

PRESENCE_SECTION = "presence"
"""The name of this module's section in the runtime state."""


class PresenceError(ValueError):
    """A setting that cannot be made; the message says why, for the person who asked."""


class UnknownDeviceError(PresenceError):
    """No configured device has that username."""


class UnknownUserError(PresenceError):
    """No configured user has that name."""


class ForwardKind(StrEnum):
    """What a forward points at. Groups (Personal Ring Groups) will add a kind here."""

    DEVICE = "device"
    USER = "user"


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """Where Call Forward Always sends a device's calls: a device (its username) or a user (by
    name; every device of theirs rings, each by its own settings)."""

    kind: ForwardKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> ForwardTarget:
        """``device:201`` or ``user:Alice`` (the form `__str__` writes); `PresenceError` else."""
        kind, sep, name = text.partition(":")
        if not sep or not name:
            raise PresenceError(
                f"a forward target is 'device:<username>' or 'user:<name>', not {text!r}"
            )
        try:
            return cls(ForwardKind(kind), name)
        except ValueError:
            raise PresenceError(
                f"a forward target is 'device:<username>' or 'user:<name>', not {text!r}"
            ) from None


@dataclass(frozen=True, slots=True)
class DeviceStates:
    """One device's runtime settings (all off by default)."""

    dnd: bool = False
    make_busy: bool = False
    forward: ForwardTarget | None = None

    @property
    def default(self) -> bool:
        return self == DeviceStates()


class Presence:
    """The runtime settings of devices and users, validated against the current configuration.

    ``config`` returns the configuration in force (it changes when users are edited; settings of a
    device that no longer exists are kept, harmlessly, until it is set again or comes back).
    """

    def __init__(self, config: Callable[[], PbxConfig], state: RuntimeState | None = None) -> None:
        self._config = config
        self._state = state
        self._devices: dict[str, DeviceStates] = {}
        self._flip: dict[str, bool] = {}
        self._listeners: list[Callable[[], None]] = []
        if state is not None:
            state.register(PRESENCE_SECTION, self.records, self.restore)

    # -- reading ---------------------------------------------------------------------------------

    def device(self, device: str) -> DeviceStates:
        """The device's settings; `UnknownDeviceError` when no device has that username."""
        self._check_device(device)
        return self._devices.get(device, DeviceStates())

    def states(self, device: str) -> DeviceStates:
        """Like `device` without the check (routing asks about devices it has just resolved)."""
        return self._devices.get(device, DeviceStates())

    def user_flip(self, user: str) -> bool:
        """The user's own flip setting (on unless they turned it off)."""
        self._check_user(user)
        return self._flip.get(user, True)

    def flip_enabled(self, user: str) -> bool:
        """Whether the user may flip: the administrator's setting when it forces one, else the
        user's own."""
        found = self._config().user(user)
        if found is None:
            return False
        if found.flip is FlipPermission.ENABLED:
            return True
        if found.flip is FlipPermission.DISABLED:
            return False
        return self._flip.get(user, True)

    def available(self, device: str) -> bool:
        """Whether the device may be offered a call it did not ask for (a flip): neither in DND
        nor in Make Busy (registration and calls are the caller's to check)."""
        states = self.states(device)
        return not states.dnd and not states.make_busy

    def forwards(self, device: str) -> Sequence[str] | None:
        """`sip_core.forwarding`'s rule: the devices a device's calls go to instead, or None."""
        forward = self.states(device).forward
        if forward is None:
            return None
        config = self._config()
        if forward.kind is ForwardKind.DEVICE:
            return [forward.name] if config.device(forward.name) is not None else None
        user = config.user(forward.name)
        if user is None:
            return None
        return [d.username for d in sorted(user.devices, key=lambda d: d.priority)]

    # -- changing --------------------------------------------------------------------------------

    def set_dnd(self, device: str, on: bool) -> None:
        self._update(device, dnd=bool(on))

    def set_make_busy(self, device: str, on: bool) -> None:
        self._update(device, make_busy=bool(on))

    def set_forward(self, device: str, target: ForwardTarget | str | None) -> None:
        """Forward the device's calls (None or an empty text: stop forwarding). The target must
        exist and must not be the device itself; longer loops are cut when a call meets them."""
        self._check_device(device)
        if isinstance(target, str):
            target = ForwardTarget.parse(target) if target else None
        if target is not None:
            config = self._config()
            if target.kind is ForwardKind.DEVICE:
                if config.device(target.name) is None:
                    raise UnknownDeviceError(f"no device is called {target.name!r}")
                if target.name == device:
                    raise PresenceError(f"{device} cannot forward its calls to itself")
            elif config.user(target.name) is None:
                raise UnknownUserError(f"no user is called {target.name!r}")
        self._update(device, forward=target)

    def set_user_flip(self, user: str, on: bool) -> None:
        """The user's own flip setting (an administrator's forced setting still wins)."""
        self._check_user(user)
        if self._flip.get(user, True) == bool(on):
            return
        if on:
            self._flip.pop(user, None)
        else:
            self._flip[user] = False
        self._changed()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- persistence (the runtime state's section) -----------------------------------------------

    def records(self) -> dict[str, Any]:
        """JSON-able: ``{"devices": {name: {...}}, "flip": {user: false}}`` (defaults left out)."""
        devices: dict[str, Any] = {}
        for name, states in sorted(self._devices.items()):
            item: dict[str, Any] = {}
            if states.dnd:
                item["dnd"] = True
            if states.make_busy:
                item["make_busy"] = True
            if states.forward is not None:
                item["forward"] = str(states.forward)
            devices[name] = item
        return {"devices": devices, "flip": dict(sorted(self._flip.items()))}

    def restore(self, data: Any) -> None:
        """Settings saved by `records`; a broken entry raises (the state logs it, defaults)."""
        if not isinstance(data, Mapping):
            raise TypeError("the presence section is not a mapping")
        devices: dict[str, DeviceStates] = {}
        for name, item in dict(data.get("devices") or {}).items():
            if not isinstance(item, Mapping):
                raise TypeError(f"the settings of device {name!r} are not a mapping")
            forward = item.get("forward")
            devices[str(name)] = DeviceStates(
                dnd=bool(item.get("dnd", False)),
                make_busy=bool(item.get("make_busy", False)),
                forward=ForwardTarget.parse(str(forward)) if forward else None,
            )
        flips = {str(user): bool(on) for user, on in dict(data.get("flip") or {}).items()}
        self._devices = {name: states for name, states in devices.items() if not states.default}
        self._flip = {user: on for user, on in flips.items() if not on}
        for listener in list(self._listeners):
            listener()

    # -- internals -------------------------------------------------------------------------------

    def _update(self, device: str, **changes: Any) -> None:
        self._check_device(device)
        old = self._devices.get(device, DeviceStates())
        new = replace(old, **changes)
        if new == old:
            return
        if new.default:
            self._devices.pop(device, None)
        else:
            self._devices[device] = new
        _LOGGER.info("Device %s: %s", device, _describe(new))
        self._changed()

    def _changed(self) -> None:
        if self._state is not None:
            self._state.changed()
        for listener in list(self._listeners):
            listener()

    def _check_device(self, device: str) -> None:
        if self._config().device(device) is None:
            raise UnknownDeviceError(f"no device is called {device!r}")

    def _check_user(self, user: str) -> None:
        if self._config().user(user) is None:
            raise UnknownUserError(f"no user is called {user!r}")


def _describe(states: DeviceStates) -> str:
    parts = [
        "do not disturb" if states.dnd else "",
        "make busy" if states.make_busy else "",
        f"forwards to {states.forward}" if states.forward is not None else "",
    ]
    return ", ".join(part for part in parts if part) or "takes its calls"
