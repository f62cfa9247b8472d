"""SIP trunks in Home Assistant: the options steps (every validation error on its field), the
trunk state sensor and the repair issue after refused logins, with a second sip_core PBX as the
provider, and passwords kept out of the diagnostics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.trunk_sensor import trunk_unique_id
from sip_core.config import SecuritySettings, config_from_mapping
from sip_core.pbx import Pbx
from sip_core.trunk.registration import Backoff

from .callflip_testing import DOMAIN_NAME, find_free_port, household, server_data
from .sip_client import SipPhone
from .test_calls import answered_call, ha_id, registered

COMPONENT = Path(__file__).parents[2] / "custom_components" / "callflip"
STRINGS: dict[str, Any] = json.loads((COMPONENT / "strings.json").read_text())
PROVIDER_PASSWORD = "Provider-Secret-77"
ENTRY_ID = "01JCALLFLIPTRUNKENTRY00001"

GOOD_TRUNK: dict[str, Any] = {
    "name": "provider",
    "host": "127.0.0.1",
    "port": 5999,
    "transport": "udp",
    "username": "4930",
    "password": PROVIDER_PASSWORD,
    "register": False,
    "register_interval": 600,
}


def stored_trunk(port: int, password: str, **extra: Any) -> dict[str, Any]:
    return {**GOOD_TRUNK, "id": "t-provider", "port": port, "password": password,
            "register": True, "register_interval": 60, "dids": [], **extra}  # fmt: skip


async def _trunk_menu(hass: HomeAssistant, entry: MockConfigEntry, choice: str) -> dict[str, Any]:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "trunks"}
    )
    assert result["type"] is FlowResultType.MENU
    assert choice in result["menu_options"], result["menu_options"]
    return dict(
        await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": choice}
        )
    )


async def _add_trunk(hass: HomeAssistant, entry: MockConfigEntry, **changes: Any) -> dict[str, Any]:
    result = await _trunk_menu(hass, entry, "add_trunk")
    assert result["step_id"] == "trunk"
    values = {k: v for k, v in {**GOOD_TRUNK, **changes}.items() if v is not None}
    return dict(await hass.config_entries.options.async_configure(result["flow_id"], values))


def _trunk_id(entry: MockConfigEntry, name: str = "provider") -> str:
    return next(t["id"] for t in entry.options["trunks"] if t["name"] == name)


def _issues(hass: HomeAssistant) -> set[str]:
    return {issue_id for (domain, issue_id) in ir.async_get(hass).issues if domain == DOMAIN}


async def _until(hass: HomeAssistant, check: Callable[[], bool], what: str) -> None:
    for _ in range(300):
        await hass.async_block_till_done()
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the options steps --------------------------------------------------------------------------


async def test_add_a_trunk_its_number_a_route_and_the_dial_plan(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _add_trunk(hass, loaded_entry, auth_username="auth4930", caller_id="+4930123")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    (trunk,) = loaded_entry.options["trunks"]
    assert trunk["password"] == PROVIDER_PASSWORD
    assert trunk["id"]
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.trunking is not None  # applied to the running PBX, no reload
    assert pbx.config.trunking.trunks[0].auth_user == "auth4930"

    result = await _trunk_menu(hass, loaded_entry, "add_did")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk["id"], "number": "+4930111"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    result = await _trunk_menu(hass, loaded_entry, "add_did")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"trunk": trunk["id"], "number": "+4930222", "destination": "device:d-bob-soft"},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    dids = pbx.config.trunking.trunks[0].dids
    assert [(d.number, d.destination) for d in dids] == [
        ("+4930111", "Alice"),  # by default the first user
        ("+4930222", "bob-soft"),
    ]

    result = await _trunk_menu(hass, loaded_entry, "add_route")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk["id"], "kind": "prefix", "prefix": "0", "strip": True}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    result = await _trunk_menu(hass, loaded_entry, "dialplan")
    assert result["step_id"] == "dialplan"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "emergency": "112, 110",
            "emergency_trunk": trunk["id"],
            "call_out_all": False,
            "call_out": ["u-alice"],
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    plan = pbx.config.trunking.dialplan
    assert plan.emergency == ("112", "110")
    assert plan.call_out == ("Alice",)
    assert plan.routes[0].prefix == "0"
    assert plan.routes[0].strip

    # Renaming a user keeps the reference (stored by id).
    users = household()
    users[0]["name"] = "Alicia"
    hass.config_entries.async_update_entry(
        loaded_entry, options={**loaded_entry.options, "users": users}
    )
    await hass.async_block_till_done()
    # Editing keeps the password when the field is left empty.
    result = await _trunk_menu(hass, loaded_entry, "edit_trunk")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk["id"]}
    )
    values = {k: v for k, v in GOOD_TRUNK.items() if k != "password"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**values, "name": "line"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    (renamed,) = pbx.config.trunking.trunks
    assert (renamed.name, renamed.password) == ("line", PROVIDER_PASSWORD)
    assert pbx.config.trunking.dialplan.call_out == ("Alicia",)
    assert pbx.config.trunking.dialplan.routes[0].trunk == "line"

    result = await _trunk_menu(hass, loaded_entry, "remove_route")
    result = await hass.config_entries.options.async_configure(result["flow_id"], {"route": "0"})
    result = await _trunk_menu(hass, loaded_entry, "remove_did")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"did": f"{trunk['id']}/+4930111"}
    )
    await hass.async_block_till_done()
    assert [d.number for d in pbx.config.trunking.trunks[0].dids] == ["+4930222"]
    assert pbx.config.trunking.dialplan.routes == ()
    result = await _trunk_menu(hass, loaded_entry, "remove_trunk")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk["id"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.options["trunks"] == []
    assert pbx.config.trunking is None


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"name": "my provider"}, "name", "invalid_trunk_name"),
        ({"host": "bad host!"}, "host", "invalid_host"),
        ({"port": 70000}, "port", "port_out_of_range"),
        ({"username": "a b"}, "username", "invalid_number"),
        ({"auth_username": 'x"y'}, "auth_username", "invalid_auth_username"),
        ({"password": None}, "password", "password_required"),
        ({"realm": "a\x01b"}, "realm", "invalid_realm"),
        ({"domain": "bad domain"}, "domain", "invalid_host"),
        ({"outbound_proxy": "proxy.example:99999"}, "outbound_proxy", "invalid_proxy"),
        ({"register_interval": 10}, "register_interval", "invalid_register_interval"),
        ({"caller_id": "my number"}, "caller_id", "invalid_number"),
        ({"public_address": "router.example"}, "public_address", "invalid_public_address"),
        ({"public_address": "0.0.0.0"}, "public_address", "invalid_public_address"),
    ],
)
async def test_every_trunk_field_error(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    changes: dict[str, Any],
    field: str,
    error: str,
) -> None:
    result = await _add_trunk(hass, loaded_entry, **changes)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}
    assert error in STRINGS["options"]["error"]
    assert "trunks" not in loaded_entry.options  # nothing was stored


async def test_a_trunk_name_may_be_used_once(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    assert (await _add_trunk(hass, loaded_entry))["type"] is FlowResultType.CREATE_ENTRY
    result = await _add_trunk(hass, loaded_entry, name="PROVIDER")
    assert result["errors"] == {"name": "duplicate_trunk_name"}


async def test_every_number_and_dial_plan_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    assert (await _add_trunk(hass, loaded_entry))["type"] is FlowResultType.CREATE_ENTRY
    await _add_trunk(hass, loaded_entry, name="second", port=5998)
    trunk_id, second_id = _trunk_id(loaded_entry), _trunk_id(loaded_entry, "second")

    async def did(values: dict[str, Any]) -> dict[str, Any]:
        result = await _trunk_menu(hass, loaded_entry, "add_did")
        return dict(await hass.config_entries.options.async_configure(result["flow_id"], values))

    result = await did({"trunk": trunk_id, "number": "call me"})
    assert result["errors"] == {"number": "invalid_number"}
    assert (await did({"trunk": trunk_id, "number": "+4930111"}))["type"] is (
        FlowResultType.CREATE_ENTRY
    )
    result = await did({"trunk": second_id, "number": "+4930111"})
    assert result["errors"] == {"number": "duplicate_did"}

    async def route(values: dict[str, Any]) -> dict[str, Any]:
        result = await _trunk_menu(hass, loaded_entry, "add_route")
        return dict(await hass.config_entries.options.async_configure(result["flow_id"], values))

    result = await route({"trunk": trunk_id, "kind": "prefix"})
    assert result["errors"] == {"prefix": "invalid_prefix"}
    result = await route({"trunk": trunk_id, "kind": "prefix", "prefix": "0a"})
    assert result["errors"] == {"prefix": "invalid_prefix"}
    result = await route({"trunk": trunk_id, "kind": "prefix", "prefix": "1"})
    assert result["errors"] == {"prefix": "prefix_captures_internal"}  # 101 is Alice
    result = await route({"trunk": trunk_id, "kind": "external", "prefix": "1"})
    assert result["type"] is FlowResultType.CREATE_ENTRY  # the prefix is not used

    async def dialplan(emergency: str) -> dict[str, Any]:
        result = await _trunk_menu(hass, loaded_entry, "dialplan")
        return dict(
            await hass.config_entries.options.async_configure(
                result["flow_id"],
                {"emergency": emergency, "emergency_trunk": trunk_id, "call_out_all": True},
            )
        )

    assert (await dialplan("11a"))["errors"] == {"emergency": "invalid_emergency"}
    assert (await dialplan("112, 101"))["errors"] == {"emergency": "emergency_internal"}
    for key in ("invalid_number", "duplicate_did", "invalid_prefix", "invalid_emergency"):
        assert key in STRINGS["options"]["error"]
    assert "prefix_captures_internal" in STRINGS["options"]["error"]
    assert "emergency_internal" in STRINGS["options"]["error"]


async def test_a_number_needs_someone_to_ring(hass: HomeAssistant, sip_port: int) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=server_data(sip_port),
        options={"users": [], "trunks": [{**GOOD_TRUNK, "id": "t1", "dids": []}]},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    result = await _trunk_menu(hass, entry, "add_did")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": "t1", "number": "+4930111"}
    )
    assert result["errors"] == {"destination": "invalid_destination"}
    assert "invalid_destination" in STRINGS["options"]["error"]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_a_removed_destination_rings_the_first_user(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    trunk = {**GOOD_TRUNK, "id": "t1", "dids": [{"number": "+49301", "destination": "user:gone"}]}
    hass.config_entries.async_update_entry(
        config_entry, options={**config_entry.options, "trunks": [trunk]}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    trunking = config_entry.runtime_data.hub.pbx.config.trunking
    assert trunking is not None
    assert trunking.trunks[0].dids[0].destination == "Alice"
    await hass.config_entries.async_unload(config_entry.entry_id)


def test_every_trunk_step_and_error_is_translated() -> None:
    source = (COMPONENT / "trunk_flow.py").read_text()
    steps = set(re.findall(r'step_id="(\w+)"', source))
    assert steps <= set(STRINGS["options"]["step"])
    menu = set(re.findall(r'"((?:add|edit|remove)_(?:trunk|did|route)|dialplan)"', source))
    assert menu == set(STRINGS["options"]["step"]["trunks"]["menu_options"])
    pattern = r'"((?:invalid|duplicate)_\w+|password_required|\w+_internal|port_out_of_range)"'
    errors = set(re.findall(pattern, source))
    assert errors
    assert errors <= set(STRINGS["options"]["error"])


async def test_diagnostics_redact_the_trunk_password(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, loaded_entry: MockConfigEntry
) -> None:
    assert (await _add_trunk(hass, loaded_entry))["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    assert PROVIDER_PASSWORD not in json.dumps(diagnostics)
    (trunk,) = diagnostics["options"]["trunks"]
    assert trunk["password"] == "**REDACTED**"
    assert trunk["username"] == "4930"
    assert diagnostics["trunk_states"] == []  # registration is off


# -- the state sensor and the repair issue, with a real provider --------------------------------


@pytest.fixture
async def provider() -> AsyncIterator[Pbx]:
    """A second sip_core PBX as the provider's registrar: account 4930."""
    port = find_free_port()
    config = config_from_mapping(
        {
            "sip": {"listen": "127.0.0.1", "port": port, "domain": "provider.test"},
            "rtp": {"ports": "44000-44099"},
            "users": [
                {
                    "name": "Line",
                    "extension": "100",
                    "devices": [{"username": "4930", "password": PROVIDER_PASSWORD}],
                }
            ],
        }
    )
    # The test's refused logins must not get 127.0.0.1 banned at the provider.
    config = replace(config, security=SecuritySettings(never_ban=("127.0.0.0/8",)))
    pbx = Pbx(config)
    await pbx.start()
    yield pbx
    await pbx.stop()


async def test_trunk_state_sensor_and_repair_issue(
    hass: HomeAssistant, sip_port: int, provider: Pbx
) -> None:
    port = provider.local_address.port
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"callflip {DOMAIN_NAME}",
        data=server_data(sip_port),
        options={
            "users": household(),
            "trunks": [
                stored_trunk(port, "Wrong-Password-1"),
                {**stored_trunk(port, "x"), "id": "t-router", "name": "router", "register": False},
            ],
        },
        entry_id=ENTRY_ID,
    )
    entry.add_to_hass(hass)
    # Refused logins are retried after 5 minutes and more; here after a fraction of a second.
    with patch("sip_core.trunk.registration.AUTH_BACKOFF", Backoff(0.3, 0.3)):
        assert await hass.config_entries.async_setup(entry.entry_id)
        registry = er.async_get(hass)
        entity_id = registry.async_get_entity_id(
            "sensor", DOMAIN, trunk_unique_id(ENTRY_ID, "t-provider")
        )
        router_id = registry.async_get_entity_id(
            "sensor", DOMAIN, trunk_unique_id(ENTRY_ID, "t-router")
        )
        assert entity_id is not None
        assert router_id is not None
        router = hass.states.get(router_id)
        assert router is not None
        assert router.state == "not_registering"
        assert router.attributes["friendly_name"].endswith("Trunk router")
        await _until(
            hass,
            lambda: (s := hass.states.get(entity_id)) is not None and s.state == "failing",
            "the trunk to fail",
        )
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.attributes["reason"] == "authentication failed"
        assert state.attributes["authentication_failures"] >= 1
        issue_id = "trunk_auth_t-provider"
        await _until(hass, lambda: issue_id in _issues(hass), "the repair issue")
        issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
        assert issue is not None
        assert issue.translation_key == "trunk_authentication"
        assert issue.translation_placeholders is not None
        assert issue.translation_placeholders["trunk"] == "provider"
        assert "trunk_authentication" in STRINGS["issues"]

        # The right password, through the options: registered, and the issue is gone.
        result = await _trunk_menu(hass, entry, "edit_trunk")
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"trunk": "t-provider"}
        )
        fields = {k: v for k, v in stored_trunk(port, PROVIDER_PASSWORD).items() if k in GOOD_TRUNK}
        result = await hass.config_entries.options.async_configure(result["flow_id"], fields)
        assert result["type"] is FlowResultType.CREATE_ENTRY
        await _until(
            hass,
            lambda: (s := hass.states.get(entity_id)) is not None and s.state == "registered",
            "the trunk to register",
        )
        assert issue_id not in _issues(hass)
        assert [b.username for b in provider.bindings()] == ["4930"]
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.attributes["reason"] is None

        # Removing a trunk removes its sensor.
        result = await _trunk_menu(hass, entry, "remove_trunk")
        await hass.config_entries.options.async_configure(result["flow_id"], {"trunk": "t-router"})
        await hass.async_block_till_done()
        assert registry.async_get(router_id) is None
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()


def test_the_repair_issue_text_uses_what_the_monitor_gives() -> None:
    issue = STRINGS["issues"]["trunk_authentication"]
    given = {"trunk", "host", "username", "failures"}
    used = set(re.findall(r"\{(\w+)\}", issue["title"] + issue["description"]))
    assert used <= given
    source = (COMPONENT / "trunks.py").read_text()
    assert given == set(re.findall(r'"(\w+)": ', source.split("translation_placeholders=")[1])[:4])


async def test_trunks_are_imported_from_the_runners_yaml(hass: HomeAssistant) -> None:
    """A ``callflip:`` section with trunks becomes options that refer by id, and the PBX runs
    the same trunks and dial plan the runner would."""
    section = {
        "sip": {"listen": "127.0.0.1", "port": find_free_port(), "domain": "yaml.home.arpa"},
        "rtp": {"ports": "44100-44199"},
        "users": [
            {"name": "Carol", "extension": "301",
             "devices": [{"username": "carol-desk", "password": "Carol-Desk-Secret-1"}]},
            {"name": "Dan", "extension": "302",
             "devices": [{"username": "dan-desk", "password": "Dan-Desk-Secret-22"}]},
        ],
        "trunks": [
            {"name": "line", "host": "192.0.2.10", "username": "4930", "password": "Line-pw-1",
             "register": False, "public_address": "203.0.113.7:5080",
             "dids": [{"number": "+4930", "destination": "Dan"},
                      {"number": "+4931", "destination": "carol-desk"}]},
        ],
        "dialplan": {"routes": [{"prefix": "0", "trunk": "line", "strip": True},
                                {"external": True, "trunk": "line"}],
                     "emergency": ["112"], "call_out": ["Carol"]},
    }  # fmt: skip
    assert await async_setup_component(hass, DOMAIN, {DOMAIN: section})
    await hass.async_block_till_done()
    (entry,) = hass.config_entries.async_entries(DOMAIN)
    (trunk,) = entry.options["trunks"]
    assert trunk["password"] == "Line-pw-1"
    assert [d["destination"].split(":")[0] for d in trunk["dids"]] == ["user", "device"]
    assert entry.options["dialplan"]["call_out"] == [
        next(u["id"] for u in entry.options["users"] if u["name"] == "Carol")
    ]
    expected = config_from_mapping(section).trunking
    assert entry.runtime_data.hub.pbx.config.trunking == expected
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_a_transfer_out_by_someone_who_may_not_call_out_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Only Alice may call out: Bob's transfer of his call to an outside number is refused with
    its own translated message (not "no extension"), and the call goes on."""
    assert (await _add_trunk(hass, loaded_entry))["type"] is FlowResultType.CREATE_ENTRY
    trunk_id = _trunk_id(loaded_entry)
    result = await _trunk_menu(hass, loaded_entry, "add_route")
    await hass.config_entries.options.async_configure(
        result["flow_id"], {"trunk": trunk_id, "kind": "prefix", "prefix": "0", "strip": True}
    )
    result = await _trunk_menu(hass, loaded_entry, "dialplan")
    await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"emergency": "112", "emergency_trunk": trunk_id, "call_out_all": False,
         "call_out": ["u-alice"]},
    )  # fmt: skip
    await hass.async_block_till_done()
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "transfer",
            {"device_id": ha_id(hass, loaded_entry, "user-u-bob"), "number": "0301234"},
            blocking=True,
        )
    assert caught.value.translation_key == "transfer_not_allowed"
    assert str(caught.value) == "0301234 goes out through a trunk, and Bob may not call out"
    (view,) = loaded_entry.runtime_data.hub.pbx.calls()
    assert view.operation is None
