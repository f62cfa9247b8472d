"""The repairs platform: the fix flow of a weak device password (the issues are in issues.py).

The flow replaces the password with a generated strong one and shows it once, as adding a
device does; the entry's update listener then applies it to the running PBX and the issue goes.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.repairs import RepairsFlow
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult

from .const import CONF_LISTEN, CONF_SIP_DOMAIN, CONF_SIP_PORT, CONF_USERS, DOMAIN
from .data import CallflipConfigEntry
from .issues import WEAK_PASSWORD_PREFIX
from .users import find_device, generate_password, users_from_options


class WeakPasswordRepairFlow(RepairsFlow):
    """Replace one device's weak password with a generated strong one and show it once."""

    def __init__(self, device_id: str) -> None:
        self._device_id = device_id
        self._shown: dict[str, str] = {}

    def _entry(self) -> CallflipConfigEntry | None:
        entries: list[CallflipConfigEntry] = self.hass.config_entries.async_loaded_entries(DOMAIN)
        return entries[0] if entries else None

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """Ask before replacing: the phone stops registering until it gets the new password."""
        return await self.async_step_confirm()

    async def async_step_confirm(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """Replace the password on submit; the device is looked up again, it may be gone."""
        entry = self._entry()
        users = users_from_options(entry.options) if entry is not None else []
        owned = find_device(users, self._device_id)
        if entry is None or owned is None:
            return self.async_abort(reason="device_gone")
        device = owned.device
        if user_input is None:
            return self.async_show_form(
                step_id="confirm",
                data_schema=vol.Schema({}),
                description_placeholders={
                    "label": device.get("label") or device["username"],
                    "username": device["username"],
                    "user": owned.user["name"],
                },
            )
        password = generate_password()
        device["password"] = password
        # The entry's update listener applies it to the running PBX and clears the issue.
        self.hass.config_entries.async_update_entry(
            entry, options={**entry.options, CONF_USERS: users}
        )
        self._shown = {
            "username": device["username"],
            "password": password,
            "domain": entry.data[CONF_SIP_DOMAIN],
            "server": f"{entry.data[CONF_LISTEN]}:{entry.data[CONF_SIP_PORT]}",
        }
        return await self.async_step_done()

    async def async_step_done(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        """Show the new password once, with what the phone needs to register."""
        if user_input is not None:
            return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="done", data_schema=vol.Schema({}), description_placeholders=self._shown
        )


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The repairs integration asks for the flow of a fixable issue."""
    if not issue_id.startswith(WEAK_PASSWORD_PREFIX):
        raise ValueError(f"callflip issue {issue_id} has no fix flow")
    return WeakPasswordRepairFlow(issue_id.removeprefix(WEAK_PASSWORD_PREFIX))
