"""Repair issues: the YAML section left behind, a SIP port that cannot be opened, weak passwords.

Also the reconfigure step's port check, which must not take the PBX's own listener for another
program when only the bind address changes.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from aiohttp.test_utils import TestClient
from homeassistant.config_entries import SOURCE_RECONFIGURE, ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.callflip.config_flow import held_by_own_pbx, probe_address
from custom_components.callflip.const import DOMAIN
from custom_components.callflip.repairs import async_create_fix_flow
from custom_components.callflip.users import password_is_strong

from .callflip_testing import find_free_port, household
from .sip_client import SipPhone

COMPONENT = Path(__file__).parents[2] / "custom_components" / "callflip"
STRINGS: dict[str, Any] = json.loads((COMPONENT / "strings.json").read_text())
STRONG = "Strong-Device-Secret-9"


def _issues(hass: HomeAssistant) -> dict[str, ir.IssueEntry]:
    registry = ir.async_get(hass)
    return {
        issue_id: issue for (domain, issue_id), issue in registry.issues.items() if domain == DOMAIN
    }


def _section(port: int, password: str = STRONG) -> dict[str, Any]:
    """A runner configuration (the ``callflip:`` YAML section) with one user and device."""
    return {
        "sip": {"listen": "127.0.0.1", "port": port, "domain": "yaml.home.arpa"},
        "rtp": {"ports": "44000-44999"},
        "users": [
            {
                "name": "Carol",
                "extension": "301",
                "devices": [
                    {"username": "carol-desk", "password": password, "label": "Carol desk"}
                ],
            }
        ],
    }


# -- the YAML section ----------------------------------------------------------------------------


async def test_import_raises_the_yaml_issue(hass: HomeAssistant) -> None:
    """The first start imports the section; from then on it is ignored, and the issue says so."""
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: _section(find_free_port())})
    await hass.async_block_till_done()
    (entry,) = hass.config_entries.async_entries(DOMAIN)
    assert entry.state is ConfigEntryState.LOADED
    issue = _issues(hass)["yaml_section_ignored"]
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_key == "yaml_section_ignored"
    assert not issue.is_fixable
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_section_next_to_an_entry_raises_the_issue(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: _section(find_free_port())})
    await hass.async_block_till_done()
    assert hass.config_entries.async_entries(DOMAIN) == [config_entry]
    assert "yaml_section_ignored" in _issues(hass)
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_no_section_no_issue(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    """A section removed since the last start: its issue goes away."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        "yaml_section_ignored",
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key="yaml_section_ignored",
    )
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert "yaml_section_ignored" not in _issues(hass)
    assert config_entry.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(config_entry.entry_id)


# -- the SIP port --------------------------------------------------------------------------------


async def test_port_in_use_raises_an_issue_until_the_pbx_listens(
    hass: HomeAssistant, config_entry: MockConfigEntry, sip_port: int
) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", sip_port))
    try:
        assert not await hass.config_entries.async_setup(config_entry.entry_id)
        await hass.async_block_till_done()
        assert config_entry.state is ConfigEntryState.SETUP_RETRY
        issue = _issues(hass)["cannot_listen"]
        assert issue.severity is ir.IssueSeverity.ERROR
        assert issue.translation_placeholders is not None
        assert issue.translation_placeholders["address"] == "127.0.0.1"
        assert issue.translation_placeholders["port"] == str(sip_port)
        assert issue.translation_placeholders["error"]
    finally:
        blocker.close()
    # The port is free again: the next attempt (here: a reload) starts the PBX; the issue goes.
    assert await hass.config_entries.async_reload(config_entry.entry_id)
    await hass.async_block_till_done()
    assert config_entry.state is ConfigEntryState.LOADED
    assert "cannot_listen" not in _issues(hass)
    assert await hass.config_entries.async_unload(config_entry.entry_id)


# -- weak passwords ------------------------------------------------------------------------------


async def test_imported_weak_password_raises_an_issue_per_device(hass: HomeAssistant) -> None:
    """The runner accepts short passwords; the UI does not, and the issue names the device."""
    assert await async_setup_component(
        hass, DOMAIN, {DOMAIN: _section(find_free_port(), password="carol1234")}
    )
    await hass.async_block_till_done()
    (entry,) = hass.config_entries.async_entries(DOMAIN)
    device = entry.options["users"][0]["devices"][0]
    issue = _issues(hass)[f"weak_password_{device['id']}"]
    assert issue.translation_key == "weak_password"
    assert issue.translation_placeholders == {
        "label": "Carol desk",
        "username": "carol-desk",
        "user": "Carol",
    }

    # A strong password (set in the options) clears it without a restart.
    users = json.loads(json.dumps(entry.options["users"]))
    users[0]["devices"][0]["password"] = STRONG
    hass.config_entries.async_update_entry(entry, options={"users": users})
    await hass.async_block_till_done()
    assert not [key for key in _issues(hass) if key.startswith("weak_password_")]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_removed_weak_device_and_removed_entry_leave_no_issue(
    hass: HomeAssistant, sip_port: int
) -> None:
    users = household()
    users[1]["devices"][0]["password"] = "bobsecret"
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            "listen": "127.0.0.1",
            "port": sip_port,
            "domain": "test.home.arpa",
            "rtp_port_min": 42000,
            "rtp_port_max": 42999,
        },
        options={"users": users},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert [key for key in _issues(hass) if key.startswith("weak_password_")] == [
        "weak_password_d-bob-soft"
    ]
    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert _issues(hass) == {}


async def test_strong_passwords_raise_nothing(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    assert _issues(hass) == {}


# -- reconfigure on the same port ----------------------------------------------------------------


async def _reconfigure(hass: HomeAssistant, entry: MockConfigEntry, **changes: Any) -> Any:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": entry.entry_id}
    )
    assert result["type"] is FlowResultType.FORM
    # The reload would bind the new address for real; the flow's checks are what is tested.
    with patch("homeassistant.config_entries.ConfigEntries.async_schedule_reload"):
        return await hass.config_entries.flow.async_configure(
            result["flow_id"], {**dict(entry.data), **changes}
        )


async def test_reconfigure_bind_address_on_the_same_port(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Our own listener on 127.0.0.1:port is not 'another program' when moving to 0.0.0.0."""
    port = loaded_entry.data["port"]
    result = await _reconfigure(hass, loaded_entry, listen="0.0.0.0")
    assert result["type"] is FlowResultType.ABORT, result.get("errors")
    assert result["reason"] == "reconfigure_successful"
    assert loaded_entry.data["listen"] == "0.0.0.0"
    assert loaded_entry.data["port"] == port


async def test_reconfigure_still_refuses_a_port_held_by_another_program(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    other = find_free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", other))
    try:
        result = await _reconfigure(hass, loaded_entry, port=other)
    finally:
        blocker.close()
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"port": "port_in_use"}


async def test_reconfigure_to_an_address_not_on_this_host(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Same port, another address: the address itself is still checked."""
    result = await _reconfigure(hass, loaded_entry, listen="192.0.2.1")
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"listen": "address_not_available"}


# -- translations --------------------------------------------------------------------------------


def test_every_issue_is_translated() -> None:
    source = (COMPONENT / "issues.py").read_text()
    keys = set(re.findall(r'translation_key="(\w+)"', source))
    keys |= set(re.findall(r'^ISSUE_\w+ = "(\w+)"', source, re.MULTILINE))
    assert keys == {"yaml_section_ignored", "cannot_listen", "weak_password"}
    # The security monitor raises its own (ban, open to the internet); tests/ha/test_security.py.
    security = (COMPONENT / "security.py").read_text()
    banned = set(re.findall(r'translation_key="(\w+)"', security)) & set(STRINGS["issues"])
    banned |= set(re.findall(r'^ISSUE_\w+ = "(\w+)"', security, re.MULTILINE))
    assert banned == {"address_banned", "open_to_internet"}
    assert set(STRINGS["issues"]) == keys | banned
    given = {
        "yaml_section_ignored": {"domain"},
        "cannot_listen": {"address", "port", "error"},
        "weak_password": {"label", "username", "user"},
    }
    for key in keys:
        text = STRINGS["issues"][key]
        assert text["title"]
        used = set(re.findall(r"\{(\w+)\}", text["title"]))
        if key == "weak_password":
            # A fixable issue is explained by its fix flow's steps (hassfest: not both).
            assert "description" not in text
            steps = text["fix_flow"]["step"]
            assert set(steps) == {"confirm", "done"}
            used |= set(re.findall(r"\{(\w+)\}", steps["confirm"]["description"]))
            done = set(
                re.findall(r"\{(\w+)\}", steps["done"]["title"] + steps["done"]["description"])
            )
            assert done == {"username", "password", "domain", "server"}
            assert set(text["fix_flow"]["abort"]) == {"device_gone"}
        else:
            assert text["description"]
            used |= set(re.findall(r"\{(\w+)\}", text["description"]))
        assert used <= given[key], key


def test_probe_address() -> None:
    assert probe_address("127.0.0.1") is None
    assert probe_address("::1") is None
    assert probe_address("192.0.2.1") == "address_not_available"  # TEST-NET-1: on no host


@pytest.mark.parametrize(
    ("old", "new", "port_offset", "loaded", "ours"),
    [
        ("127.0.0.1", "0.0.0.0", 0, True, True),
        ("0.0.0.0", "192.0.2.1", 0, True, True),
        ("::1", "::", 0, True, True),
        ("127.0.0.1", "127.0.0.2", 0, True, False),  # two specific addresses do not collide
        ("127.0.0.1", "0.0.0.0", 1, True, False),  # another port is never ours
        ("127.0.0.1", "0.0.0.0", 0, False, False),  # no PBX running: not ours either
    ],
)
def test_held_by_own_pbx(old: str, new: str, port_offset: int, loaded: bool, ours: bool) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"listen": old, "port": 5070},
        state=ConfigEntryState.LOADED if loaded else ConfigEntryState.NOT_LOADED,
    )
    assert held_by_own_pbx(entry, new, 5070 + port_offset) is ours


# -- fixing a weak password from the issue -------------------------------------------------------


async def _start_fix(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> tuple[TestClient, ConfigEntry, str, dict[str, Any]]:
    assert await async_setup_component(hass, "repairs", {})
    port = find_free_port()
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: _section(port, password="carol1234")})
    await hass.async_block_till_done()
    (entry,) = hass.config_entries.async_entries(DOMAIN)
    issue_id = f"weak_password_{entry.options['users'][0]['devices'][0]['id']}"
    assert _issues(hass)[issue_id].is_fixable
    client = await hass_client()
    response = await client.post(
        "/api/repairs/issues/fix", json={"handler": DOMAIN, "issue_id": issue_id}
    )
    assert response.status == 200
    return client, entry, issue_id, await response.json()


async def test_fix_flow_replaces_a_weak_password(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    client, entry, issue_id, form = await _start_fix(hass, hass_client)
    assert form["step_id"] == "confirm"
    assert form["description_placeholders"] == {
        "label": "Carol desk",
        "username": "carol-desk",
        "user": "Carol",
    }
    response = await client.post(f"/api/repairs/issues/fix/{form['flow_id']}", json={})
    done = await response.json()
    assert done["step_id"] == "done"
    shown = done["description_placeholders"]
    password = shown["password"]
    assert password_is_strong(password, ("carol-desk", "Carol desk"))
    assert shown["username"] == "carol-desk"
    assert shown["domain"] == "yaml.home.arpa"
    assert shown["server"] == f"127.0.0.1:{entry.data['port']}"
    # Stored, applied to the running PBX (the phone registers with it), the issue gone.
    await hass.async_block_till_done()
    assert entry.options["users"][0]["devices"][0]["password"] == password
    assert issue_id not in _issues(hass)
    phone = SipPhone(
        port=entry.data["port"], username="carol-desk", password=password, domain="yaml.home.arpa"
    )
    await phone.open()
    try:
        assert (await phone.register()).status == 200
    finally:
        phone.close()
    response = await client.post(f"/api/repairs/issues/fix/{form['flow_id']}", json={})
    assert (await response.json())["type"] == "create_entry"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_fix_flow_for_a_device_removed_meanwhile(
    hass: HomeAssistant, hass_client: ClientSessionGenerator
) -> None:
    client, entry, _issue_id, form = await _start_fix(hass, hass_client)
    users = json.loads(json.dumps(entry.options["users"]))
    users[0]["devices"] = []
    hass.config_entries.async_update_entry(entry, options={"users": users})
    await hass.async_block_till_done()
    response = await client.post(f"/api/repairs/issues/fix/{form['flow_id']}", json={})
    result = await response.json()
    assert result["type"] == "abort"
    assert result["reason"] == "device_gone"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_only_weak_passwords_have_a_fix_flow(hass: HomeAssistant) -> None:
    with pytest.raises(ValueError, match="no fix flow"):
        await async_create_fix_flow(hass, "cannot_listen", None)
