"""Group Presence codes dialled at a phone, on Home Assistant's event bus.

A phone's ``*61`` / ``*60`` (sip_core's `GroupPresenceDialled`) changes Group Presence through
the same path as the group's switches, so the switches follow by themselves (the hub listens to
`GroupPresence`). What the switches cannot say is who dialled what, and why a code was refused:
that is the ``callflip_group_presence`` bus event built here, for automations and the logbook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sip_core.events import GroupPresenceDialled

from .group_options import group_identifier

if TYPE_CHECKING:
    from .hub import CallflipHub

__all__ = ["group_presence_payload"]


def group_presence_payload(hub: CallflipHub, event: GroupPresenceDialled) -> dict[str, Any]:
    """The bus event's data: ``type`` ``changed`` or ``refused`` (with ``refusal``, a stable
    key, and ``reason``), the phone (account, label, registry ids of it and of its user), whether
    it is now ``present``, and the groups changed (names and registry ids)."""
    from .hub import device_identifier, user_identifier  # noqa: PLC0415 (hub imports us)

    owned = hub.by_username().get(event.device)
    groups = [g for g in hub.groups if g["name"] in event.groups]
    device_id = user_id = None
    if owned is not None:
        device_id = hub.ha_device_id(device_identifier(owned.device["id"]))
        user_id = hub.ha_device_id(user_identifier(owned.user["id"]))
    group_ids = [hub.ha_device_id(group_identifier(g["id"])) for g in groups]
    return {
        "type": "refused" if event.refusal else "changed",
        "device": event.device,
        "device_label": hub.device_label(event.device),
        "user": owned.user["name"] if owned is not None else None,
        "dialled": event.dialled,
        "present": event.present,
        "groups": list(event.groups),
        "refusal": event.refusal,
        "reason": event.reason,
        "device_id": user_id,
        "device_ids": [i for i in (device_id, *group_ids) if i is not None],
    }
