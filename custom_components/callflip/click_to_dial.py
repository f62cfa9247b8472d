"""The ``callflip.call`` action: click to dial from a dashboard.

"Call grandma from the kitchen phone": the action names the phone to ring first and what to call
(a number, or a person or phone of the PBX). The phone rings showing that number; when it is
answered, the PBX calls the number for it and connects the two (`sip_core.Pbx.call_number`),
the phone hearing ringback meanwhile. An outside number goes through the trunks' dial plan when
the phone's person may call out. Everything that can be refused is refused before the phone
rings; the action returns once it rings, with the call's id (its steps follow as call events).
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

from sip_core.call.originate import NothingToRing, OriginateError
from sip_core.features.click_to_dial import (
    DEFAULT_RING_TIMEOUT,
    MayNotCallOut,
    NumberUnavailable,
    UnknownNumber,
)
from sip_core.media import RelayError

from .announce import ATTR_RING_TIMEOUT, MAX_RING_TIMEOUT, nothing_to_ring
from .const import ATTR_NUMBER, ATTR_TARGET_DEVICE_ID, DOMAIN
from .hub import CallflipHub
from .services import _hub, validation_error

_LOGGER = logging.getLogger(__name__)

SERVICE_CALL = "call"

CALL_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): vol.All(cv.ensure_list, [cv.string], vol.Length(min=1)),
        vol.Optional(ATTR_NUMBER): cv.string,
        vol.Optional(ATTR_TARGET_DEVICE_ID): cv.string,
        vol.Optional(ATTR_RING_TIMEOUT, default=DEFAULT_RING_TIMEOUT): vol.All(
            vol.Coerce(float), vol.Range(min=1, max=MAX_RING_TIMEOUT)
        ),
    }
)


@callback
def async_setup_call_service(hass: HomeAssistant) -> None:
    """Register ``callflip.call`` (from async_setup, with the other actions)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_CALL,
        _async_call,
        schema=CALL_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )


def _phone(hub: CallflipHub, ha_device_id: str) -> tuple[str, str]:
    """The SIP username and label of the phone to ring first (`call_from_a_phone` otherwise)."""
    what = hub.identify(ha_device_id)
    if what is None or what[0] != "device":
        raise validation_error("call_from_a_phone")
    owned = hub.device(what[1])
    assert owned is not None  # identify() knows only configured devices
    return owned.device["username"], owned.device["label"]


def _number(hub: CallflipHub, data: dict[str, Any]) -> str:
    """What to call: the number given, or the chosen phone's account, or the chosen person's
    extension (exactly one of ``number`` and ``target_device_id``)."""
    number = data.get(ATTR_NUMBER)
    target_id = data.get(ATTR_TARGET_DEVICE_ID)
    if bool(number) == bool(target_id):
        raise validation_error("call_target_missing")
    if number:
        return str(number).strip()
    what = hub.identify(str(target_id))
    if what is None or what[0] == "hub":
        raise validation_error("not_a_phone")
    kind, key = what
    if kind == "user":
        return next(str(user["extension"]) for user in hub.users if user["id"] == key)
    owned = hub.device(key)
    assert owned is not None
    return str(owned.device["username"])


async def _async_call(call: ServiceCall) -> ServiceResponse:
    hub = _hub(call.hass)
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_target_only")
    device, label = _phone(hub, device_ids[0])
    number = _number(hub, dict(call.data))
    try:
        call_id, _outcome = hub.pbx.call_number(
            device, number, ring_timeout=call.data[ATTR_RING_TIMEOUT]
        )
    except NothingToRing as err:
        raise nothing_to_ring(label, busy=err.busy) from err
    except UnknownNumber as err:
        raise validation_error("unknown_number", number=number) from err
    except MayNotCallOut as err:
        raise validation_error(
            "may_not_call_out", name=label, number=number, details=str(err)
        ) from err
    except NumberUnavailable as err:
        raise validation_error("number_unavailable", number=number) from err
    except (OriginateError, RelayError, OSError, ValueError) as err:
        raise validation_error("announce_failed", name=label, details=str(err)) from err
    _LOGGER.debug("Click to dial %s: %s rings for %s", call_id, device, number)
    response: dict[str, Any] = {"call_id": call_id, "device": label, "number": number}
    return response
