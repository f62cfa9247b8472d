"""Group Presence: whether each member of a Personal Ring Group is present in it.

Why its own record, apart from Do Not Disturb and Make Busy: presence is per membership (a device
in two groups may be present in one and absent from the other), and a push never overrides it,
while it does override DND and Make Busy. An absent member is not rung by its group's calls or
pushes, but may still push and pull, and a call may be pulled from it.

Everyone is present unless set absent; only absences are kept. It is runtime state (a person
switches it while the PBX runs), persisted through the runtime state's ``groups`` section when one
is given (`state.register(section, records, restore)` and `state.changed()`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sip_core.config import PbxConfig

__all__ = ["GROUP_PRESENCE_SECTION", "GroupPresence", "GroupPresenceError", "StateSections"]

GROUP_PRESENCE_SECTION = "groups"


class GroupPresenceError(ValueError):
    """A presence that cannot be set (no such group, or the device is no member of it)."""


class StateSections(Protocol):
    """The runtime state's side that a section uses (`sip_core.state.RuntimeState`)."""

    def register(
        self, name: str, records: Callable[[], Any], restore: Callable[[Any], None]
    ) -> None: ...

    def changed(self) -> None: ...


class GroupPresence:
    """Present/absent per (group, member), validated against the configuration in force."""

    def __init__(self, config: Callable[[], PbxConfig], state: StateSections | None = None) -> None:
        self._config = config
        self._state = state
        self._absent: set[tuple[str, str]] = set()
        self._listeners: list[Callable[[], None]] = []
        if state is not None:
            state.register(GROUP_PRESENCE_SECTION, self.records, self.restore)

    def present(self, group: str, device: str) -> bool:
        """Whether ``device`` is present in ``group`` (every member is, until set absent)."""
        return (group, device) not in self._absent

    def set_present(self, group: str, device: str, present: bool) -> None:
        """Make a member present or absent; `GroupPresenceError` when it is no member."""
        found = self._config().group(group)
        if found is None:
            raise GroupPresenceError(f"no group is called {group!r}")
        if device not in found.members:
            raise GroupPresenceError(f"{device} is not a member of {group}")
        key = (group, device)
        if present == (key not in self._absent):
            return
        if present:
            self._absent.discard(key)
        else:
            self._absent.add(key)
        self._changed()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def records(self) -> dict[str, Any]:
        """JSON-able: ``{"absent": {group: [device, ...]}}``."""
        absent: dict[str, list[str]] = {}
        for group, device in sorted(self._absent):
            absent.setdefault(group, []).append(device)
        return {"absent": absent}

    def restore(self, data: Any) -> None:
        """What `records` saved; a broken section raises (the state logs it and starts empty)."""
        if not isinstance(data, Mapping):
            raise TypeError("the groups section is not a mapping")
        absent = data.get("absent") or {}
        if not isinstance(absent, Mapping):
            raise TypeError("groups.absent is not a mapping")
        restored: set[tuple[str, str]] = set()
        for group, devices in absent.items():
            if not isinstance(devices, list):
                raise TypeError(f"the absent members of {group!r} are not a list")
            restored.update((str(group), str(device)) for device in devices)
        self._absent = restored
        for listener in list(self._listeners):
            listener()

    def _changed(self) -> None:
        if self._state is not None:
            self._state.changed()
        for listener in list(self._listeners):
            listener()
