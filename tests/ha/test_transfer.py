"""Transfers in Home Assistant: the ``callflip.transfer`` action, the "transferring" call state,
the transfer bus event, its logbook line and the user's device triggers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_TRANSFER
from custom_components.callflip.device_trigger import async_get_triggers
from custom_components.callflip.logbook import describe_transfer

from .sip_client import SipPhone
from .test_calls import answered_call, ha_id, registered, state_of


async def transfer(hass: HomeAssistant, **data: Any) -> None:
    await hass.services.async_call(DOMAIN, "transfer", data, blocking=True)


async def test_transfer_action_end_to_end(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Bob talks to Alice's desk; the action passes Bob to Alice's mobile: the desk is released,
    Bob's call shows "transferring" while the mobile rings, then Bob talks to the mobile."""
    events = async_capture_events(hass, EVENT_TRANSFER)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    desk_id = ha_id(hass, loaded_entry, "device-d-alice-desk")
    await transfer(
        hass,
        device_id=desk_id,
        target_device_id=ha_id(hass, loaded_entry, "device-d-alice-mobile"),
    )
    await desk.request("BYE")  # the desk is released at once
    to_mobile = await mobile.request("INVITE")
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.bob_softphone_call_state")[0] == "transferring"
    assert state_of(hass, "sensor.alice_desk_phone_call_state")[0] == "idle"
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "idle"  # not in the call yet
    await mobile.answer(to_mobile)
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.bob_softphone_call_state")[0] == "talking"
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "talking"
    assert [event.data["type"] for event in events] == ["transfer_started", "transfer_succeeded"]
    done = events[-1].data
    assert (done["transferring"], done["transferred"], done["to_device"]) == (
        "alice-desk",
        "bob-soft",
        "alice-mobile",
    )
    assert done["transfer"] == "blind"
    assert done["device_id"] == ha_id(hass, loaded_entry, "user-u-alice")
    assert describe_transfer(done) == {
        "name": "Alice",
        "message": "Alice desk phone transferred Bob softphone to alice-mobile",
    }


async def test_transfer_validation_errors(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Every refusal is a translated ServiceValidationError, and nothing starts."""
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    alice = ha_id(hass, loaded_entry, "user-u-alice")

    async def refused(key: str, **data: Any) -> str:
        with pytest.raises(ServiceValidationError) as caught:
            await transfer(hass, **data)
        assert caught.value.translation_key == key
        return str(caught.value)

    assert await refused("no_call", device_id=alice, number="102") == "Alice is not in a call"
    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    tag = desk.ring(invite)
    await bob.expect(lambda m: m.status == 180)
    await refused("call_not_transferable", device_id=alice, number="102")
    await desk.answer(invite, tag)
    await outgoing.answered()
    await hass.async_block_till_done()
    await refused("transfer_target_missing", device_id=alice)
    await refused(
        "transfer_target_missing",
        device_id=alice,
        number="102",
        target_device_id=ha_id(hass, loaded_entry, "device-d-bob-soft"),
    )
    message = await refused("unknown_transfer_target", device_id=alice, number="999")
    assert message == "999 is no extension or phone of this PBX"
    await refused(
        "transfer_target_not_a_phone",
        device_id=alice,
        target_device_id=ha_id(hass, loaded_entry, loaded_entry.entry_id),
    )
    await transfer(hass, device_id=alice, number="alice-mobile")
    await mobile.request("INVITE")
    await refused("transfer_in_progress", device_id=ha_id(hass, loaded_entry, "user-u-bob"),
                  number="101")  # fmt: skip


async def test_the_user_offers_transfer_triggers(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    triggers = await async_get_triggers(hass, ha_id(hass, loaded_entry, "user-u-alice"))
    kinds = {trigger["type"] for trigger in triggers}
    assert {"transfer_started", "transfer_succeeded", "transfer_failed"} <= kinds


def test_the_logbook_says_where_a_failed_transfer_went() -> None:
    line = describe_transfer(
        {
            "type": "transfer_failed",
            "transferring_label": "Alice desk phone",
            "transferred_label": "Bob softphone",
            "target": "102",
            "reason": "102 is busy",
            "recalled": "alice-desk",
            "user": "Alice",
        }
    )
    assert line["message"] == (
        "transfer of Bob softphone to 102 failed (102 is busy); the call went back to alice-desk"
    )
