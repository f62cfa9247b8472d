"""The ``callflip.announce`` action: ring a phone, a person or a group, speak a message, hang up.

"Dinner is ready" on the kitchen phone: the action names a person (every phone of theirs rings),
one phone, or a Personal Ring Group (its present, available members ring), the message (spoken
by a chosen TTS entity, or a media-source file: the same audio pipeline as ``callflip.play``),
how many times to say it, the caller ID shown ("Home Assistant") and how long to ring. The PBX
places the call (`sip_core.Pbx.announce`); the action waits for the outcome and answers whether
somebody answered and on which phone. What can be refused before the audio is made (who,
nothing registered) is refused first: text to speech may take a while.
"""

from __future__ import annotations

import logging
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
from sip_core.call.originate import (
    DEFAULT_CALLER_NAME,
    CallerId,
    NothingToRing,
    OriginateError,
    UnknownTarget,
)
from sip_core.features.announce import DEFAULT_RING_TIMEOUT, MAX_REPEAT
from sip_core.media import RelayError

from .announcement_audio import wav_info
from .const import DOMAIN
from .group_options import find_group, groups_from_options
from .hub import CallflipHub, device_identifier
from .play import (
    ATTR_LANGUAGE,
    ATTR_MEDIA,
    ATTR_MESSAGE,
    ATTR_OPTIONS,
    ATTR_TTS_ENTITY_ID,
    _audio,
    _party,
    _remove,
    _write_temporary,
)
from .services import _hub, validation_error

_LOGGER = logging.getLogger(__name__)

SERVICE_ANNOUNCE = "announce"
ATTR_REPEAT = "repeat"
ATTR_CALLER_ID = "caller_id"
ATTR_CALLER_NUMBER = "caller_number"
ATTR_RING_TIMEOUT = "ring_timeout"
MAX_RING_TIMEOUT = 300

ANNOUNCE_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): vol.All(cv.ensure_list, [cv.string], vol.Length(min=1)),
        vol.Optional(ATTR_TTS_ENTITY_ID): cv.entity_domain("tts"),
        vol.Optional(ATTR_MESSAGE): cv.string,
        vol.Optional(ATTR_LANGUAGE): cv.string,
        vol.Optional(ATTR_OPTIONS): dict,
        vol.Optional(ATTR_MEDIA): cv.string,
        vol.Optional(ATTR_REPEAT, default=1): vol.All(
            vol.Coerce(int), vol.Range(min=1, max=MAX_REPEAT)
        ),
        vol.Optional(ATTR_CALLER_ID, default=DEFAULT_CALLER_NAME): cv.string,
        vol.Optional(ATTR_CALLER_NUMBER): cv.string,
        vol.Optional(ATTR_RING_TIMEOUT, default=DEFAULT_RING_TIMEOUT): vol.All(
            vol.Coerce(float), vol.Range(min=1, max=MAX_RING_TIMEOUT)
        ),
    }
)


@callback
def async_setup_announce_service(hass: HomeAssistant) -> None:
    """Register ``callflip.announce`` (from async_setup, with the other actions)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_ANNOUNCE,
        _async_announce,
        schema=ANNOUNCE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )


def caller_id_of(data: dict[str, Any]) -> CallerId:
    """The caller ID asked for (`invalid_caller_id` when it cannot go in a From header)."""
    name = str(data.get(ATTR_CALLER_ID, DEFAULT_CALLER_NAME))
    number = data.get(ATTR_CALLER_NUMBER)
    try:
        return CallerId(name, str(number)) if number else CallerId(name)
    except ValueError as err:
        raise validation_error("invalid_caller_id", details=str(err)) from err


def _devices(hub: CallflipHub, party: dict[str, str]) -> list[str]:
    if "device" in party:
        return [party["device"]]
    if "group" in party:
        group = hub.pbx.config.group(party["group"])
        return list(group.members) if group is not None else []
    user = hub.pbx.config.user(party["user"])
    return [device.username for device in user.devices] if user is not None else []


def _group_party(hub: CallflipHub, group_id: str) -> tuple[dict[str, str], str]:
    """A Personal Ring Group as the PBX names it (``group=``); `unknown_group` when the
    group is gone from the options or from the running PBX."""
    group = find_group(groups_from_options(hub.entry.options), group_id)
    if group is None or hub.pbx.config.group(group["name"]) is None:
        raise validation_error("unknown_group")
    return {"group": group["name"]}, group["name"]


def _target(hub: CallflipHub, ha_device_id: str) -> tuple[dict[str, str], str]:
    """Who the announcement rings: a user, a phone or a Personal Ring Group."""
    what = hub.identify(ha_device_id)
    if what is not None and what[0] == "group":
        return _group_party(hub, what[1])
    return _party(hub, ha_device_id)


def nothing_to_ring(name: str, *, busy: bool) -> Exception:
    if busy:
        return validation_error("all_phones_busy", name=name)
    return validation_error("nothing_registered", name=name)


def ha_device_of(hub: CallflipHub, username: str | None) -> str | None:
    """The Home Assistant device of a SIP username (None for none)."""
    owned = hub.by_username().get(username) if username else None
    if owned is None:
        return None
    return hub.ha_device_id(device_identifier(owned.device["id"]))


async def _async_announce(call: ServiceCall) -> ServiceResponse:
    hub = _hub(call.hass)
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_target_only")
    party, name = _target(hub, device_ids[0])
    caller_id = caller_id_of(dict(call.data))
    if not any(hub.pbx.bindings(device) for device in _devices(hub, party)):
        raise nothing_to_ring(name, busy=False)  # before the audio is made
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
        try:
            outcome = hub.pbx.announce(
                PlayFile(path),
                repeat=call.data[ATTR_REPEAT],
                caller_id=caller_id,
                ring_timeout=call.data[ATTR_RING_TIMEOUT],
                **party,
            )
        except NothingToRing as err:
            raise nothing_to_ring(name, busy=err.busy) from err
        except UnknownTarget as err:  # the group went away while the audio was made
            raise validation_error("unknown_group") from err
        except (OriginateError, RelayError, OSError) as err:
            raise validation_error("announce_failed", name=name, details=str(err)) from err
        result = await outcome
    finally:  # played, or never will be (also when the entry unloads meanwhile)
        await call.hass.async_add_executor_job(_remove, path)
    _LOGGER.debug("Announcement to %s: %s", name, result)
    response: dict[str, Any] = {
        "answered": result.answered,
        "device": hub.device_label(result.device) if result.device else None,
        "device_id": ha_device_of(hub, result.device),
        "call_id": result.call_id,
        "played": result.played,
        "duration": round(info.seconds, 2),
    }
    return response
