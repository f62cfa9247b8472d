"""Bans in Home Assistant: the repair issue, the sensor, the unban action, the security options."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.security import ISSUE_OPEN_TO_INTERNET, ban_issue_id

from .sip_client import SipPhone

try:  # Home Assistant 2025.4: the repairs platforms of loaded integrations are processed here
    from homeassistant.components.repairs.issue_handler import (
        async_process_repairs_platforms,
    )
except ImportError:  # gone from current releases, which load a platform for its first fix flow
    async_process_repairs_platforms = None

BANS_SENSOR = "sensor.callflip_test_home_arpa_banned_addresses"
LOOPBACK = "127.0.0.1"


async def guess_five_times(make_phone: Callable[..., SipPhone]) -> None:
    intruder = make_phone("alice-desk", password="not-the-password")
    await intruder.open()
    for _ in range(5):
        response = await intruder.register()
        assert response.status == 401


async def unban(hass: HomeAssistant, address: str) -> None:
    await hass.services.async_call(DOMAIN, "unban", {"address": address}, blocking=True)


async def test_a_ban_shows_as_a_repair_issue_and_in_the_sensor_until_unbanned(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    state = hass.states.get(BANS_SENSOR)
    assert state is not None
    assert state.state == "0"
    await guess_five_times(make_phone)
    await hass.async_block_till_done()

    issue = ir.async_get(hass).async_get_issue(DOMAIN, ban_issue_id(LOOPBACK))
    assert issue is not None
    assert issue.translation_key == "address_banned"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["address"] == LOOPBACK
    assert issue.translation_placeholders["username"] == "alice-desk"
    assert issue.translation_placeholders["failures"] == "5"
    state = hass.states.get(BANS_SENSOR)
    assert state is not None
    assert state.state == "1"
    [ban] = state.attributes["addresses"]
    assert (ban["address"], ban["username"], ban["failures"]) == (LOOPBACK, "alice-desk", 5)

    # Banned: even the right password gets no answer.
    desk = make_phone("alice-desk")
    await desk.open()
    with pytest.raises(TimeoutError):
        await desk.register()

    await unban(hass, LOOPBACK)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, ban_issue_id(LOOPBACK)) is None
    state = hass.states.get(BANS_SENSOR)
    assert state is not None
    assert state.state == "0"
    again = make_phone("alice-desk")
    await again.open()
    assert (await again.register()).status == 200


async def test_unban_refuses_bad_input_with_translated_errors(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    for address, key in (("kitchen phone", "invalid_address"), ("192.168.1.9", "not_banned")):
        with pytest.raises(ServiceValidationError) as caught:
            await unban(hass, address)
        assert caught.value.translation_key == key
        assert caught.value.translation_placeholders == {"address": address}
    await hass.config_entries.async_unload(loaded_entry.entry_id)
    with pytest.raises(ServiceValidationError) as caught:
        await unban(hass, "192.168.1.9")
    assert caught.value.translation_key == "not_loaded"


async def security_step(hass: HomeAssistant, entry: MockConfigEntry, **answers: object) -> dict:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert "security" in result["menu_options"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "security"}
    )
    assert result["step_id"] == "security"
    answers = {
        "max_failures": 5,
        "failure_window": 300,
        "ban_time": 1800,
        "never_ban": "",
        "allow_public": False,
        **answers,
    }
    return dict(await hass.config_entries.options.async_configure(result["flow_id"], answers))


async def test_security_options_apply_live_and_keep_the_users(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    users = loaded_entry.options["users"]
    result = await security_step(
        hass, loaded_entry, max_failures=3, never_ban="192.168.1.0/24, fd00::/8", allow_public=True
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.options["users"] == users
    assert loaded_entry.options["security"] == {
        "max_failures": 3,
        "failure_window": 300,
        "ban_time": 1800,
        "never_ban": ["192.168.1.0/24", "fd00::/8"],
        "allow_public": True,
    }
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.security.max_failures == 3
    assert pbx.config.security.allow_public
    # Open to the internet: a repair issue says so while it lasts.
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_OPEN_TO_INTERNET) is not None
    await security_step(hass, loaded_entry)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_OPEN_TO_INTERNET) is None
    assert not pbx.config.security.allow_public
    # Editing users afterwards keeps the security options.
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "remove_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": users[1]["id"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert loaded_entry.options["security"]["max_failures"] == 5
    assert len(loaded_entry.options["users"]) == len(users) - 1


async def test_bad_security_options_are_refused_with_a_field_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await security_step(hass, loaded_entry, never_ban="192.168.1.0/24, the garage")
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"never_ban": "invalid_security"}
    assert "the garage" in result["description_placeholders"]["error"]
    assert "security" not in loaded_entry.options


async def test_an_entry_open_to_the_internet_shows_the_issue_from_the_start(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    hass.config_entries.async_update_entry(
        config_entry, options={**config_entry.options, "security": {"allow_public": True}}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_OPEN_TO_INTERNET) is not None
    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, ISSUE_OPEN_TO_INTERNET) is None


async def test_the_ban_issue_fix_lifts_the_ban(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    assert await async_setup_component(hass, "repairs", {})
    if async_process_repairs_platforms is not None:
        await async_process_repairs_platforms(hass)
    await guess_five_times(make_phone)
    await hass.async_block_till_done()
    issue = ir.async_get(hass).async_get_issue(DOMAIN, ban_issue_id(LOOPBACK))
    assert issue is not None
    assert issue.is_fixable
    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = await manager.async_init(DOMAIN, data={"issue_id": ban_issue_id(LOOPBACK)})
    assert result["step_id"] == "confirm"
    assert result["description_placeholders"]["username"] == "alice-desk"
    result = await manager.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.hub.pbx.bans() == []
    assert ir.async_get(hass).async_get_issue(DOMAIN, ban_issue_id(LOOPBACK)) is None
    desk = make_phone("alice-desk")
    await desk.open()
    assert (await desk.register()).status == 200
