"""A person's flip settings in the options flow: timeout, auto-hangup, announcement, ring all,
and the text-to-speech engine that speaks their devices' labels in the flip menu.

They are stored with the user in the entry's options (``users[].flip_options``, the runner's
schema, `sip_core.config.UserFlipOptions`) and checked by sip_core like every other change; the
TTS engine and language are Home Assistant's alone (``users[].label_speech``, see
`label_speech`), checked here against the engines Home Assistant has. Kept in their own step
(*Flip settings*) so that the user form stays about who the person is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

import voluptuous as vol
from homeassistant.config_entries import ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.helpers.selector import (
    BooleanSelector,
    EntitySelector,
    EntitySelectorConfig,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    TextSelector,
)

from .label_speech import CONF_ENGINE, CONF_LABEL_SPEECH, CONF_LANGUAGE
from .users import UserOptions, find_user

CONF_FLIP_TIMEOUT: Final = "timeout"
CONF_AUTO_HANGUP: Final = "auto_hangup"
CONF_ANNOUNCEMENT: Final = "announcement"
CONF_SIMULTANEOUS_RING: Final = "simultaneous_ring"
CONF_FLIP_USER: Final = "user"
CONF_FLIP_NUMBER: Final = "flip_number"  # a device's, in the device form
CONF_LABEL_TTS: Final = "label_tts"
CONF_LABEL_LANGUAGE: Final = "label_language"
MIN_TIMEOUT, MAX_TIMEOUT = 5, 300

#: The defaults (sip_core.config.UserFlipOptions): a timeout of None is the PBX's flip timeout.
DEFAULTS: Final[dict[str, Any]] = {
    CONF_AUTO_HANGUP: True,
    CONF_ANNOUNCEMENT: False,
    CONF_SIMULTANEOUS_RING: False,
}


def flip_options_of(user: Mapping[str, Any]) -> dict[str, Any]:
    """The user's stored flip settings with every default filled in (timeout may be absent)."""
    stored = user.get("flip_options") or {}
    return {**DEFAULTS, **stored}


def settings_schema() -> vol.Schema:
    return vol.Schema(
        {
            vol.Optional(CONF_FLIP_TIMEOUT): NumberSelector(
                NumberSelectorConfig(
                    min=MIN_TIMEOUT,
                    max=MAX_TIMEOUT,
                    step=1,
                    mode=NumberSelectorMode.BOX,
                    unit_of_measurement="s",
                )
            ),
            vol.Required(CONF_AUTO_HANGUP): BooleanSelector(),
            vol.Required(CONF_ANNOUNCEMENT): BooleanSelector(),
            vol.Required(CONF_SIMULTANEOUS_RING): BooleanSelector(),
            vol.Optional(CONF_LABEL_TTS): EntitySelector(EntitySelectorConfig(domain="tts")),
            vol.Optional(CONF_LABEL_LANGUAGE): TextSelector(),
        }
    )


def label_speech_from_input(
    hass: HomeAssistant, user_input: Mapping[str, Any]
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """The ``label_speech`` to store (None: no engine, the bundled prompts), or field errors:
    the engine must be one Home Assistant has, and speak the language when one is given."""
    engine = str(user_input.get(CONF_LABEL_TTS) or "").strip()
    language = str(user_input.get(CONF_LABEL_LANGUAGE) or "").strip()
    if not engine:
        if language:
            return None, {CONF_LABEL_TTS: "label_tts_needed"}
        return None, {}
    instance = None
    if "tts" in hass.config.components:
        from homeassistant.components.tts.helper import get_engine_instance  # noqa: PLC0415

        instance = get_engine_instance(hass, engine)
    if instance is None:
        return None, {CONF_LABEL_TTS: "label_tts_not_found"}
    if language and language not in (instance.supported_languages or ()):
        return None, {CONF_LABEL_LANGUAGE: "label_language_unsupported"}
    speech = {CONF_ENGINE: engine}
    if language:
        speech[CONF_LANGUAGE] = language
    return speech, {}


def label_speech_suggested(user: UserOptions) -> dict[str, str]:
    """The stored engine and language as the form's fields."""
    stored = user.get(CONF_LABEL_SPEECH) or {}
    suggested: dict[str, str] = {}
    if stored.get(CONF_ENGINE):
        suggested[CONF_LABEL_TTS] = stored[CONF_ENGINE]
    if stored.get(CONF_LANGUAGE):
        suggested[CONF_LABEL_LANGUAGE] = stored[CONF_LANGUAGE]
    return suggested


def settings_from_input(user_input: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``flip_options`` to store, or field errors."""
    options: dict[str, Any] = {
        key: bool(user_input.get(key, default)) for key, default in DEFAULTS.items()
    }
    timeout = user_input.get(CONF_FLIP_TIMEOUT)
    if timeout is not None:
        if not float(timeout).is_integer() or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            return {}, {CONF_FLIP_TIMEOUT: "invalid_flip_timeout"}
        options[CONF_FLIP_TIMEOUT] = int(timeout)
    return options, {}


class _OptionsFlowLike(Protocol):
    """What the mixin needs from the options flow it is mixed into."""

    hass: HomeAssistant
    _users: list[UserOptions]
    _user_id: str | None

    def _users_select(self) -> SelectSelector: ...

    def _check_config(self) -> tuple[dict[str, str], dict[str, str]]: ...

    def _save(self) -> ConfigFlowResult: ...

    def add_suggested_values_to_schema(
        self, data_schema: vol.Schema, suggested_values: Mapping[str, Any] | None
    ) -> vol.Schema: ...

    def async_show_form(self, **kwargs: Any) -> ConfigFlowResult: ...

    async def async_step_user_flip(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult: ...


class FlipSettingsSteps:
    """The options flow's *Flip settings* steps: choose a person, then their settings."""

    async def async_step_flip_settings(
        self: _OptionsFlowLike, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Choose whose flip settings to change."""
        if user_input is not None:
            self._user_id = user_input[CONF_FLIP_USER]
            return await self.async_step_user_flip()
        return self.async_show_form(
            step_id="flip_settings",
            data_schema=vol.Schema({vol.Required(CONF_FLIP_USER): self._users_select()}),
        )

    async def async_step_user_flip(
        self: _OptionsFlowLike, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The person's flip timeout, auto-hangup, announcement tone, simultaneous ring, and the
        TTS engine (and language) that speaks their devices' labels in the menu."""
        user = find_user(self._users, self._user_id or "")
        assert user is not None  # chosen in the previous step
        errors: dict[str, str] = {}
        placeholders = {"name": user["name"], "error": ""}
        if user_input is not None:
            options, errors = settings_from_input(user_input)
            speech, speech_errors = label_speech_from_input(self.hass, user_input)
            errors |= speech_errors
            if not errors:
                user["flip_options"] = options
                if speech is None:
                    user.pop(CONF_LABEL_SPEECH, None)
                else:
                    user[CONF_LABEL_SPEECH] = speech
                errors, checked = self._check_config()
                placeholders["error"] = checked["error"]
                if not errors:
                    return self._save()
        suggested = (
            user_input
            if user_input is not None
            else {**flip_options_of(user), **label_speech_suggested(user)}
        )
        return self.async_show_form(
            step_id="user_flip",
            data_schema=self.add_suggested_values_to_schema(settings_schema(), suggested),
            errors=errors,
            description_placeholders=placeholders,
        )
