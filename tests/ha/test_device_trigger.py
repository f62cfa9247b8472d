"""Device triggers of a user: listed for users only, validated, and firing on callflip's events."""

from __future__ import annotations

import pytest
import voluptuous as vol
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.callflip.const import DOMAIN, EVENT_CALL, EVENT_HANDOFF
from custom_components.callflip.device_trigger import async_validate_trigger_config

from .callflip_testing import find_device


def _id(hass: HomeAssistant, entry: MockConfigEntry, identifier: str) -> str:
    device = find_device(hass, entry.entry_id, identifier)
    assert device is not None
    return device.id


async def test_users_offer_call_triggers_phones_their_own(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    alice = _id(hass, loaded_entry, "user-u-alice")
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, alice)
    ours = {t["type"] for t in triggers if t["domain"] == DOMAIN}
    assert ours == {
        "incoming_call",
        "flip_started",
        "flip_succeeded",
        "flip_failed",
        "call_answered",
        "call_held",
        "call_resumed",
        "call_ended",
        "missed_call",
        "transfer_started",
        "transfer_succeeded",
        "transfer_failed",
        # Personal Ring Group handoffs
        "push_started",
        "pushed",
        "push_unanswered",
        "pull_started",
        "pulled",
        "handoff_failed",
    }
    desk = _id(hass, loaded_entry, "device-d-alice-desk")
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, desk)
    phone = {t["type"] for t in triggers if t["domain"] == DOMAIN}
    assert phone == {"phone_ringing", "phone_answered", "phone_call_ended", "phone_transferred"}


async def test_unknown_type_is_invalid(hass: HomeAssistant) -> None:
    config = {"platform": "device", "domain": DOMAIN, "device_id": "x", "type": "dance"}
    with pytest.raises(vol.Invalid):
        await async_validate_trigger_config(hass, config)


async def test_triggers_fire_for_their_user_only(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    alice = _id(hass, loaded_entry, "user-u-alice")
    bob = _id(hass, loaded_entry, "user-u-bob")
    calls: list[ServiceCall] = async_mock_service(hass, "test", "automation")
    automations = [
        {
            "trigger": {"platform": "device", "domain": DOMAIN, "device_id": alice, "type": kind},
            "action": {"service": "test.automation", "data": {"kind": kind}},
        }
        for kind in ("incoming_call", "flip_started", "flip_succeeded", "flip_failed")
    ]
    assert await async_setup_component(hass, "automation", {"automation": automations})
    await hass.async_block_till_done()

    hass.bus.async_fire(EVENT_CALL, {"callee_device_id": alice, "state": "ringing"})
    hass.bus.async_fire(EVENT_CALL, {"callee_device_id": alice, "state": "talking"})
    hass.bus.async_fire(EVENT_CALL, {"callee_device_id": bob, "state": "ringing"})
    hass.bus.async_fire(EVENT_HANDOFF, {"device_id": alice, "type": "flip_failed"})
    hass.bus.async_fire(EVENT_HANDOFF, {"device_id": bob, "type": "flip_started"})
    await hass.async_block_till_done()
    # each once, for Alice only (automations of different triggers run in no fixed order)
    assert sorted(call.data["kind"] for call in calls) == ["flip_failed", "incoming_call"]
