"""The demo configuration of scripts/develop: loopback only, and it yields the demo household."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.config import load_yaml_config_file
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN

from .callflip_testing import find_free_port
from .sip_client import SipPhone

DEVELOP_CONFIG = Path(__file__).parents[2] / "develop_config"


def _develop_configuration() -> dict[str, Any]:
    return load_yaml_config_file(str(DEVELOP_CONFIG / "configuration.yaml"))


def test_develop_config_stays_on_loopback() -> None:
    configuration = _develop_configuration()
    assert configuration["http"]["server_host"] == "127.0.0.1"
    assert configuration["http"]["server_port"] == 8123
    assert "default_config" not in configuration
    # What a person looks at in a normal installation, callflip's logbook lines among it.
    for domain in ("frontend", "recorder", "history", "logbook"):
        assert domain in configuration, domain
    # The docs' dashboard example, on the demo household.
    dashboard = configuration["lovelace"]["dashboards"]["callflip-phones"]
    assert dashboard["mode"] == "yaml"
    assert (DEVELOP_CONFIG / dashboard["filename"]).resolve() == (
        DEVELOP_CONFIG.parent / "docs" / "dashboard.yaml"
    ).resolve()
    assert configuration[DOMAIN]["sip"]["listen"] == "127.0.0.1"
    assert configuration[DOMAIN]["sip"]["port"] == 5060
    link = DEVELOP_CONFIG / "custom_components" / "callflip"
    assert (link / "manifest.json").is_file()


async def test_develop_household_is_imported(hass: HomeAssistant) -> None:
    """The first start turns the YAML household into an entry whose devices can register."""
    demo = _develop_configuration()[DOMAIN]
    port = find_free_port()
    demo = {**demo, "sip": {**demo["sip"], "port": port}}
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: demo})
    await hass.async_block_till_done()
    entries = hass.config_entries.async_entries(DOMAIN)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.state is ConfigEntryState.LOADED
    assert entry.title == "callflip home.arpa"
    assert entry.data["port"] == port
    users = {user["name"]: user for user in entry.options["users"]}
    assert {name: user["extension"] for name, user in users.items()} == {
        "Alice": "200",
        "Bob": "300",
    }
    assert [d["type"] for d in users["Alice"]["devices"]] == ["desk", "mobile", "softphone"]
    # the group Home comes along, its members and their phones by id
    (group,) = entry.options["groups"]
    by_id = {d["id"]: d["username"] for u in users.values() for d in u["devices"]}
    assert (group["name"], group["pilot"], group["ring_timer"]) == ("Home", "150", 20)
    assert [by_id[member] for member in group["members"]] == ["201", "202", "301"]
    assert group["no_answer"] == "none"
    assert entry.runtime_data.hub.pbx.config.group("Home") is not None
    for entity_id in (
        "binary_sensor.office_desk_phone_registered",
        "binary_sensor.alice_s_mobile_registered",
        "binary_sensor.alice_s_softphone_registered",
        "binary_sensor.bob_s_desk_phone_registered",
        "binary_sensor.bob_s_mobile_registered",
        "binary_sensor.alice_reachable",
        "binary_sensor.bob_reachable",
    ):
        state = hass.states.get(entity_id)
        assert state is not None, entity_id
        assert state.state == STATE_OFF

    phone = SipPhone(port=port, username="203", password="demo-203", domain="home.arpa")
    await phone.open()
    try:
        assert (await phone.register()).status == 200
        await hass.async_block_till_done()
    finally:
        phone.close()
    assert hass.states.get("binary_sensor.alice_s_softphone_registered").state == STATE_ON
    assert hass.states.get("binary_sensor.alice_reachable").state == STATE_ON
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_yaml_is_not_imported_again(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    """Once the entry exists, the UI owns the household: the YAML section changes nothing."""
    demo = _develop_configuration()[DOMAIN]
    demo = {**demo, "sip": {**demo["sip"], "port": find_free_port()}}
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: demo})
    await hass.async_block_till_done()
    assert hass.config_entries.async_entries(DOMAIN) == [config_entry]
    assert [user["name"] for user in config_entry.options["users"]] == ["Alice", "Bob"]
    assert await hass.config_entries.async_unload(config_entry.entry_id)


@pytest.mark.parametrize(
    "section",
    [
        {"sip": {"port": 5060}, "users": [{"name": "x", "extension": "1", "devices": "no"}]},
        "not a mapping",
    ],
)
async def test_invalid_yaml_is_refused(hass: HomeAssistant, section: object) -> None:
    assert not await async_setup_component(hass, DOMAIN, {DOMAIN: section})
    assert hass.config_entries.async_entries(DOMAIN) == []
