"""The options flow: users and devices added, edited and removed, every validation error."""

from __future__ import annotations

from typing import Any

import pytest
import voluptuous as vol
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.users import password_is_strong

from .callflip_testing import find_device

GOOD_DEVICE = {
    "owner": "u-bob",
    "username": "bob-desk",
    "password": "Another-Strong-Pass-4",
    "label": "Bob desk phone",
    "type": "desk",
    "priority": 5,
}


async def _menu(hass: HomeAssistant, entry: MockConfigEntry, choice: str) -> dict[str, Any]:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "init"
    assert choice in result["menu_options"]
    return dict(
        await hass.config_entries.options.async_configure(
            result["flow_id"], {"next_step_id": choice}
        )
    )


def _users(entry: MockConfigEntry) -> dict[str, dict[str, Any]]:
    return {user["id"]: user for user in entry.options["users"]}


def _device(entry: MockConfigEntry, username: str) -> dict[str, Any]:
    for user in entry.options["users"]:
        for device in user["devices"]:
            if device["username"] == username:
                return dict(device)
    raise KeyError(username)


async def test_menu_offers_only_what_exists(hass: HomeAssistant, sip_port: int) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            "listen": "127.0.0.1",
            "port": sip_port,
            "domain": "x.home.arpa",
            "rtp_port_min": 42000,
            "rtp_port_max": 42999,
        },
        options={"users": []},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["menu_options"] == ["add_user", "security", "transfer", "trunks"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Carol", "extension": "103"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["menu_options"] == [
        "add_user",
        "edit_user",
        "remove_user",
        "add_device",
        "flip_settings",
        "security",
        "transfer",
        "trunks",
    ]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_add_user(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await _menu(hass, loaded_entry, "add_user")
    assert result["step_id"] == "user"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": " Carol ", "extension": "103"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    carol = [user for user in loaded_entry.options["users"] if user["name"] == "Carol"]
    assert len(carol) == 1
    assert carol[0]["extension"] == "103"
    assert carol[0]["devices"] == []
    device = find_device(hass, loaded_entry.entry_id, f"user-{carol[0]['id']}")
    assert device is not None
    assert device.name == "Carol"


@pytest.mark.parametrize(
    ("user_input", "errors"),
    [
        ({"name": "  ", "extension": "103"}, {"name": "invalid_name"}),
        ({"name": "Carol", "extension": "1"}, {"extension": "invalid_extension"}),
        ({"name": "Carol", "extension": "12a"}, {"extension": "invalid_extension"}),
        ({"name": "Carol", "extension": "101"}, {"extension": "duplicate_extension"}),
        ({"name": "alice", "extension": "103"}, {"name": "duplicate_name"}),
    ],
)
async def test_add_user_errors(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    user_input: dict[str, str],
    errors: dict[str, str],
) -> None:
    result = await _menu(hass, loaded_entry, "add_user")
    result = await hass.config_entries.options.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    assert len(loaded_entry.options["users"]) == 2


async def test_edit_user(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await _menu(hass, loaded_entry, "edit_user")
    assert result["step_id"] == "edit_user"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    assert result["step_id"] == "user"
    # Keeping one's own extension is not a duplicate; taking Bob's is.
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Alice", "extension": "102"}
    )
    assert result["errors"] == {"extension": "duplicate_extension"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Alice Smith", "extension": "101"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert _users(loaded_entry)["u-alice"]["name"] == "Alice Smith"
    assert len(_users(loaded_entry)["u-alice"]["devices"]) == 2
    device = find_device(hass, loaded_entry.entry_id, "user-u-alice")
    assert device is not None
    assert device.name == "Alice Smith"


async def test_remove_user_removes_devices(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    assert find_device(hass, loaded_entry.entry_id, "device-d-alice-desk") is not None
    result = await _menu(hass, loaded_entry, "remove_user")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert list(_users(loaded_entry)) == ["u-bob"]
    assert find_device(hass, loaded_entry.entry_id, "user-u-alice") is None
    assert find_device(hass, loaded_entry.entry_id, "device-d-alice-desk") is None
    assert hass.states.get("binary_sensor.alice_desk_phone_registered") is None
    assert hass.states.get("binary_sensor.bob_softphone_registered") is not None


async def test_add_device_with_generated_password(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _menu(hass, loaded_entry, "add_device")
    assert result["step_id"] == "device"
    device_input = {key: value for key, value in GOOD_DEVICE.items() if key != "password"}
    result = await hass.config_entries.options.async_configure(result["flow_id"], device_input)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "credentials"
    shown = result["description_placeholders"]
    assert shown is not None
    assert shown["username"] == "bob-desk"
    assert shown["domain"] == loaded_entry.data["domain"]
    assert password_is_strong(shown["password"], ("bob-desk",))
    result = await hass.config_entries.options.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    stored = _device(loaded_entry, "bob-desk")
    assert stored["password"] == shown["password"]
    assert stored["type"] == "desk"
    assert stored["priority"] == 5
    assert hass.states.get("binary_sensor.bob_desk_phone_registered") is not None


async def test_add_device_with_own_password(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _menu(hass, loaded_entry, "add_device")
    result = await hass.config_entries.options.async_configure(result["flow_id"], GOOD_DEVICE)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert _device(loaded_entry, "bob-desk")["password"] == GOOD_DEVICE["password"]


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"username": "bob soft"}, {"username": "invalid_username"}),
        ({"username": "-bob"}, {"username": "invalid_username"}),
        ({"username": "alice-desk"}, {"username": "duplicate_username"}),
        ({"username": "ALICE-DESK"}, {"username": "duplicate_username"}),
        ({"username": "102"}, {"username": "duplicate_username"}),
        ({"password": "short1A!"}, {"password": "weak_password"}),
        ({"password": "alllowercaseletters"}, {"password": "weak_password"}),
        ({"password": "Bob-desk-phone-2024"}, {"password": "weak_password"}),
        ({"priority": -1}, {"priority": "invalid_priority"}),
        ({"priority": 1001}, {"priority": "invalid_priority"}),
        ({"priority": 2.5}, {"priority": "invalid_priority"}),
    ],
)
async def test_add_device_errors(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    changes: dict[str, Any],
    errors: dict[str, str],
) -> None:
    result = await _menu(hass, loaded_entry, "add_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**GOOD_DEVICE, **changes}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    # The password is never sent back to the form.
    schema_keys = {str(key): key for key in result["data_schema"].schema}
    suggested = schema_keys["password"].description
    assert not suggested or "suggested_value" not in suggested
    result = await hass.config_entries.options.async_configure(result["flow_id"], GOOD_DEVICE)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_edit_device_keeps_password(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    before = _device(loaded_entry, "alice-desk")
    result = await _menu(hass, loaded_entry, "edit_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": "d-alice-desk"}
    )
    assert result["step_id"] == "device"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "owner": "u-alice",
            "username": "alice-desk",
            "label": "Alice office phone",
            "type": "desk",
            "priority": 1,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    after = _device(loaded_entry, "alice-desk")
    assert after["password"] == before["password"]
    assert after["id"] == before["id"]
    assert after["label"] == "Alice office phone"
    assert after["priority"] == 1
    # Still Alice's first device: editing keeps the order.
    assert _users(loaded_entry)["u-alice"]["devices"][0]["id"] == "d-alice-desk"
    device = find_device(hass, loaded_entry.entry_id, "device-d-alice-desk")
    assert device is not None
    assert device.name == "Alice office phone"


async def test_edit_device_moves_it_and_changes_password(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _menu(hass, loaded_entry, "edit_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": "d-alice-mobile"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "owner": "u-bob",
            "username": "bob-mobile",
            "password": "weak",
            "label": "Bob mobile",
            "type": "mobile",
            "priority": 20,
        },
    )
    assert result["errors"] == {"password": "weak_password"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            "owner": "u-bob",
            "username": "bob-mobile",
            "password": "A-Brand-New-Secret-9",
            "label": "Bob mobile",
            "type": "mobile",
            "priority": 20,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    users = _users(loaded_entry)
    assert [d["id"] for d in users["u-alice"]["devices"]] == ["d-alice-desk"]
    assert [d["id"] for d in users["u-bob"]["devices"]] == ["d-bob-soft", "d-alice-mobile"]
    assert _device(loaded_entry, "bob-mobile")["password"] == "A-Brand-New-Secret-9"
    moved = find_device(hass, loaded_entry.entry_id, "device-d-alice-mobile")
    bob = find_device(hass, loaded_entry.entry_id, "user-u-bob")
    assert moved is not None
    assert bob is not None
    assert moved.via_device_id == bob.id


async def test_remove_device(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await _menu(hass, loaded_entry, "remove_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": "d-bob-soft"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert _users(loaded_entry)["u-bob"]["devices"] == []
    assert find_device(hass, loaded_entry.entry_id, "device-d-bob-soft") is None
    assert find_device(hass, loaded_entry.entry_id, "user-u-bob") is not None
    assert hass.states.get("binary_sensor.bob_softphone_registered") is None


async def test_extension_and_username_share_one_namespace(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _menu(hass, loaded_entry, "add_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**GOOD_DEVICE, "username": "150"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    result = await _menu(hass, loaded_entry, "add_user")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Carol", "extension": "150"}
    )
    assert result["errors"] == {"extension": "duplicate_extension"}


async def test_sip_core_refusal_is_a_form_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """What only sip_core checks (here: a label over 64 characters) still ends in the form."""
    result = await _menu(hass, loaded_entry, "add_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**GOOD_DEVICE, "label": "x" * 65}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_config"}
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert "label" in placeholders["error"]
    # The refused device was not kept: adding a good one now gives exactly one new device.
    result = await hass.config_entries.options.async_configure(result["flow_id"], GOOD_DEVICE)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(_users(loaded_entry)["u-bob"]["devices"]) == 2


async def test_sip_core_refusal_of_a_user(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _menu(hass, loaded_entry, "add_user")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "C" * 65, "extension": "103"}
    )
    assert result["errors"] == {"base": "invalid_config"}
    assert len(loaded_entry.options["users"]) == 2


@pytest.mark.parametrize("label", [None, "", "   "])
async def test_device_label_is_optional_and_defaults_to_the_username(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, label: str | None
) -> None:
    result = await _menu(hass, loaded_entry, "add_device")
    schema_keys = {str(key): key for key in result["data_schema"].schema}
    assert isinstance(schema_keys["label"], vol.Optional)
    device = {key: value for key, value in GOOD_DEVICE.items() if key != "label"}
    if label is not None:
        device["label"] = label
    result = await hass.config_entries.options.async_configure(result["flow_id"], device)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    bob = next(user for user in loaded_entry.options["users"] if user["id"] == "u-bob")
    added = next(d for d in bob["devices"] if d["username"] == "bob-desk")
    assert added["label"] == "bob-desk"


async def test_flip_settings_of_a_user(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    """A person's flip timeout, auto-hangup, announcement and simultaneous ring: stored with
    the user in the runner's schema and in force in the running PBX at once."""
    result = await _menu(hass, loaded_entry, "flip_settings")
    assert result["step_id"] == "flip_settings"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    assert result["step_id"] == "user_flip"
    assert result["description_placeholders"]["name"] == "Alice"
    # the shipped defaults are what the form suggests
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description and "suggested_value" in key.description
    }
    assert suggested == {
        "auto_hangup": True,
        "announcement": False,
        "simultaneous_ring": False,
    }
    settings = {"auto_hangup": False, "announcement": True, "simultaneous_ring": True}
    with pytest.raises(InvalidData) as caught:  # below 5 s: the form's own range refuses it
        await hass.config_entries.options.async_configure(
            result["flow_id"], {**settings, "timeout": 4}
        )
    assert caught.value.path == ["timeout"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**settings, "timeout": 12.5}
    )
    assert result["errors"] == {"timeout": "invalid_flip_timeout"}
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**settings, "timeout": 12}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert _users(loaded_entry)["u-alice"]["flip_options"] == {**settings, "timeout": 12}
    assert "flip_options" not in _users(loaded_entry)["u-bob"]
    config = loaded_entry.runtime_data.hub.pbx.config
    alice = next(user for user in config.users if user.name == "Alice")
    assert (alice.flip_options.timeout, alice.flip_options.auto_hangup) == (12, False)
    assert alice.flip_options.simultaneous_ring

    # back to the defaults, with no timeout of her own: the PBX's flip timeout again
    result = await _menu(hass, loaded_entry, "flip_settings")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": "u-alice"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {"auto_hangup": True, "announcement": False, "simultaneous_ring": False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    alice = next(
        user for user in loaded_entry.runtime_data.hub.pbx.config.users if user.name == "Alice"
    )
    assert alice.flip_options.timeout is None
    assert not alice.flip_options.simultaneous_ring


async def test_a_device_flip_number_is_checked_and_stored(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """The digits to key after *0 for a device: sip_core's rule (2 to 8 digits, unique within
    the person's devices) refuses a bad one in the form; a good one reaches the running PBX."""
    result = await _menu(hass, loaded_entry, "add_device")
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**GOOD_DEVICE, "flip_number": "7"}
    )
    assert result["errors"] == {"base": "invalid_config"}
    assert "flip_number: must be 2 to 8 digits" in result["description_placeholders"]["error"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**GOOD_DEVICE, "flip_number": "77"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert _device(loaded_entry, "bob-desk")["flip_number"] == "77"
    config = loaded_entry.runtime_data.hub.pbx.config
    device = config.device("bob-desk")
    assert device is not None
    assert device.flip_number == "77"
    # without one, none is stored
    result = await _menu(hass, loaded_entry, "edit_device")
    device_id = _device(loaded_entry, "bob-desk")["id"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"device": device_id}
    )
    edited = {key: value for key, value in GOOD_DEVICE.items() if key != "password"}
    result = await hass.config_entries.options.async_configure(result["flow_id"], edited)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert "flip_number" not in _device(loaded_entry, "bob-desk")
