"""The dashboard's buttons and the "Last handoff" sensor, with real phones on 127.0.0.1.

A button is offered only while pressing it can act: a press that could only be refused is not
possible at all (and an automation pressing it is skipped), so no refusal reaches the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant, State
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.translation import async_get_translations
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    mock_restore_cache,
)

from custom_components.callflip.const import DOMAIN, EVENT_HANDOFF

from .sip_client import SipPhone
from .test_calls import answered_call, flip, ha_id, registered, state_of

TO_MOBILE = "button.alice_flip_to_alice_mobile"
TO_DESK = "button.alice_flip_to_alice_desk_phone"
ALICE_HANG_UP = "button.alice_hang_up"
DESK_HANG_UP = "button.alice_desk_phone_hang_up"
MOBILE_HANG_UP = "button.alice_mobile_hang_up"


def _available(hass: HomeAssistant, entity_id: str) -> bool:
    return state_of(hass, entity_id)[0] != STATE_UNAVAILABLE


async def _press(hass: HomeAssistant, entity_id: str) -> None:
    await hass.services.async_call("button", "press", {"entity_id": entity_id}, blocking=True)
    await hass.async_block_till_done()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def test_buttons_are_available_only_when_they_can_act(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    caplog: pytest.LogCaptureFixture,
) -> None:
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await hass.async_block_till_done()
    friendly = state_of(hass, TO_MOBILE)[1]["friendly_name"]
    assert friendly == "Alice Flip to Alice mobile"
    assert state_of(hass, ALICE_HANG_UP)[1]["friendly_name"] == "Alice Hang up"
    assert state_of(hass, DESK_HANG_UP)[1]["friendly_name"] == "Alice desk phone Hang up"

    # No call: nothing to flip or hang up. Pressing anyway changes nothing and logs no error.
    for button in (TO_MOBILE, TO_DESK, ALICE_HANG_UP, DESK_HANG_UP):
        assert not _available(hass, button), button
    await _press(hass, TO_MOBILE)
    await _press(hass, ALICE_HANG_UP)
    assert _errors(caplog) == []
    assert loaded_entry.runtime_data.hub.pbx.calls() == []

    await answered_call(hass, bob, desk)
    # The desk phone has the call: flipping to it cannot act; the mobile can take it.
    assert not _available(hass, TO_DESK)
    assert _available(hass, TO_MOBILE)
    assert _available(hass, ALICE_HANG_UP)
    assert _available(hass, DESK_HANG_UP)
    assert not _available(hass, MOBILE_HANG_UP)

    # The mobile unregisters: it cannot ring, so its button goes unavailable, and back.
    assert (await mobile.register(expires=0)).status == 200
    await hass.async_block_till_done()
    assert not _available(hass, TO_MOBILE)
    assert (await mobile.register()).status == 200
    await hass.async_block_till_done()
    assert _available(hass, TO_MOBILE)

    # While the mobile rings for the flip, a second flip cannot start.
    await _press(hass, TO_MOBILE)
    to_mobile = await mobile.request("INVITE")
    await hass.async_block_till_done()
    assert not _available(hass, TO_MOBILE)
    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.alice_active_call")[1]["device"] == "Alice mobile"
    assert _available(hass, TO_DESK)
    assert not _available(hass, TO_MOBILE)
    assert _available(hass, MOBILE_HANG_UP)
    assert not _available(hass, DESK_HANG_UP)
    assert _errors(caplog) == []


async def test_press_that_loses_a_race_is_a_translated_refusal(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """The call ends between the dashboard drawing the button and the press reaching us."""
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    hub = loaded_entry.runtime_data.hub
    button = hass.data["entity_components"]["button"].get_entity(ALICE_HANG_UP)
    assert button is not None
    assert button.available
    for call in hub.pbx.calls():
        hub.pbx.hangup(call.id)
    with pytest.raises(ServiceValidationError) as caught:
        await button.async_press()
    assert caught.value.translation_key == "no_call"
    assert str(caught.value) == "Alice is not in a call"


async def test_hang_up_buttons_end_the_call(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    for button in (ALICE_HANG_UP, "button.bob_softphone_hang_up"):
        desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
        await answered_call(hass, bob, desk)
        await _press(hass, button)
        await desk.request("BYE")
        await bob.request("BYE")
        await hass.async_block_till_done()
        assert loaded_entry.runtime_data.hub.pbx.calls() == [], button
        assert state_of(hass, "sensor.alice_active_call")[0] == "idle"
        assert not _available(hass, button)
        desk.close()
        bob.close()


async def test_flip_button_follows_a_label_change(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "edit_device"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": "d-alice-mobile"}
    )
    await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "owner": "u-alice",
            "username": "alice-mobile",
            "label": "Alice's Pixel",
            "type": "mobile",
            "priority": 20,
        },
    )
    await hass.async_block_till_done()
    # The entity id stays (automations keep working); the name follows the label.
    assert state_of(hass, TO_MOBILE)[1]["friendly_name"] == "Alice Flip to Alice's Pixel"


async def test_last_handoff_reads_as_a_sentence(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """A successful and a declined flip, as the sensor, the event entity and the bus say them."""
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    assert state_of(hass, "sensor.alice_last_handoff")[0] == STATE_UNKNOWN
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(hass, loaded_entry, "user-u-alice")

    await flip(hass, device_id=alice, timeout=10)
    to_mobile = await mobile.request("INVITE")
    await hass.async_block_till_done()
    state, attributes = state_of(hass, "sensor.alice_last_handoff")
    assert state == "Moving the call from Alice desk phone to Alice mobile"
    assert attributes["outcome"] == "started"

    mobile.respond(to_mobile, 603, tag="declined")
    await mobile.request("ACK")
    await hass.async_block_till_done()
    state, attributes = state_of(hass, "sensor.alice_last_handoff")
    assert state == (
        "Call stayed on Alice desk phone: Alice mobile did not take it (Alice mobile declined)"
    )
    assert attributes["kind"] == "flip"
    assert attributes["outcome"] == "failed"
    assert attributes["from"] == "Alice desk phone"
    assert attributes["to"] == "Alice mobile"
    assert attributes["reason"] == "Alice mobile declined"
    assert attributes["at"].endswith("+00:00")
    _, event = state_of(hass, "event.alice_handoff")
    assert event["event_type"] == "flip_failed"
    assert event["summary"] == state
    assert [e.data["type"] for e in handoffs] == ["flip_started", "flip_failed"]

    await flip(hass, device_id=alice, timeout=10)
    await mobile.answer(await mobile.request("INVITE"))
    await desk.request("BYE")
    await hass.async_block_till_done()
    state, attributes = state_of(hass, "sensor.alice_last_handoff")
    assert state == "Call moved from Alice desk phone to Alice mobile"
    assert attributes["outcome"] == "succeeded"
    assert attributes["reason"] == ""
    assert state_of(hass, "sensor.bob_last_handoff")[0] == STATE_UNKNOWN


async def test_event_types_are_translated_to_what_happened(hass: HomeAssistant) -> None:
    translations = await async_get_translations(hass, "en", "entity", [DOMAIN])
    prefix = f"component.{DOMAIN}.entity.event.handoff.state_attributes.event_type.state"
    assert translations[f"{prefix}.flip_succeeded"] == "Call moved to another phone"
    assert translations[f"{prefix}.flip_failed"] == "Call could not be moved"
    assert translations[f"{prefix}.flip_started"] == "Moving the call to another phone"
    registered_states = f"component.{DOMAIN}.entity.binary_sensor.registered.state"
    assert translations[f"{registered_states}.on"] == "Yes"


async def test_last_handoff_survives_a_restart(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    sentence = "Call moved from Alice desk phone to Alice mobile"
    mock_restore_cache(
        hass,
        [
            State(
                "sensor.alice_last_handoff",
                sentence,
                {"kind": "flip", "outcome": "succeeded", "to": "Alice mobile", "icon": "mdi:x"},
            ),
            State("sensor.bob_last_handoff", STATE_UNAVAILABLE),
        ],
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    state, attributes = state_of(hass, "sensor.alice_last_handoff")
    assert state == sentence
    assert attributes["outcome"] == "succeeded"
    assert attributes["to"] == "Alice mobile"
    assert "icon" not in attributes  # only the summary's own attributes come back
    assert state_of(hass, "sensor.bob_last_handoff")[0] == STATE_UNKNOWN
    assert await hass.config_entries.async_unload(config_entry.entry_id)
