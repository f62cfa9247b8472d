"""callflip: run callflip's own SIP PBX inside Home Assistant.

Set-up starts the ``sip_core`` PBX on the configured address and port with the users and devices of
the options, restores the registrations and the call history persisted at the last stop, and
registers every user and SIP device in the device registry. Editing users or devices applies to the
running PBX (no reload: calls in progress stay up); changing the server settings reloads the entry.
"""

from __future__ import annotations

import logging
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import SOURCE_IMPORT
from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ConfigEntryError, ConfigEntryNotReady
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.typing import ConfigType

from sip_core.config import ConfigError, config_from_mapping
from sip_core.pbx import Pbx
from sip_core.transport import TransportError

from .announce import async_setup_announce_service
from .bundled_blueprints import async_setup_blueprints
from .click_to_dial import async_setup_call_service
from .const import DOMAIN
from .data import CallflipConfigEntry, CallflipData
from .discovery import PhoneDiscovery
from .group_options import group_identifier, groups_from_options
from .history import CallHistory, history_store
from .hub import CallflipHub, bindings_store, device_identifier, hub_identifier, user_identifier
from .issues import (
    async_cannot_listen,
    async_check_passwords,
    async_listening,
    async_remove_all,
    async_yaml_section_ignored,
)
from .label_speech import LabelSpeech, async_remove_label_cache
from .play import async_setup_play_service
from .provisioning_view import ProvisioningView
from .runtime_state import RuntimeStateStore, state_store
from .security import SecurityMonitor, with_security
from .services import async_setup_services
from .transfer_options import apply_transfer, with_transfer
from .trunks import TrunkMonitor, entry_config
from .users import iter_devices, users_from_options

_LOGGER = logging.getLogger(__name__)

PLATFORMS: list[Platform] = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.EVENT,
    Platform.SELECT,
    Platform.SENSOR,
    Platform.SWITCH,
]


def _pbx_yaml(value: Any) -> dict[str, Any]:
    """Accept a ``callflip:`` section only if sip_core would run it (the runner's YAML schema)."""
    if not isinstance(value, dict):
        raise vol.Invalid("expected the PBX configuration (sip, rtp, users)")
    try:
        config_from_mapping(value)
    except ConfigError as err:
        raise vol.Invalid(str(err)) from err
    return value


CONFIG_SCHEMA = vol.Schema({vol.Optional(DOMAIN): _pbx_yaml}, extra=vol.ALLOW_EXTRA)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Import a standalone runner's configuration once, when there is no entry yet.

    This is how the demo configuration (develop_config) and someone moving from
    ``python -m sip_core`` get their household; from then on the UI is where it is edited,
    and the YAML section is ignored while the entry exists. The actions are registered here,
    once, so that automations using them validate even while the entry is not loaded. The
    bundled blueprints are put in the configuration's blueprints folder once Home Assistant runs.
    """
    async_setup_services(hass)
    async_setup_play_service(hass)
    async_setup_announce_service(hass)
    async_setup_call_service(hass)
    async_setup_blueprints(hass)
    if DOMAIN in config and not hass.config_entries.async_entries(DOMAIN, include_ignore=False):
        hass.async_create_task(
            hass.config_entries.flow.async_init(
                DOMAIN, context={"source": SOURCE_IMPORT}, data=config[DOMAIN]
            )
        )
    else:
        # With an entry, the section is not read (the import raises the issue the first time).
        async_yaml_section_ignored(hass, present=DOMAIN in config)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: CallflipConfigEntry) -> bool:
    """Start the PBX of this entry."""
    users = users_from_options(entry.options)
    try:
        config = with_security(entry_config(entry.data, entry.options), entry.options)
        config = with_transfer(config, entry.options)
    except ConfigError as err:
        raise ConfigEntryError(
            translation_domain=DOMAIN,
            translation_key="invalid_config",
            translation_placeholders={"error": str(err)},
        ) from err
    store = bindings_store(hass, entry.entry_id)
    stored = await store.async_load()
    history = CallHistory(history_store(hass, entry.entry_id))
    runtime = RuntimeStateStore(state_store(hass, entry.entry_id))
    pbx = Pbx(
        config,
        bindings=stored["bindings"] if stored else None,
        history=await history.async_load(),
        state=await runtime.async_load(),
    )
    try:
        await pbx.start()
    except TransportError as err:
        async_cannot_listen(hass, entry, str(err))
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="cannot_listen",
            translation_placeholders={"error": str(err)},
        ) from err
    async_listening(hass)
    async_check_passwords(hass, users)
    hub = CallflipHub(hass, entry, pbx, store, users, history=history)
    security = SecurityMonitor(hass, entry, pbx)
    trunks = TrunkMonitor(hass, entry, pbx)
    try:
        hub.async_start()
        security.async_start()
        trunks.async_start()
        entry.runtime_data = CallflipData(hub, security, runtime, trunks)
        await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    except BaseException:
        trunks.async_stop()
        security.async_stop()
        await hub.async_stop()
        raise
    _register_provisioning_view(hass)
    labels = LabelSpeech(hass, entry, hub)
    labels.async_start()
    entry.runtime_data.labels = labels
    entry.async_on_unload(labels.async_stop)
    discovery = PhoneDiscovery(hass, entry, hub)
    discovery.async_start()
    entry.async_on_unload(discovery.async_stop)

    async def _async_stop_on_shutdown(_event: Event) -> None:
        await hub.async_stop()

    entry.async_on_unload(
        hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop_on_shutdown)
    )
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    _LOGGER.debug("callflip PBX listening on %s", pbx.local_address)
    return True


_VIEW_REGISTERED = f"{DOMAIN}_provisioning_view"


def _register_provisioning_view(hass: HomeAssistant) -> None:
    """Serve adopted phones their files (once per Home Assistant run; needs its HTTP server)."""
    if hass.data.get(_VIEW_REGISTERED) or "http" not in hass.config.components:
        return
    hass.http.register_view(ProvisioningView())
    hass.data[_VIEW_REGISTERED] = True


async def _async_options_updated(hass: HomeAssistant, entry: CallflipConfigEntry) -> None:
    """Apply edited users and devices to the running PBX."""
    users = users_from_options(entry.options)
    entry.runtime_data.hub.async_apply_options(entry.options, users)
    entry.runtime_data.security.async_apply_options(entry.options)
    apply_transfer(entry.runtime_data.hub.pbx, entry.options)
    if entry.runtime_data.trunks is not None:
        await entry.runtime_data.trunks.async_apply_options(entry.options)
    async_check_passwords(hass, users)


async def async_unload_entry(hass: HomeAssistant, entry: CallflipConfigEntry) -> bool:
    """Stop the PBX and free its ports."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        if entry.runtime_data.trunks is not None:
            entry.runtime_data.trunks.async_stop()
        entry.runtime_data.security.async_stop()
        await entry.runtime_data.hub.async_stop()
        if entry.runtime_data.runtime is not None:
            await entry.runtime_data.runtime.async_save()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: CallflipConfigEntry) -> None:
    """Forget the persisted registrations, call history and repair issues of a removed entry."""
    await bindings_store(hass, entry.entry_id).async_remove()
    await history_store(hass, entry.entry_id).async_remove()
    await state_store(hass, entry.entry_id).async_remove()
    await async_remove_label_cache(hass, entry.entry_id)
    async_remove_all(hass)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: CallflipConfigEntry, device_entry: dr.DeviceEntry
) -> bool:
    """Allow deleting a device by hand only when it is no longer configured (a stale one)."""
    users = users_from_options(entry.options)
    configured = {
        hub_identifier(entry.entry_id),
        *(user_identifier(user["id"]) for user in users),
        *(device_identifier(owned.device["id"]) for owned in iter_devices(users)),
        *(group_identifier(group["id"]) for group in groups_from_options(entry.options)),
    }
    return not device_entry.identifiers & configured
