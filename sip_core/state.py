"""Runtime state that outlives a restart, kept apart from the frozen configuration.

The configuration (`sip_core.config.PbxConfig`) is what a person wrote; it is frozen and replaced
whole. What the PBX learns or is told while it runs -- registrations, the call history, and the
per-user settings features add (do not disturb, make busy, presence, flip enable) -- must neither
go into it nor live only in memory. This module gives that state one shape:

- `RuntimeState` is a set of named sections. A feature registers its section with a function that
  returns its JSON-able records and one that restores them, and calls `RuntimeState.changed` when
  they change; whoever persists the state (the runner's `StateFile`, Home Assistant's ``Store``)
  listens and saves. A saved section nobody registered (a feature of a newer version, or one not
  enabled) is kept as it was and written back, so nothing is lost by a downgrade.
- `call_record_to_json` / `call_records_from_json` turn the call history into JSON and back, for
  the runner's state file and for Home Assistant's history store alike.
- `StateFile` is the runner's file: JSON, written atomically (a temporary file in the same
  directory, flushed to disk, then renamed over the old one), so a crash or a power cut leaves
  either the old state or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sip_core.calls import CallOutcome, CallRecord, HandoffRecord, TransferKind, TransferRecord

__all__ = [
    "STATE_VERSION",
    "RuntimeState",
    "StateFile",
    "StateFileError",
    "call_record_from_json",
    "call_record_to_json",
    "call_records_from_json",
]

_LOGGER = logging.getLogger(__name__)

STATE_VERSION = 1
"""The version of the state file's layout (``{"version": 1, "bindings": [...], ...}``)."""


@dataclass(frozen=True, slots=True)
class _Section:
    records: Callable[[], Any]
    restore: Callable[[Any], None]


class RuntimeState:
    """Named sections of runtime state, each with its own records()/restore() pair."""

    def __init__(self) -> None:
        self._sections: dict[str, _Section] = {}
        self._unclaimed: dict[str, Any] = {}
        self._listeners: list[Callable[[], None]] = []

    def register(
        self, name: str, records: Callable[[], Any], restore: Callable[[Any], None]
    ) -> None:
        """Add a section; if state restored earlier holds one of this name, it is restored now."""
        if name in self._sections:
            raise ValueError(f"state section {name!r} is registered already")
        self._sections[name] = _Section(records, restore)
        if name in self._unclaimed:
            self._restore_one(name, self._unclaimed.pop(name))

    def sections(self) -> list[str]:
        return sorted(self._sections)

    def records(self) -> dict[str, Any]:
        """Every section's JSON-able records, by name (sections nobody claimed included)."""
        data = dict(self._unclaimed)
        for name, section in self._sections.items():
            data[name] = section.records()
        return data

    def restore(self, data: Mapping[str, Any]) -> list[str]:
        """Restore saved sections; returns the names restored. A section that fails to restore
        is logged and skipped (its feature starts from its defaults); one no feature registered
        yet is kept for `register` and for the next save."""
        restored: list[str] = []
        for name, value in data.items():
            if name in self._sections:
                if self._restore_one(name, value):
                    restored.append(name)
            else:
                self._unclaimed[name] = value
        return restored

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every `changed`; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def changed(self) -> None:
        """A section's records changed: tell whoever persists them."""
        for listener in list(self._listeners):
            listener()

    def _restore_one(self, name: str, value: Any) -> bool:
        try:
            self._sections[name].restore(value)
        except (KeyError, TypeError, ValueError) as err:
            _LOGGER.warning("Ignoring saved state %r that cannot be restored: %s", name, err)
            return False
        return True


# -- call history ----------------------------------------------------------------------------------


def call_record_to_json(record: CallRecord) -> dict[str, Any]:
    """A call record as JSON-able values (times stay Unix seconds)."""
    return {
        "call_id": record.call_id,
        "caller": record.caller,
        "caller_user": record.caller_user,
        "dialled": record.dialled,
        "callee_user": record.callee_user,
        "callee_device": record.callee_device,
        "answered_device": record.answered_device,
        "started_at": record.started_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "outcome": record.outcome.value,
        "reason": record.reason,
        "handoffs": [
            {
                "from_device": handoff.from_device,
                "to_device": handoff.to_device,
                "started_at": handoff.started_at,
                "ended_at": handoff.ended_at,
                "succeeded": handoff.succeeded,
                "reason": handoff.reason,
                "kind": handoff.kind,
                "group": handoff.group,
                "code": handoff.code,
                "pressed_by": handoff.pressed_by,
                "keys": handoff.keys,
                "how": handoff.how,
            }
            for handoff in record.handoffs
        ],
        "transfers": [
            {
                "kind": transfer.kind.value,
                "transferring": transfer.transferring,
                "transferred": transfer.transferred,
                "target": transfer.target,
                "to_device": transfer.to_device,
                "started_at": transfer.started_at,
                "ended_at": transfer.ended_at,
                "succeeded": transfer.succeeded,
                "reason": transfer.reason,
                "recalled": transfer.recalled,
                "referred_by": transfer.referred_by,
            }
            for transfer in record.transfers
        ],
        "caller_party": record.caller_party,
    }


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string or null")
    return value


def _time(data: Mapping[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number")
    return float(value)


def _optional_time(data: Mapping[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _time(data, key)


def call_record_from_json(data: Mapping[str, Any]) -> CallRecord:
    """Rebuild a call record; raises KeyError, TypeError or ValueError on a broken one."""
    call_id = _text(data, "call_id")
    handoffs = data.get("handoffs", [])
    if not isinstance(handoffs, list):
        raise TypeError("handoffs must be a list")
    transfers = data.get("transfers", [])
    if not isinstance(transfers, list):
        raise TypeError("transfers must be a list")
    return CallRecord(
        call_id=call_id,
        caller=_text(data, "caller"),
        caller_user=_optional_text(data, "caller_user"),
        dialled=_text(data, "dialled"),
        callee_user=_optional_text(data, "callee_user"),
        callee_device=_optional_text(data, "callee_device"),
        answered_device=_optional_text(data, "answered_device"),
        started_at=_time(data, "started_at"),
        answered_at=_optional_time(data, "answered_at"),
        ended_at=_time(data, "ended_at"),
        outcome=CallOutcome(data["outcome"]),
        reason=_text(data, "reason"),
        handoffs=tuple(
            HandoffRecord(
                call_id=call_id,
                from_device=_text(handoff, "from_device"),
                to_device=_text(handoff, "to_device"),
                started_at=_time(handoff, "started_at"),
                ended_at=_optional_time(handoff, "ended_at"),
                succeeded=bool(handoff["succeeded"]),
                reason=_text(handoff, "reason"),
                # Records saved before these fields existed load with their defaults.
                kind=_optional_text(handoff, "kind") or "flip",
                group=_optional_text(handoff, "group") or "",
                code=_optional_text(handoff, "code") or "",
                pressed_by=_optional_text(handoff, "pressed_by") or "",
                keys=_optional_text(handoff, "keys") or "",
                how=_optional_text(handoff, "how") or "",
            )
            for handoff in handoffs
        ),
        transfers=tuple(
            TransferRecord(
                call_id=call_id,
                kind=TransferKind(transfer["kind"]),
                transferring=_text(transfer, "transferring"),
                transferred=_text(transfer, "transferred"),
                target=_text(transfer, "target"),
                to_device=_optional_text(transfer, "to_device"),
                started_at=_time(transfer, "started_at"),
                ended_at=_time(transfer, "ended_at"),
                succeeded=bool(transfer["succeeded"]),
                reason=_text(transfer, "reason"),
                recalled=_optional_text(transfer, "recalled"),
                referred_by=_optional_text(transfer, "referred_by"),
            )
            for transfer in transfers
        ),
        caller_party=_optional_text(data, "caller_party") or "",
    )


def call_records_from_json(items: Iterable[Any]) -> list[CallRecord]:
    """Every record that can be rebuilt, in order; broken ones are logged and skipped."""
    records: list[CallRecord] = []
    for item in items:
        try:
            if not isinstance(item, Mapping):
                raise TypeError("a call record must be an object")
            records.append(call_record_from_json(item))
        except (KeyError, TypeError, ValueError) as err:
            _LOGGER.warning("Ignoring a saved call record that cannot be read: %s", err)
    return records


# -- the runner's state file ---------------------------------------------------------------------


class StateFileError(Exception):
    """The state file cannot be written (a full disk, a read-only directory...)."""


class StateFile:
    """The runner's state in one JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """The saved state, or ``{}`` when there is none.

        A file that cannot be read as state (truncated by hand, another program's) is moved
        aside to ``<name>.bad`` with a warning, so the next save does not destroy the evidence
        and the PBX still starts.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as err:
            _LOGGER.warning("Cannot read the state file %s: %s", self.path, err)
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            version = data.get("version")
            if version != STATE_VERSION:
                raise ValueError(f"unknown version {version!r}")
        except ValueError as err:
            aside = self.path.with_name(self.path.name + ".bad")
            _LOGGER.warning(
                "The state file %s is unreadable (%s); moved aside to %s", self.path, err, aside
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return {}
        data.pop("version")
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        """Write ``data`` (plus the version) atomically; raises `StateFileError`."""
        text = json.dumps({"version": STATE_VERSION, **data}, separators=(",", ":"))
        directory = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=directory
            )
        except OSError as err:
            raise StateFileError(f"cannot write the state file {self.path}: {err}") from err
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StateFileError(f"cannot write the state file {self.path}: {err}") from err
        # The rename itself reaches the disk only with the directory's entry.
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
