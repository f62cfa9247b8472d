"""The PBX's runtime state (`sip_core.state.RuntimeState`) kept in Home Assistant's ``Store``.

Per-device Do Not Disturb, Make Busy and Call Forward Always, and each user's own flip setting
(`sip_core.presence`), are changed while the PBX runs, from the switches and selects. They are
runtime state, not options: the PBX registers its sections with the `RuntimeState` handed to it,
and this store saves the sections a moment after each change (and on unload), and hands them
back at the next set-up, so a restart or a reload finds every setting as it was. Sections this
version does not know are kept and written back unchanged.
"""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.storage import Store

from sip_core.state import RuntimeState

from .const import DOMAIN

STATE_STORAGE_VERSION = 1
SAVE_DELAY = 1.0
"""Seconds to gather changes (a few switches flipped together) into one write."""

type StoredState = dict[str, Any]


def state_store(hass: HomeAssistant, entry_id: str) -> Store[StoredState]:
    """Return the Store that keeps one entry's runtime state across restarts."""
    return Store(hass, STATE_STORAGE_VERSION, f"{DOMAIN}.{entry_id}.state")


class RuntimeStateStore:
    """One entry's `RuntimeState`, loaded from and saved to its Store."""

    def __init__(self, store: Store[StoredState]) -> None:
        self._store = store
        self.state = RuntimeState()
        self._unsubscribe = self.state.subscribe(self._changed)

    async def async_load(self) -> RuntimeState:
        """Restore what the last run saved (a broken section starts from its defaults)."""
        stored = await self._store.async_load()
        sections = stored.get("sections") if isinstance(stored, dict) else None
        if isinstance(sections, dict):
            self.state.restore(sections)
        return self.state

    @callback
    def _changed(self) -> None:
        self._store.async_delay_save(self._data, SAVE_DELAY)

    async def async_save(self) -> None:
        """Write now (on unload: a pending delayed write would otherwise wait for shutdown)."""
        await self._store.async_save(self._data())

    def _data(self) -> StoredState:
        return {"sections": self.state.records()}
