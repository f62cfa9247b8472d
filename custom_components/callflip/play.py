"""The ``callflip.play`` action: an announcement into a call in progress, without ending it.

"Tell Alice, who is on the phone, that the front door is open": the action names a person or a
phone, the audio (a message a chosen TTS entity speaks, or a media-source file) and who hears it
(``own``: that person's side, ``other``: the party they talk to, ``caller``, ``callee`` or
``both``). Everything that can be checked before the audio is made is checked first (the call,
its answer, the legs' codecs), and again when it starts (the call may have ended meanwhile).
The audio goes to the PBX as a temporary WAV file (`sip_core.audio.PlayFile`), which the media
engine converts to each leg's codec and paces; the file is removed once every side has ended.
The response says which call, who heard it and how long it lasts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any

import voluptuous as vol
from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.helpers import config_validation as cv

from sip_core.audio import PlayFile
from sip_core.audio.wav import MAX_SECONDS
from sip_core.call_audio import (
    CallAudioError,
    CallNotAnswered,
    CallPlayback,
    NoCallInProgress,
    NoGeneratedAudio,
    PlaySide,
)

from .announcement_audio import (
    AnnouncementAudioError,
    async_media_audio,
    async_tts_audio,
    wav_info,
)
from .const import DOMAIN
from .hub import CallflipHub
from .services import _hub, validation_error

_LOGGER = logging.getLogger(__name__)

SERVICE_PLAY = "play"
ATTR_SIDE = "side"
ATTR_TTS_ENTITY_ID = "tts_entity_id"
ATTR_MESSAGE = "message"
ATTR_LANGUAGE = "language"
ATTR_OPTIONS = "options"
ATTR_MEDIA = "media_content_id"

PLAY_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): vol.All(cv.ensure_list, [cv.string], vol.Length(min=1)),
        vol.Optional(ATTR_SIDE, default=PlaySide.OWN.value): vol.In([s.value for s in PlaySide]),
        vol.Optional(ATTR_TTS_ENTITY_ID): cv.entity_domain("tts"),
        vol.Optional(ATTR_MESSAGE): cv.string,
        vol.Optional(ATTR_LANGUAGE): cv.string,
        vol.Optional(ATTR_OPTIONS): dict,
        vol.Optional(ATTR_MEDIA): cv.string,
    }
)


@callback
def async_setup_play_service(hass: HomeAssistant) -> None:
    """Register ``callflip.play`` (from async_setup, with the other actions)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_PLAY,
        _async_play,
        schema=PLAY_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )


def _party(hub: CallflipHub, ha_device_id: str) -> tuple[dict[str, str], str]:
    """The PBX's name for the chosen user or phone (``user=`` or ``device=``), and its name for
    messages; `not_a_phone` for anything else."""
    what = hub.identify(ha_device_id)
    if what is None or what[0] == "hub":
        raise validation_error("not_a_phone")
    kind, key = what
    if kind == "user":
        user = next(user for user in hub.users if user["id"] == key)
        return {"user": user["name"]}, user["name"]
    owned = hub.device(key)
    assert owned is not None  # identify() knows only configured devices
    return {"device": owned.device["username"]}, owned.device["label"]


def _refusal(hub: CallflipHub, err: CallAudioError, name: str) -> Exception:
    if isinstance(err, NoCallInProgress):
        return validation_error("no_call", name=name)
    if isinstance(err, CallNotAnswered):
        return validation_error("call_not_answered", name=name)
    if isinstance(err, NoGeneratedAudio):
        return validation_error(
            "no_generated_audio",
            device=hub.device_label(err.device),
            codecs=", ".join(err.encodings) or "-",
        )
    return validation_error("not_a_phone")


def _check(hub: CallflipHub, party: dict[str, str], name: str, side: PlaySide) -> str:
    """The id of the call the audio will go to, once sip_core said it could (`Pbx.check_play`)."""
    try:
        return hub.pbx.check_play(side=side, **party)
    except CallAudioError as err:
        raise _refusal(hub, err, name) from err


async def _audio(call: ServiceCall) -> bytes:
    data = call.data
    has_message, has_media = ATTR_MESSAGE in data, ATTR_MEDIA in data
    if has_message == has_media or (has_message and ATTR_TTS_ENTITY_ID not in data):
        raise validation_error("play_needs_audio")
    try:
        if has_message:
            return await async_tts_audio(
                call.hass,
                data[ATTR_TTS_ENTITY_ID],
                data[ATTR_MESSAGE],
                data.get(ATTR_LANGUAGE),
                data.get(ATTR_OPTIONS),
            )
        return await async_media_audio(call.hass, data[ATTR_MEDIA])
    except AnnouncementAudioError as err:
        raise validation_error(err.key, details=err.details) from err


def _write_temporary(data: bytes) -> str:
    handle, path = tempfile.mkstemp(prefix="callflip-announcement-", suffix=".wav")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


async def _async_play(call: ServiceCall) -> ServiceResponse:
    hub = _hub(call.hass)
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_call_only")
    party, name = _party(hub, device_ids[0])
    side = PlaySide(call.data[ATTR_SIDE])
    call_id = _check(hub, party, name, side)  # before the audio is made: it may take a while
    data = await _audio(call)
    info = wav_info(data)
    if info is None or info.seconds <= 0:
        raise validation_error("unsupported_audio", details="the audio is empty or not PCM")
    if info.seconds > MAX_SECONDS:
        raise validation_error(
            "unsupported_audio", details=f"{info.seconds:.0f} s is longer than {MAX_SECONDS} s"
        )
    path = await call.hass.async_add_executor_job(_write_temporary, data)
    try:
        playback = hub.pbx.play(PlayFile(path), side=side, call_id=call_id, **party)
    except CallAudioError as err:
        await call.hass.async_add_executor_job(_remove, path)
        raise _refusal(hub, err, name) from err
    hub.entry.async_create_background_task(
        call.hass, _async_clean_up(playback, path), f"{DOMAIN} announcement"
    )
    _LOGGER.debug("Playing %.1f s into call %s for %s", info.seconds, playback.call_id, name)
    response: dict[str, Any] = {
        "call_id": playback.call_id,
        "devices": [hub.device_label(device) for device in playback.devices],
        "duration": round(info.seconds, 2),
    }
    return response


async def _async_clean_up(playback: CallPlayback, path: str) -> None:
    """Remove the file once every side has ended (finished, stopped, the call ended)."""
    try:
        reasons = await playback.wait()
        _LOGGER.debug("Announcement in call %s ended: %s", playback.call_id, reasons)
    finally:  # also when the entry unloads (its PBX ends the call and the playback)
        _remove(path)
