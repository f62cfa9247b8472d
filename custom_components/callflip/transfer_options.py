"""The keypad transfer settings in Home Assistant's options (the ``transfer`` key, in the
runner's schema), checked by sip_core's own loader and applied to the running PBX without a
restart.

The form shows the preset (``default``: ``*2`` blind, ``**`` attended; ``voipnow``: ``#1`` and
``*2``) and the codes that override it: a code left empty is the preset's (or ``*3`` / ``*4``
for the consultation's complete and cancel codes), so choosing another preset changes the codes
unless one was set by hand. A code clashing with another code or with an extension gets its own
field error, apart from a badly written one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import voluptuous as vol
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
)

from sip_core.config import (
    TRANSFER_PRESETS,
    CodeConflict,
    ConfigError,
    PbxConfig,
    TransferSettings,
    transfer_settings,
)
from sip_core.pbx import Pbx

_LOGGER = logging.getLogger(__name__)

CONF_TRANSFER = "transfer"
CONF_PRESET = "preset"
CONF_BLIND_CODE = "blind_code"
CONF_ATTENDED_CODE = "attended_code"
CONF_COMPLETE_CODE = "complete_code"
CONF_CANCEL_CODE = "cancel_code"
CONF_TIMEOUT = "timeout"
CONF_RECALL_TIMEOUT = "recall_timeout"
CODE_KEYS = (CONF_BLIND_CODE, CONF_ATTENDED_CODE, CONF_COMPLETE_CODE, CONF_CANCEL_CODE)
ERROR_CONFLICT = "code_conflict"
ERROR_INVALID = "invalid_transfer"
#: The form's field errors (translated under options.error).
TRANSFER_ERRORS = (ERROR_CONFLICT, ERROR_INVALID)


def transfer_mapping(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``transfer`` section kept in the entry's options (empty: the defaults)."""
    return dict(options.get(CONF_TRANSFER) or {})


def with_transfer(
    config: PbxConfig, options: Mapping[str, Any], *, prefer: str = "transfer"
) -> PbxConfig:
    """``config`` with the transfer settings of the options (raises ConfigError if bad; a code
    clash is blamed on what is in the section ``prefer`` names, when it is one of the two)."""
    settings = transfer_settings(transfer_mapping(options), config, prefer=prefer)
    return replace(config, transfer=settings)


def clash_placeholders(err: ConfigError) -> dict[str, str]:
    """The form's placeholders for a refusal: ``error`` the reason, ``clash`` the code (or the
    number) a clashing code clashes with, named in the ``code_conflict`` field error."""
    clash = err.clashes_with if isinstance(err, CodeConflict) else ""
    return {"error": err.reason, "clash": clash}


def apply_transfer(pbx: Pbx, options: Mapping[str, Any]) -> None:
    """Apply the transfer options to the running PBX (checked when they were saved)."""
    settings = transfer_settings(transfer_mapping(options), pbx.config)
    if settings != pbx.config.transfer:
        pbx.update_transfer(settings)
        _LOGGER.info("Transfer settings changed: %s", settings)


# -- the options form ------------------------------------------------------------------------------


def _seconds() -> NumberSelector:
    return NumberSelector(
        NumberSelectorConfig(
            min=1, max=3600, step=1, mode=NumberSelectorMode.BOX, unit_of_measurement="s"
        )
    )


def transfer_schema(section: Mapping[str, Any], current: TransferSettings) -> vol.Schema:
    """The options form: the preset and times in force, and the codes set by hand."""
    schema: dict[Any, Any] = {
        vol.Required(CONF_PRESET, default=current.preset): SelectSelector(
            SelectSelectorConfig(
                options=list(TRANSFER_PRESETS),
                translation_key="transfer_preset",
                mode=SelectSelectorMode.DROPDOWN,
            )
        ),
    }
    for key in CODE_KEYS:
        marker = vol.Optional(key, description={"suggested_value": section.get(key)})
        schema[marker] = TextSelector()
    schema[vol.Required(CONF_TIMEOUT, default=current.timeout)] = _seconds()
    schema[vol.Required(CONF_RECALL_TIMEOUT, default=current.recall_timeout)] = _seconds()
    return vol.Schema(schema)


def transfer_from_input(
    user_input: Mapping[str, Any], config: PbxConfig
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The form's answers as the ``transfer`` section, checked against ``config`` (every other
    feature code, its users and groups): (section, field errors, the placeholders naming the
    reason and the clashing code, `clash_placeholders`). Empty codes are left out."""
    section: dict[str, Any] = {CONF_PRESET: user_input.get(CONF_PRESET) or "default"}
    for key in CODE_KEYS:
        code = str(user_input.get(key) or "").strip()
        if code:
            section[key] = code
    for key in (CONF_TIMEOUT, CONF_RECALL_TIMEOUT):
        value = user_input.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        section[key] = value
    try:
        transfer_settings(section, config)  # the runner's own checks
    except ConfigError as err:
        field = str(err.key_path[-1]) if err.key_path else "base"
        if field not in user_input and field != CONF_PRESET:
            # a clash of a preset's code (not typed in): shown on the form as a whole
            field = "base"
        kind = ERROR_CONFLICT if isinstance(err, CodeConflict) else ERROR_INVALID
        return section, {field: kind}, clash_placeholders(err)
    return section, {}, {"error": "", "clash": ""}
