"""Repair issues: what a person has to act on, shown under Settings → System → Repairs.

Three situations are not errors of a single action, so they are not reported on a form or in
an action's exception, yet they need someone to do something:

* the ``callflip:`` section of configuration.yaml stays there after its one import and is never
  read again (edits to it would silently do nothing);
* the SIP port cannot be opened (another program holds it, or the address is gone), so the PBX
  is down while Home Assistant keeps retrying;
* a device imported from YAML has a password the UI would refuse, which SIP scanners on the
  network guess first.

Each issue disappears by itself once the cause is gone (the section removed, the PBX listening,
the password changed or the device removed). A weak password can also be fixed from the issue:
the fix flow replaces it with a generated one and shows it once, as adding a device does.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.repairs import RepairsFlow
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import FlowResult
from homeassistant.helpers import issue_registry as ir

from .const import CONF_LISTEN, CONF_SIP_DOMAIN, CONF_SIP_PORT, CONF_USERS, DOMAIN
from .data import CallflipConfigEntry
from .users import (
    UserOptions,
    find_device,
    generate_password,
    iter_devices,
    password_is_strong,
    users_from_options,
)

ISSUE_YAML_IGNORED = "yaml_section_ignored"
ISSUE_CANNOT_LISTEN = "cannot_listen"
WEAK_PASSWORD_PREFIX = "weak_password_"


@callback
def async_yaml_section_ignored(hass: HomeAssistant, present: bool) -> None:
    """Raise the issue while configuration.yaml has a ``callflip:`` section an entry supersedes."""
    if not present:
        ir.async_delete_issue(hass, DOMAIN, ISSUE_YAML_IGNORED)
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        ISSUE_YAML_IGNORED,
        is_fixable=False,
        is_persistent=False,
        severity=ir.IssueSeverity.WARNING,
        translation_key=ISSUE_YAML_IGNORED,
        translation_placeholders={"domain": DOMAIN},
    )


@callback
def async_cannot_listen(hass: HomeAssistant, entry: CallflipConfigEntry, error: str) -> None:
    """The PBX could not open its SIP port: say which address and port, and why."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        ISSUE_CANNOT_LISTEN,
        is_fixable=False,
        is_persistent=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=ISSUE_CANNOT_LISTEN,
        translation_placeholders={
            "address": entry.data[CONF_LISTEN],
            "port": str(entry.data[CONF_SIP_PORT]),
            "error": error,
        },
    )


@callback
def async_listening(hass: HomeAssistant) -> None:
    """The PBX is listening: whatever kept it from its port is over."""
    ir.async_delete_issue(hass, DOMAIN, ISSUE_CANNOT_LISTEN)


@callback
def async_check_passwords(hass: HomeAssistant, users: list[UserOptions]) -> None:
    """One issue per device whose password the UI's rule refuses; none for the others.

    The UI never stores such a password, so these come from an import (the runner's YAML).
    """
    weak: set[str] = set()
    for owned in iter_devices(users):
        device = owned.device
        label = device.get("label") or device["username"]
        if password_is_strong(device["password"], (device["username"], label)):
            continue
        issue_id = f"{WEAK_PASSWORD_PREFIX}{device['id']}"
        weak.add(issue_id)
        ir.async_create_issue(
            hass,
            DOMAIN,
            issue_id,
            is_fixable=True,
            is_persistent=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key="weak_password",
            translation_placeholders={
                "label": label,
                "username": device["username"],
                "user": owned.user["name"],
            },
        )
    _delete_issues(hass, WEAK_PASSWORD_PREFIX, keep=weak)


@callback
def async_remove_all(hass: HomeAssistant) -> None:
    """The entry is gone: none of its issues means anything any more."""
    ir.async_delete_issue(hass, DOMAIN, ISSUE_CANNOT_LISTEN)
    _delete_issues(hass, WEAK_PASSWORD_PREFIX, keep=set())


def _delete_issues(hass: HomeAssistant, prefix: str, keep: set[str]) -> None:
    registry = ir.async_get(hass)
    stale = [
        issue_id
        for (domain, issue_id) in registry.issues
        if domain == DOMAIN and issue_id.startswith(prefix) and issue_id not in keep
    ]
    for issue_id in stale:
        ir.async_delete_issue(hass, DOMAIN, issue_id)


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
