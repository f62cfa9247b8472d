"""Config flow (the PBX's address, ports and domain) and options flow (users and devices)."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.selector import (
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
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.helpers.typing import DiscoveryInfoType

from sip_core.config import (
    CodeConflict,
    ConfigError,
    FlipPermission,
    config_from_mapping,
    security_settings,
)

from .const import (
    CONF_EXTENSION,
    CONF_FLIP_PERMISSION,
    CONF_LABEL,
    CONF_LISTEN,
    CONF_NAME,
    CONF_PASSWORD,
    CONF_PRIORITY,
    CONF_RTP_PORT_MAX,
    CONF_RTP_PORT_MIN,
    CONF_SIP_DOMAIN,
    CONF_SIP_PORT,
    CONF_TYPE,
    CONF_USERNAME,
    CONF_USERS,
    DEFAULT_LISTEN,
    DEFAULT_PRIORITY,
    DEFAULT_RTP_PORT_MAX,
    DEFAULT_RTP_PORT_MIN,
    DEFAULT_SIP_DOMAIN,
    DEFAULT_SIP_PORT,
    DOMAIN,
    MIN_RTP_PORT,
    DeviceKind,
)
from .discovery import flow_data, link_mac, mac_is_ours, phone_from_zeroconf
from .flip_settings import CONF_FLIP_NUMBER, FlipSettingsSteps
from .group_options import (
    CONF_GROUPS,
    GroupOptions,
    find_group,
    groups_from_config,
    groups_from_options,
    groups_mapping,
    prune_groups,
)
from .hub import CallflipHub
from .issues import async_yaml_section_ignored
from .security import CONF_SECURITY, security_from_input, security_mapping, security_schema
from .transfer_options import (
    CONF_TRANSFER,
    clash_placeholders,
    transfer_from_input,
    transfer_mapping,
    transfer_schema,
    with_transfer,
)
from .trunk_flow import TrunkOptionsFlow
from .trunks import (
    build_config,
    dialplan_of,
    entry_config,
    options_groups,
    trunk_options,
    trunks_of,
)
from .users import (
    DeviceOptions,
    UserOptions,
    find_device,
    find_user,
    generate_password,
    iter_devices,
    new_id,
    pbx_config,
    users_from_options,
    valid_domain,
    valid_port,
    validate_device,
    validate_user,
)

CONF_OWNER = "owner"
CONF_USER = "user"
CONF_DEVICE = "device"
CONF_GROUP = "group"
CONF_PILOT = "pilot"
CONF_MEMBERS = "members"
CONF_RING_TIMER = "ring_timer"
CONF_NO_ANSWER = "no_answer"

_PORT = NumberSelector(NumberSelectorConfig(mode=NumberSelectorMode.BOX, step=1))
_TEXT = TextSelector()

SERVER_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_LISTEN): _TEXT,
        vol.Required(CONF_SIP_PORT): _PORT,
        vol.Required(CONF_SIP_DOMAIN): _TEXT,
        vol.Required(CONF_RTP_PORT_MIN): _PORT,
        vol.Required(CONF_RTP_PORT_MAX): _PORT,
    }
)
SERVER_DEFAULTS: dict[str, Any] = {
    CONF_LISTEN: DEFAULT_LISTEN,
    CONF_SIP_PORT: DEFAULT_SIP_PORT,
    CONF_SIP_DOMAIN: DEFAULT_SIP_DOMAIN,
    CONF_RTP_PORT_MIN: DEFAULT_RTP_PORT_MIN,
    CONF_RTP_PORT_MAX: DEFAULT_RTP_PORT_MAX,
}


def probe_bind(host: str, port: int) -> str | None:
    """Try to bind the SIP port (UDP and TCP, as the PBX will); return an error key or None.

    Runs in the executor. A second listener on the port is refused by the kernel even with
    SO_REUSEADDR, so the TCP probe finds a port in use without tripping over TIME_WAIT leftovers.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(1)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return "port_in_use"
                if err.errno == errno.EADDRNOTAVAIL:
                    return "address_not_available"
                if err.errno == errno.EACCES:
                    return "port_not_permitted"
                return "cannot_bind"
    return None


def probe_address(host: str) -> str | None:
    """Check only that the address belongs to this host (a UDP bind on a free port); error key."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                return "address_not_available"
            return "cannot_bind"
    return None


def held_by_own_pbx(entry: ConfigEntry, listen: str, port: int) -> bool:
    """Whether the running PBX of this entry is what makes ``listen:port`` look taken.

    Moving from 127.0.0.1 to 0.0.0.0 (or back) on the same port collides with our own listener,
    which the reload stops before binding the new address. Two different specific addresses do
    not collide, so a port in use there is another program's.
    """
    if entry.state is not ConfigEntryState.LOADED or port != entry.data[CONF_SIP_PORT]:
        return False
    old = ipaddress.ip_address(entry.data[CONF_LISTEN])
    new = ipaddress.ip_address(listen)
    return old == new or old.is_unspecified or new.is_unspecified


async def validate_server(
    hass: HomeAssistant, user_input: Mapping[str, Any], *, probe: bool
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Check the server settings; return the cleaned data, field errors and placeholders.

    probe: also bind the SIP port, so that a port in use or an address that is not on this host
    is reported on its field now rather than as a failed set-up later.
    """
    errors: dict[str, str] = {}
    placeholders = {"error": ""}
    listen = str(user_input[CONF_LISTEN]).strip()
    domain = str(user_input[CONF_SIP_DOMAIN]).strip().lower()
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        errors[CONF_LISTEN] = "invalid_address"
    if not valid_port(user_input[CONF_SIP_PORT]):
        errors[CONF_SIP_PORT] = "port_out_of_range"
    for key in (CONF_RTP_PORT_MIN, CONF_RTP_PORT_MAX):
        if not valid_port(user_input[key]) or user_input[key] < MIN_RTP_PORT:
            errors[key] = "rtp_port_out_of_range"
    if not valid_domain(domain):
        errors[CONF_SIP_DOMAIN] = "invalid_domain"
    if errors:
        return dict(user_input), errors, placeholders
    port = int(user_input[CONF_SIP_PORT])
    rtp_min = int(user_input[CONF_RTP_PORT_MIN])
    rtp_max = int(user_input[CONF_RTP_PORT_MAX])
    data: dict[str, Any] = {
        CONF_LISTEN: listen,
        CONF_SIP_PORT: port,
        CONF_SIP_DOMAIN: domain,
        CONF_RTP_PORT_MIN: rtp_min,
        CONF_RTP_PORT_MAX: rtp_max,
    }
    if rtp_min % 2:
        errors[CONF_RTP_PORT_MIN] = "rtp_port_odd"
    elif rtp_min >= rtp_max:
        errors[CONF_RTP_PORT_MAX] = "invalid_rtp_range"
    elif rtp_min <= port <= rtp_max:
        errors[CONF_SIP_PORT] = "port_in_rtp_range"
    if errors:
        return data, errors, placeholders
    try:
        pbx_config(data, [])
    except ConfigError as err:
        placeholders["error"] = str(err)
        return data, {"base": "invalid_config"}, placeholders
    if probe:
        problem = await hass.async_add_executor_job(probe_bind, listen, port)
        if problem == "address_not_available":
            errors[CONF_LISTEN] = problem
        elif problem is not None:
            errors[CONF_SIP_PORT] = problem
    return data, errors, placeholders


class CallflipConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up the PBX: where it listens and which SIP domain it serves."""

    VERSION = 1
    MINOR_VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the server settings and check that the port can be bound."""
        if self._async_current_entries(include_ignore=False):
            # One PBX only. Enforced here, not with single_config_entry in the manifest: that
            # would also stop every discovery flow, and discovered phones join the one PBX.
            return self.async_abort(reason="single_instance_allowed")
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            data, errors, placeholders = await validate_server(self.hass, user_input, probe=True)
            if not errors:
                return self.async_create_entry(
                    title=f"callflip {data[CONF_SIP_DOMAIN]}",
                    data=data,
                    options={CONF_USERS: []},
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                SERVER_SCHEMA, user_input or SERVER_DEFAULTS
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the server settings; the PBX restarts with them (users stay as they are)."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            moved = (
                str(user_input[CONF_LISTEN]).strip() != entry.data[CONF_LISTEN]
                or user_input[CONF_SIP_PORT] != entry.data[CONF_SIP_PORT]
            )
            data, errors, placeholders = await validate_server(self.hass, user_input, probe=moved)
            if errors.get(CONF_SIP_PORT) == "port_in_use" and held_by_own_pbx(
                entry, data[CONF_LISTEN], data[CONF_SIP_PORT]
            ):
                # Our own listener: only the new address is left to check. Should the reload
                # still fail to bind, the "cannot listen" repair issue says so.
                del errors[CONF_SIP_PORT]
                problem = await self.hass.async_add_executor_job(probe_address, data[CONF_LISTEN])
                if problem is not None:
                    errors[CONF_LISTEN] = problem
            if not errors:
                return self.async_update_reload_and_abort(
                    entry, title=f"callflip {data[CONF_SIP_DOMAIN]}", data=data
                )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                SERVER_SCHEMA, user_input or dict(entry.data)
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_import(self, import_data: dict[str, Any]) -> ConfigFlowResult:
        """Create the entry from a ``callflip:`` YAML section (the runner's schema)."""
        if self._async_current_entries(include_ignore=False):
            return self.async_abort(reason="single_instance_allowed")
        config = config_from_mapping(import_data)
        users = [
            UserOptions(
                id=new_id(),
                name=user.name,
                extension=user.extension,
                devices=[
                    DeviceOptions(
                        id=new_id(),
                        username=device.username,
                        password=device.password,
                        label=device.label,
                        type=device.type.value,
                        priority=device.priority,
                    )
                    for device in user.devices
                ],
            )
            for user in config.users
        ]
        groups = groups_from_config(config.groups, users)
        # From now on the section is not read: say so until it is removed.
        async_yaml_section_ignored(self.hass, present=True)
        return self.async_create_entry(
            title=f"callflip {config.sip.domain}",
            data={
                CONF_LISTEN: config.sip.listen,
                CONF_SIP_PORT: config.sip.port,
                CONF_SIP_DOMAIN: config.sip.domain,
                CONF_RTP_PORT_MIN: config.rtp.port_min,
                CONF_RTP_PORT_MAX: config.rtp.port_max,
            },
            options={
                CONF_USERS: users,
                **trunk_options(config, users),
                **(
                    {CONF_GROUPS: groups}
                    if (groups := groups_from_config(config.groups, users))
                    else {}
                ),
            },
        )

    # -- discovered phones: added to the PBX entry that exists -----------------------------------

    _phone: dict[str, Any] | None = None
    _added: dict[str, str] | None = None

    async def async_step_zeroconf(self, discovery_info: ZeroconfServiceInfo) -> ConfigFlowResult:
        """A phone announced itself over mDNS (Home Assistant's zeroconf browses for us)."""
        sighting = phone_from_zeroconf(discovery_info)
        if sighting is None:
            return self.async_abort(reason="not_a_phone")
        hub = self._loaded_hub()
        if hub is None:
            return self.async_abort(reason="pbx_not_set_up")
        return await self._async_discovered(flow_data(hub.pbx.phones.observe(sighting)))

    async def async_step_integration_discovery(
        self, discovery_info: DiscoveryInfoType
    ) -> ConfigFlowResult:
        """The PBX found a phone (plug-and-play, or a REGISTER for an unknown account)."""
        return await self._async_discovered(dict(discovery_info))

    async def _async_discovered(self, phone: dict[str, Any]) -> ConfigFlowResult:
        # The phone's own unique ID: ignoring it works as for any discovery.
        await self.async_set_unique_id(f"phone-{phone['key']}")
        self._abort_if_unique_id_configured()
        hub = self._loaded_hub()
        if hub is None:
            return self.async_abort(reason="pbx_not_set_up")
        if (phone.get("username") and phone["username"] in hub.by_username()) or (
            phone.get("mac") and mac_is_ours(self.hass, hub, phone["mac"])
        ):
            return self.async_abort(reason="phone_configured")
        self._phone = phone
        self.context["title_placeholders"] = {"name": phone["name"]}
        return await self.async_step_discovery_confirm()

    async def async_step_discovery_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Whose phone it is, what to call it and what kind it is; the account is generated."""
        hub = self._loaded_hub()
        phone = self._phone
        if hub is None or phone is None:
            return self.async_abort(reason="pbx_not_set_up")
        users = users_from_options(hub.entry.options)
        if not users:
            return self.async_abort(reason="no_users")
        errors: dict[str, str] = {}
        placeholders = {"name": phone["name"], "error": ""}
        if user_input is not None:
            owner = find_user(users, user_input[CONF_OWNER])
            label = str(user_input[CONF_LABEL]).strip()
            username = _new_username(users, phone)
            found = validate_device(
                users,
                username=username,
                password=None,
                label=label,
                priority=DEFAULT_PRIORITY,
                device_id=None,
            )
            if found:
                errors = {CONF_LABEL if CONF_LABEL in found else "base": next(iter(found.values()))}
            elif owner is not None:
                device = DeviceOptions(
                    id=new_id(),
                    username=username,
                    password=generate_password(),
                    label=label,
                    type=user_input[CONF_TYPE],
                    priority=DEFAULT_PRIORITY,
                )
                owner["devices"].append(device)
                try:
                    pbx_config(hub.entry.data, users)
                except ConfigError as err:
                    errors = {"base": "invalid_config"}
                    placeholders["error"] = str(err)
                else:
                    options = {**hub.entry.options, CONF_USERS: users}
                    self.hass.config_entries.async_update_entry(hub.entry, options=options)
                    # Applied now rather than by the update listener's task, so that the PBX
                    # knows the account and the registry has the device before this returns.
                    hub.async_apply_options(options, users_from_options(options))
                    if phone.get("mac"):
                        link_mac(self.hass, hub, device["id"], phone["mac"])
                    return await self._async_phone_added(hub, phone, device)
        return self.async_show_form(
            step_id="discovery_confirm",
            data_schema=self.add_suggested_values_to_schema(
                _discovered_schema(users),
                user_input
                or {
                    CONF_OWNER: users[0]["id"],
                    CONF_LABEL: phone["name"].rsplit(" at ", 1)[0],
                    CONF_TYPE: DeviceKind.DESK,
                },
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def _async_phone_added(
        self, hub: CallflipHub, phone: dict[str, Any], device: DeviceOptions
    ) -> ConfigFlowResult:
        """Adopt a plug-and-play phone (one-time provisioning) and show what happens next."""
        provisioned = False
        if phone.get("mac") and "plug_and_play" in phone.get("sources", ()):
            try:
                hub.pbx.adopt(phone["mac"], device["username"])
            except ValueError:
                provisioned = False  # a vendor whose files we do not write: set up by hand
            else:
                provisioned = True
        data = hub.entry.data
        self._added = {
            "name": device["label"],
            "username": device["username"],
            "password": device["password"],
            "domain": data[CONF_SIP_DOMAIN],
            "server": f"{hub.pbx.server_host_for(phone['host'])}:{hub.pbx.local_address.port}",
        }
        return await (
            self.async_step_provision() if provisioned else self.async_step_manual_settings()
        )

    async def async_step_provision(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Tell the user to reboot the phone; the manual settings are the fallback."""
        return self._phone_added_step("provision", user_input)

    async def async_step_manual_settings(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The phone cannot be provisioned: these are the settings to enter on it."""
        return self._phone_added_step("manual_settings", user_input)

    def _phone_added_step(
        self, step_id: str, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        added = self._added or {}
        if user_input is not None:
            return self.async_abort(
                reason="phone_added", description_placeholders={"name": added.get("name", "")}
            )
        return self.async_show_form(
            step_id=step_id, data_schema=vol.Schema({}), description_placeholders=added
        )

    def _loaded_hub(self) -> CallflipHub | None:
        """The running PBX of the one (not ignored) entry, if it is set up."""
        for entry in self._async_current_entries(include_ignore=False):
            if entry.state is ConfigEntryState.LOADED:
                hub: CallflipHub = entry.runtime_data.hub
                return hub
        return None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: Any) -> CallflipOptionsFlow:
        """Users and devices are edited in the options."""
        return CallflipOptionsFlow()


def _discovered_schema(users: list[UserOptions]) -> vol.Schema:
    return vol.Schema(
        {
            vol.Required(CONF_OWNER): SelectSelector(
                SelectSelectorConfig(
                    options=[
                        SelectOptionDict(
                            value=user["id"], label=f"{user['name']} ({user['extension']})"
                        )
                        for user in users
                    ],
                    mode=SelectSelectorMode.DROPDOWN,
                )
            ),
            vol.Required(CONF_LABEL): _TEXT,
            vol.Required(CONF_TYPE): SelectSelector(
                SelectSelectorConfig(
                    options=[kind.value for kind in DeviceKind],
                    translation_key="device_type",
                    mode=SelectSelectorMode.DROPDOWN,
                )
            ),
        }
    )


def _new_username(users: list[UserOptions], phone: Mapping[str, Any]) -> str:
    """The account of a discovered phone: the one it tried to register with, if free; else
    its model and the end of its MAC (or address), made unique."""
    taken = {owned.device["username"].casefold() for owned in iter_devices(users)}
    taken |= {user["extension"].casefold() for user in users}  # usernames and extensions differ
    tried = phone.get("username")
    if (
        tried
        and tried.casefold() not in taken
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", tried)
    ):
        return str(tried)
    model = re.sub(r"[^a-z0-9]+", "-", str(phone.get("model") or "phone").lower()).strip("-")
    tail = (phone.get("mac") or "")[-6:] or str(phone.get("host", "")).rsplit(".", 1)[-1]
    base = f"{model[:20] or 'phone'}-{tail}".strip("-")[:28]
    candidate, number = base, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{base}-{number}"
    return candidate


class CallflipOptionsFlow(FlipSettingsSteps, TrunkOptionsFlow):
    """Add, edit and remove users and their SIP devices; applied to the running PBX. The trunk
    steps are in trunk_flow.py, a user's flip settings in flip_settings.py."""

    def __init__(self) -> None:
        self._users: list[UserOptions] = []
        self._user_id: str | None = None
        self._device_id: str | None = None
        self._groups: list[GroupOptions] = []
        self._group_id: str | None = None

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Offer what can be done with the users and devices there are."""
        self._users = users_from_options(self.config_entry.options)
        self._groups = groups_from_options(self.config_entry.options)
        menu = ["add_user"]
        if self._users:
            menu += ["edit_user", "remove_user", "add_device", "flip_settings"]
        if any(True for _ in iter_devices(self._users)):
            menu += ["edit_device", "remove_device"]
        if any(True for _ in iter_devices(self._users)):
            menu.append("add_group")
        if self._groups:
            menu += ["edit_group", "remove_group"]
        menu.append("security")
        menu.append("transfer")
        menu.append("trunks")
        return self.async_show_menu(step_id="init", menu_options=menu)

    async def async_step_security(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Bans for failed logins, and whether the PBX answers beyond the home network."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        if user_input is not None:
            try:
                section = security_from_input(user_input)
            except ConfigError as err:
                key = str(err.key_path[1]) if len(err.key_path) > 1 else "base"
                errors[key if key in user_input else "base"] = "invalid_security"
                placeholders["error"] = str(err)
            else:
                return self.async_create_entry(
                    data={**self.config_entry.options, CONF_SECURITY: section}
                )
        current = security_settings(security_mapping(self.config_entry.options))
        schema = security_schema(current)
        if user_input is not None:
            schema = self.add_suggested_values_to_schema(schema, user_input)
        return self.async_show_form(
            step_id="security",
            data_schema=schema,
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_transfer(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Keypad transfer codes and times (checked and applied by transfer_options.py)."""
        options = self.config_entry.options
        section = transfer_mapping(options)
        config = entry_config(self.config_entry.data, options)
        errors: dict[str, str] = {}
        placeholders = {"error": "", "clash": ""}
        if user_input is not None:
            section, errors, placeholders = transfer_from_input(user_input, config)
            if not errors:
                return self.async_create_entry(data={**options, CONF_TRANSFER: section})
        try:
            current = with_transfer(config, options).transfer
        except ConfigError:
            current = config.transfer
        schema = transfer_schema(section, current)
        if user_input is not None:
            schema = self.add_suggested_values_to_schema(schema, user_input)
        return self.async_show_form(
            step_id="transfer",
            data_schema=schema,
            errors=errors,
            description_placeholders=placeholders,
        )

    # -- users -----------------------------------------------------------------------------------

    async def async_step_add_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add a person with an extension."""
        self._user_id = None
        return await self.async_step_user(user_input)

    async def async_step_edit_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the user to edit."""
        if user_input is not None:
            self._user_id = user_input[CONF_USER]
            return await self.async_step_user()
        return self.async_show_form(
            step_id="edit_user",
            data_schema=vol.Schema({vol.Required(CONF_USER): self._users_select()}),
        )

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The user's name and extension (a new user when none was chosen)."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        current = find_user(self._users, self._user_id) if self._user_id else None
        if user_input is not None:
            name = user_input[CONF_NAME].strip()
            extension = user_input[CONF_EXTENSION].strip()
            flip = user_input.get(CONF_FLIP_PERMISSION, FlipPermission.USER.value)
            errors = validate_user(self._users, name, extension, user_id=self._user_id)
            if not errors:
                if current is None:
                    self._users.append(
                        UserOptions(
                            id=new_id(), name=name, extension=extension, devices=[], flip=flip
                        )
                    )
                else:
                    current["name"] = name
                    current["extension"] = extension
                    current["flip"] = flip
                errors, placeholders = self._check_config()
                if not errors:
                    return self._save()
        suggested: Mapping[str, Any] = user_input or current or {}
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_NAME): _TEXT,
                        vol.Required(CONF_EXTENSION): _TEXT,
                        vol.Required(
                            CONF_FLIP_PERMISSION, default=FlipPermission.USER.value
                        ): SelectSelector(
                            SelectSelectorConfig(
                                options=[permission.value for permission in FlipPermission],
                                translation_key="flip_permission",
                                mode=SelectSelectorMode.DROPDOWN,
                            )
                        ),
                    }
                ),
                suggested,
            ),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_remove_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Remove a user together with their devices."""
        if user_input is not None:
            self._users = [user for user in self._users if user["id"] != user_input[CONF_USER]]
            return self._save()
        return self.async_show_form(
            step_id="remove_user",
            data_schema=vol.Schema({vol.Required(CONF_USER): self._users_select()}),
        )

    # -- devices ---------------------------------------------------------------------------------

    async def async_step_add_device(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add a SIP device to a user."""
        self._device_id = None
        return await self.async_step_device(user_input)

    async def async_step_edit_device(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the device to edit."""
        if user_input is not None:
            self._device_id = user_input[CONF_DEVICE]
            return await self.async_step_device()
        return self.async_show_form(
            step_id="edit_device",
            data_schema=vol.Schema({vol.Required(CONF_DEVICE): self._devices_select()}),
        )

    async def async_step_device(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """A device's account, label, type and priority (a new device when none was chosen)."""
        errors: dict[str, str] = {}
        placeholders = {"error": ""}
        current = find_device(self._users, self._device_id) if self._device_id else None
        if user_input is not None:
            username = user_input[CONF_USERNAME].strip()
            # The label is optional: left empty, the device is called by its username.
            label = str(user_input.get(CONF_LABEL) or "").strip() or username
            typed_password = user_input.get(CONF_PASSWORD) or None
            generated = typed_password is None and current is None
            password = generate_password() if generated else typed_password
            errors = validate_device(
                self._users,
                username=username,
                password=typed_password,
                label=label,
                priority=user_input[CONF_PRIORITY],
                device_id=self._device_id,
            )
            owner = find_user(self._users, user_input[CONF_OWNER])
            assert owner is not None  # the selector only accepts users that exist
            if not errors:
                device = DeviceOptions(
                    id=current.device["id"] if current else new_id(),
                    username=username,
                    password=password or (current.device["password"] if current else ""),
                    label=label,
                    type=user_input[CONF_TYPE],
                    priority=int(user_input[CONF_PRIORITY]),
                )
                flip_number = str(user_input.get(CONF_FLIP_NUMBER) or "").strip()
                if flip_number:  # checked by sip_core with the rest (2 to 8 digits, unique)
                    device["flip_number"] = flip_number
                if current is None:
                    owner["devices"].append(device)
                elif current.user is owner:
                    devices = owner["devices"]
                    devices[devices.index(current.device)] = device
                else:
                    current.user["devices"].remove(current.device)
                    owner["devices"].append(device)
                errors, placeholders = self._check_config()
                if not errors:
                    if generated:
                        self._device_id = device["id"]
                        return await self.async_step_credentials()
                    return self._save()
        suggested: dict[str, Any] = {
            CONF_TYPE: DeviceKind.SOFTPHONE,
            CONF_PRIORITY: DEFAULT_PRIORITY,
        }
        if current is not None:
            suggested = {**current.device, CONF_OWNER: current.user["id"]}
            del suggested[CONF_PASSWORD]
        if user_input is not None:
            suggested = {**user_input}
            suggested.pop(CONF_PASSWORD, None)
        return self.async_show_form(
            step_id="device",
            data_schema=self.add_suggested_values_to_schema(self._device_schema(), suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_credentials(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the generated password once; it is not shown anywhere again."""
        if user_input is not None:
            return self._save()
        owned = find_device(self._users, self._device_id or "")
        assert owned is not None
        data = self.config_entry.data
        return self.async_show_form(
            step_id="credentials",
            data_schema=vol.Schema({}),
            description_placeholders={
                "username": owned.device["username"],
                "password": owned.device["password"],
                "domain": data[CONF_SIP_DOMAIN],
                "server": f"{data[CONF_LISTEN]}:{data[CONF_SIP_PORT]}",
            },
        )

    async def async_step_remove_device(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Remove one SIP device."""
        if user_input is not None:
            for user in self._users:
                user["devices"] = [
                    device for device in user["devices"] if device["id"] != user_input[CONF_DEVICE]
                ]
            return self._save()
        return self.async_show_form(
            step_id="remove_device",
            data_schema=vol.Schema({vol.Required(CONF_DEVICE): self._devices_select()}),
        )

    # -- Personal Ring Groups ----------------------------------------------------------------------

    async def async_step_add_group(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Add a Personal Ring Group."""
        self._group_id = None
        return await self.async_step_group(user_input)

    async def async_step_edit_group(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose the group to edit."""
        if user_input is not None:
            self._group_id = user_input[CONF_GROUP]
            return await self.async_step_group()
        return self.async_show_form(
            step_id="edit_group",
            data_schema=vol.Schema({vol.Required(CONF_GROUP): self._groups_select()}),
        )

    async def async_step_group(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """A group's name, pilot number, members in order, ring timer and no-answer target."""
        errors: dict[str, str] = {}
        placeholders = {"error": "", "clash": ""}
        current = find_group(self._groups, self._group_id) if self._group_id else None
        if user_input is not None:
            group = GroupOptions(
                id=current["id"] if current is not None else new_id(),
                name=str(user_input[CONF_NAME]).strip(),
                pilot=str(user_input[CONF_PILOT]).strip(),
                members=list(user_input.get(CONF_MEMBERS) or []),
                ring_timer=int(user_input[CONF_RING_TIMER]),
                no_answer=str(user_input.get(CONF_NO_ANSWER) or "none"),
            )
            groups = [g for g in self._groups if g["id"] != group["id"]]
            if current is not None:
                groups.insert(self._groups.index(current), group)
            else:
                groups.append(group)
            try:
                config = pbx_config(
                    self.config_entry.data, self._users, groups_mapping(groups, self._users)
                )
                # the pilot against every feature code, the transfer codes set here included
                with_transfer(config, self.config_entry.options, prefer="groups")
            except ConfigError as err:
                placeholders = {**clash_placeholders(err), "error": str(err)}
                if isinstance(err, CodeConflict) and err.key_path[-1:] == ("pilot",):
                    errors[CONF_PILOT] = "code_conflict"
                else:
                    errors["base"] = "invalid_group"
            else:
                self._groups = groups
                return self._save()
        suggested: Mapping[str, Any] = user_input or current or {CONF_RING_TIMER: 20}
        return self.async_show_form(
            step_id="group",
            data_schema=self.add_suggested_values_to_schema(self._group_schema(), suggested),
            errors=errors,
            description_placeholders=placeholders,
        )

    async def async_step_remove_group(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Remove a Personal Ring Group (its members keep their phones)."""
        if user_input is not None:
            gone = user_input[CONF_GROUP]
            self._groups = [g for g in self._groups if g["id"] != gone]
            for group in self._groups:
                if group["no_answer"] == f"group:{gone}":
                    group["no_answer"] = "none"
            return self._save()
        return self.async_show_form(
            step_id="remove_group",
            data_schema=vol.Schema({vol.Required(CONF_GROUP): self._groups_select()}),
        )

    def _groups_select(self) -> SelectSelector:
        return SelectSelector(
            SelectSelectorConfig(
                options=[
                    SelectOptionDict(value=group["id"], label=f"{group['name']} ({group['pilot']})")
                    for group in self._groups
                ],
                mode=SelectSelectorMode.DROPDOWN,
            )
        )

    def _group_schema(self) -> vol.Schema:
        devices = [
            SelectOptionDict(
                value=owned.device["id"],
                label=f"{owned.device['label']} ({owned.device['username']})",
            )
            for owned in iter_devices(self._users)
        ]
        targets = [SelectOptionDict(value="none", label="-")]
        targets += [
            SelectOptionDict(value=f"user:{user['id']}", label=user["name"]) for user in self._users
        ]
        targets += [
            SelectOptionDict(value=f"device:{option['value']}", label=option["label"])
            for option in devices
        ]
        targets += [
            SelectOptionDict(value=f"group:{group['id']}", label=group["name"])
            for group in self._groups
            if group["id"] != self._group_id
        ]
        return vol.Schema(
            {
                vol.Required(CONF_NAME): _TEXT,
                vol.Required(CONF_PILOT): _TEXT,
                vol.Required(CONF_MEMBERS): SelectSelector(
                    SelectSelectorConfig(
                        options=devices, multiple=True, mode=SelectSelectorMode.LIST
                    )
                ),
                vol.Required(CONF_RING_TIMER): _PORT,
                vol.Required(CONF_NO_ANSWER, default="none"): SelectSelector(
                    SelectSelectorConfig(options=targets, mode=SelectSelectorMode.DROPDOWN)
                ),
            }
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _check_config(self) -> tuple[dict[str, str], dict[str, str]]:
        """Let sip_core check the whole result; undo the pending change if it refuses it."""
        options = self.config_entry.options
        try:
            config = build_config(
                self.config_entry.data,
                self._users,
                trunks_of(options),
                dialplan_of(options),
                options_groups(options, self._users),
            )
            with_transfer(config, options)  # a transfer code may not be a new extension
        except ConfigError as err:
            self._users = users_from_options(self.config_entry.options)
            return {"base": "invalid_config"}, {"error": str(err)}
        return {}, {"error": ""}

    def _save(self) -> ConfigFlowResult:
        """Store the users (and the groups, without the members and targets that are gone)."""
        data: dict[str, Any] = {**self.config_entry.options, CONF_USERS: self._users}
        if self._groups or CONF_GROUPS in self.config_entry.options:
            data[CONF_GROUPS] = prune_groups(self._groups, self._users)
        return self.async_create_entry(data=data)

    def _users_select(self) -> SelectSelector:
        return SelectSelector(
            SelectSelectorConfig(
                options=[
                    SelectOptionDict(
                        value=user["id"], label=f"{user['name']} ({user['extension']})"
                    )
                    for user in self._users
                ],
                mode=SelectSelectorMode.DROPDOWN,
            )
        )

    def _devices_select(self) -> SelectSelector:
        return SelectSelector(
            SelectSelectorConfig(
                options=[
                    SelectOptionDict(
                        value=owned.device["id"],
                        label=f"{owned.device['label']} ({owned.device['username']}, "
                        f"{owned.user['name']})",
                    )
                    for owned in iter_devices(self._users)
                ],
                mode=SelectSelectorMode.DROPDOWN,
            )
        )

    def _device_schema(self) -> vol.Schema:
        return vol.Schema(
            {
                vol.Required(CONF_OWNER): self._users_select(),
                vol.Required(CONF_USERNAME): _TEXT,
                vol.Optional(CONF_PASSWORD): TextSelector(
                    TextSelectorConfig(type=TextSelectorType.PASSWORD)
                ),
                vol.Optional(CONF_LABEL): _TEXT,
                vol.Required(CONF_TYPE): SelectSelector(
                    SelectSelectorConfig(
                        options=[kind.value for kind in DeviceKind],
                        translation_key="device_type",
                        mode=SelectSelectorMode.DROPDOWN,
                    )
                ),
                vol.Required(CONF_PRIORITY): _PORT,
                vol.Optional(CONF_FLIP_NUMBER): _TEXT,
            }
        )
