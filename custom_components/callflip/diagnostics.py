"""Diagnostics download: the configuration and the live registrations, without any secret."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_PASSWORD
from .data import CallflipConfigEntry

TO_REDACT = {CONF_PASSWORD, "nonce", "cnonce", "opaque", "response", "authorization"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: CallflipConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings, users, devices and current bindings."""
    pbx = entry.runtime_data.hub.pbx
    return async_redact_data(
        {
            "data": dict(entry.data),
            "options": dict(entry.options),
            "local_address": str(pbx.local_address),
            "bindings": pbx.binding_records(),
        },
        TO_REDACT,
    )
