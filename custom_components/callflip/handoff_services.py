"""The ``callflip.push`` and ``callflip.pull`` actions: Handoff in a Personal Ring Group.

``push`` hands the current call of a person or phone to its group: every other present, free
member rings, and the call moves to whoever answers. ``pull`` brings the group's call in progress
to a phone: it rings, and the call moves to it when it answers. The PBX checks the same rules as
for its ``*5`` code; a refusal is a translated `ServiceValidationError` whose key names the
reason, and the outcome of a started handoff arrives as a handoff event.
"""

from __future__ import annotations

import voluptuous as vol
from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import HomeAssistant, ServiceCall, callback
from homeassistant.helpers import config_validation as cv

from sip_core.features.handoff import HandoffError, Refusal

from .const import DOMAIN, SERVICE_PULL, SERVICE_PUSH
from .services import _call_of, _hub, _target_username, validation_error

_ONE_DEVICE = vol.All(cv.ensure_list, [cv.string], vol.Length(min=1))
PUSH_SCHEMA = vol.Schema({vol.Required(ATTR_DEVICE_ID): _ONE_DEVICE})
PULL_SCHEMA = vol.Schema({vol.Required(ATTR_DEVICE_ID): _ONE_DEVICE})

# Why the PBX refused -> the translation key of the message the person sees.
HANDOFF_ERRORS: dict[Refusal, str] = {
    Refusal.NO_SUCH_CALL: "handoff_no_such_call",
    Refusal.UNKNOWN_DEVICE: "handoff_unknown_device",
    Refusal.NOT_MEMBER: "handoff_not_member",
    Refusal.NOT_REGISTERED: "handoff_not_registered",
    Refusal.NOT_TALKING: "handoff_not_talking",
    Refusal.NOT_TWO_PARTY: "handoff_not_two_party",
    Refusal.GROUP_RINGING: "handoff_group_ringing",
    Refusal.OPERATION_IN_PROGRESS: "handoff_operation_in_progress",
    Refusal.NO_MEMBER_AVAILABLE: "handoff_no_member_available",
    Refusal.NOTHING_TO_PULL: "handoff_nothing_to_pull",
    Refusal.PULLER_BUSY: "handoff_puller_busy",
    Refusal.NO_COMMON_CODEC: "handoff_no_common_codec",
    Refusal.UNANSWERED: "handoff_failed",
    Refusal.FAILED: "handoff_failed",
}


def _refused(err: HandoffError, name: str) -> Exception:
    return validation_error(HANDOFF_ERRORS[err.refusal], name=name, details=str(err))


def _one(call: ServiceCall) -> str:
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_call_only")
    return device_ids[0]


async def _async_push(call: ServiceCall) -> None:
    hub = _hub(call.hass)
    view, name = _call_of(hub, _one(call))
    try:
        hub.pbx.push(view.call_id, device=view.username)
    except HandoffError as err:
        raise _refused(err, name) from err


async def _async_pull(call: ServiceCall) -> None:
    hub = _hub(call.hass)
    username = _target_username(hub, _one(call))
    try:
        hub.pbx.pull(username)
    except HandoffError as err:
        raise _refused(err, hub.device_label(username)) from err


@callback
def async_setup_handoff_services(hass: HomeAssistant) -> None:
    """Register ``callflip.push`` and ``callflip.pull`` (once, from async_setup)."""
    hass.services.async_register(DOMAIN, SERVICE_PUSH, _async_push, schema=PUSH_SCHEMA)
    hass.services.async_register(DOMAIN, SERVICE_PULL, _async_pull, schema=PULL_SCHEMA)
