"""The options flow's trunk steps: trunks, their numbers (DIDs), the dial plan.

`TrunkOptionsFlow` is the base of the integration's options flow; its ``trunks`` menu leads
here. Every change is checked as a whole by sip_core's loader (`trunks.build_config`), the same
checks the runner's file gets, and a refusal is shown on the field it concerns with a
translated error (`field_error`). Passwords are never shown back: editing a trunk with the
password left empty keeps the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import voluptuous as vol
from homeassistant.config_entries import ConfigFlowResult, OptionsFlow
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from sip_core.config import ConfigError
from sip_core.trunk.config import DEFAULT_REGISTER_INTERVAL

from .group_options import groups_from_options
from .trunks import (
    CONF_CALL_OUT,
    CONF_DIALPLAN,
    CONF_DIDS,
    CONF_EMERGENCY,
    CONF_EMERGENCY_TRUNK,
    CONF_ROUTES,
    CONF_TRUNKS,
    build_config,
    dialplan_of,
    group_names,
    options_groups,
    trunks_of,
)
from .users import UserOptions, iter_devices, new_id, users_from_options

CONF_TRUNK: Final = "trunk"
CONF_DID: Final = "did"
CONF_ROUTE: Final = "route"
CONF_NUMBER: Final = "number"
CONF_DESTINATION: Final = "destination"
CONF_KIND: Final = "kind"
CONF_PREFIX: Final = "prefix"
CONF_STRIP: Final = "strip"
CONF_CALL_OUT_ALL: Final = "call_out_all"
ROUTE_PREFIX: Final = "prefix"
ROUTE_EXTERNAL: Final = "external"

#: The error shown on a trunk form field that sip_core refused.
TRUNK_FIELD_ERRORS: Final = {
    "name": "invalid_trunk_name",
    "host": "invalid_host",
    "port": "port_out_of_range",
    "username": "invalid_number",
    "auth_username": "invalid_auth_username",
    "password": "password_required",
    "realm": "invalid_realm",
    "domain": "invalid_host",
    "outbound_proxy": "invalid_proxy",
    "register_interval": "invalid_register_interval",
    "caller_id": "invalid_number",
    "public_address": "invalid_public_address",
    "ca_file": "invalid_ca_file",
    "verify": "invalid_verify",
}
#: Causes told apart by sip_core's message, where one field can fail two ways.
_BY_MESSAGE: Final = (
    ("is already used by", "duplicate_trunk_name"),
    ("is already delivered by", "duplicate_did"),
    ("would send the internal number", "prefix_captures_internal"),
    ("is also an internal number", "emergency_internal"),
    ("is only used with transport: tls", "ca_file_needs_tls"),
    ("is not used with verify: false", "ca_file_without_verify"),
)

_TEXT = TextSelector()
_OPTIONAL_TEXT_KEYS: Final = (
    "auth_username",
    "realm",
    "domain",
    "outbound_proxy",
    "caller_id",
    "public_address",
    "ca_file",
)


# No min or max: a number out of range gets sip_core's check and a translated field error.
_WHOLE = NumberSelector(NumberSelectorConfig(step=1, mode=NumberSelectorMode.BOX))


def field_error(err: ConfigError, fields: set[str]) -> tuple[str, str]:
    """The form field a sip_core refusal concerns and its error key ("base" if none fits)."""
    path = err.key_path
    message = str(err)
    key = "invalid_config"
    field = "base"
    if len(path) >= 3 and path[0] == CONF_TRUNKS and path[2] == CONF_DIDS and len(path) >= 5:
        field = str(path[4])
        key = "invalid_number" if field == CONF_NUMBER else "invalid_destination"
    elif len(path) >= 3 and path[0] == CONF_TRUNKS:
        field = str(path[2])
        key = TRUNK_FIELD_ERRORS.get(field, key)
    elif path[:2] == (CONF_DIALPLAN, CONF_ROUTES) and len(path) >= 4:
        field = str(path[3])
        key = "invalid_prefix"
    elif path[:2] == (CONF_DIALPLAN, CONF_EMERGENCY):
        field, key = CONF_EMERGENCY, "invalid_emergency"
    for fragment, specific in _BY_MESSAGE:
        if fragment in message:
            key = specific
    if field not in fields:
        return "base", "invalid_config"
    return field, key


class TrunkOptionsFlow(OptionsFlow):
    """The trunk steps of the options flow (the users' steps are in config_flow.py)."""

    _trunk_id: str | None = None

    # -- the menu --------------------------------------------------------------------------------

    async def async_step_trunks(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """What can be done with the trunks and the dial plan there are."""
        trunks = trunks_of(self.config_entry.options)
        menu = ["add_trunk"]
        if trunks:
            menu += ["edit_trunk", "remove_trunk", "add_did"]
        if any(trunk[CONF_DIDS] for trunk in trunks):
            menu.append("remove_did")
        if trunks:
            menu.append("add_route")
        if dialplan_of(self.config_entry.options)[CONF_ROUTES]:
            menu.append("remove_route")
        if trunks:
            menu.append("dialplan")
        return self.async_show_menu(step_id="trunks", menu_options=menu)

    # -- trunks ----------------------------------------------------------------------------------

    async def async_step_add_trunk(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A new account at a provider, or the router or PBX that holds the line."""
        self._trunk_id = None
        return await self.async_step_trunk(user_input)

    async def async_step_edit_trunk(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the trunk to edit."""
        if user_input is not None:
            self._trunk_id = user_input[CONF_TRUNK]
            return await self.async_step_trunk()
        return self.async_show_form(
            step_id="edit_trunk",
            data_schema=vol.Schema({vol.Required(CONF_TRUNK): self._trunks_select()}),
        )

    async def async_step_trunk(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """A trunk's provider, account, registration, caller ID and NAT address."""
        trunks = trunks_of(self.config_entry.options)
        current = next((t for t in trunks if t["id"] == self._trunk_id), None)
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            trunk = self._trunk_from_input(user_input, current)
            if current is None:
                trunks.append(trunk)
            else:
                trunks[trunks.index(current)] = trunk
            errors, placeholders = self._check(
                trunks, dialplan_of(self.config_entry.options), set(TRUNK_FIELD_ERRORS)
            )
            if not errors:
                return self._save_trunks(trunks=trunks)
        suggested: dict[str, Any] = {
            "port": 5060,
            "transport": "udp",
            "register": True,
            "register_interval": DEFAULT_REGISTER_INTERVAL,
            "verify": True,
        }
        if current is not None:
            suggested = {k: v for k, v in current.items() if k not in ("password", CONF_DIDS)}
            suggested.setdefault("verify", True)  # stored before TLS trunks existed
        if user_input is not None:
            suggested = {k: v for k, v in user_input.items() if k != "password"}
        return self.async_show_form(
            step_id="trunk",
            data_schema=self.add_suggested_values_to_schema(self._trunk_schema(), suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_remove_trunk(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Remove a trunk with its numbers and the routes through it."""
        if user_input is not None:
            gone = user_input[CONF_TRUNK]
            trunks = [t for t in trunks_of(self.config_entry.options) if t["id"] != gone]
            plan = dialplan_of(self.config_entry.options)
            plan[CONF_ROUTES] = [r for r in plan[CONF_ROUTES] if r["trunk"] != gone]
            if plan.get(CONF_EMERGENCY_TRUNK) == gone:
                del plan[CONF_EMERGENCY_TRUNK]  # the first trunk left, by default
            return self._save_trunks(trunks=trunks, plan=plan if trunks else {})
        return self.async_show_form(
            step_id="remove_trunk",
            data_schema=vol.Schema({vol.Required(CONF_TRUNK): self._trunks_select()}),
        )

    # -- numbers (DIDs) --------------------------------------------------------------------------

    async def async_step_add_did(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """A number a trunk delivers, and who rings for it (by default the first user)."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            trunks = trunks_of(self.config_entry.options)
            trunk = next(t for t in trunks if t["id"] == user_input[CONF_TRUNK])
            did = {"number": str(user_input[CONF_NUMBER]).strip()}
            if user_input.get(CONF_DESTINATION):
                did[CONF_DESTINATION] = user_input[CONF_DESTINATION]
            trunk[CONF_DIDS].append(did)
            kind, _, group_id = str(did.get(CONF_DESTINATION, "")).partition(":")
            if kind == "group" and group_id not in group_names(self.config_entry.options):
                errors = {CONF_DESTINATION: "unknown_group_destination"}
            else:
                errors, placeholders = self._check(
                    trunks, dialplan_of(self.config_entry.options), {CONF_NUMBER, CONF_DESTINATION}
                )
            if not errors:
                return self._save_trunks(trunks=trunks)
        schema = vol.Schema(
            {
                vol.Required(CONF_TRUNK): self._trunks_select(),
                vol.Required(CONF_NUMBER): _TEXT,
                vol.Optional(CONF_DESTINATION): self._destinations_select(),
            }
        )
        return self.async_show_form(
            step_id="add_did",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_remove_did(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Stop answering one of a trunk's numbers (calls to it then get 404)."""
        trunks = trunks_of(self.config_entry.options)
        if user_input is not None:
            trunk_id, _, number = user_input[CONF_DID].partition("/")
            for trunk in trunks:
                if trunk["id"] == trunk_id:
                    trunk[CONF_DIDS] = [d for d in trunk[CONF_DIDS] if d["number"] != number]
            return self._save_trunks(trunks=trunks)
        options = [
            SelectOptionDict(value=f"{t['id']}/{d['number']}", label=f"{d['number']} ({t['name']})")
            for t in trunks
            for d in t[CONF_DIDS]
        ]
        return self.async_show_form(
            step_id="remove_did",
            data_schema=vol.Schema({vol.Required(CONF_DID): _dropdown(options)}),
        )

    # -- the dial plan ---------------------------------------------------------------------------

    async def async_step_add_route(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Numbers that go out: those with a prefix, or anything that is not internal."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            plan = dialplan_of(self.config_entry.options)
            route: dict[str, Any] = {"trunk": user_input[CONF_TRUNK]}
            prefix = str(user_input.get(CONF_PREFIX) or "").strip()
            if user_input[CONF_KIND] == ROUTE_PREFIX:
                if not prefix:
                    errors[CONF_PREFIX] = "invalid_prefix"
                route |= {CONF_PREFIX: prefix, CONF_STRIP: bool(user_input.get(CONF_STRIP))}
            plan[CONF_ROUTES].append(route)
            if not errors:
                errors, placeholders = self._check(
                    trunks_of(self.config_entry.options), plan, {CONF_PREFIX}
                )
            if not errors:
                return self._save_trunks(plan=plan)
        schema = vol.Schema(
            {
                vol.Required(CONF_TRUNK): self._trunks_select(),
                vol.Required(CONF_KIND, default=ROUTE_PREFIX): SelectSelector(
                    SelectSelectorConfig(
                        options=[ROUTE_PREFIX, ROUTE_EXTERNAL],
                        translation_key="route_kind",
                        mode=SelectSelectorMode.LIST,
                    )
                ),
                vol.Optional(CONF_PREFIX): _TEXT,
                vol.Optional(CONF_STRIP, default=False): BooleanSelector(),
            }
        )
        return self.async_show_form(
            step_id="add_route",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or {}),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_remove_route(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Remove one rule of the dial plan."""
        plan = dialplan_of(self.config_entry.options)
        if user_input is not None:
            index = int(user_input[CONF_ROUTE])
            plan[CONF_ROUTES] = [r for i, r in enumerate(plan[CONF_ROUTES]) if i != index]
            return self._save_trunks(plan=plan)
        names = {t["id"]: t["name"] for t in trunks_of(self.config_entry.options)}
        options = [
            SelectOptionDict(
                value=str(index),
                label=f"{route.get(CONF_PREFIX) or '*'} → {names.get(route['trunk'], '?')}",
            )
            for index, route in enumerate(plan[CONF_ROUTES])
        ]
        return self.async_show_form(
            step_id="remove_route",
            data_schema=vol.Schema({vol.Required(CONF_ROUTE): _dropdown(options)}),
        )

    async def async_step_dialplan(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Emergency numbers and their trunk; who may call out."""
        plan = dialplan_of(self.config_entry.options)
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        users = users_from_options(self.config_entry.options)
        if user_input is not None:
            numbers = [
                part.strip()
                for part in str(user_input.get(CONF_EMERGENCY) or "").replace(";", ",").split(",")
                if part.strip()
            ]
            plan[CONF_EMERGENCY] = numbers
            plan[CONF_EMERGENCY_TRUNK] = user_input[CONF_EMERGENCY_TRUNK]
            if user_input.get(CONF_CALL_OUT_ALL, True):
                plan.pop(CONF_CALL_OUT, None)
            else:
                plan[CONF_CALL_OUT] = list(user_input.get(CONF_CALL_OUT) or [])
            errors, placeholders = self._check(
                trunks_of(self.config_entry.options), plan, {CONF_EMERGENCY}
            )
            if not errors:
                return self._save_trunks(plan=plan)
        config = build_config(
            self.config_entry.data,
            users,
            trunks_of(self.config_entry.options),
            dialplan_of(self.config_entry.options),
            options_groups(self.config_entry.options, users),
        )
        trunking = config.trunking
        assert trunking is not None  # the step is offered only with trunks
        names = {t["name"]: t["id"] for t in trunks_of(self.config_entry.options)}
        suggested = {
            CONF_EMERGENCY: ", ".join(trunking.dialplan.emergency),
            CONF_EMERGENCY_TRUNK: names.get(trunking.dialplan.emergency_trunk),
            CONF_CALL_OUT_ALL: CONF_CALL_OUT not in plan,
            CONF_CALL_OUT: plan.get(CONF_CALL_OUT, []),
        }
        schema = vol.Schema(
            {
                vol.Optional(CONF_EMERGENCY): _TEXT,
                vol.Required(CONF_EMERGENCY_TRUNK): self._trunks_select(),
                vol.Required(CONF_CALL_OUT_ALL): BooleanSelector(),
                vol.Optional(CONF_CALL_OUT): SelectSelector(
                    SelectSelectorConfig(
                        options=[
                            SelectOptionDict(value=user["id"], label=user["name"]) for user in users
                        ],
                        multiple=True,
                        mode=SelectSelectorMode.LIST,
                    )
                ),
            }
        )
        return self.async_show_form(
            step_id="dialplan",
            data_schema=self.add_suggested_values_to_schema(schema, user_input or suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _check(
        self, trunks: list[dict[str, Any]], plan: Mapping[str, Any], fields: set[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Let sip_core check the whole configuration with the change; field errors if not."""
        users = users_from_options(self.config_entry.options)
        try:
            build_config(
                self.config_entry.data,
                users,
                trunks,
                plan,
                options_groups(self.config_entry.options, users),
                group_names=group_names(self.config_entry.options),
            )
        except ConfigError as err:
            field, key = field_error(err, fields)
            return {field: key}, {"error": str(err)}
        return {}, {"error": ""}

    def _save_trunks(
        self, *, trunks: list[dict[str, Any]] | None = None, plan: Mapping[str, Any] | None = None
    ) -> ConfigFlowResult:
        options = dict(self.config_entry.options)
        if trunks is not None:
            options[CONF_TRUNKS] = trunks
        if plan is not None:
            options[CONF_DIALPLAN] = dict(plan)
        return self.async_create_entry(data=options)

    @staticmethod
    def _trunk_from_input(
        user_input: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        trunk: dict[str, Any] = {
            "id": current["id"] if current is not None else new_id(),
            "name": str(user_input["name"]).strip(),
            "host": str(user_input["host"]).strip(),
            "port": _whole(user_input["port"]),
            "transport": user_input["transport"],
            "username": str(user_input["username"]).strip(),
            "register": bool(user_input["register"]),
            "register_interval": _whole(user_input["register_interval"]),
            "verify": user_input.get("verify", True),
            CONF_DIDS: list(current[CONF_DIDS]) if current is not None else [],
        }
        password = user_input.get("password") or (current or {}).get("password")
        if password:
            trunk["password"] = password
        for key in _OPTIONAL_TEXT_KEYS:
            value = str(user_input.get(key) or "").strip()
            if value:
                trunk[key] = value
        return trunk

    def _trunk_schema(self) -> vol.Schema:
        password = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
        return vol.Schema(
            {
                vol.Required("name"): _TEXT,
                vol.Required("host"): _TEXT,
                vol.Required("port"): _WHOLE,
                vol.Required("transport"): SelectSelector(
                    SelectSelectorConfig(
                        options=["udp", "tcp", "tls"],
                        translation_key="trunk_transport",
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Required("username"): _TEXT,
                vol.Optional("auth_username"): _TEXT,
                # Optional even for a new trunk: left empty, the field error says why it is needed.
                vol.Optional("password"): password,
                vol.Optional("realm"): _TEXT,
                vol.Optional("domain"): _TEXT,
                vol.Optional("outbound_proxy"): _TEXT,
                vol.Required("register"): BooleanSelector(),
                vol.Required("register_interval"): _WHOLE,
                vol.Optional("caller_id"): _TEXT,
                vol.Optional("public_address"): _TEXT,
                vol.Optional("ca_file"): _TEXT,
                vol.Optional("verify", default=True): BooleanSelector(),
            }
        )

    def _trunks_select(self) -> SelectSelector:
        return _dropdown(
            [
                SelectOptionDict(value=t["id"], label=t["name"])
                for t in trunks_of(self.config_entry.options)
            ]
        )

    def _destinations_select(self) -> SelectSelector:
        users: list[UserOptions] = users_from_options(self.config_entry.options)
        options = [
            SelectOptionDict(value=f"user:{u['id']}", label=f"{u['name']} ({u['extension']})")
            for u in users
        ]
        options += [
            SelectOptionDict(
                value=f"device:{o.device['id']}",
                label=f"{o.device['label']} ({o.device['username']}, {o.user['name']})",
            )
            for o in iter_devices(users)
        ]
        options += [  # Personal Ring Groups, by name and pilot number
            SelectOptionDict(value=f"group:{g['id']}", label=f"{g['name']} ({g['pilot']})")
            for g in groups_from_options(self.config_entry.options)
        ]
        return _dropdown(options)


def _dropdown(options: list[SelectOptionDict]) -> SelectSelector:
    return SelectSelector(SelectSelectorConfig(options=options, mode=SelectSelectorMode.DROPDOWN))


def _whole(value: Any) -> Any:
    """A form's number as an int when it is whole (else as given, for sip_core to refuse)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
