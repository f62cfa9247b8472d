"""The diagnostics download hides every password and nonce."""

from __future__ import annotations

import json
from collections.abc import Callable

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from .callflip_testing import PASSWORDS
from .sip_client import SipPhone


async def test_diagnostics_redacts_secrets(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    phone = make_phone("alice-desk")
    await phone.open()
    assert (await phone.register()).status == 200
    await hass.async_block_till_done()

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    text = json.dumps(diagnostics)
    for password in PASSWORDS.values():
        assert password not in text
    assert "nonce" not in text.replace('"nonce": "**REDACTED**"', "")
    devices = [d for user in diagnostics["options"]["users"] for d in user["devices"]]
    assert {device["password"] for device in devices} == {"**REDACTED**"}
    assert diagnostics["data"]["port"] == loaded_entry.data["port"]
    assert [b["username"] for b in diagnostics["bindings"]] == ["alice-desk"]
    assert diagnostics["bindings"][0]["user_agent"] == "callflip-test-phone/1.0"


async def test_diagnostics_show_active_calls(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    desk = make_phone("alice-desk")
    bob = make_phone("bob-soft")
    for phone in (desk, bob):
        await phone.open()
        assert (await phone.register()).status == 200
    outgoing = await bob.dial("alice-desk")
    await desk.answer(await desk.request("INVITE"))
    await outgoing.answered()
    await hass.async_block_till_done()

    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    (call,) = diagnostics["calls"]
    assert call["state"] == "talking"
    assert (call["caller_user"], call["callee_user"]) == ("Bob", "Alice")
    assert call["caller"]["device"] == "bob-soft"
    assert call["callee"] == {"device": "alice-desk", "role": "callee", "state": "confirmed"}
    assert call["flip_to"] is None
    assert call["handoffs"] == []
    for password in PASSWORDS.values():
        assert password not in json.dumps(diagnostics)
