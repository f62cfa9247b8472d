"""Group Presence codes dialled at a phone, seen from Home Assistant: the group's presence switch
follows (and the change survives a reload), the ``callflip_group_presence`` bus event says what
happened or why not, and the logbook has a line for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import EVENT_GROUP_PRESENCE
from custom_components.callflip.logbook import describe_group_presence

from .callflip_testing import find_device, household
from .sip_client import SipPhone
from .test_calls import registered
from .test_groups import GROUP, MOBILE_PRESENT, _pbx, _state


@pytest.fixture
def config_entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    """The household's entry with the group Home of `test_groups`, without Bob's softphone."""
    group = {**GROUP, "members": ["d-alice-desk", "d-alice-mobile"]}
    hass.config_entries.async_update_entry(
        config_entry, options={"users": household(), "groups": [group]}
    )
    return config_entry


async def _dial_code(phone: SipPhone, code: str) -> None:
    """The PBX answers the code, plays its confirmation and hangs up (the phone says 200)."""
    outgoing = await phone.dial(code)
    await outgoing.answered()
    bye = await phone.request("BYE")
    phone.respond(bye, 200)


async def test_the_presence_switch_follows_a_code_dialled_at_the_phone(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    events = async_capture_events(hass, EVENT_GROUP_PRESENCE)
    (mobile,) = await registered(make_phone, "alice-mobile")
    assert _state(hass, MOBILE_PRESENT).state == STATE_ON
    await _dial_code(mobile, "*60")
    await hass.async_block_till_done()
    assert _state(hass, MOBILE_PRESENT).state == STATE_OFF
    assert not _pbx(loaded_entry).group_present("Home", "alice-mobile")
    (event,) = events
    phone = find_device(hass, loaded_entry.entry_id, "device-d-alice-mobile")
    group = find_device(hass, loaded_entry.entry_id, "group-g-home")
    assert phone is not None
    assert group is not None
    assert event.data["type"] == "changed"
    assert event.data["device"] == "alice-mobile"
    assert event.data["device_label"] == "Alice mobile"
    assert event.data["present"] is False
    assert event.data["groups"] == ["Home"]
    assert event.data["dialled"] == "*60"
    assert event.data["device_ids"] == [phone.id, group.id]
    assert describe_group_presence(event.data)["message"] == (
        "Alice mobile is absent in Home (*60 dialled)"
    )
    # Kept in the runtime state: still absent after a reload.
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert _state(hass, MOBILE_PRESENT).state == STATE_OFF
    (mobile,) = await registered(make_phone, "alice-mobile")
    await _dial_code(mobile, "*61150")  # the code and the group's pilot
    await hass.async_block_till_done()
    assert _state(hass, MOBILE_PRESENT).state == STATE_ON


async def test_a_refused_code_is_on_the_bus_with_its_reason(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    events = async_capture_events(hass, EVENT_GROUP_PRESENCE)
    (bob,) = await registered(make_phone, "bob-soft")
    outgoing = await bob.dial("*60")
    final = await bob.final_response("INVITE")  # after the error tone as early media
    assert final.status == 403
    outgoing.ack_failure(final, 2)
    await hass.async_block_till_done()
    (event,) = events
    assert event.data["type"] == "refused"
    assert event.data["refusal"] == "not_member"
    assert event.data["reason"] == "bob-soft is not a member of a ring group"
    assert event.data["groups"] == []
    assert event.data["user"] == "Bob"
    assert describe_group_presence(event.data)["message"] == (
        "Bob softphone dialled *60 (absent); refused: bob-soft is not a member of a ring group"
    )
