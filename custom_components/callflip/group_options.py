"""Personal Ring Groups as stored in the entry's options, and their names in sip_core's schema.

Groups live in ``entry.options["groups"]`` with their members as device ids, so renaming a
phone's account keeps its memberships; `groups_mapping` turns them into sip_core's schema
(usernames and names), which `users.pbx_config` checks with the rest of the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from sip_core.prg.model import NoAnswerKind, RingGroup

from .const import DOMAIN
from .users import UserOptions, find_device, find_user, new_id

CONF_GROUPS = "groups"
GROUP_PREFIX = "group-"


class GroupOptions(TypedDict):
    """One Personal Ring Group as stored in the options."""

    id: str
    name: str
    pilot: str
    members: list[str]
    """Device ids, in the group's order (the first is the prime member)."""
    ring_timer: int
    no_answer: str
    """``none``, or ``user:<user id>``, ``device:<device id>``, ``group:<group id>``."""


def groups_from_options(options: Mapping[str, Any]) -> list[GroupOptions]:
    """The groups stored in the options (a copy that may be changed freely)."""
    return [
        GroupOptions(
            id=str(group["id"]),
            name=str(group["name"]),
            pilot=str(group["pilot"]),
            members=[str(member) for member in group.get("members", [])],
            ring_timer=int(group.get("ring_timer", 20)),
            no_answer=str(group.get("no_answer") or "none"),
        )
        for group in options.get(CONF_GROUPS, [])
    ]


def groups_from_config(
    groups: Sequence[RingGroup], users: Sequence[UserOptions]
) -> list[GroupOptions]:
    """The groups of a ``callflip:`` YAML section (sip_core's schema, already checked) as
    options: members and the no-answer target by id, for the users made from the same section."""
    ids = {device["username"]: device["id"] for user in users for device in user["devices"]}
    user_ids = {user["name"]: user["id"] for user in users}
    group_ids = {group.name: new_id() for group in groups}
    found: list[GroupOptions] = []
    for group in groups:
        no_answer = "none"
        target = group.no_answer
        if target is not None:
            key = {
                NoAnswerKind.USER: user_ids,
                NoAnswerKind.DEVICE: ids,
                NoAnswerKind.GROUP: group_ids,
            }[target.kind].get(target.name)
            no_answer = f"{target.kind.value}:{key}" if key is not None else "none"
        found.append(
            GroupOptions(
                id=group_ids[group.name],
                name=group.name,
                pilot=group.pilot,
                members=[ids[member] for member in group.members if member in ids],
                ring_timer=group.ring_timer,
                no_answer=no_answer,
            )
        )
    return found


def find_group(groups: Sequence[GroupOptions], group_id: str) -> GroupOptions | None:
    return next((group for group in groups if group["id"] == group_id), None)


def groups_mapping(
    groups: Sequence[GroupOptions], users: Sequence[UserOptions]
) -> list[dict[str, Any]]:
    """The groups in sip_core's schema: members as usernames, the no-answer target by name.

    A member whose device is gone is left out (the options flow removes it too); a target that
    is gone becomes ``none``."""
    result: list[dict[str, Any]] = []
    for group in groups:
        members = []
        for device_id in group["members"]:
            owned = find_device(users, device_id)
            if owned is not None:
                members.append(owned.device["username"])
        result.append(
            {
                "name": group["name"],
                "pilot": group["pilot"],
                "members": members,
                "ring_timer": group["ring_timer"],
                "no_answer": _no_answer_name(group["no_answer"], groups, users),
            }
        )
    return result


def _no_answer_name(
    value: str, groups: Sequence[GroupOptions], users: Sequence[UserOptions]
) -> str:
    kind, _, key = value.partition(":")
    if kind == "user":
        user = find_user(users, key)
        return f"user:{user['name']}" if user is not None else "none"
    if kind == "device":
        owned = find_device(users, key)
        return f"device:{owned.device['username']}" if owned is not None else "none"
    if kind == "group":
        group = find_group(groups, key)
        return f"group:{group['name']}" if group is not None else "none"
    return "none"


def group_identifier(group_id: str) -> tuple[str, str]:
    """The device registry identifier of a group."""
    return (DOMAIN, f"{GROUP_PREFIX}{group_id}")


def group_key(group_id: str) -> str:
    """The hub's listener key of a group's entities."""
    return f"{GROUP_PREFIX}{group_id}"


def prune_groups(
    groups: Sequence[GroupOptions], users: Sequence[UserOptions]
) -> list[GroupOptions]:
    """The groups without members whose device is gone (a group left with none is removed),
    and with ``none`` for a no-answer target that is gone: what removing a user or a device
    does to the groups."""
    kept: list[GroupOptions] = []
    for group in groups:
        members = [m for m in group["members"] if find_device(users, m) is not None]
        if members:
            kept.append(GroupOptions(**{**group, "members": members}))
    for group in kept:
        kind, _, key = group["no_answer"].partition(":")
        gone = (
            (kind == "user" and find_user(users, key) is None)
            or (kind == "device" and find_device(users, key) is None)
            or (kind == "group" and find_group(kept, key) is None)
        )
        if gone:
            group["no_answer"] = "none"
    return kept
