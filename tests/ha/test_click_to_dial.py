"""The ``callflip.call`` action (click to dial) on a real hass: every refusal, translated, and a
call between fake SIP phones (the phone rung first shows the number, then the number rings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.hub import device_identifier, hub_identifier, user_identifier

from .sip_client import SipPhone
from .test_calls import answered_call, registered
from .test_play import ha_id
from .test_trunks import _add_trunk, _trunk_id, _trunk_menu


async def call_number(hass: HomeAssistant, **data: Any) -> dict[str, Any] | None:
    return await hass.services.async_call(DOMAIN, "call", data, blocking=True, return_response=True)


async def refused(hass: HomeAssistant, key: str, **data: Any) -> ServiceValidationError:
    with pytest.raises(ServiceValidationError) as caught:
        await call_number(hass, **data)
    assert caught.value.translation_domain == DOMAIN
    assert caught.value.translation_key == key, caught.value
    return caught.value


async def test_who_and_what_to_call_must_be_given(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    await registered(make_phone, "alice-desk")
    desk = ha_id(loaded_entry, device_identifier("d-alice-desk"))
    alice = ha_id(loaded_entry, user_identifier("u-alice"))
    hub = ha_id(loaded_entry, hub_identifier(loaded_entry.entry_id))
    await refused(hass, "call_from_a_phone", device_id=alice, number="300")
    await refused(hass, "call_from_a_phone", device_id=hub, number="300")
    await refused(hass, "one_target_only", device_id=[desk, desk], number="300")
    await refused(hass, "call_target_missing", device_id=desk)
    await refused(hass, "call_target_missing", device_id=desk, number="300", target_device_id=alice)
    await refused(hass, "not_a_phone", device_id=desk, target_device_id=hub)
    error = await refused(hass, "unknown_number", device_id=desk, number="0301234")
    assert error.translation_placeholders == {"number": "0301234"}
    error = await refused(hass, "number_unavailable", device_id=desk, number="bob-soft")
    assert error.translation_placeholders == {"number": "bob-soft"}
    mobile = ha_id(loaded_entry, device_identifier("d-alice-mobile"))
    error = await refused(hass, "nothing_registered", device_id=mobile, number="alice-desk")
    assert error.translation_placeholders == {"name": "Alice mobile"}
    assert loaded_entry.runtime_data.hub.pbx.calls() == []


async def test_a_phone_in_a_call_is_busy(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    error = await refused(
        hass,
        "all_phones_busy",
        device_id=ha_id(loaded_entry, device_identifier("d-alice-desk")),
        number="bob-soft",
    )
    assert error.translation_placeholders == {"name": "Alice desk phone"}


async def test_an_outside_number_needs_permission_to_call_out(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    await _add_trunk(hass, loaded_entry)
    trunk = _trunk_id(loaded_entry)
    result = await _trunk_menu(hass, loaded_entry, "add_route")
    await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk, "kind": "prefix", "prefix": "0", "strip": True}
    )
    result = await _trunk_menu(hass, loaded_entry, "dialplan")
    await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"emergency": "112", "emergency_trunk": trunk, "call_out_all": False, "call_out": []},
    )
    await hass.async_block_till_done()
    await registered(make_phone, "bob-soft")
    error = await refused(
        hass,
        "may_not_call_out",
        device_id=ha_id(loaded_entry, device_identifier("d-bob-soft")),
        number="0301234",
    )
    assert error.translation_placeholders is not None
    assert error.translation_placeholders["number"] == "0301234"


async def test_the_phone_rings_showing_the_number_then_the_number_rings(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    response = await call_number(
        hass,
        device_id=ha_id(loaded_entry, device_identifier("d-alice-desk")),
        target_device_id=ha_id(loaded_entry, user_identifier("u-bob")),
    )
    assert response is not None
    assert (response["device"], response["number"]) == ("Alice desk phone", "102")
    first = await desk.request("INVITE")
    assert first.get("From").startswith('"Bob" <sip:102@')
    await desk.answer(first)
    to_bob = await bob.request("INVITE")
    assert to_bob.get("From").startswith('"Alice" <sip:')
    dialog = await bob.answer(to_bob)
    await hass.async_block_till_done()
    (call,) = loaded_entry.runtime_data.hub.pbx.calls()
    assert call.id == response["call_id"]
    assert call.state.value == "talking"
    assert call.devices == ("alice-desk", "bob-soft")
    bob.hang_up(dialog)
    assert await desk.request("BYE")
    await hass.async_block_till_done()
    record = loaded_entry.runtime_data.hub.pbx.history()[-1]
    assert (record.caller, record.dialled, record.answered_device) == (
        "alice-desk",
        "102",
        "bob-soft",
    )
