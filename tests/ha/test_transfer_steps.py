"""Transfers as call steps: the Calls event entities of the phones and people involved fire
``transferring`` then ``transferred``, and a phone's ``phone_transferred`` trigger runs with the
transfer's fields as variables."""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.callflip.call_steps import EVENT_TYPES

from .sip_client import SipPhone
from .test_call_steps import follow, types
from .test_calls import answered_call, ha_id, registered
from .test_transfer import transfer


async def test_a_transfer_is_a_step_of_the_call_for_everyone_in_it(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    assert {"transferring", "transferred", "transfer_failed"} <= set(EVENT_TYPES)
    soft_id = ha_id(hass, loaded_entry, "device-d-bob-soft")
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, soft_id)
    (trigger,) = [t for t in triggers if t["type"] == "phone_transferred"]
    calls: list[ServiceCall] = async_mock_service(hass, "test", "automation")
    variables = ("step", "transferring_label", "transferred_label", "to_label", "transfer")
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": [
                {
                    "trigger": trigger,
                    "action": {
                        "service": "test.automation",
                        "data": {name: f"{{{{ trigger.{name} }}}}" for name in variables},
                    },
                }
            ]
        },
    )
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    fired = follow(hass)
    await transfer(
        hass,
        device_id=ha_id(hass, loaded_entry, "device-d-alice-desk"),
        target_device_id=ha_id(hass, loaded_entry, "device-d-alice-mobile"),
    )
    await desk.request("BYE")
    await mobile.answer(await mobile.request("INVITE"))
    await hass.async_block_till_done()
    for who in ("alice", "bob", "desk", "soft"):
        steps = [kind for kind in types(fired[who]) if kind.startswith("transfer")]
        assert steps == ["transferring", "transferred"], (who, types(fired[who]))
    # The mobile was not part of it until it answered.
    assert "transferring" not in types(fired["mobile"])
    assert "transferred" in types(fired["mobile"])
    done = next(a for a in fired["soft"] if a["event_type"] == "transferred")
    assert (done["transferring_label"], done["transferred_label"], done["to_label"]) == (
        "Alice desk phone",
        "Bob softphone",
        "Alice mobile",
    )
    assert done["transfer"] == "blind"
    (call,) = calls
    assert call.data == {
        "step": "transferred",
        "transferring_label": "Alice desk phone",
        "transferred_label": "Bob softphone",
        "to_label": "Alice mobile",
        "transfer": "blind",
    }
