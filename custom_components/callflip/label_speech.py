"""Device labels spoken by a TTS engine, for the flip menu ("press 2 for Kitchen phone").

A person's flip settings may name a text-to-speech entity (and a language). Each of their devices'
labels is then rendered through Home Assistant's TTS, as the announcements are
(`announcement_audio.async_tts_audio`: WAV, 16 kHz, mono, 16-bit), written to a cache file and
handed to the PBX (`Pbx.set_label_prompt`); the menu speaks that file instead of the bundled
type prompt ("your mobile").

Rendering happens ahead of any call, never in one: once Home Assistant has started, and again
whenever the options change (a label, the engine, the language, a device added). The menu uses
whatever is ready: a device whose label is being rendered, or whose rendering failed (the engine
is unavailable, it returned no audio, the audio is too long), keeps the bundled type prompt.
Failed labels are tried again every `RETRY_INTERVAL` (an engine set up after callflip, or one
that was offline, gets its chance).

Files are kept per (label, engine, language) in ``.storage/callflip_labels/<entry>/``, named by a
hash of the three, so a restart or a label changed back finds them again without asking the
engine; files no device uses any more are deleted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.event import async_call_later
from homeassistant.helpers.start import async_at_started

from sip_core.audio.playback import MAX_PART_SECONDS

from .announcement_audio import AnnouncementAudioError, async_tts_audio, wav_info
from .hub import CallflipHub
from .users import UserOptions

_LOGGER = logging.getLogger(__name__)

CONF_LABEL_SPEECH: Final = "label_speech"
"""A user's key in the options: ``{"engine": <tts entity id>, "language": <code>}``."""
CONF_ENGINE: Final = "engine"
CONF_LANGUAGE: Final = "language"

CACHE_FOLDER: Final = "callflip_labels"
RETRY_INTERVAL: Final = timedelta(minutes=10)


def label_cache(hass: HomeAssistant, entry_id: str) -> Path:
    """The folder of an entry's label recordings."""
    return Path(hass.config.path(".storage", CACHE_FOLDER, entry_id))


async def async_remove_label_cache(hass: HomeAssistant, entry_id: str) -> None:
    """Delete a removed entry's label recordings."""
    await hass.async_add_executor_job(
        functools.partial(shutil.rmtree, label_cache(hass, entry_id), ignore_errors=True)
    )


class LabelState(StrEnum):
    """Where a device's label recording is (diagnostics and tests read it)."""

    RENDERING = "rendering"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LabelKey:
    """What a recording is of: one label, by one engine, in one language (None: its default)."""

    label: str
    engine: str
    language: str | None

    @property
    def file_name(self) -> str:
        text = "\0".join((self.engine, self.language or "", self.label))
        return hashlib.sha256(text.encode()).hexdigest()[:32] + ".wav"


def label_speech_of(user: UserOptions) -> tuple[str, str | None] | None:
    """The user's TTS engine and language for device labels, or None when not configured."""
    found = user.get(CONF_LABEL_SPEECH) or {}
    engine = found.get(CONF_ENGINE)
    if not engine:
        return None
    return str(engine), found.get(CONF_LANGUAGE) or None


def wanted_labels(users: list[UserOptions]) -> dict[str, LabelKey | None]:
    """Device username -> the recording its menu line should use (None: the type prompt)."""
    wanted: dict[str, LabelKey | None] = {}
    for user in users:
        speech = label_speech_of(user)
        for device in user["devices"]:
            label = device["label"].strip()
            wanted[device["username"]] = (
                LabelKey(label, speech[0], speech[1]) if speech and label else None
            )
    return wanted


class LabelSpeech:
    """Keeps every device's label recording in step with the options, for one entry."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any], hub: CallflipHub) -> None:
        self._hass = hass
        self._entry = entry
        self._hub = hub
        self.folder = label_cache(hass, entry.entry_id)
        self.states: dict[str, LabelState] = {}
        """Device username -> its recording's state (devices with a TTS engine only)."""
        self.errors: dict[str, str] = {}
        """Device username -> why its last rendering failed."""
        self._given: dict[str, str | None] = {}
        self._lock = asyncio.Lock()
        self._pending = False
        self._unsubscribe: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._retry: Callable[[], None] | None = None
        self._running = False

    @callback
    def async_start(self) -> None:
        """Render once Home Assistant has started (its TTS engines are loaded by then), and
        again on every change of the options."""
        self._running = True
        self._unsubscribe.append(async_at_started(self._hass, self._started))
        self._unsubscribe.append(self._hub.async_add_topology_listener(self.async_schedule))

    @callback
    def async_stop(self) -> None:
        self._running = False
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._cancel_retry()

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry()
            self._retry = None

    @callback
    def _retry_failed(self, _now: datetime) -> None:
        self._retry = None
        self.async_schedule()

    async def _started(self, _hass: HomeAssistant) -> None:
        self.async_schedule()

    @callback
    def async_schedule(self) -> None:
        """Bring the recordings in step with the options, in the background (one pass at a
        time; a change during a pass gets another pass)."""
        self._pending = True
        if self._task is None or self._task.done():
            self._task = self._entry.async_create_background_task(
                self._hass, self._async_run(), "callflip label speech"
            )

    async def async_wait(self) -> None:
        """Until no pass is running (for tests and diagnostics)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _async_run(self) -> None:
        async with self._lock:
            while self._pending:
                self._pending = False
                await self._async_sync()

    async def _async_sync(self) -> None:
        wanted = wanted_labels(self._hub.users)
        keep: set[str] = set()
        to_render: list[tuple[str, LabelKey]] = []
        for username, key in wanted.items():
            if key is None:
                self.states.pop(username, None)
                self.errors.pop(username, None)
                self._give(username, None)
                continue
            keep.add(key.file_name)
            path = self.folder / key.file_name
            if await self._hass.async_add_executor_job(path.is_file):
                self.states[username] = LabelState.READY
                self.errors.pop(username, None)
                self._give(username, str(path))
            else:
                self.states[username] = LabelState.RENDERING
                self._give(username, None)  # the type prompt until the new label is ready
                to_render.append((username, key))
        rendered: dict[LabelKey, Path | str] = {}
        for username, key in to_render:
            outcome = rendered.get(key)
            if outcome is None:
                outcome = rendered[key] = await self._async_render(key)
            if wanted_labels(self._hub.users).get(username) != key:
                continue  # changed meanwhile: the next pass sees to it
            if isinstance(outcome, Path):
                self.states[username] = LabelState.READY
                self.errors.pop(username, None)
                self._give(username, str(outcome))
            else:
                self.states[username] = LabelState.FAILED
                self.errors[username] = outcome
                _LOGGER.warning(
                    "The flip menu says the type of %s: its label %r could not be spoken by %s "
                    "(%s)",
                    username,
                    key.label,
                    key.engine,
                    outcome,
                )
        for gone in set(self._given) - set(wanted):
            self._given.pop(gone)
            self.states.pop(gone, None)
            self.errors.pop(gone, None)
        await self._hass.async_add_executor_job(self._remove_unused, keep)
        self._cancel_retry()
        if LabelState.FAILED in self.states.values() and self._running:
            self._retry = async_call_later(self._hass, RETRY_INTERVAL, self._retry_failed)

    async def _async_render(self, key: LabelKey) -> Path | str:
        """The label's recording written to its cache file, or why it could not be made."""
        try:
            data = await async_tts_audio(self._hass, key.engine, key.label, key.language, None)
        except AnnouncementAudioError as err:
            return err.details
        info = wav_info(data)
        if info is None:
            return "the engine gave no PCM WAV"
        if info.seconds > MAX_PART_SECONDS:
            return f"the label lasts {info.seconds:.0f} s (at most {MAX_PART_SECONDS} s)"
        path = self.folder / key.file_name
        try:
            await self._hass.async_add_executor_job(self._write, path, data)
        except OSError as err:
            return f"cannot write {path.name}: {err.strerror or err}"
        return path

    def _give(self, username: str, path: str | None) -> None:
        if self._given.get(username) == path and username in self._given:
            return
        try:
            self._hub.pbx.set_label_prompt(username, path)
        except ValueError:
            return  # no longer configured in the PBX
        self._given[username] = path

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)  # the engine never reads half a file

    def _remove_unused(self, keep: set[str]) -> None:
        if not self.folder.is_dir():
            return
        for each in self.folder.iterdir():
            if each.suffix == ".wav" and each.name not in keep:
                each.unlink(missing_ok=True)
