"""End to end inside Home Assistant: sipsak, an independent SIP client, registers over 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN

from .callflip_testing import PASSWORDS, find_free_short_port, household, server_data

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak is not installed"),
]


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_sipsak_registration_turns_connectivity_on(hass: HomeAssistant) -> None:
    port = find_free_short_port()
    entry = MockConfigEntry(domain=DOMAIN, data=server_data(port), options={"users": household()})
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    entity_id = "binary_sensor.bob_softphone_registered"
    assert hass.states.get(entity_id).state == STATE_OFF

    # sipsak answers only the first challenge: the device's digest order starts with MD5.
    process = await asyncio.create_subprocess_exec(
        "sipsak",
        "-U",
        "-s",
        f"sip:bob-soft@127.0.0.1:{port}",
        "-u",
        "bob-soft",
        "-a",
        PASSWORDS["bob-soft"],
        "-x",
        "300",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode(errors="replace")
    await hass.async_block_till_done()

    assert hass.states.get(entity_id).state == STATE_ON
    assert hass.states.get("binary_sensor.bob_reachable").state == STATE_ON
    assert hass.states.get("sensor.bob_softphone_transport").state == "udp"
    user_agent = hass.states.get("sensor.bob_softphone_user_agent").state
    assert "sipsak" in user_agent.lower()
    assert await hass.config_entries.async_unload(entry.entry_id)
