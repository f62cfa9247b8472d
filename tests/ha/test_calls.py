"""Calls inside Home Assistant, end to end: real phones on 127.0.0.1 call through the PBX that
the integration started, and the sensors, events, logbook entries and actions follow them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_CALL, EVENT_HANDOFF

from .callflip_testing import find_device
from .sip_client import Dialog, Outgoing, SipPhone


def state_of(hass: HomeAssistant, entity_id: str) -> tuple[str, dict[str, Any]]:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state, dict(state.attributes)


def ha_id(hass: HomeAssistant, entry: MockConfigEntry, identifier: str) -> str:
    device = find_device(hass, entry.entry_id, identifier)
    assert device is not None, identifier
    return device.id


async def registered(make_phone: Callable[..., SipPhone], *usernames: str) -> list[SipPhone]:
    phones = []
    for username in usernames:
        phone = make_phone(username)
        await phone.open()
        assert (await phone.register()).status == 200
        phones.append(phone)
    return phones


async def answered_call(
    hass: HomeAssistant, bob: SipPhone, desk: SipPhone, number: str = "alice-desk"
) -> tuple[Outgoing, Dialog]:
    """Bob calls ``number``; Alice's desk phone rings and answers."""
    outgoing = await bob.dial(number)
    invite = await desk.request("INVITE")
    dialog = await desk.answer(invite)
    await outgoing.answered()
    await hass.async_block_till_done()
    return outgoing, dialog


async def flip(hass: HomeAssistant, **data: Any) -> None:
    await hass.services.async_call(DOMAIN, "flip", data, blocking=True)


async def test_call_and_flip_end_to_end(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Bob calls Alice's extension, her desk phone answers, the flip action moves the call to
    her mobile (which answers), and Bob hangs up: every entity and event follows."""
    calls = async_capture_events(hass, EVENT_CALL)
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.alice_active_call") == (
        "idle",
        state_of(hass, "sensor.alice_active_call")[1],
    )

    outgoing = await bob.dial("101")
    to_desk = await desk.request("INVITE")
    mobile.ring(await mobile.request("INVITE"))  # a CANCEL may only follow a provisional answer
    tag = desk.ring(to_desk)
    await bob.expect(lambda m: m.status == 180)
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.bob_softphone_call_state")[0] == "dialing"
    ringing, attributes = state_of(hass, "sensor.alice_desk_phone_call_state")
    assert ringing == "ringing"
    assert attributes["remote_party"] == "Bob"
    assert attributes["remote_number"] == "102"
    assert attributes["direction"] == "incoming"
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "ringing"
    assert state_of(hass, "sensor.alice_active_call")[0] == "ringing"

    await desk.answer(to_desk, tag)
    await mobile.request("CANCEL")
    await outgoing.answered()
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "idle"
    talking, attributes = state_of(hass, "sensor.alice_active_call")
    assert talking == "talking"
    assert attributes["device"] == "Alice desk phone"
    assert attributes["device_account"] == "alice-desk"
    assert attributes["device_id"] == ha_id(hass, loaded_entry, "device-d-alice-desk")
    assert attributes["remote_party"] == "Bob"
    assert attributes["since"].endswith("+00:00")
    bob_state, bob_attributes = state_of(hass, "sensor.bob_softphone_call_state")
    assert bob_state == "talking"
    assert bob_attributes["remote_party"] == "Alice"
    assert bob_attributes["remote_device"] == "Alice desk phone"
    assert bob_attributes["direction"] == "outgoing"

    await flip(
        hass,
        device_id=ha_id(hass, loaded_entry, "user-u-alice"),
        target_device_id=ha_id(hass, loaded_entry, "device-d-alice-mobile"),
        timeout=20,
    )
    to_mobile = await mobile.request("INVITE")
    assert b"m=audio " in to_mobile.body  # the PBX offers the new phone its relay port
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "ringing"
    started, attributes = state_of(hass, "event.alice_handoff")
    assert started != "unknown"
    assert attributes["event_type"] == "flip_started"
    assert attributes["to_device"] == "alice-mobile"

    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.alice_desk_phone_call_state")[0] == "idle"
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "talking"
    talking, attributes = state_of(hass, "sensor.alice_active_call")
    assert talking == "talking"
    assert attributes["device"] == "Alice mobile"
    assert state_of(hass, "sensor.bob_softphone_call_state")[1]["remote_device"] == "Alice mobile"
    _, attributes = state_of(hass, "event.alice_handoff")
    assert attributes["event_type"] == "flip_succeeded"
    assert attributes["from_label"] == "Alice desk phone"
    assert attributes["to_label"] == "Alice mobile"
    assert [event.data["type"] for event in handoffs] == ["flip_started", "flip_succeeded"]
    assert handoffs[-1].data["user"] == "Alice"
    assert handoffs[-1].data["device_id"] == ha_id(hass, loaded_entry, "user-u-alice")

    await hass.services.async_call(
        DOMAIN,
        "hangup",
        {"device_id": ha_id(hass, loaded_entry, "device-d-bob-soft")},
        blocking=True,
    )
    await bob.request("BYE")
    await mobile.request("BYE")
    await hass.async_block_till_done()
    for entity_id in (
        "sensor.alice_active_call",
        "sensor.alice_mobile_call_state",
        "sensor.bob_softphone_call_state",
    ):
        assert state_of(hass, entity_id) == ("idle", state_of(hass, entity_id)[1])
        assert "remote_party" not in state_of(hass, entity_id)[1]
    states = [event.data["state"] for event in calls]
    assert states[:3] == ["setup", "ringing", "talking"]
    assert states[-2:] == ["ending", "ended"]
    assert calls[0].data["caller_user"] == "Bob"
    assert calls[0].data["callee_user"] == "Alice"
    assert calls[1].data["device_ids"]  # the ringing phones, for automations
    assert calls[2].data["devices"] == ["bob-soft", "alice-desk"]
    assert calls[2].data["device_labels"] == ["Bob softphone", "Alice desk phone"]
    assert calls[1].data["callee_device_id"] == ha_id(hass, loaded_entry, "user-u-alice")
    assert calls[1].data["caller_device_id"] == ha_id(hass, loaded_entry, "user-u-bob")
    assert calls[-1].data["reason"]


async def test_flip_validation_errors(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Every refusal is a translated ServiceValidationError, and nothing starts."""
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    mobile_id = ha_id(hass, loaded_entry, "device-d-alice-mobile")
    desk_id = ha_id(hass, loaded_entry, "device-d-alice-desk")

    async def refused(key: str, **data: Any) -> str:
        with pytest.raises(ServiceValidationError) as caught:
            await flip(hass, **data)
        assert caught.value.translation_key == key
        return str(caught.value)

    assert await refused("no_call", device_id=alice) == "Alice is not in a call"
    assert "not in a call" in await refused("no_call", device_id=desk_id)
    await refused("not_a_phone", device_id=ha_id(hass, loaded_entry, loaded_entry.entry_id))
    await refused("not_a_phone", device_id="no-such-device")
    await refused("one_call_only", device_id=[alice, desk_id])

    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    tag = desk.ring(invite)
    await bob.expect(lambda m: m.status == 180)
    await refused("call_not_flippable", device_id=alice)
    await desk.answer(invite, tag)
    await outgoing.answered()
    await hass.async_block_till_done()

    message = await refused("target_not_registered", device_id=alice, target_device_id=mobile_id)
    assert message == "Alice mobile is not registered, so it cannot take the call"
    await refused("no_flip_target", device_id=alice)
    await refused("target_is_current_device", device_id=desk_id, target_device_id=desk_id)
    await refused(
        "not_users_device",
        device_id=alice,
        target_device_id=ha_id(hass, loaded_entry, "device-d-bob-soft"),
    )
    await refused("target_not_a_phone", device_id=alice, target_device_id=alice)
    assert not [c for c in loaded_entry.runtime_data.hub.pbx.calls() if c.pending_flip]


async def test_failed_flip_is_reported_not_swallowed(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """A declined flip leaves the call where it was and says why: event entity and bus event."""
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    alice = ha_id(hass, loaded_entry, "user-u-alice")

    await flip(hass, device_id=alice, timeout=10)
    to_mobile = await mobile.request("INVITE")
    with pytest.raises(ServiceValidationError) as caught:
        await flip(hass, device_id=alice)
    assert caught.value.translation_key == "flip_in_progress"

    mobile.respond(to_mobile, 603, tag="declined")
    await mobile.request("ACK")
    await hass.async_block_till_done()
    _, attributes = state_of(hass, "event.alice_handoff")
    assert attributes["event_type"] == "flip_failed"
    assert "declined" in attributes["reason"]
    assert [event.data["type"] for event in handoffs] == ["flip_started", "flip_failed"]
    assert "declined" in handoffs[-1].data["reason"]
    # why, in one word, and how the target was chosen (the action: nobody pressed keys)
    assert {key: handoffs[-1].data[key] for key in ("code", "how", "pressed_by", "keys")} == {
        "code": "declined",
        "how": "action",
        "pressed_by": "",
        "keys": "",
    }
    assert state_of(hass, "sensor.alice_active_call")[1]["device"] == "Alice desk phone"
    assert state_of(hass, "sensor.alice_mobile_call_state")[0] == "idle"


async def _alice_with_a_softphone(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    flip_options: dict[str, Any] | None = None,
) -> tuple[SipPhone, SipPhone, SipPhone, SipPhone]:
    """Alice with a desk phone, a mobile and a softphone (priority 30), all registered; Bob's
    call answered on her desk phone."""
    users = [dict(user) for user in config_entry.options["users"]]
    users[0] = {
        **users[0],
        "devices": [
            *users[0]["devices"],
            {
                "id": "d-alice-soft",
                "username": "alice-soft",
                "password": "Soft-App-Secret-44",
                "label": "Alice softphone",
                "type": "softphone",
                "priority": 30,
            },
        ],
    }
    if flip_options is not None:
        users[0]["flip_options"] = flip_options
    hass.config_entries.async_update_entry(config_entry, options={"users": users})
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    soft = make_phone("alice-soft", "Soft-App-Secret-44")
    await soft.open()
    assert (await soft.register()).status == 200
    await answered_call(hass, bob, desk)
    return desk, mobile, soft, bob


async def test_without_a_target_the_first_phone_by_priority_rings(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """With two other registered phones, a flip without a target rings the preferred one."""
    _, mobile, _soft, _ = await _alice_with_a_softphone(hass, config_entry, make_phone)
    await flip(hass, device_id=ha_id(hass, config_entry, "user-u-alice"))
    assert (await mobile.request("INVITE")).method == "INVITE"
    (call,) = config_entry.runtime_data.hub.pbx.calls()
    assert call.pending_flip is not None
    assert call.pending_flip.to_device == "alice-mobile"  # priority 20 before the softphone's 30
    await hass.config_entries.async_unload(config_entry.entry_id)


async def test_without_a_target_simultaneous_ring_rings_every_phone(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    _, mobile, soft, _ = await _alice_with_a_softphone(
        hass, config_entry, make_phone, {"simultaneous_ring": True}
    )
    await flip(hass, device_id=ha_id(hass, config_entry, "user-u-alice"))
    assert (await mobile.request("INVITE")).method == "INVITE"
    assert (await soft.request("INVITE")).method == "INVITE"
    (call,) = config_entry.runtime_data.hub.pbx.calls()
    assert call.pending_flip is not None
    assert call.pending_flip.to_device == "alice-mobile, alice-soft"
    await hass.config_entries.async_unload(config_entry.entry_id)


async def test_hangup(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Hanging up a user's call ends it for both phones; without a call it is refused."""
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(DOMAIN, "hangup", {"device_id": alice}, blocking=True)
    assert caught.value.translation_key == "no_call"

    await answered_call(hass, bob, desk)
    assert state_of(hass, "sensor.bob_active_call")[0] == "talking"
    await hass.services.async_call(DOMAIN, "hangup", {"device_id": alice}, blocking=True)
    await desk.request("BYE")
    await bob.request("BYE")
    await hass.async_block_till_done()
    assert state_of(hass, "sensor.bob_active_call")[0] == "idle"
    assert state_of(hass, "sensor.alice_desk_phone_call_state")[0] == "idle"
    assert loaded_entry.runtime_data.hub.pbx.calls() == []


async def test_actions_need_a_loaded_entry(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    for service in ("flip", "hangup"):
        with pytest.raises(ServiceValidationError) as caught:
            await hass.services.async_call(DOMAIN, service, {"device_id": alice}, blocking=True)
        assert caught.value.translation_key == "not_loaded"


async def test_editing_users_during_a_call_does_not_drop_it(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Users and devices change live: a call in progress is not touched by an options edit."""
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    hub = loaded_entry.runtime_data.hub
    call_ids = [call.id for call in hub.pbx.calls()]
    assert len(call_ids) == 1

    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "edit_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Alice Smith", "extension": "101"}
    )
    await hass.async_block_till_done()

    assert loaded_entry.runtime_data.hub is hub  # applied without a reload
    assert [call.id for call in hub.pbx.calls()] == call_ids
    assert state_of(hass, "sensor.alice_desk_phone_call_state")[0] == "talking"
    assert state_of(hass, "sensor.bob_softphone_call_state")[0] == "talking"
