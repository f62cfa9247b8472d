"""Device conditions of a user: "is talking" (an answered call, not on hold) and "is in a call"
(any call: ringing, dialing, talking or held).

An automation that acts on a call (``callflip.flip``, ``callflip.hangup``) checks one of these
first, so that "no call right now" is a quiet no-op instead of an action refused with an error in
the log. They read the same call view as the user's "Active call" sensor, so they agree with it.
Validation checks ``type`` here, as the device triggers do, instead of extending Home Assistant's
base schema.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_CONDITION, CONF_DEVICE_ID, CONF_DOMAIN, CONF_TYPE
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.condition import ConditionCheckerType
from homeassistant.helpers.typing import ConfigType, TemplateVarsType

from .call_view import PhoneState
from .const import DOMAIN
from .device_trigger import _is_user
from .hub import CallflipHub

IS_TALKING = "is_talking"
IS_IN_CALL = "is_in_call"
CONDITION_TYPES = (IS_TALKING, IS_IN_CALL)


async def async_validate_condition_config(hass: HomeAssistant, config: ConfigType) -> ConfigType:
    """Check the common keys with Home Assistant's schema and ``type`` here."""
    kind = config.get(CONF_TYPE)
    if kind not in CONDITION_TYPES:
        raise vol.Invalid(f"unknown callflip condition type {kind!r}")
    base = {key: value for key, value in config.items() if key != CONF_TYPE}
    validated: ConfigType = dict(cv.DEVICE_CONDITION_BASE_SCHEMA(base))
    validated[CONF_TYPE] = kind
    return validated


async def async_get_conditions(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """A user's device offers both conditions; the PBX and the SIP devices none."""
    if not _is_user(hass, device_id):
        return []
    return [
        {CONF_CONDITION: "device", CONF_DOMAIN: DOMAIN, CONF_DEVICE_ID: device_id, CONF_TYPE: kind}
        for kind in CONDITION_TYPES
    ]


def _state_of(hass: HomeAssistant, device_id: str) -> PhoneState:
    """What the user with this device registry id is doing; idle when no PBX is loaded or the
    device is not one of its users (a removed user has no call)."""
    for entry in hass.config_entries.async_entries(DOMAIN):
        if entry.state is not ConfigEntryState.LOADED:
            continue
        hub: CallflipHub = entry.runtime_data.hub
        what = hub.identify(device_id)
        if what is not None and what[0] == "user":
            view = hub.user_call(what[1])
            return view.state if view is not None else PhoneState.IDLE
    return PhoneState.IDLE


@callback
def async_condition_from_config(hass: HomeAssistant, config: ConfigType) -> ConditionCheckerType:
    """Read the user's call at the moment the condition is checked."""
    device_id: str = config[CONF_DEVICE_ID]
    wanted = (
        {PhoneState.TALKING}
        if config[CONF_TYPE] == IS_TALKING
        else {state for state in PhoneState if state is not PhoneState.IDLE}
    )

    @callback
    def test(hass: HomeAssistant, variables: TemplateVarsType = None) -> bool:
        return _state_of(hass, device_id) in wanted

    return test
