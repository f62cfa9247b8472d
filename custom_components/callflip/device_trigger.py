"""Device triggers of a user: an incoming call, a flip, push or pull of their call started,
succeeded or failed, and a transfer they made started, succeeded or failed; and of the PBX: a new
phone was found on the network. They are event triggers on callflip's bus events, filtered on
the user's (or the PBX's) device id; a handoff (flip, push, pull) also hands every field of the
handoff event (``trigger.from_label``, ``trigger.group``, ``trigger.reason``...) as a trigger
variable, as the call steps below do.

The call steps (`call_steps`) are triggers too: a user's call answered, put on hold, taken off
hold, ended, missed; a phone ringing, answering, its call ended, its call transferred (on the
``callflip_transfer`` bus event). They listen to the
``callflip_call`` bus event themselves (a phone is found in a list of phones, which an event
trigger's exact match cannot do) and hand the automation every field of the step as a trigger
variable (``trigger.caller_number``, ``trigger.duration``...) besides ``trigger.event``.

Validation avoids extending Home Assistant's base schema with our own markers: the schema library
behind it changed between the versions we support, so the base schema checks the common keys and
this module checks ``type`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import voluptuous as vol
from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.const import CONF_DEVICE_ID, CONF_DOMAIN, CONF_PLATFORM, CONF_TYPE
from homeassistant.core import CALLBACK_TYPE, Event, HassJob, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .const import (
    DOMAIN,
    EVENT_CALL,
    EVENT_HANDOFF,
    EVENT_PHONE_DISCOVERED,
    EVENT_TRANSFER,
    HandoffType,
    TransferEventType,
)
from .hub import entries_of

INCOMING_CALL = "incoming_call"
PHONE_DISCOVERED = "phone_discovered"


def _involves(data: Mapping[str, Any], device_id: str) -> bool:
    return device_id in (data.get("caller_device_id"), data.get("callee_device_id"))


#: A user's call steps: which step, and whether this user's event is it.
USER_STEPS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "call_answered": lambda d, i: d.get("step") == "answered" and _involves(d, i),
    "call_held": lambda d, i: d.get("step") == "held" and _involves(d, i),
    "call_resumed": lambda d, i: d.get("step") == "resumed" and _involves(d, i),
    "call_ended": lambda d, i: d.get("step") == "ended" and _involves(d, i),
    "missed_call": lambda d, i: (
        d.get("step") == "ended" and bool(d.get("missed")) and d.get("callee_device_id") == i
    ),
}
#: A SIP phone's call steps.
PHONE_STEPS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "phone_ringing": lambda d, i: (
        d.get("step") == "ringing"
        and i in (d.get("phone_ids") or ())
        and d.get("caller_phone_id") != i
    ),
    "phone_answered": lambda d, i: d.get("step") == "answered" and d.get("answered_phone_id") == i,
    "phone_call_ended": lambda d, i: d.get("step") == "ended" and i in (d.get("phone_ids") or ()),
}
#: A SIP phone's transfer steps (on the transfer bus event): a call it took part in (passing
#: it on, being passed on, or answering it) was transferred.
PHONE_TRANSFER_STEPS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "phone_transferred": lambda d, i: (
        d.get("step") == "transferred" and i in (d.get("device_ids") or ())
    ),
}
TRANSFER_TYPES = tuple(kind.value for kind in TransferEventType)
USER_TRIGGER_TYPES = (
    INCOMING_CALL,
    *(kind.value for kind in HandoffType),
    *TRANSFER_TYPES,
    *USER_STEPS,
)
PHONE_TRIGGER_TYPES = (*PHONE_STEPS, *PHONE_TRANSFER_STEPS)
HUB_TRIGGER_TYPES = (PHONE_DISCOVERED,)
TRIGGER_TYPES = (*USER_TRIGGER_TYPES, *PHONE_TRIGGER_TYPES, *HUB_TRIGGER_TYPES)


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


def _is_phone(hass: HomeAssistant, device_id: str) -> bool:
    device = dr.async_get(hass).async_get(device_id)
    return device is not None and any(
        domain == DOMAIN and value.startswith("device-") for domain, value in device.identifiers
    )


def _is_hub(hass: HomeAssistant, device_id: str) -> bool:
    """The PBX's own device: its identifier is the entry id (users and devices have prefixes)."""
    device = dr.async_get(hass).async_get(device_id)
    return device is not None and any(
        domain == DOMAIN and value in entries_of(device) for domain, value in device.identifiers
    )


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, Any]]:
    """A user's device offers the call and flip triggers, a SIP phone its call steps, the PBX
    the discovery one."""
    if _is_user(hass, device_id):
        kinds: tuple[str, ...] = USER_TRIGGER_TYPES
    elif _is_phone(hass, device_id):
        kinds = PHONE_TRIGGER_TYPES
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
    step = USER_STEPS.get(kind) or PHONE_STEPS.get(kind)
    if step is not None:
        return _attach_step(
            hass, device_id, kind, matches=step, action=action, trigger_info=trigger_info
        )
    transfer_step = PHONE_TRANSFER_STEPS.get(kind)
    if transfer_step is not None:
        return _attach_step(
            hass,
            device_id,
            kind,
            matches=transfer_step,
            action=action,
            trigger_info=trigger_info,
            event_type=EVENT_TRANSFER,
        )
    if kind == INCOMING_CALL:
        event_type = EVENT_CALL
        event_data = {"callee_device_id": device_id, "state": "ringing"}
    elif kind == PHONE_DISCOVERED:
        event_type = EVENT_PHONE_DISCOVERED
        event_data = {"device_id": device_id}
    elif kind in TRANSFER_TYPES:
        event_type = EVENT_TRANSFER  # the user whose device passed the call on
        event_data = {"device_id": device_id, "type": kind}
    else:  # a flip, push or pull of the user's call: its fields as trigger variables
        return _attach_step(
            hass,
            device_id,
            kind,
            matches=_handoff_of(kind),
            action=action,
            trigger_info=trigger_info,
            event_type=EVENT_HANDOFF,
        )
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


def _handoff_of(kind: str) -> Callable[[Mapping[str, Any], str], bool]:
    """Whether a handoff bus event is this step (``type``) of this user's call."""
    return lambda data, device_id: data.get("type") == kind and data.get("device_id") == device_id


def _attach_step(
    hass: HomeAssistant,
    device_id: str,
    kind: str,
    *,
    matches: Callable[[Mapping[str, Any], str], bool],
    action: TriggerActionType,
    trigger_info: TriggerInfo,
    event_type: str = EVENT_CALL,
) -> CALLBACK_TYPE:
    """Run the action for each call step of this user or phone; the step's fields are trigger
    variables, and ``trigger.event`` is the bus event as an event trigger would give it."""
    job = HassJob(action, f"callflip {kind} trigger")
    trigger_data = trigger_info["trigger_data"]

    @callback
    def handle(event: Event[dict[str, Any]]) -> None:
        if not matches(event.data, device_id):
            return
        hass.async_run_hass_job(
            job,
            {
                "trigger": {
                    **event.data,
                    **trigger_data,
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": device_id,
                    "type": kind,
                    "event": event,
                    "description": f"callflip {kind.replace('_', ' ')}",
                }
            },
            event.context,
        )

    return hass.bus.async_listen(event_type, handle)
