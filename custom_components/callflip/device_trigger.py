"""Device triggers of a user: an incoming call, and a flip of their call started, succeeded or
failed; and of the PBX: a new phone was found on the network. They are event triggers on
callflip's bus events, filtered on the user's (or the PBX's) device id.

Validation avoids extending Home Assistant's base schema with our own markers: the schema library
behind it changed between the versions we support, so the base schema checks the common keys and
this module checks ``type`` itself.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.const import CONF_DEVICE_ID, CONF_DOMAIN, CONF_PLATFORM, CONF_TYPE
from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, EVENT_CALL, EVENT_HANDOFF, EVENT_PHONE_DISCOVERED, HandoffType
from .hub import entries_of

INCOMING_CALL = "incoming_call"
PHONE_DISCOVERED = "phone_discovered"
USER_TRIGGER_TYPES = (INCOMING_CALL, *(kind.value for kind in HandoffType))
HUB_TRIGGER_TYPES = (PHONE_DISCOVERED,)
TRIGGER_TYPES = (*USER_TRIGGER_TYPES, *HUB_TRIGGER_TYPES)


async def async_validate_trigger_config(hass: HomeAssistant, config: ConfigType) -> ConfigType:
    """Check the common keys with Home Assistant's schema and ``type`` here."""
    kind = config.get(CONF_TYPE)
    if kind not in TRIGGER_TYPES:
        raise vol.Invalid(f"unknown callflip trigger type {kind!r}")
    base = {key: value for key, value in config.items() if key != CONF_TYPE}
    validated: ConfigType = dict(DEVICE_TRIGGER_BASE_SCHEMA(base))
    validated[CONF_TYPE] = kind
    return validated


def _is_user(hass: HomeAssistant, device_id: str) -> bool:
    device = dr.async_get(hass).async_get(device_id)
    return device is not None and any(
        domain == DOMAIN and value.startswith("user-") for domain, value in device.identifiers
    )


def _is_hub(hass: HomeAssistant, device_id: str) -> bool:
    """The PBX's own device: its identifier is the entry id (users and devices have prefixes)."""
    device = dr.async_get(hass).async_get(device_id)
    return device is not None and any(
        domain == DOMAIN and value in entries_of(device) for domain, value in device.identifiers
    )


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """A user's device offers the call and flip triggers, the PBX the discovery one; SIP
    devices offer none."""
    if _is_user(hass, device_id):
        kinds: tuple[str, ...] = USER_TRIGGER_TYPES
    elif _is_hub(hass, device_id):
        kinds = HUB_TRIGGER_TYPES
    else:
        return []
    return [
        {CONF_PLATFORM: "device", CONF_DOMAIN: DOMAIN, CONF_DEVICE_ID: device_id, CONF_TYPE: kind}
        for kind in kinds
    ]


async def async_attach_trigger(
    hass: HomeAssistant,
    config: ConfigType,
    action: TriggerActionType,
    trigger_info: TriggerInfo,
) -> CALLBACK_TYPE:
    """Listen for the bus event of this trigger, for this user only."""
    device_id = config[CONF_DEVICE_ID]
    kind = config[CONF_TYPE]
    if kind == INCOMING_CALL:
        event_type = EVENT_CALL
        event_data = {"callee_device_id": device_id, "state": "ringing"}
    elif kind == PHONE_DISCOVERED:
        event_type = EVENT_PHONE_DISCOVERED
        event_data = {"device_id": device_id}
    else:
        event_type = EVENT_HANDOFF
        event_data = {"device_id": device_id, "type": kind}
    event_config = event_trigger.TRIGGER_SCHEMA(
        {
            "platform": "event",
            "event_type": event_type,
            "event_data": event_data,
        }
    )
    return await event_trigger.async_attach_trigger(
        hass, event_config, action, trigger_info, platform_type="device"
    )
