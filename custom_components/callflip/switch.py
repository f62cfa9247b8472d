"""Switches of the per-device and per-user runtime settings (`sip_core.presence`).

Per SIP device: Do Not Disturb (the device is not rung) and Make Busy (it looks busy). Per user:
Flip enabled (whether their ``*0`` and `callflip.flip` work). The PBX keeps these in its runtime
state, saved in the entry's Store (`runtime_state.py`), so they are back as they were after a
restart or a reload; a change applies to the running PBX at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from sip_core.config import FlipPermission
from sip_core.pbx import Pbx
from sip_core.presence import DeviceStates

from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, CallflipUserEntity, async_add_per_user_and_device
from .services import validation_error

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class DeviceSwitchDescription(SwitchEntityDescription):
    """A device setting: how to read it and how to set it on the PBX."""

    is_on: Callable[[DeviceStates], bool]
    set: Callable[[Pbx, str, bool], None]


DEVICE_SWITCHES = (
    DeviceSwitchDescription(
        key="dnd",
        translation_key="dnd",
        entity_category=EntityCategory.CONFIG,
        is_on=lambda states: states.dnd,
        set=lambda pbx, device, on: pbx.set_dnd(device, on),
    ),
    DeviceSwitchDescription(
        key="make_busy",
        translation_key="make_busy",
        entity_category=EntityCategory.CONFIG,
        is_on=lambda states: states.make_busy,
        set=lambda pbx, device, on: pbx.set_make_busy(device, on),
    ),
)
FLIP_ENABLED = SwitchEntityDescription(
    key="flip_enabled", translation_key="flip_enabled", entity_category=EntityCategory.CONFIG
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """DND and Make Busy per device, Flip enabled per user; more as the options add them."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_user=lambda hub, user_id: [FlipEnabledSwitch(hub, FLIP_ENABLED, user_id)],
        per_device=lambda hub, _user_id, device_id: [
            DeviceSettingSwitch(hub, description, device_id) for description in DEVICE_SWITCHES
        ],
    )


class DeviceSettingSwitch(CallflipDeviceEntity, SwitchEntity):
    """Do Not Disturb or Make Busy of one SIP device."""

    entity_description: DeviceSwitchDescription

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.pbx.presence.subscribe(self._handle_update))

    def _refresh(self) -> None:
        owned = self.owned
        self._attr_available = owned is not None
        if owned is not None:
            states = self.hub.pbx.presence.states(owned.device["username"])
            self._attr_is_on = self.entity_description.is_on(states)

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._set(True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._set(False)

    def _set(self, on: bool) -> None:
        owned = self.owned
        if owned is None:  # pragma: no cover - the entity is unavailable then
            raise validation_error("not_a_phone")
        self.entity_description.set(self.hub.pbx, owned.device["username"], on)


class FlipEnabledSwitch(CallflipUserEntity, SwitchEntity):
    """Whether a user may flip calls. Shows what is in force; when the administrator forces it
    (the user's options), the switch cannot change it and says so."""

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.pbx.presence.subscribe(self._handle_update))

    def _refresh(self) -> None:
        user = self.user
        self._attr_available = user is not None
        if user is not None:
            self._attr_is_on = self.hub.pbx.flip_enabled(user["name"])
            self._attr_extra_state_attributes = {"forced": self._forced(user["name"])}

    def _forced(self, name: str) -> bool:
        found = self.hub.pbx.config.user(name)
        return found is not None and found.flip is not FlipPermission.USER

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._set(True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._set(False)

    def _set(self, on: bool) -> None:
        user = self.user
        if user is None:  # pragma: no cover - the entity is unavailable then
            raise validation_error("not_a_phone")
        if self._forced(user["name"]):
            raise validation_error("flip_forced", name=user["name"])
        self.hub.pbx.set_user_flip(user["name"], on)
