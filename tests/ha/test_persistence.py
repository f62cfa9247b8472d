"""Registrations survive a reload and a restart of Home Assistant (HA's Store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN

from .callflip_testing import DOMAIN_NAME
from .sip_client import SipPhone


def _state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_bindings_survive_reload(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    hass_storage: dict[str, Any],
) -> None:
    phone = make_phone("alice-mobile")
    await phone.open()
    assert (await phone.register(expires=600)).status == 200
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor.alice_mobile_registered") == STATE_ON

    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()

    stored = hass_storage[f"{DOMAIN}.{loaded_entry.entry_id}.bindings"]["data"]["bindings"]
    assert [record["username"] for record in stored] == ["alice-mobile"]
    assert stored[0]["remote_port"] == phone.local_port
    # The phone did not register again, yet the new PBX knows it.
    assert _state(hass, "binary_sensor.alice_mobile_registered") == STATE_ON
    assert _state(hass, "sensor.alice_mobile_contact_address") == f"127.0.0.1:{phone.local_port}"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_bindings_restored_at_startup(
    hass: HomeAssistant, config_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """What an earlier run of Home Assistant saved is live as soon as the entry is set up."""
    now = time.time()
    record = {
        "username": "bob-soft",
        "contact": "<sip:bob-soft@127.0.0.1:5999>",
        "registered_at": now - 100,
        "expires_at_wall": now + 3000,
        "call_id": "restart-test",
        "cseq": 7,
        "q": None,
        "user_agent": "Restored-Phone/2",
        "instance_id": None,
        "transport": "TCP",
        "remote_host": "127.0.0.1",
        "remote_port": 5999,
        "local_host": "127.0.0.1",
        "local_port": config_entry.data["port"],
    }
    expired = {**record, "username": "alice-desk", "expires_at_wall": now - 10}
    hass_storage[f"{DOMAIN}.{config_entry.entry_id}.bindings"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{config_entry.entry_id}.bindings",
        "data": {"bindings": [record, expired]},
    }
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor.bob_softphone_registered") == STATE_ON
    assert _state(hass, "sensor.bob_softphone_transport") == "tcp"
    assert _state(hass, "sensor.bob_softphone_user_agent") == "Restored-Phone/2"
    assert _state(hass, "binary_sensor.alice_desk_phone_registered") == STATE_OFF
    assert DOMAIN_NAME in config_entry.title
    await hass.config_entries.async_unload(config_entry.entry_id)
