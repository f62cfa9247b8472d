"""Personal Ring Groups of a ``callflip:`` YAML section become groups of the imported entry:
members and the no-answer destination by the ids of the users and devices imported with them."""

from __future__ import annotations

from typing import Any

from custom_components.callflip.group_options import groups_from_config, groups_mapping
from custom_components.callflip.users import DeviceOptions, UserOptions
from sip_core.config import config_from_mapping

SECTION: dict[str, Any] = {
    "sip": {"listen": "127.0.0.1", "port": 5060, "domain": "home.arpa"},
    "users": [
        {
            "name": "Alice",
            "extension": "200",
            "devices": [
                {"username": "201", "password": "Secret-201-x"},
                {"username": "202", "password": "Secret-202-x"},
            ],
        },
        {
            "name": "Bob",
            "extension": "300",
            "devices": [
                {"username": "301", "password": "Secret-301-x"},
            ],
        },
    ],
    "groups": [
        {
            "name": "Home",
            "pilot": "150",
            "members": ["202", "301"],
            "ring_timer": 25,
            "no_answer": "group:Office",
        },
        {"name": "Office", "pilot": "160", "members": ["201"], "no_answer": "user:Bob"},
        {"name": "Desk", "pilot": "170", "members": ["201"], "no_answer": "device:301"},
    ],
}


def _users() -> list[UserOptions]:
    config = config_from_mapping(SECTION)
    return [
        UserOptions(
            id=f"u-{user.name}",
            name=user.name,
            extension=user.extension,
            devices=[
                DeviceOptions(
                    id=f"d-{device.username}",
                    username=device.username,
                    password=device.password,
                    label=device.label,
                    type=device.type.value,
                    priority=device.priority,
                )
                for device in user.devices
            ],
        )
        for user in config.users
    ]


def test_groups_are_imported_by_id_and_read_back_the_same() -> None:
    users = _users()
    config = config_from_mapping(SECTION)
    groups = groups_from_config(config.groups, users)
    home, office, desk = groups
    assert (home["name"], home["pilot"], home["ring_timer"]) == ("Home", "150", 25)
    assert home["members"] == ["d-202", "d-301"]
    assert home["no_answer"] == f"group:{office['id']}"
    assert office["no_answer"] == "user:u-Bob"
    assert desk["no_answer"] == "device:d-301"
    assert len({home["id"], office["id"], desk["id"]}) == 3
    # what the options give the PBX is the section's groups again
    back = groups_mapping(groups, users)
    assert [(g["name"], g["members"], g["no_answer"]) for g in back] == [
        ("Home", ["202", "301"], "group:Office"),
        ("Office", ["201"], "user:Bob"),
        ("Desk", ["201"], "device:301"),
    ]
