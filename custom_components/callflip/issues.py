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
the password changed or the device removed). A weak password can also be fixed from the issue
(the fix flow is in repairs.py, the platform the repairs integration loads).
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .const import CONF_LISTEN, CONF_SIP_PORT, DOMAIN
from .data import CallflipConfigEntry
from .users import UserOptions, iter_devices, password_is_strong

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
