"""SIP trunks in Home Assistant: stored in the entry's options, checked by sip_core, followed live.

The options keep ``trunks`` (each with a stable ``id`` and its DIDs) and ``dialplan`` in the
runner's schema, except that references are by id rather than by name: a DID's destination is
``user:<id>``, ``device:<id>`` or ``group:<id>`` (a Personal Ring Group; empty: the first
user), a route's and the emergency trunk are a
trunk's id, and ``call_out`` lists user ids (absent: every user). Renaming a user, a device or a
trunk therefore keeps every reference. A destination whose user or device was removed falls back
to the first user, as an empty one does, so removing a person never stops the line from ringing
(and never leaves a configuration the PBX would refuse to start with).

`build_config` turns the entry into the `PbxConfig` sip_core checks with its own loader, so the
runner's file and the options refuse the same mistakes. `TrunkMonitor` applies changed trunks to
the running PBX (`Pbx.update_trunking`: no restart), follows `TrunkStateChanged` for the trunk
state sensors, and raises a repair issue per trunk after `AUTH_FAILURES_FOR_ISSUE` refused
registrations in a row, deleted once the trunk registers (or is changed or removed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from sip_core.config import ConfigError, PbxConfig, config_from_mapping
from sip_core.events import PbxEvent, TrunkStateChanged, TrunkStatus
from sip_core.pbx import Pbx
from sip_core.trunk.registration import TrunkState

from .const import DOMAIN
from .group_options import groups_from_options, groups_mapping
from .users import (
    UserOptions,
    find_device,
    find_user,
    new_id,
    pbx_mapping,
    users_from_options,
)

_LOGGER = logging.getLogger(__name__)

CONF_TRUNKS: Final = "trunks"
CONF_DIALPLAN: Final = "dialplan"
CONF_DIDS: Final = "dids"
CONF_ROUTES: Final = "routes"
CONF_EMERGENCY: Final = "emergency"
CONF_EMERGENCY_TRUNK: Final = "emergency_trunk"
CONF_CALL_OUT: Final = "call_out"

#: Refused registrations in a row (wrong username or password) before the repair issue: one
#: could be a provider's hiccup; two, 5 minutes apart (the back-off), are a setting to fix.
AUTH_FAILURES_FOR_ISSUE: Final = 2
AUTH_ISSUE_PREFIX: Final = "trunk_auth_"
FIRST_USER: Final = ""
"""A DID destination meaning "the first user" (the default)."""

#: The trunk keys stored as given (the rest, ``id`` and ``dids``, are ours to translate).
TRUNK_KEYS: Final = (
    "name",
    "host",
    "port",
    "transport",
    "username",
    "auth_username",
    "password",
    "realm",
    "domain",
    "outbound_proxy",
    "register",
    "register_interval",
    "caller_id",
    "public_address",
    "ca_file",
    "verify",
)


class TrunkSensorState(StrEnum):
    """What the trunk state sensor shows."""

    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILING = "failing"
    NOT_REGISTERING = "not_registering"  # registration is off (a router that needs none)


def trunks_of(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trunks in the options (copies that may be changed freely)."""
    return [
        {**trunk, CONF_DIDS: [dict(did) for did in trunk.get(CONF_DIDS, [])]}
        for trunk in options.get(CONF_TRUNKS, [])
    ]


def dialplan_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The dial plan in the options (a copy; empty: routes none, emergency numbers default)."""
    plan = dict(options.get(CONF_DIALPLAN) or {})
    plan[CONF_ROUTES] = [dict(route) for route in plan.get(CONF_ROUTES, [])]
    return plan


def auth_issue_id(trunk_id: str) -> str:
    return f"{AUTH_ISSUE_PREFIX}{trunk_id}"


def destination_name(
    users: Sequence[UserOptions], destination: str, groups: Mapping[str, str] | None = None
) -> str:
    """A stored DID destination as sip_core names it: a user's name, a device's username or
    ``group:<name>`` (``groups``: the groups' names by id)."""
    kind, _, ident = destination.partition(":")
    if kind == "group":
        name = (groups or {}).get(ident)
        if name is not None:
            return f"group:{name}"
    elif kind == "user":
        user = find_user(users, ident)
        if user is not None:
            return user["name"]
    elif kind == "device":
        owned = find_device(users, ident)
        if owned is not None:
            return owned.device["username"]
    return users[0]["name"] if users else ""


def trunking_mapping(
    users: Sequence[UserOptions],
    trunks: Sequence[Mapping[str, Any]],
    plan: Mapping[str, Any],
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``trunks`` and ``dialplan`` sections in the runner's schema (names, not ids;
    ``groups``: the Personal Ring Groups' names by id, for DIDs that ring a group)."""
    if not trunks:
        return {}
    names = {trunk["id"]: trunk["name"] for trunk in trunks}
    sections: dict[str, Any] = {
        CONF_TRUNKS: [
            {
                **{key: trunk[key] for key in TRUNK_KEYS if trunk.get(key) not in (None, "")},
                CONF_DIDS: [
                    {
                        "number": did["number"],
                        "destination": destination_name(
                            users, did.get("destination", FIRST_USER), groups
                        ),
                    }
                    for did in trunk.get(CONF_DIDS, [])
                ],
            }
            for trunk in trunks
        ]
    }
    dialplan: dict[str, Any] = {}
    routes = []
    for route in plan.get(CONF_ROUTES, []):
        trunk_name = names.get(route["trunk"])
        if trunk_name is None:
            continue  # its trunk was removed (the flow removes such routes too)
        if route.get("prefix"):
            routes.append(
                {"prefix": route["prefix"], "trunk": trunk_name, "strip": bool(route.get("strip"))}
            )
        else:
            routes.append({"external": True, "trunk": trunk_name})
    dialplan[CONF_ROUTES] = routes
    if plan.get(CONF_EMERGENCY) is not None:
        dialplan[CONF_EMERGENCY] = list(plan[CONF_EMERGENCY])
    if plan.get(CONF_EMERGENCY_TRUNK) in names:
        dialplan[CONF_EMERGENCY_TRUNK] = names[plan[CONF_EMERGENCY_TRUNK]]
    if plan.get(CONF_CALL_OUT) is not None:
        by_id = {user["id"]: user["name"] for user in users}
        dialplan[CONF_CALL_OUT] = [by_id[i] for i in plan[CONF_CALL_OUT] if i in by_id]
    sections[CONF_DIALPLAN] = dialplan
    return sections


def build_config(
    data: Mapping[str, Any],
    users: Sequence[UserOptions],
    trunks: Sequence[Mapping[str, Any]],
    plan: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]] = (),
    *,
    group_names: Mapping[str, str] | None = None,
) -> PbxConfig:
    """The whole configuration with trunks (and ``groups``, already in sip_core's schema;
    ``group_names``: their names by id, for DIDs that ring a group), checked by sip_core
    (raises ConfigError)."""
    return config_from_mapping(
        {**pbx_mapping(data, users, groups), **trunking_mapping(users, trunks, plan, group_names)}
    )


def group_names(options: Mapping[str, Any]) -> dict[str, str]:
    """The entry's Personal Ring Groups' names by id (a DID's ``group:<id>``)."""
    return {group["id"]: group["name"] for group in groups_from_options(options)}


def options_groups(
    options: Mapping[str, Any], users: Sequence[UserOptions]
) -> list[dict[str, Any]]:
    """The entry's Personal Ring Groups in sip_core's schema."""
    return groups_mapping(groups_from_options(options), users)


def entry_config(data: Mapping[str, Any], options: Mapping[str, Any]) -> PbxConfig:
    """The entry's configuration with its trunks and groups (security: `with_security`)."""
    users = users_from_options(options)
    return build_config(
        data,
        users,
        trunks_of(options),
        dialplan_of(options),
        options_groups(options, users),
        group_names=group_names(options),
    )


def sensor_state(state: TrunkState | None) -> TrunkSensorState:
    """The sensor's value for a trunk's registration state (None: it does not register)."""
    if state is None or state.status is TrunkStatus.STOPPED:
        return TrunkSensorState.NOT_REGISTERING
    if state.status is TrunkStatus.REGISTERED:
        return TrunkSensorState.REGISTERED
    if state.status is TrunkStatus.FAILING:
        return TrunkSensorState.FAILING
    return TrunkSensorState.REGISTERING


class TrunkMonitor:
    """Follows one PBX's trunks: live changes, the state sensors and the repair issues."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any], pbx: Pbx) -> None:
        self.hass = hass
        self.entry = entry
        self.pbx = pbx
        self._trunks = trunks_of(entry.options)
        self._listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def trunks(self) -> list[dict[str, Any]]:
        """The trunks configured now (as stored, with their ids)."""
        return self._trunks

    def state(self, trunk_id: str) -> TrunkState | None:
        """The registration state of a trunk (None: not configured, or it does not register)."""
        name = next((t["name"] for t in self._trunks if t["id"] == trunk_id), None)
        return next((s for s in self.pbx.trunk_states() if s.trunk == name), None)

    @callback
    def async_start(self) -> None:
        self._unsubscribe = self.pbx.subscribe(self._handle_event)

    @callback
    def async_stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._sync_issues(keep=set())

    async def async_apply_options(self, options: Mapping[str, Any]) -> None:
        """Apply changed trunks or dial plan to the running PBX (no restart)."""
        trunks = trunks_of(options)
        try:
            trunking = entry_config(self.entry.data, options).trunking
        except ConfigError as err:  # the flow checks first; keep what runs rather than fail
            _LOGGER.error("Trunk settings not applied: %s", err)
            return
        self._trunks = trunks
        if trunking != self.pbx.config.trunking:
            await self.pbx.update_trunking(trunking)
            _LOGGER.info("Trunk settings applied: %d trunk(s)", len(trunks))
        failing = {
            auth_issue_id(t["id"])
            for t in trunks
            if (s := self.state(t["id"])) is not None
            and s.status is TrunkStatus.FAILING
            and s.auth_failures >= AUTH_FAILURES_FOR_ISSUE
        }
        self._sync_issues(keep=failing)
        self._notify()

    @callback
    def async_add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when a trunk's state changes or the trunks are edited."""
        self._listeners.append(listener)

        def remove() -> None:
            self._listeners.remove(listener)

        return remove

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    @callback
    def _handle_event(self, event: PbxEvent) -> None:
        if not isinstance(event, TrunkStateChanged):
            return
        trunk = next((t for t in self._trunks if t["name"] == event.trunk), None)
        if trunk is not None:
            issue_id = auth_issue_id(trunk["id"])
            if event.status is TrunkStatus.FAILING:
                if event.auth_failures >= AUTH_FAILURES_FOR_ISSUE:
                    self._create_auth_issue(trunk, event)
            else:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        self._notify()

    def _create_auth_issue(self, trunk: Mapping[str, Any], event: TrunkStateChanged) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            auth_issue_id(trunk["id"]),
            is_fixable=False,
            is_persistent=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key="trunk_authentication",
            translation_placeholders={
                "trunk": trunk["name"],
                "host": trunk["host"],
                "username": trunk.get("auth_username") or trunk["username"],
                "failures": str(event.auth_failures),
            },
        )

    def _sync_issues(self, keep: set[str]) -> None:
        registry = ir.async_get(self.hass)
        for domain, issue_id in list(registry.issues):
            if domain == DOMAIN and issue_id.startswith(AUTH_ISSUE_PREFIX) and issue_id not in keep:
                ir.async_delete_issue(self.hass, DOMAIN, issue_id)


def trunk_options(config: PbxConfig, users: Sequence[UserOptions]) -> dict[str, Any]:
    """The ``trunks`` and ``dialplan`` options for a configuration read from the runner's YAML
    (the import): names become the ids the options refer by."""
    trunking = config.trunking
    if trunking is None:
        return {}
    user_ids = {user["name"]: user["id"] for user in users}
    device_ids = {device["username"]: device["id"] for user in users for device in user["devices"]}

    def destination(name: str) -> str:
        if name in user_ids:
            return f"user:{user_ids[name]}"
        return f"device:{device_ids[name]}" if name in device_ids else FIRST_USER

    trunks: list[dict[str, Any]] = []
    for trunk in trunking.trunks:
        mapping = trunk.to_mapping()
        stored: dict[str, Any] = {
            key: mapping[key] for key in TRUNK_KEYS if mapping.get(key) is not None
        }
        stored |= {"id": new_id(), CONF_DIDS: [
            {"number": did.number, "destination": destination(did.destination)}
            for did in trunk.dids
        ]}  # fmt: skip
        trunks.append(stored)
    trunk_ids = {trunk["name"]: trunk["id"] for trunk in trunks}
    plan = trunking.dialplan
    dialplan: dict[str, Any] = {
        CONF_ROUTES: [
            {"trunk": trunk_ids[route.trunk], "prefix": route.prefix, "strip": route.strip}
            if route.prefix is not None
            else {"trunk": trunk_ids[route.trunk]}
            for route in plan.routes
        ],
        CONF_EMERGENCY: list(plan.emergency),
        CONF_EMERGENCY_TRUNK: trunk_ids[plan.emergency_trunk],
    }
    if plan.call_out is not None:
        dialplan[CONF_CALL_OUT] = [user_ids[name] for name in plan.call_out]
    return {CONF_TRUNKS: trunks, CONF_DIALPLAN: dialplan}
