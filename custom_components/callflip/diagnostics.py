"""Diagnostics download: the configuration, live registrations and calls, without any secret."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from sip_core.call_snapshot import CallSnapshot, LegSnapshot
from sip_core.state import call_record_to_json

from .call_counts import count_since
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
            "calls": [_call(call) for call in pbx.call_snapshots()],
            "history": _history(entry),
            "trunk_states": [
                {
                    "trunk": state.trunk,
                    "status": state.status.value,
                    "failure": state.failure.value if state.failure is not None else None,
                    "detail": state.detail,
                    "failures": state.failures,
                    "auth_failures": state.auth_failures,
                }
                for state in pbx.trunk_states()
            ],
            "call_counts": _call_counts(entry),
            "media_engine": asdict(pbx.media_engine_status()),
            "label_speech": _label_speech(entry),
        },
        TO_REDACT,
    )
    return dict(_redact_strings(redacted))


def _label_speech(entry: CallflipConfigEntry) -> dict[str, dict[str, str]]:
    """Each device's spoken label for the flip menu: rendering, ready or failed (and why)."""
    labels = entry.runtime_data.labels
    if labels is None:
        return {}
    return {
        username: {
            "state": state.value,
            **({"error": labels.errors[username]} if username in labels.errors else {}),
        }
        for username, state in sorted(labels.states.items())
    }


HISTORY_SHOWN = 50
"""The newest call records in a diagnostics download (the whole persisted history is longer)."""


def _call_counts(entry: CallflipConfigEntry) -> dict[str, dict[str, int]]:
    """Today's calls and missed calls of each user and of the PBX, as the sensors show them."""
    hub = entry.runtime_data.hub
    records = hub.history.records() if hub.history is not None else []
    since = dt_util.start_of_local_day().timestamp()
    found: dict[str, dict[str, int]] = {}
    for name in [None, *(user["name"] for user in hub.users)]:
        counts = count_since(records, since, name)
        found[name or "pbx"] = {
            "calls_today": len(counts.calls),
            "missed_today": len(counts.missed),
        }
    return found


def _history(entry: CallflipConfigEntry) -> list[dict[str, Any]]:
    """The newest records; an outside caller's name and number (``caller_party``, which the
    trunk presented) is personal data of someone who is not a user, so it is redacted."""
    history = entry.runtime_data.hub.history
    records = history.records() if history is not None else []
    shown = [call_record_to_json(record) for record in records[-HISTORY_SHOWN:]]
    for record in shown:
        if record.get("caller_party") and record.get("caller_user") is None:
            record["caller_party"] = REDACTED
    return shown


def _leg(leg: LegSnapshot | None) -> dict[str, Any] | None:
    if leg is None:
        return None
    return {"device": leg.device, "role": leg.role.value, "state": leg.state.value}


def _call(call: CallSnapshot) -> dict[str, Any]:
    """A call in progress as support needs it: states and devices, no SIP message content."""
    return {
        "id": call.id,
        "state": call.state.value,
        "caller_user": call.caller_user,
        "dialled": call.dialled,
        "callee_user": call.callee_user,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "caller": _leg(call.caller_leg),
        "callee": _leg(call.callee_leg),
        "ringing": [_leg(leg) for leg in call.ringing_legs],
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
