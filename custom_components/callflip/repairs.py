"""The repairs platform: the fix flows of callflip's fixable issues (the issues are raised in
issues.py and security.py).

- A weak device password: the flow replaces it with a generated strong one and shows it once, as
  adding a device does; the entry's update listener then applies it to the running PBX and the
  issue goes.
- A banned address: the flow lifts the ban (the same as ``callflip.unban``).
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant import data_entry_flow
from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult
from homeassistant.helpers import issue_registry as ir

from .const import CONF_LISTEN, CONF_SIP_DOMAIN, CONF_SIP_PORT, CONF_USERS, DOMAIN
from .data import CallflipConfigEntry
from .issues import WEAK_PASSWORD_PREFIX
from .security import ATTR_ADDRESS, BAN_ISSUE_PREFIX, unban_address
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


class UnbanRepairFlow(ConfirmRepairFlow):
    """Confirm, then lift the ban named by the issue (it may have ended meanwhile)."""

    def __init__(self, address: str, placeholders: dict[str, str]) -> None:
        super().__init__()
        self._address = address
        self._placeholders = {**placeholders, ATTR_ADDRESS: address}

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> data_entry_flow.FlowResult:
        if user_input is not None:
            unban_address(self.hass, self._address, missing_ok=True)
            return self.async_create_entry(data={})
        return self.async_show_form(step_id="confirm", description_placeholders=self._placeholders)


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The repairs integration asks for the flow of a fixable issue."""
    if issue_id.startswith(WEAK_PASSWORD_PREFIX):
        return WeakPasswordRepairFlow(issue_id.removeprefix(WEAK_PASSWORD_PREFIX))
    if issue_id.startswith(BAN_ISSUE_PREFIX):
        issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
        placeholders = dict(issue.translation_placeholders or {}) if issue is not None else {}
        return UnbanRepairFlow(issue_id.removeprefix(BAN_ISSUE_PREFIX), placeholders)
    raise ValueError(f"callflip issue {issue_id} has no fix flow")
