"""The README cannot drift from the product: every command and YAML example in it is run or
loaded here, and the pictures it shows exist."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import voluptuous as vol
import yaml
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.script import async_validate_actions_config
from homeassistant.setup import async_setup_component

from custom_components.callflip.const import DOMAIN

from .callflip_testing import find_free_short_port
from .test_develop_config import _develop_configuration

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The two developer commands: one serves the demo until stopped, the other runs this suite, so
# neither can run inside a test; they must exist, be executable and be documented.
DEVELOPER_COMMANDS = {"scripts/develop", "scripts/test"}


def _blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def _commands() -> list[str]:
    commands = []
    for body in _blocks("sh"):
        for line in body.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_every_block_is_a_kind_this_test_checks() -> None:
    assert {lang for lang, _ in BLOCK.findall(README)} <= {"sh", "yaml"}
    assert "```\n" not in README.replace("\n```\n", "\n")  # no unlabelled block either


def test_every_command_is_one_we_run() -> None:
    commands = _commands()
    assert set(commands) >= DEVELOPER_COMMANDS
    for command in commands:
        assert command in DEVELOPER_COMMANDS or command.startswith("sipsak "), (
            f"{command!r}: the README shows a command no test runs"
        )


def test_developer_commands_exist_and_are_documented() -> None:
    development = (ROOT / "docs" / "development.md").read_text()
    for command in DEVELOPER_COMMANDS:
        path = ROOT / command
        assert path.is_file(), command
        assert os.access(path, os.X_OK), command
        assert command in development


def test_linked_pictures_and_files_exist() -> None:
    links = re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]+)\)", README)
    assert any(link.endswith(".png") for link in links)
    for link in links:
        if link == "docs/phones.md":  # the clients' page has its own tests
            continue
        assert (ROOT / link).is_file(), link


@pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak is not installed")
@pytest.mark.parametrize("command", [c for c in _commands() if c.startswith("sipsak ")])
async def test_sipsak_example_registers_with_the_demo(hass: HomeAssistant, command: str) -> None:
    """The README's sipsak line, against the demo household (on a free port instead of 5060)."""
    demo = _develop_configuration()[DOMAIN]
    port = find_free_short_port()
    assert await async_setup_component(
        hass, DOMAIN, {DOMAIN: {**demo, "sip": {**demo["sip"], "port": port}}}
    )
    await hass.async_block_till_done()
    assert "127.0.0.1:5060" in command
    argv = shlex.split(command.replace("127.0.0.1:5060", f"127.0.0.1:{port}"))
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode(errors="replace")
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.office_desk_phone_registered").state == STATE_ON
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)


def _yaml_examples() -> list[Any]:
    return [yaml.safe_load(body) for body in _blocks("yaml")]


def test_yaml_examples_are_automations_or_actions() -> None:
    examples = _yaml_examples()
    assert examples
    for example in examples:
        is_automation = isinstance(example, dict) and "triggers" in example
        is_actions = isinstance(example, list) and all("action" in step for step in example)
        assert is_automation or is_actions, example


# The device ids the README's examples use, and the demo's devices they stand for.
EXAMPLE_DEVICES = {
    "4f0c2b7e9d1a4c3b8e6f5a2d1c0b9a87": "sensor.alice_active_call",
    "5e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b": "sensor.bob_active_call",
    "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d": "sensor.alice_s_mobile_call_state",
}


def _with_demo_device_ids(hass: HomeAssistant, node: Any) -> Any:
    registry = er.async_get(hass)
    if isinstance(node, dict):
        return {key: _with_demo_device_ids(hass, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_demo_device_ids(hass, item) for item in node]
    if isinstance(node, str) and node in EXAMPLE_DEVICES:
        entry = registry.async_get(EXAMPLE_DEVICES[node])
        assert entry is not None
        assert entry.device_id is not None
        return entry.device_id
    return node


def test_examples_use_only_known_device_ids() -> None:
    ids = set(re.findall(r"\b[0-9a-f]{32}\b", README))
    assert ids == set(EXAMPLE_DEVICES)


async def test_example_automations_load(hass: HomeAssistant) -> None:
    """Each example automation is accepted by Home Assistant and attaches its triggers (an
    invalid one would be unavailable), on the demo household's devices."""
    demo = _develop_configuration()[DOMAIN]
    assert await async_setup_component(
        hass, DOMAIN, {DOMAIN: {**demo, "sip": {**demo["sip"], "port": find_free_short_port()}}}
    )
    await hass.async_block_till_done()
    automations = [
        _with_demo_device_ids(hass, example)
        for example in _yaml_examples()
        if isinstance(example, dict)
    ]
    assert len(automations) >= 3
    assert await async_setup_component(hass, "automation", {"automation": automations})
    await hass.async_block_till_done()
    states = hass.states.async_all("automation")
    assert len(states) == len(automations)
    assert all(state.state == STATE_ON for state in states), states
    # The entities the examples use exist in the demo household.
    for automation in automations:
        for step in automation["actions"]:
            for entity_id in cv.ensure_list(step.get("target", {}).get("entity_id")):
                if entity_id.startswith(("button.", "sensor.")):
                    assert hass.states.get(entity_id) is not None, entity_id
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_example_actions_run_on_the_demo(hass: HomeAssistant) -> None:
    """The action examples pass their schemas and, run on the demo household without a call,
    reach callflip's own refusal (so their device ids are the right kind of device)."""
    demo = _develop_configuration()[DOMAIN]
    assert await async_setup_component(
        hass, DOMAIN, {DOMAIN: {**demo, "sip": {**demo["sip"], "port": find_free_short_port()}}}
    )
    await hass.async_block_till_done()
    actions = [example for example in _yaml_examples() if isinstance(example, list)]
    assert {step["action"] for example in actions for step in example} == {
        "callflip.flip",
        "callflip.hangup",
        "callflip.play",
        "callflip.transfer",
        "callflip.push",
        "callflip.announce",
        "callflip.call",
    }
    # Without a call (or a registered phone), each reaches its first refusal.
    refusals = {"callflip.announce": "nothing_registered", "callflip.call": "number_unavailable"}
    for example in actions:
        await async_validate_actions_config(hass, cv.SCRIPT_SCHEMA(example))
        for step in _with_demo_device_ids(hass, example):
            domain, service = step["action"].split(".")
            data = {**step.get("data", {}), **step.get("target", {})}
            schema = hass.services.async_services()[domain][service].schema
            assert isinstance(schema, vol.Schema)
            schema(data)
            with pytest.raises(ServiceValidationError) as caught:
                await hass.services.async_call(domain, service, data, blocking=True)
            assert caught.value.translation_key == refusals.get(step["action"], "no_call")
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    assert await hass.config_entries.async_unload(entry.entry_id)
