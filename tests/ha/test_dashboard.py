"""The dashboard example in docs/dashboard.yaml: Home Assistant loads it, and every entity it
shows exists for the demo household (scripts/develop)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from custom_components.callflip.const import DOMAIN

from .callflip_testing import find_free_port
from .test_develop_config import DEVELOP_CONFIG, _develop_configuration


def _entity_ids(node: Any) -> Iterator[str]:
    """Every entity id a card shows or acts on."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("entity", "entity_id") and isinstance(value, str):
                yield value
            else:
                yield from _entity_ids(value)
    elif isinstance(node, list):
        for item in node:
            yield from _entity_ids(item)


async def test_dashboard_loads_and_shows_existing_entities(
    hass: HomeAssistant, hass_ws_client: Any
) -> None:
    demo = _develop_configuration()[DOMAIN]
    demo = {**demo, "sip": {**demo["sip"], "port": find_free_port()}}
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: demo})
    # The demo's own lovelace section, resolved against the demo's folder as scripts/develop
    # does it.
    hass.config.config_dir = str(DEVELOP_CONFIG)
    lovelace = _develop_configuration()["lovelace"]
    assert await async_setup_component(hass, "lovelace", {"lovelace": lovelace})
    await hass.async_block_till_done()

    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": "callflip-phones"})
    response = await client.receive_json()
    assert response["success"], response
    config = response["result"]
    assert config["title"] == "Phones"
    shown = list(_entity_ids(config))
    assert len(shown) > 10
    missing = [entity_id for entity_id in shown if hass.states.get(entity_id) is None]
    assert missing == []
    # Per person: the call, the last handoff, a flip button per phone, a hang-up button, the
    # DND switches and the last calls.
    for person, phones in (("alice", 3), ("bob", 2)):
        assert f"sensor.{person}_active_call" in shown
        assert f"sensor.{person}_last_handoff" in shown
        assert f"button.{person}_hang_up" in shown
        flips = {e for e in shown if e.startswith(f"button.{person}_flip_to_")}
        assert len(flips) == phones, flips
        assert f"sensor.{person}_last_call" in shown
        assert f"sensor.{person}_missed_calls_today" in shown
        assert f"switch.{person}_flip_enabled" in shown
    assert len([e for e in shown if e.endswith("_do_not_disturb")]) == 5
    # Push and pull for every member of the demo's group Home (Alice's desk and mobile, Bob's
    # desk), each a button of the group.
    group_buttons = {e for e in shown if e.startswith(("button.home_push_", "button.home_pull_"))}
    assert len(group_buttons) == 6, group_buttons
    for entity_id in group_buttons:
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.state == "unavailable"  # nobody registered, no call: nothing to push
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
