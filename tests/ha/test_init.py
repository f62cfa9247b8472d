"""Set-up, unload, reload, set-up failures, HA stop and manual removal of stale devices."""

from __future__ import annotations

import socket
from unittest.mock import patch

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip import async_remove_config_entry_device
from custom_components.callflip.config_flow import probe_bind
from custom_components.callflip.const import DOMAIN

from .callflip_testing import find_device


async def test_setup_registers_devices(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    assert loaded_entry.state is ConfigEntryState.LOADED
    assert probe_bind("127.0.0.1", sip_port) == "port_in_use"
    registry = dr.async_get(hass)
    devices = dr.async_entries_for_config_entry(registry, loaded_entry.entry_id)
    assert {device.name for device in devices} == {
        loaded_entry.title,
        "Alice",
        "Bob",
        "Alice desk phone",
        "Alice mobile",
        "Bob softphone",
    }
    hub = find_device(hass, loaded_entry.entry_id, loaded_entry.entry_id)
    alice = find_device(hass, loaded_entry.entry_id, "user-u-alice")
    desk = find_device(hass, loaded_entry.entry_id, "device-d-alice-desk")
    assert hub is not None
    assert alice is not None
    assert desk is not None
    assert alice.via_device_id == hub.id
    assert desk.via_device_id == alice.id
    # The kind of phone and its account, the user's extension: none of them is a serial number.
    assert desk.model == "Desk phone, account alice-desk"
    assert desk.serial_number is None
    assert alice.model == "Extension 101"
    assert alice.serial_number is None


async def test_unload_frees_port_and_reload_works(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.NOT_LOADED
    assert probe_bind("127.0.0.1", sip_port) is None
    assert hass.states.get("binary_sensor.alice_desk_phone_registered").state == "unavailable"

    assert await hass.config_entries.async_setup(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.LOADED
    assert probe_bind("127.0.0.1", sip_port) == "port_in_use"
    assert hass.states.get("binary_sensor.alice_desk_phone_registered").state == "off"


async def test_port_in_use_at_startup_retries(
    hass: HomeAssistant, config_entry: MockConfigEntry, sip_port: int
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", sip_port))
        await hass.config_entries.async_setup(config_entry.entry_id)
        await hass.async_block_till_done()
        assert config_entry.state is ConfigEntryState.SETUP_RETRY
        assert config_entry.reason is not None
        assert str(sip_port) in config_entry.reason or "in use" in config_entry.reason
    await hass.config_entries.async_unload(config_entry.entry_id)


async def test_invalid_stored_config_is_an_error(hass: HomeAssistant, sip_port: int) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            "listen": "127.0.0.1",
            "port": sip_port,
            "domain": "x.home.arpa",
            "rtp_port_min": 42001,
            "rtp_port_max": 42999,
        },
        options={"users": []},
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    assert "even port" in entry.reason
    assert probe_bind("127.0.0.1", sip_port) is None


async def test_home_assistant_stop_frees_the_port(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    assert probe_bind("127.0.0.1", sip_port) is None
    # Unloading afterwards (as the fixture does) must not fail on the stopped PBX.
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)


async def test_manual_device_removal_only_for_stale_devices(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    registry = dr.async_get(hass)
    desk = find_device(hass, loaded_entry.entry_id, "device-d-alice-desk")
    assert desk is not None
    assert not await async_remove_config_entry_device(hass, loaded_entry, desk)
    stale = registry.async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={(DOMAIN, "device-gone")}
    )
    assert await async_remove_config_entry_device(hass, loaded_entry, stale)


async def test_remove_entry_forgets_bindings(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_storage: dict[str, object]
) -> None:
    key = f"{DOMAIN}.{loaded_entry.entry_id}.bindings"
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    assert key in hass_storage
    assert await hass.config_entries.async_remove(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert key not in hass_storage


async def test_failed_platform_setup_frees_the_port(
    hass: HomeAssistant, config_entry: MockConfigEntry, sip_port: int
) -> None:
    with patch.object(
        hass.config_entries, "async_forward_entry_setups", side_effect=RuntimeError("boom")
    ):
        await hass.config_entries.async_setup(config_entry.entry_id)
        await hass.async_block_till_done()
    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    assert probe_bind("127.0.0.1", sip_port) is None
