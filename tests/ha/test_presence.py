"""Do Not Disturb, Make Busy and Call Forward Always per SIP device, Flip enabled per user: the
entities, their effect on the running PBX, and their persistence (the entry's runtime-state
Store) across a reload and a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.components.select import ATTR_OPTION, SERVICE_SELECT_OPTION
from homeassistant.components.select import DOMAIN as SELECT_DOMAIN
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_HANDOFF
from sip_core.pbx import Pbx
from sip_core.presence import ForwardKind, ForwardTarget

from .sip_client import SipPhone
from .test_calls import answered_call, flip, ha_id, registered

DESK_DND = "switch.alice_desk_phone_do_not_disturb"
DESK_BUSY = "switch.alice_desk_phone_make_busy"
DESK_FORWARD = "select.alice_desk_phone_call_forward_always"
ALICE_FLIP = "switch.alice_flip_enabled"


def _state(hass: HomeAssistant, entity_id: str) -> Any:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state


def _pbx(entry: MockConfigEntry) -> Pbx:
    pbx: Pbx = entry.runtime_data.hub.pbx
    return pbx


async def _switch(hass: HomeAssistant, entity_id: str, on: bool) -> None:
    await hass.services.async_call(
        SWITCH_DOMAIN,
        SERVICE_TURN_ON if on else SERVICE_TURN_OFF,
        {ATTR_ENTITY_ID: entity_id},
        blocking=True,
    )


async def _select(hass: HomeAssistant, option: str) -> None:
    await hass.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: DESK_FORWARD, ATTR_OPTION: option},
        blocking=True,
    )


async def test_entities_have_translated_names_and_icons(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    registry = er.async_get(hass)
    for entity_id, unique_id, key in (
        (DESK_DND, "d-alice-desk-dnd", "dnd"),
        (DESK_BUSY, "d-alice-desk-make_busy", "make_busy"),
        (DESK_FORWARD, "d-alice-desk-call_forward", "call_forward"),
        (ALICE_FLIP, "u-alice-flip_enabled", "flip_enabled"),
    ):
        entry = registry.async_get(entity_id)
        assert entry is not None, entity_id
        assert entry.unique_id == unique_id
        assert entry.translation_key == key
        assert entry.entity_category is not None
    assert registry.async_get("switch.bob_softphone_do_not_disturb") is not None
    assert _state(hass, DESK_DND).attributes["friendly_name"] == "Alice desk phone Do not disturb"
    assert _state(hass, DESK_DND).state == STATE_OFF
    assert _state(hass, DESK_BUSY).state == STATE_OFF
    assert _state(hass, ALICE_FLIP).state == STATE_ON
    assert _state(hass, ALICE_FLIP).attributes["forced"] is False
    forward = _state(hass, DESK_FORWARD)
    assert forward.state == "none"
    assert forward.attributes["options"] == [
        "none",
        "user:Alice",
        "user:Bob",
        "device:alice-mobile",
        "device:bob-soft",
    ]


async def test_switches_apply_to_the_running_pbx_at_once(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    pbx = _pbx(loaded_entry)
    await _switch(hass, DESK_DND, True)
    assert pbx.device_states("alice-desk").dnd
    assert _state(hass, DESK_DND).state == STATE_ON
    await _switch(hass, DESK_BUSY, True)
    assert pbx.device_states("alice-desk").make_busy
    await _switch(hass, ALICE_FLIP, False)
    assert not pbx.flip_enabled("Alice")
    assert _state(hass, ALICE_FLIP).state == STATE_OFF
    await _select(hass, "user:Bob")
    assert pbx.device_states("alice-desk").forward == ForwardTarget(ForwardKind.USER, "Bob")
    assert _state(hass, DESK_FORWARD).state == "user:Bob"
    await _select(hass, "none")
    assert pbx.device_states("alice-desk").forward is None
    # A change made through the PBX's own API shows on the entity too.
    pbx.set_dnd("alice-desk", False)
    await hass.async_block_till_done()
    assert _state(hass, DESK_DND).state == STATE_OFF


async def test_settings_survive_a_reload(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    await _switch(hass, DESK_DND, True)
    await _switch(hass, ALICE_FLIP, False)
    await _select(hass, "device:bob-soft")
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    stored = hass_storage[f"{DOMAIN}.{loaded_entry.entry_id}.state"]["data"]["sections"]
    assert stored["presence"] == {
        "devices": {"alice-desk": {"dnd": True, "forward": "device:bob-soft"}},
        "flip": {"Alice": False},
    }
    pbx = _pbx(loaded_entry)
    assert pbx.device_states("alice-desk").dnd
    assert pbx.device_states("alice-desk").forward == ForwardTarget(ForwardKind.DEVICE, "bob-soft")
    assert not pbx.flip_enabled("Alice")
    assert _state(hass, DESK_DND).state == STATE_ON
    assert _state(hass, ALICE_FLIP).state == STATE_OFF
    assert _state(hass, DESK_FORWARD).state == "device:bob-soft"


async def test_settings_restored_at_startup(
    hass: HomeAssistant, config_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """What an earlier run of Home Assistant saved is in force as soon as the entry is set up."""
    key = f"{DOMAIN}.{config_entry.entry_id}.state"
    hass_storage[key] = {
        "version": 1,
        "minor_version": 1,
        "key": key,
        "data": {
            "sections": {
                "presence": {"devices": {"bob-soft": {"make_busy": True}}, "flip": {}},
                "future_feature": {"kept": True},
            }
        },
    }
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert _pbx(config_entry).device_states("bob-soft").make_busy
    assert _state(hass, "switch.bob_softphone_make_busy").state == STATE_ON
    await _switch(hass, "switch.bob_softphone_make_busy", False)
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    sections = hass_storage[key]["data"]["sections"]
    assert sections["future_feature"] == {"kept": True}
    assert sections["presence"] == {"devices": {}, "flip": {}}


async def test_an_option_not_offered_is_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    # A device cannot forward to itself: not among the options, refused by the select.
    with pytest.raises(ServiceValidationError):
        await _select(hass, "device:alice-desk")
    assert _pbx(loaded_entry).device_states("alice-desk").forward is None


async def test_administrator_forces_the_flip_in_the_options(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "edit_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    assert result["step_id"] == "user"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Alice", "extension": "101", "flip": "disabled"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    pbx = _pbx(loaded_entry)
    assert not pbx.flip_enabled("Alice")
    state = _state(hass, ALICE_FLIP)
    assert state.state == STATE_OFF
    assert state.attributes["forced"] is True
    with pytest.raises(ServiceValidationError) as info:
        await _switch(hass, ALICE_FLIP, True)
    assert info.value.translation_key == "flip_forced"
    assert str(info.value) == (
        "The administrator has set flipping for Alice; it can only be changed in the "
        "integration's options"
    )
    assert not pbx.flip_enabled("Alice")


async def test_a_bad_flip_permission_is_refused_by_the_form(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "edit_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    with pytest.raises(Exception, match="flip"):
        await hass.config_entries.options.async_configure(
            result["flow_id"], {"name": "Alice", "extension": "101", "flip": "sometimes"}
        )
    assert _pbx(loaded_entry).flip_enabled("Alice")


async def test_flip_refused_when_disabled_or_target_in_dnd(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """``callflip.flip`` follows the same rules as ``*0``: each refusal is a translated
    ServiceValidationError and a failed handoff event with the reason."""
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, _mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    mobile_id = ha_id(hass, loaded_entry, "device-d-alice-mobile")

    await _switch(hass, ALICE_FLIP, False)
    with pytest.raises(ServiceValidationError) as caught:
        await flip(hass, device_id=alice)
    assert caught.value.translation_key == "flip_disabled"
    assert str(caught.value) == "Alice may not flip calls: flipping is disabled for them"
    await hass.async_block_till_done()
    assert handoffs[-1].data["type"] == "flip_failed"
    assert handoffs[-1].data["reason"] == "Alice's flip is disabled"

    await _switch(hass, ALICE_FLIP, True)
    await _switch(hass, "switch.alice_mobile_do_not_disturb", True)
    with pytest.raises(ServiceValidationError) as caught:
        await flip(hass, device_id=alice, target_device_id=mobile_id)
    assert caught.value.translation_key == "target_unavailable"
    assert str(caught.value) == (
        "Alice mobile is in do not disturb or make busy, so it cannot take the call"
    )
    with pytest.raises(ServiceValidationError) as caught:
        await flip(hass, device_id=alice)
    assert caught.value.translation_key == "no_flip_target"
    assert not [c for c in _pbx(loaded_entry).calls() if c.pending_flip]
    assert "flip_started" not in [event.data["type"] for event in handoffs]


async def test_a_forward_the_pbx_refuses_is_a_translated_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """An option that stopped being valid between listing and choosing (its user was just
    removed, say) is refused by the PBX; the select says so in the person's language."""
    component = hass.data["entity_components"][SELECT_DOMAIN]
    entity = component.get_entity(DESK_FORWARD)
    assert entity is not None
    with pytest.raises(ServiceValidationError) as caught:
        await entity.async_select_option("user:Nobody")
    assert caught.value.translation_key == "invalid_forward"
    assert str(caught.value) == (
        'Calls of Alice desk phone cannot be forwarded to "user:Nobody": '
        "no user is called 'Nobody'"
    )
    assert _pbx(loaded_entry).device_states("alice-desk").forward is None
