"""The demo (scripts/develop) has a logbook and history, and callflip's lines read well there.

Its own module: the recorder must start before Home Assistant does, so this module's fixtures
put it first.
"""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.callflip.const import DOMAIN, EVENT_HANDOFF

from .callflip_testing import find_free_port
from .test_develop_config import _develop_configuration


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(recorder_mock: Any, enable_custom_integrations: None) -> None:
    """The recorder first (before hass), then callflip may load."""


async def test_demo_logbook_shows_callflip_lines(
    recorder_mock: Any, hass: HomeAssistant, hass_client: Any
) -> None:
    """The demo's recorder, history and logbook load, and a handoff reads as a sentence there."""
    configuration = _develop_configuration()
    for domain in ("history", "logbook"):
        assert await async_setup_component(hass, domain, {domain: configuration[domain] or {}})
    demo = configuration[DOMAIN]
    demo = {**demo, "sip": {**demo["sip"], "port": find_free_port()}}
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: demo})
    await hass.async_block_till_done()
    hass.bus.async_fire(
        EVENT_HANDOFF,
        {
            "type": "flip_succeeded",
            "call_id": "c1",
            "from_device": "201",
            "from_label": "Office Desk Phone",
            "to_device": "202",
            "to_label": "Alice's Mobile",
            "reason": "",
            "user": "Alice",
        },
    )
    await hass.async_block_till_done()
    await async_wait_recording_done(hass)
    client = await hass_client()
    response = await client.get("/api/logbook")
    assert response.status == 200
    lines = [line for line in await response.json() if line.get("domain") == DOMAIN]
    assert [(line["name"], line["message"]) for line in lines] == [
        ("Alice", "moved the call from Office Desk Phone to Alice's Mobile")
    ]
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
