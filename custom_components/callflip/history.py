"""Call history that survives a restart of Home Assistant or a reload of the entry.

The PBX keeps the records of finished calls in memory only (`Pbx.history`). This store keeps the
most recent `HISTORY_LIMIT` of them in Home Assistant's ``Store``: each `CallRecorded` event adds
one (written a moment later, and on stop), and at start the saved records are handed back to the
new PBX, so its history, the last-call sensor and the diagnostics continue where they were. A
call that a stop cuts short is ended by the PBX ("the PBX is stopping") and recorded before the
final save, so it is not lost either. Records use sip_core's own JSON form (`sip_core.state`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.storage import Store

from sip_core.calls import CallRecord
from sip_core.state import call_record_to_json, call_records_from_json

from .const import DOMAIN

HISTORY_STORAGE_VERSION = 1
HISTORY_LIMIT = 200
"""Calls kept across restarts (the newest); the store file stays well under 100 kB."""

SAVE_DELAY = 5.0
"""Seconds to gather call records into one write; pending data is written on stop too."""

type StoredHistory = dict[str, list[dict[str, Any]]]


def history_store(hass: HomeAssistant, entry_id: str) -> Store[StoredHistory]:
    """Return the Store that keeps one entry's call history across restarts."""
    return Store(hass, HISTORY_STORAGE_VERSION, f"{DOMAIN}.{entry_id}.history")


class CallHistory:
    """The newest call records of one entry, oldest first, persisted with a bounded Store."""

    def __init__(self, store: Store[StoredHistory], limit: int = HISTORY_LIMIT) -> None:
        self._store = store
        self._records: deque[CallRecord] = deque(maxlen=limit)

    async def async_load(self) -> list[CallRecord]:
        """Read what the last run saved (broken records are skipped with a warning)."""
        stored = await self._store.async_load()
        items = stored.get("calls", []) if isinstance(stored, dict) else []
        self._records.clear()
        self._records.extend(call_records_from_json(items if isinstance(items, list) else []))
        return list(self._records)

    @callback
    def add(self, record: CallRecord) -> None:
        """A call ended: keep its record and save soon."""
        self._records.append(record)
        self._store.async_delay_save(self._data, SAVE_DELAY)

    def records(self) -> list[CallRecord]:
        return list(self._records)

    def last(self) -> CallRecord | None:
        return self._records[-1] if self._records else None

    def __len__(self) -> int:
        return len(self._records)

    async def async_save(self) -> None:
        await self._store.async_save(self._data())

    def _data(self) -> StoredHistory:
        return {"calls": [call_record_to_json(record) for record in self._records]}
