"""Entities follow real registrations: a phone registers over 127.0.0.1 and they change."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNKNOWN, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.sensor import contact_address
from sip_core.registrar import Binding
from sip_core.transport import Address, Source, TransportKind

from .sip_client import SipPhone


def _state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def test_diagnostic_entities_are_disabled_by_default(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Where a phone registered from is for troubleshooting: off until someone turns it on."""
    registry = er.async_get(hass)
    entries = er.async_entries_for_config_entry(registry, loaded_entry.entry_id)
    diagnostic = [entry for entry in entries if entry.entity_category is EntityCategory.DIAGNOSTIC]
    assert len(diagnostic) == 3 * 3
    for entry in diagnostic:
        assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION, entry.entity_id
        assert hass.states.get(entry.entity_id) is None
    enabled = [entry for entry in entries if entry.disabled_by is None]
    assert len(enabled) == len(entries) - 9
    assert all(hass.states.get(entry.entity_id) is not None for entry in enabled)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_entities_exist_with_translated_names(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    registry = er.async_get(hass)
    entries = er.async_entries_for_config_entry(registry, loaded_entry.entry_id)
    # 3 devices x (registered, call state, address, transport, user agent, flip button, hang-up
    # button, do not disturb, make busy, call forward), 2 users x (reachable, active call, last
    # handoff, handoff events, hang-up button, flip enabled), 3 hub sensors (registered devices,
    # banned addresses, last call).
    assert len(entries) == 3 * 10 + 2 * 6 + 3
    assert all(entry.unique_id for entry in entries)
    desk = registry.async_get("binary_sensor.alice_desk_phone_registered")
    assert desk is not None
    assert desk.unique_id == "d-alice-desk-registered"
    assert desk.has_entity_name
    assert desk.translation_key == "registered"
    address = registry.async_get("sensor.alice_desk_phone_contact_address")
    assert address is not None
    assert address.entity_category is EntityCategory.DIAGNOSTIC
    assert registry.async_get("sensor.alice_desk_phone_transport") is not None
    assert registry.async_get("sensor.alice_desk_phone_user_agent") is not None
    assert registry.async_get("binary_sensor.alice_reachable") is not None
    state = hass.states.get("binary_sensor.alice_desk_phone_registered")
    assert state is not None
    assert state.attributes["friendly_name"] == "Alice desk phone Registered"
    # Not "connectivity": a registration is not a connection; the states say Yes and No.
    assert "device_class" not in state.attributes
    assert state.state == STATE_OFF
    assert _state(hass, "sensor.alice_desk_phone_contact_address") == STATE_UNKNOWN
    assert _state(hass, "sensor.callflip_test_home_arpa_registered_devices") == "0"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_registration_turns_entities_on_and_off(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    phone = make_phone("alice-desk")
    await phone.open()
    response = await phone.register(expires=300)
    assert response.status == 200
    await hass.async_block_till_done()

    assert _state(hass, "binary_sensor.alice_desk_phone_registered") == STATE_ON
    assert _state(hass, "binary_sensor.alice_reachable") == STATE_ON
    assert _state(hass, "binary_sensor.alice_mobile_registered") == STATE_OFF
    assert _state(hass, "binary_sensor.bob_reachable") == STATE_OFF
    assert (
        _state(hass, "sensor.alice_desk_phone_contact_address") == f"127.0.0.1:{phone.local_port}"
    )
    assert _state(hass, "sensor.alice_desk_phone_transport") == "udp"
    assert _state(hass, "sensor.alice_desk_phone_user_agent") == "callflip-test-phone/1.0"
    assert _state(hass, "sensor.callflip_test_home_arpa_registered_devices") == "1"

    response = await phone.register(expires=0)
    assert response.status == 200
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor.alice_desk_phone_registered") == STATE_OFF
    assert _state(hass, "binary_sensor.alice_reachable") == STATE_OFF
    assert _state(hass, "sensor.alice_desk_phone_contact_address") == STATE_UNKNOWN
    assert _state(hass, "sensor.callflip_test_home_arpa_registered_devices") == "0"


async def test_wrong_password_stays_off(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    phone = make_phone("bob-soft", password="Not-The-Right-One-0")
    await phone.open()
    response = await phone.register()
    assert response.status in (401, 403)
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor.bob_softphone_registered") == STATE_OFF


async def test_device_added_in_options_registers_without_reload(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """A registered phone stays registered while another device is added, live."""
    desk = make_phone("alice-desk")
    await desk.open()
    assert (await desk.register()).status == 200
    hub_before = loaded_entry.runtime_data.hub

    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_device"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "owner": "u-bob",
            "username": "bob-desk",
            "password": "Bobs-Desk-Secret-77",
            "label": "Bob desk phone",
            "type": "desk",
            "priority": 0,
        },
    )
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.hub is hub_before  # no reload
    assert _state(hass, "binary_sensor.alice_desk_phone_registered") == STATE_ON
    assert _state(hass, "binary_sensor.bob_desk_phone_registered") == STATE_OFF

    bob_desk = make_phone("bob-desk", password="Bobs-Desk-Secret-77")
    await bob_desk.open()
    assert (await bob_desk.register()).status == 200
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor.bob_desk_phone_registered") == STATE_ON
    assert _state(hass, "binary_sensor.bob_reachable") == STATE_ON
    assert _state(hass, "sensor.callflip_test_home_arpa_registered_devices") == "2"


async def test_removed_device_can_no_longer_register(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "remove_device"}
    )
    await hass.config_entries.options.async_configure(result["flow_id"], {"device": "d-bob-soft"})
    await hass.async_block_till_done()
    phone = make_phone("bob-soft")
    await phone.open()
    assert (await phone.register()).status in (401, 403, 404)
    assert hass.states.get("binary_sensor.bob_softphone_registered") is None


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_contact_address_shows_contact_and_source_when_they_differ(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """A phone that registers from one port and takes calls on another: both are shown."""
    phone = make_phone("alice-desk")
    await phone.open()
    response = await phone.register(contact_port=phone.local_port + 1)
    assert response.status == 200
    await hass.async_block_till_done()
    assert _state(hass, "sensor.alice_desk_phone_contact_address") == (
        f"127.0.0.1:{phone.local_port + 1} (registered from 127.0.0.1:{phone.local_port})"
    )


def test_contact_address_of_a_contact_that_does_not_parse() -> None:
    """Only the source can be shown then (the registrar keeps what the phone sent)."""
    source = Source(
        TransportKind.UDP, Address("192.0.2.10", 5062), Address("127.0.0.1", 5060), None
    )
    for contact in ("<mailto:x>", "<sip:@>", "not a uri <"):
        binding = Binding("alice-desk", contact, 0, 0, 0, "c", 1, source)
        assert contact_address(binding) == "192.0.2.10:5062", contact
    ipv6 = Binding("alice-desk", "<sip:a@[2001:db8::1]:5070>", 0, 0, 0, "c", 1, source)
    assert contact_address(ipv6) == "[2001:db8::1]:5070 (registered from 192.0.2.10:5062)"
