"""The ``callflip.flip``, ``callflip.hangup`` and ``callflip.transfer`` actions, and the flip the
dashboard buttons use.

A flip is asked for about a person or a phone ("move Alice's call", "move the call on the desk
phone") and optionally names where it goes. Everything that makes it impossible to start is
refused at once with a translated `ServiceValidationError`; once started, the flip takes up to its
timeout and its outcome (answered, declined, no answer) arrives as a handoff event, so the action
does not wait for it.
"""

from __future__ import annotations

import logging

import voluptuous as vol
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import HomeAssistant, ServiceCall, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv

from sip_core.features import (
    AmbiguousFlipTarget,
    CallNotFlippable,
    CallNotTalking,
    FlipDisabled,
    FlipError,
    FlipInProgress,
    NoFlipTarget,
    NoSuchCall,
    NotUsersDevice,
    TargetBusy,
    TargetIsCurrentDevice,
    TargetNotRegistered,
    TargetUnavailable,
    UnknownDevice,
)
from sip_core.features.transfer import (
    CallNotTransferable,
    TransferCallNotFound,
    TransferError,
    TransferInProgress,
    TransferNotAllowed,
    UnknownTransferTarget,
)

from .call_view import CallView
from .const import (
    ATTR_NUMBER,
    ATTR_TARGET_DEVICE_ID,
    ATTR_TIMEOUT,
    DOMAIN,
    MAX_FLIP_TIMEOUT,
    MIN_FLIP_TIMEOUT,
    SERVICE_FLIP,
    SERVICE_HANGUP,
    SERVICE_TRANSFER,
)
from .group_options import find_group, groups_from_options
from .hub import CallflipHub
from .security import async_setup_security_services

_LOGGER = logging.getLogger(__name__)

_DEVICE_IDS = vol.All(cv.ensure_list, [cv.string], vol.Length(min=1))

FLIP_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): _DEVICE_IDS,
        vol.Optional(ATTR_TARGET_DEVICE_ID): cv.string,
        vol.Optional(ATTR_TIMEOUT): vol.All(
            vol.Coerce(float), vol.Range(min=MIN_FLIP_TIMEOUT, max=MAX_FLIP_TIMEOUT)
        ),
    }
)
HANGUP_SCHEMA = vol.Schema({vol.Required(ATTR_DEVICE_ID): _DEVICE_IDS})
TRANSFER_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): _DEVICE_IDS,
        vol.Optional(ATTR_NUMBER): vol.All(cv.string, vol.Strip),
        vol.Optional(ATTR_TARGET_DEVICE_ID): cv.string,
    }
)

# Why sip_core refused a transfer -> the translation key of the message the person sees.
TRANSFER_ERRORS: dict[type[TransferError], str] = {
    TransferNotAllowed: "transfer_not_allowed",  # before UnknownTransferTarget, its base
    TransferCallNotFound: "no_call",
    CallNotTransferable: "call_not_transferable",
    TransferInProgress: "transfer_in_progress",
    UnknownTransferTarget: "unknown_transfer_target",
}

# Why sip_core refused a flip -> the translation key of the message the person sees.
FLIP_ERRORS: dict[type[FlipError], str] = {
    CallNotTalking: "call_not_talking",  # before CallNotFlippable, of which it is a kind
    TargetBusy: "target_busy",
    NoSuchCall: "no_call",
    CallNotFlippable: "call_not_flippable",
    FlipInProgress: "flip_in_progress",
    UnknownDevice: "unknown_device",
    NotUsersDevice: "not_users_device",
    TargetIsCurrentDevice: "target_is_current_device",
    TargetNotRegistered: "target_not_registered",
    NoFlipTarget: "no_flip_target",
    AmbiguousFlipTarget: "ambiguous_flip_target",
    FlipDisabled: "flip_disabled",
    TargetUnavailable: "target_unavailable",
}


def validation_error(key: str, **placeholders: str) -> ServiceValidationError:
    """A refusal the person sees in their language (key: under "exceptions" in strings.json)."""
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders=placeholders or None,
    )


def _hub(hass: HomeAssistant) -> CallflipHub:
    for entry in hass.config_entries.async_entries(DOMAIN):
        if entry.state is ConfigEntryState.LOADED:
            hub: CallflipHub = entry.runtime_data.hub
            return hub
    raise validation_error("not_loaded")


def _call_of(hub: CallflipHub, ha_device_id: str) -> tuple[CallView, str]:
    """The call of a user or SIP device, and the name to tell the person about it."""
    what = hub.identify(ha_device_id)
    if what is None or what[0] not in ("user", "device"):
        raise validation_error("not_a_phone")
    kind, key = what
    if kind == "user":
        user = next(user for user in hub.users if user["id"] == key)
        name = user["name"]
        view = hub.user_call(key)
    else:
        owned = hub.device(key)
        assert owned is not None  # identify() only knows configured devices
        name = owned.device["label"]
        view = hub.device_call(key)
    if view is None:
        raise validation_error("no_call", name=name)
    return view, name


def _target_username(hub: CallflipHub, ha_device_id: str) -> str:
    what = hub.identify(ha_device_id)
    if what is None or what[0] != "device":
        raise validation_error("target_not_a_phone")
    owned = hub.device(what[1])
    assert owned is not None
    return owned.device["username"]


@callback
def async_start_flip(
    hub: CallflipHub, view: CallView, name: str, target: str | None, timeout: float | None
) -> None:
    """Start moving the call of ``view`` (on ``view.username``) to ``target`` (or the one
    other registered device); raises ServiceValidationError when it cannot start."""
    try:
        hub.pbx.flip(view.call_id, target, timeout, device=view.username)
    except FlipError as err:
        key = next(key for kind, key in FLIP_ERRORS.items() if isinstance(err, kind))
        raise validation_error(
            key,
            name=name,
            device=hub.device_label(view.username),
            target=hub.device_label(target) if target else "",
            details=str(err),
        ) from err
    _LOGGER.debug("Flip of call %s from %s to %s started", view.call_id, view.username, target)


async def _async_flip(call: ServiceCall) -> None:
    hub = _hub(call.hass)
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_call_only")
    view, name = _call_of(hub, device_ids[0])
    target_id: str | None = call.data.get(ATTR_TARGET_DEVICE_ID)
    target = _target_username(hub, target_id) if target_id else None
    async_start_flip(hub, view, name, target, call.data.get(ATTR_TIMEOUT))


async def _async_hangup(call: ServiceCall) -> None:
    hub = _hub(call.hass)
    # Every call is found before any is ended: a mistake in the list ends nothing.
    views = [_call_of(hub, device_id)[0] for device_id in call.data[ATTR_DEVICE_ID]]
    for call_id in dict.fromkeys(view.call_id for view in views):
        hub.pbx.hangup(call_id)


def _transfer_target(hub: CallflipHub, data: dict[str, object]) -> str:
    """What the call goes to: the number given, or the chosen phone's account, the chosen
    user's extension or the chosen group's pilot (exactly one of ``number`` and
    ``target_device_id``)."""
    number = data.get(ATTR_NUMBER)
    target_id = data.get(ATTR_TARGET_DEVICE_ID)
    if bool(number) == bool(target_id):
        raise validation_error("transfer_target_missing")
    if number:
        return str(number)
    what = hub.identify(str(target_id))
    if what is None or what[0] == "hub":
        raise validation_error("transfer_target_not_a_phone")
    kind, key = what
    if kind == "user":
        return next(user["extension"] for user in hub.users if user["id"] == key)
    if kind == "group":  # a Personal Ring Group: its pilot number rings it
        group = find_group(groups_from_options(hub.entry.options), key)
        if group is None:
            raise validation_error("unknown_group")
        return str(group["pilot"])
    owned = hub.device(key)
    assert owned is not None
    return str(owned.device["username"])


async def _async_transfer(call: ServiceCall) -> None:
    """Blind transfer: the chosen user's or phone's side leaves, the other party goes to the
    target; the outcome (answered, or rung back) arrives as transfer events."""
    hub = _hub(call.hass)
    device_ids: list[str] = call.data[ATTR_DEVICE_ID]
    if len(device_ids) != 1:
        raise validation_error("one_call_only")
    view, name = _call_of(hub, device_ids[0])
    target = _transfer_target(hub, dict(call.data))
    try:
        hub.pbx.transfer(view.call_id, target, device=view.username)
    except TransferError as err:
        key = next(key for kind, key in TRANSFER_ERRORS.items() if isinstance(err, kind))
        raise validation_error(key, name=name, target=target, details=str(err)) from err
    _LOGGER.debug("Transfer of call %s from %s to %s started", view.call_id, view.username, target)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions once, for whichever entry is loaded when they are called."""
    hass.services.async_register(DOMAIN, SERVICE_FLIP, _async_flip, schema=FLIP_SCHEMA)
    hass.services.async_register(DOMAIN, SERVICE_HANGUP, _async_hangup, schema=HANGUP_SCHEMA)
    async_setup_security_services(hass)
    hass.services.async_register(DOMAIN, SERVICE_TRANSFER, _async_transfer, schema=TRANSFER_SCHEMA)
    async_setup_handoff_services(hass)


def async_setup_handoff_services(hass: HomeAssistant) -> None:
    """``callflip.push`` and ``callflip.pull`` (`handoff_services`, imported here late: it
    uses this module's helpers)."""
    from .handoff_services import async_setup_handoff_services as setup  # noqa: PLC0415

    setup(hass)
