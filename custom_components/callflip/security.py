"""What Home Assistant shows and does about the PBX's guard (`sip_core.guard`).

- A repair issue per banned source address, naming the address and the username it tried, gone
  when the ban ends; the ``callflip.unban`` action lifts a ban early.
- A repair issue while the PBX is open to addresses beyond the home network (``allow_public``).
- The security options (the ``security`` key of the entry's options, in the runner's schema) are
  checked by sip_core's own loader and applied to the running PBX without a restart.

The sensor of current bans lives in ``sensor.py`` and follows `SecurityMonitor`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
)
from homeassistant.util import dt as dt_util

from sip_core.config import PbxConfig, SecuritySettings, security_settings
from sip_core.events import AddressBanned, BanEnded, PbxEvent
from sip_core.guard import Ban, normalise_address
from sip_core.pbx import Pbx

from .const import DOMAIN

_LOGGER = logging.getLogger(__name__)

CONF_SECURITY = "security"
CONF_MAX_FAILURES = "max_failures"
CONF_FAILURE_WINDOW = "failure_window"
CONF_BAN_TIME = "ban_time"
CONF_NEVER_BAN = "never_ban"
CONF_ALLOW_PUBLIC = "allow_public"
ATTR_ADDRESS = "address"
SERVICE_UNBAN = "unban"
ISSUE_OPEN_TO_INTERNET = "open_to_internet"
UNBAN_SCHEMA = vol.Schema({vol.Required(ATTR_ADDRESS): cv.string})


BAN_ISSUE_PREFIX = "banned_"


def ban_issue_id(address: str) -> str:
    return f"{BAN_ISSUE_PREFIX}{address}"


def security_mapping(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``security`` section kept in the entry's options (empty: the defaults)."""
    return dict(options.get(CONF_SECURITY) or {})


def with_security(config: PbxConfig, options: Mapping[str, Any]) -> PbxConfig:
    """``config`` with the security settings of the options (raises ConfigError if bad)."""
    return replace(config, security=security_settings(security_mapping(options)))


# -- the options form ------------------------------------------------------------------------------


def _number(lowest: int, highest: int, unit: str | None = None) -> NumberSelector:
    config = NumberSelectorConfig(min=lowest, max=highest, step=1, mode=NumberSelectorMode.BOX)
    if unit is not None:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


def security_schema(current: SecuritySettings) -> vol.Schema:
    """The options form, filled in with the settings in force."""
    return vol.Schema(
        {
            vol.Required(CONF_MAX_FAILURES, default=current.max_failures): _number(1, 1000),
            vol.Required(CONF_FAILURE_WINDOW, default=current.failure_window): _number(
                1, 86400, "s"
            ),
            vol.Required(CONF_BAN_TIME, default=current.ban_time): _number(1, 30 * 86400, "s"),
            vol.Optional(CONF_NEVER_BAN, default=", ".join(current.never_ban)): TextSelector(),
            vol.Required(CONF_ALLOW_PUBLIC, default=current.allow_public): BooleanSelector(),
        }
    )


def security_from_input(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The form's answers as the ``security`` section; ConfigError (naming the key) if bad."""
    networks = [
        part.strip()
        for part in str(user_input.get(CONF_NEVER_BAN) or "").replace(";", ",").split(",")
        if part.strip()
    ]
    section = {
        CONF_MAX_FAILURES: user_input[CONF_MAX_FAILURES],
        CONF_FAILURE_WINDOW: user_input[CONF_FAILURE_WINDOW],
        CONF_BAN_TIME: user_input[CONF_BAN_TIME],
        CONF_NEVER_BAN: networks,
        CONF_ALLOW_PUBLIC: bool(user_input[CONF_ALLOW_PUBLIC]),
    }
    settings = security_settings(section)  # the runner's own checks
    return {
        CONF_MAX_FAILURES: settings.max_failures,
        CONF_FAILURE_WINDOW: settings.failure_window,
        CONF_BAN_TIME: settings.ban_time,
        CONF_NEVER_BAN: list(settings.never_ban),
        CONF_ALLOW_PUBLIC: settings.allow_public,
    }


# -- bans and the open-scope warning -------------------------------------------------------------


class SecurityMonitor:
    """Follows one PBX's bans for the repair issues and the bans sensor."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any], pbx: Pbx) -> None:
        self.hass = hass
        self.entry = entry
        self.pbx = pbx
        self._listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    @callback
    def async_start(self) -> None:
        self._unsubscribe = self.pbx.subscribe(self._handle_event)
        self._sync_open_issue()
        for ban in self.pbx.bans():
            self._create_ban_issue(ban.address, ban.username, ban.failures, ban.until)

    @callback
    def async_stop(self) -> None:
        """Forget the issues: the bans end with the PBX that holds them."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for ban in self.pbx.bans():
            ir.async_delete_issue(self.hass, DOMAIN, ban_issue_id(ban.address))
        ir.async_delete_issue(self.hass, DOMAIN, ISSUE_OPEN_TO_INTERNET)

    @callback
    def async_apply_options(self, options: Mapping[str, Any]) -> None:
        """Apply the security options to the running PBX."""
        settings = security_settings(security_mapping(options))
        if settings != self.pbx.config.security:
            self.pbx.update_security(settings)
            _LOGGER.info("Security settings changed: %s", settings)
        self._sync_open_issue()

    def bans(self) -> list[Ban]:
        return self.pbx.bans()

    @callback
    def async_add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            self._listeners.remove(listener)

        return remove

    @callback
    def _handle_event(self, event: PbxEvent) -> None:
        if isinstance(event, AddressBanned):
            self._create_ban_issue(event.address, event.username, event.failures, event.until)
        elif isinstance(event, BanEnded):
            ir.async_delete_issue(self.hass, DOMAIN, ban_issue_id(event.address))
        else:
            return
        for listener in list(self._listeners):
            listener()

    def _create_ban_issue(
        self, address: str, username: str | None, failures: int, until: float
    ) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            ban_issue_id(address),
            is_fixable=True,  # repairs.py: the fix lifts the ban
            is_persistent=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key="address_banned",
            translation_placeholders={
                "address": address,
                "username": username or "-",
                "failures": str(failures),
                "until": dt_util.as_local(dt_util.utc_from_timestamp(until)).strftime(
                    "%Y-%m-%d %H:%M"
                ),
            },
        )

    def _sync_open_issue(self) -> None:
        if self.pbx.config.security.allow_public:
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                ISSUE_OPEN_TO_INTERNET,
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key=ISSUE_OPEN_TO_INTERNET,
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, ISSUE_OPEN_TO_INTERNET)


# -- the action ----------------------------------------------------------------------------------


def _monitor(hass: HomeAssistant) -> SecurityMonitor:
    for entry in hass.config_entries.async_entries(DOMAIN):
        if entry.state is ConfigEntryState.LOADED:
            monitor: SecurityMonitor = entry.runtime_data.security
            return monitor
    raise ServiceValidationError(translation_domain=DOMAIN, translation_key="not_loaded")


def unban_address(hass: HomeAssistant, text: str, *, missing_ok: bool = False) -> None:
    """Lift the ban on ``text``; translated ServiceValidationError when it cannot be done."""
    monitor = _monitor(hass)
    try:
        address = normalise_address(text)
    except ValueError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_address",
            translation_placeholders={"address": text},
        ) from err
    if not monitor.pbx.unban(address) and not missing_ok:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="not_banned",
            translation_placeholders={"address": address},
        )


async def _async_unban(call: ServiceCall) -> None:
    unban_address(call.hass, call.data[ATTR_ADDRESS])


@callback
def async_setup_security_services(hass: HomeAssistant) -> None:
    """Register ``callflip.unban`` (from async_setup, with the other actions)."""
    hass.services.async_register(DOMAIN, SERVICE_UNBAN, _async_unban, schema=UNBAN_SCHEMA)
