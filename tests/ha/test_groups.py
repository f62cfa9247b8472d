"""Personal Ring Groups in Home Assistant: the group device and its entities, Group Presence
(applied at once and kept across a reload), the push and pull actions with their refusals, the
handoff events, device triggers, and groups in the options flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, SERVICE_TURN_OFF, SERVICE_TURN_ON, STATE_OFF
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_HANDOFF
from custom_components.callflip.device_trigger import async_get_triggers
from sip_core.pbx import Pbx

from .callflip_testing import find_device, household
from .sip_client import SipPhone
from .test_calls import answered_call, ha_id, registered

GROUP = {
    "id": "g-home",
    "name": "Home",
    "pilot": "150",
    "members": ["d-alice-desk", "d-alice-mobile", "d-bob-soft"],
    "ring_timer": 20,
    "no_answer": "none",
}
DESK_PRESENT = "switch.home_alice_desk_phone_present"
MOBILE_PRESENT = "switch.home_alice_mobile_present"
RINGING = "binary_sensor.home_ringing"
ACTIVE = "sensor.home_active_call"


@pytest.fixture
def config_entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    """The household's entry with the group Home (Alice's two phones and Bob's softphone)."""
    hass.config_entries.async_update_entry(
        config_entry, options={"users": household(), "groups": [dict(GROUP)]}
    )
    return config_entry


def _pbx(entry: MockConfigEntry) -> Pbx:
    pbx: Pbx = entry.runtime_data.hub.pbx
    return pbx


def _state(hass: HomeAssistant, entity_id: str) -> Any:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state


async def _switch(hass: HomeAssistant, entity_id: str, on: bool) -> None:
    await hass.services.async_call(
        SWITCH_DOMAIN,
        SERVICE_TURN_ON if on else SERVICE_TURN_OFF,
        {ATTR_ENTITY_ID: entity_id},
        blocking=True,
    )


async def test_each_group_is_a_device_with_its_entities(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    device = find_device(hass, loaded_entry.entry_id, "group-g-home")
    assert device is not None
    assert device.name == "Home"
    assert device.model == "Personal Ring Group 150"
    registry = er.async_get(hass)
    presence = registry.async_get(DESK_PRESENT)
    assert presence is not None
    assert presence.unique_id == "group-g-home-d-alice-desk-presence"
    assert presence.translation_key == "group_presence"
    assert presence.device_id == device.id
    assert registry.async_get("switch.home_bob_softphone_present") is not None
    assert _state(hass, DESK_PRESENT).state == "on"
    assert _state(hass, DESK_PRESENT).attributes["friendly_name"] == "Home Alice desk phone present"
    assert _state(hass, RINGING).state == STATE_OFF
    assert _state(hass, ACTIVE).state == "unknown"


async def test_group_presence_applies_at_once_and_survives_a_reload(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    await _switch(hass, MOBILE_PRESENT, False)
    assert not _pbx(loaded_entry).group_present("Home", "alice-mobile")
    assert _state(hass, MOBILE_PRESENT).state == STATE_OFF
    # A change through the PBX's own API shows on the entity too.
    _pbx(loaded_entry).set_group_presence("Home", "alice-desk", False)
    await hass.async_block_till_done()
    assert _state(hass, DESK_PRESENT).state == STATE_OFF
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert not _pbx(loaded_entry).group_present("Home", "alice-mobile")
    assert _state(hass, MOBILE_PRESENT).state == STATE_OFF


async def test_push_action_moves_the_call_and_reports_it(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    _outgoing, _dialog = await answered_call(hass, bob, desk)
    assert _state(hass, ACTIVE).state == "Alice desk phone"
    await hass.services.async_call(
        DOMAIN,
        "push",
        {"device_id": ha_id(hass, loaded_entry, "device-d-alice-desk")},
        blocking=True,
    )
    to_mobile = await mobile.request("INVITE")
    mobile.ring(to_mobile)
    await hass.async_block_till_done()
    assert _state(hass, RINGING).state == "on"
    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert _state(hass, RINGING).state == STATE_OFF
    assert _state(hass, ACTIVE).state == "Alice mobile"
    types = [event.data["type"] for event in handoffs]
    assert types == ["push_started", "pushed"]
    pushed = handoffs[-1].data
    assert (pushed["from_device"], pushed["to_device"], pushed["kind"]) == (
        "alice-desk",
        "alice-mobile",
        "push",
    )
    assert pushed["group"] == "Home"


async def test_push_and_pull_refusals_are_translated(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "push",
            {"device_id": ha_id(hass, loaded_entry, "device-d-alice-desk")},
            blocking=True,
        )
    assert caught.value.translation_key == "no_call"
    await answered_call(hass, bob, desk)
    # Bob's softphone is the only other member, and it is in the call: nobody can take it.
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "push",
            {"device_id": ha_id(hass, loaded_entry, "device-d-alice-desk")},
            blocking=True,
        )
    assert caught.value.translation_key == "handoff_no_member_available"
    assert caught.value.translation_placeholders is not None
    assert caught.value.translation_placeholders["name"] == "Alice desk phone"
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "pull",
            {"device_id": ha_id(hass, loaded_entry, "device-d-alice-mobile")},
            blocking=True,
        )
    assert caught.value.translation_key == "handoff_not_registered"
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "pull",
            {"device_id": ha_id(hass, loaded_entry, "user-u-alice")},
            blocking=True,
        )
    assert caught.value.translation_key == "target_not_a_phone"
    assert handoffs == []  # refused actions start nothing


async def test_pull_action_rings_the_phone_and_takes_the_call(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    await hass.services.async_call(
        DOMAIN,
        "pull",
        {"device_id": ha_id(hass, loaded_entry, "device-d-alice-mobile")},
        blocking=True,
    )
    to_mobile = await mobile.request("INVITE")
    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert [event.data["type"] for event in handoffs] == ["pull_started", "pulled"]
    assert _state(hass, ACTIVE).state == "Alice mobile"


async def test_handoff_triggers_are_offered_on_a_user(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    triggers = await async_get_triggers(hass, ha_id(hass, loaded_entry, "user-u-alice"))
    kinds = {trigger["type"] for trigger in triggers}
    assert {"push_started", "pushed", "push_unanswered", "pulled", "handoff_failed"} <= kinds


async def test_groups_in_the_options_flow(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert {"add_group", "edit_group", "remove_group"} <= set(result["menu_options"])
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_group"}
    )
    assert result["step_id"] == "group"
    # The pilot may not be Alice's extension: refused with sip_core's reason, nothing saved.
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "name": "Office",
            "pilot": "101",
            "members": ["d-bob-soft", "d-alice-desk"],
            "ring_timer": 15,
            "no_answer": "user:u-alice",
        },
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_group"}
    assert "already an extension" in result["description_placeholders"]["error"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "name": "Office",
            "pilot": "160",
            "members": ["d-bob-soft", "d-alice-desk"],
            "ring_timer": 15,
            "no_answer": "user:u-alice",
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    office = _pbx(loaded_entry).config.group("Office")
    assert office is not None
    assert office.members == ("bob-soft", "alice-desk")
    assert office.ring_timer == 15
    assert str(office.no_answer) == "user:Alice"
    assert hass.states.get("switch.office_bob_softphone_present") is not None
    # Removing a device takes it out of the groups (a group left empty goes too).
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "remove_device"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": "d-bob-soft"}
    )
    await hass.async_block_till_done()
    office = _pbx(loaded_entry).config.group("Office")
    assert office is not None
    assert office.members == ("alice-desk",)
    # And a group can be removed.
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "remove_group"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"group": "g-home"}
    )
    await hass.async_block_till_done()
    assert _pbx(loaded_entry).config.group("Home") is None
    assert find_device(hass, loaded_entry.entry_id, "group-g-home") is None


async def test_call_forward_always_may_point_at_a_group(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    forward = "select.bob_softphone_call_forward_always"
    assert "group:Home" in _state(hass, forward).attributes["options"]
    await hass.services.async_call(
        "select",
        "select_option",
        {ATTR_ENTITY_ID: forward, "option": "group:Home"},
        blocking=True,
    )
    assert str(_pbx(loaded_entry).device_states("bob-soft").forward) == "group:Home"
    assert _pbx(loaded_entry).presence.forwards("bob-soft") == [
        "alice-desk",
        "alice-mobile",
        "bob-soft",
    ]


def test_push_and_pull_in_words_for_the_logbook_and_sensors() -> None:
    from custom_components.callflip.handoff import HandoffSummary
    from custom_components.callflip.logbook import describe_handoff

    def summary(**data: str) -> HandoffSummary:
        return HandoffSummary.from_event(data)

    pushed = summary(type="pushed", from_label="Desk", to_label="Mobile", kind="push")
    assert pushed.sentence() == "Call pushed from Desk to Mobile"
    assert pushed.attributes()["kind"] == "push"
    unanswered = summary(
        type="push_unanswered", from_label="Desk", to_label="Home", reason="no answer"
    )
    assert unanswered.sentence() == "Push from Desk not taken (no answer)"
    refused = summary(
        type="handoff_failed", kind="pull", from_label="", to_label="Mobile", reason="no call"
    )
    assert refused.sentence() == "Pull by Mobile did not happen (no call)"
    line = describe_handoff(
        {"type": "pulled", "user": "Alice", "from_label": "Desk", "to_label": "Mobile"}
    )
    assert line == {"name": "Alice", "message": "call pulled from Desk to Mobile"}
