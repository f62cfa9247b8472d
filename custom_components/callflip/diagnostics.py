"""Diagnostics download: the configuration, live registrations and calls, without any secret."""

from __future__ import annotations

import re
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from sip_core.calls import Call, Leg
from sip_core.state import call_record_to_json

from .const import CONF_PASSWORD
from .data import CallflipConfigEntry

TO_REDACT = {
    CONF_PASSWORD,
    "nonce",
    "cnonce",
    "opaque",
    "response",
    "authorization",
    "instance_id",
}
REDACTED = "**REDACTED**"
# Contact parameters that identify a handset or let anyone wake it: the push notification
# parameters of RFC 8599 and vendor variants (pn-prid, pn-param, pn-provider, pn-tok, ...), the
# instance id (+sip.instance, RFC 5626) and the outbound registration id (reg-id).
_IDENTIFYING_PARAM = re.compile(
    r"(?P<name>[;?&]\s*(?:pn-[\w.-]+|\+sip\.instance|reg-id|app-id)\s*=\s*)"
    r'(?P<value>"[^"]*"|<[^>]*>|[^;?&>,\s"]*)',
    re.IGNORECASE,
)


def redact_contact_params(text: str) -> str:
    """Replace the values of identifying Contact parameters (push tokens, instance ids)."""
    return _IDENTIFYING_PARAM.sub(lambda match: match.group("name") + REDACTED, text)


def _redact_strings(node: Any) -> Any:
    if isinstance(node, str):
        return redact_contact_params(node)
    if isinstance(node, dict):
        return {key: _redact_strings(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_redact_strings(value) for value in node]
    return node


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: CallflipConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings, users, devices, current bindings and calls, and the newest
    records of the call history."""
    pbx = entry.runtime_data.hub.pbx
    redacted = async_redact_data(
        {
            "data": dict(entry.data),
            "options": dict(entry.options),
            "local_address": str(pbx.local_address),
            "bindings": pbx.binding_records(),
            "calls": [_call(call) for call in pbx.calls()],
            "history": _history(entry),
        },
        TO_REDACT,
    )
    return dict(_redact_strings(redacted))


HISTORY_SHOWN = 50
"""The newest call records in a diagnostics download (the whole persisted history is longer)."""


def _history(entry: CallflipConfigEntry) -> list[dict[str, Any]]:
    history = entry.runtime_data.hub.history
    records = history.records() if history is not None else []
    return [call_record_to_json(record) for record in records[-HISTORY_SHOWN:]]


def _leg(leg: Leg | None) -> dict[str, Any] | None:
    if leg is None:
        return None
    return {"device": leg.device, "role": leg.role.value, "state": leg.state.value}


def _call(call: Call) -> dict[str, Any]:
    """A call in progress as support needs it: states and devices, no SIP message content."""
    return {
        "id": call.id,
        "state": call.state.value,
        "caller_user": call.caller_user,
        "dialled": call.dialled,
        "callee_user": call.callee_user,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "caller": _leg(call.caller),
        "callee": _leg(call.callee),
        "ringing": [_leg(leg) for leg in call.branches if leg is not call.callee],
        "flip_to": call.pending_flip.to_device if call.pending_flip is not None else None,
        "handoffs": [
            {
                "from_device": record.from_device,
                "to_device": record.to_device,
                "succeeded": record.succeeded,
                "reason": record.reason,
            }
            for record in call.handoffs
        ],
    }
