"""The household as stored in the config entry options, and the rules every change must obey.

Users and their SIP devices live in ``entry.options["users"]`` as plain JSON so that the options
flow can edit them and Home Assistant can persist them. Every user and device carries an ``id`` that
never changes: entity unique IDs and device identifiers hang off it, so renaming a user or changing
a device's username keeps its history. The ids are ours only; they are stripped before the mapping
is handed to ``sip_core.config.config_from_mapping``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from sip_core.config import PbxConfig, config_from_mapping

from .const import (
    CONF_LISTEN,
    CONF_RTP_PORT_MAX,
    CONF_RTP_PORT_MIN,
    CONF_SIP_DOMAIN,
    CONF_SIP_PORT,
    CONF_USERS,
    GENERATED_PASSWORD_LENGTH,
    MAX_PRIORITY,
    MIN_PASSWORD_LENGTH,
    MIN_PRIORITY,
)

_EXTENSION = re.compile(r"[0-9]{2,8}")
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


class DeviceOptions(TypedDict):
    """One SIP device (a phone, an app) as stored in the options."""

    id: str
    username: str
    password: str
    label: str
    type: str
    priority: int
    flip_number: NotRequired[str]
    """Digits its owner may key after the flip code to pick it (2 to 8; absent: none)."""


class UserOptions(TypedDict):
    """One person, reachable on an extension, with the devices that ring for them."""

    id: str
    name: str
    extension: str
    devices: list[DeviceOptions]
    flip: NotRequired[str]
    """The administrator's flip permission: user (the user's own switch decides), enabled,
    disabled (sip_core.config.FlipPermission); absent in entries made before it existed."""
    flip_options: NotRequired[dict[str, Any]]
    """The person's flip settings in the runner's schema (`sip_core.config.UserFlipOptions`);
    absent: the defaults."""
    label_speech: NotRequired[dict[str, str]]
    """The TTS entity (``engine``) and ``language`` that speak the person's device labels in
    the flip menu (`label_speech`); Home Assistant's only, not the runner's. Absent: none."""


@dataclass(frozen=True, slots=True)
class OwnedDevice:
    """A device together with the user who owns it."""

    user: UserOptions
    device: DeviceOptions


def new_id() -> str:
    """Return a fresh, stable identifier for a user or a device."""
    return secrets.token_hex(8)


def generate_password() -> str:
    """Return a strong password that a person can still type on a phone keypad's letters."""
    while True:
        candidate = "".join(
            secrets.choice(_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH)
        )
        if password_is_strong(candidate, ()):
            return candidate


def password_is_strong(password: str, personal: Sequence[str]) -> bool:
    """Tell whether a SIP password resists online guessing well enough for a PBX on a LAN.

    SIP scanners try short and dictionary passwords all day long, so the bar is: at least
    MIN_PASSWORD_LENGTH characters, at least three kinds of character (lower, upper, digit,
    other) unless it is long enough to be a passphrase, and none of the account's own names in it.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return False
    kinds = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if kinds < 3 and len(password) < 2 * MIN_PASSWORD_LENGTH:
        return False
    lowered = password.lower()
    return not any(word and len(word) >= 3 and word.lower() in lowered for word in personal)


def users_from_options(options: Mapping[str, Any]) -> list[UserOptions]:
    """Return the users stored in the options (a copy that may be changed freely)."""
    users: list[UserOptions] = []
    for user in options.get(CONF_USERS, []):
        devices = [
            DeviceOptions(
                id=device["id"],
                username=device["username"],
                password=device["password"],
                label=device["label"],
                type=device["type"],
                priority=int(device["priority"]),
            )
            for device in user["devices"]
        ]
        for stored, copied in zip(user["devices"], devices, strict=True):
            if stored.get("flip_number"):
                copied["flip_number"] = str(stored["flip_number"])
        found = UserOptions(
            id=user["id"], name=user["name"], extension=user["extension"], devices=devices
        )
        if "flip" in user:
            found["flip"] = user["flip"]
        if user.get("flip_options"):
            found["flip_options"] = dict(user["flip_options"])
        if user.get("label_speech"):
            found["label_speech"] = dict(user["label_speech"])
        users.append(found)
    return users


def iter_devices(users: Sequence[UserOptions]) -> Iterator[OwnedDevice]:
    """Yield every device with its owner, in order."""
    for user in users:
        for device in user["devices"]:
            yield OwnedDevice(user, device)


def find_user(users: Sequence[UserOptions], user_id: str) -> UserOptions | None:
    """Return the user with this id, if there is one."""
    return next((user for user in users if user["id"] == user_id), None)


def find_device(users: Sequence[UserOptions], device_id: str) -> OwnedDevice | None:
    """Return the device with this id and its owner, if there is one."""
    return next((owned for owned in iter_devices(users) if owned.device["id"] == device_id), None)


def validate_user(
    users: Sequence[UserOptions], name: str, extension: str, *, user_id: str | None
) -> dict[str, str]:
    """Return field errors for a user's name and extension (user_id: the user being edited).

    As in sip_core, extensions and device usernames share one namespace: what is dialled and
    who registers must never be ambiguous.
    """
    errors: dict[str, str] = {}
    others = [user for user in users if user["id"] != user_id]
    if not name.strip():
        errors["name"] = "invalid_name"
    elif any(user["name"].casefold() == name.casefold() for user in others):
        errors["name"] = "duplicate_name"
    if _EXTENSION.fullmatch(extension) is None:
        errors["extension"] = "invalid_extension"
    elif any(user["extension"] == extension for user in others) or any(
        owned.device["username"].casefold() == extension for owned in iter_devices(users)
    ):
        errors["extension"] = "duplicate_extension"
    return errors


def validate_device(
    users: Sequence[UserOptions],
    *,
    username: str,
    password: str | None,
    label: str,
    priority: float,
    device_id: str | None,
) -> dict[str, str]:
    """Return field errors for a device (password None: unchanged; device_id: the one edited)."""
    errors: dict[str, str] = {}
    if _USERNAME.fullmatch(username) is None:
        errors["username"] = "invalid_username"
    elif any(
        owned.device["username"].casefold() == username.casefold()
        and owned.device["id"] != device_id
        for owned in iter_devices(users)
    ) or any(user["extension"].casefold() == username.casefold() for user in users):
        errors["username"] = "duplicate_username"
    if password is not None and not password_is_strong(password, (username, label)):
        errors["password"] = "weak_password"
    if not label.strip():
        errors["label"] = "invalid_label"
    if not float(priority).is_integer() or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        errors["priority"] = "invalid_priority"
    return errors


def valid_port(value: float) -> bool:
    """Tell whether a number from a form is a usable UDP/TCP port."""
    return float(value).is_integer() and 1 <= value <= 65535


def valid_domain(domain: str) -> bool:
    """Tell whether a SIP domain is a host name or an IP address literal."""
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        return True
    labels = domain.rstrip(".").split(".")
    return len(domain) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def pbx_mapping(
    data: Mapping[str, Any],
    users: Sequence[UserOptions],
    groups: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Build the sip_core configuration mapping (the YAML schema) from the entry; ``groups``
    are the Personal Ring Groups already in sip_core's schema (`groups.groups_mapping`)."""
    mapping = {
        "sip": {
            "listen": data[CONF_LISTEN],
            "port": int(data[CONF_SIP_PORT]),
            "domain": data[CONF_SIP_DOMAIN],
        },
        "rtp": {"ports": f"{int(data[CONF_RTP_PORT_MIN])}-{int(data[CONF_RTP_PORT_MAX])}"},
        "users": [
            {
                "name": user["name"],
                "extension": user["extension"],
                "flip": user.get("flip", "user"),
                "devices": [
                    {
                        "username": device["username"],
                        "password": device["password"],
                        "label": device["label"],
                        "type": device["type"],
                        "priority": device["priority"],
                        **(
                            {"flip_number": device["flip_number"]}
                            if device.get("flip_number")
                            else {}
                        ),
                    }
                    for device in user["devices"]
                ],
                **({"flip_options": user["flip_options"]} if user.get("flip_options") else {}),
            }
            for user in users
        ],
    }
    if groups:
        mapping["groups"] = [dict(group) for group in groups]
    return mapping


def pbx_config(
    data: Mapping[str, Any],
    users: Sequence[UserOptions],
    groups: Sequence[Mapping[str, Any]] = (),
) -> PbxConfig:
    """Build and check the PBX configuration (raises sip_core.config.ConfigError)."""
    return config_from_mapping(pbx_mapping(data, users, groups))
