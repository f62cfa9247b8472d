"""Whether a SIP device is registered and a user reachable on any device.

No device class: "connectivity" would show them as Connected/Disconnected, which is not what a
registration is; their own translated states say Registered/Not registered instead."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, CallflipUserEntity, async_add_per_user_and_device

PARALLEL_UPDATES = 0

REGISTERED = BinarySensorEntityDescription(
    key="registered",
    translation_key="registered",
)
REACHABLE = BinarySensorEntityDescription(
    key="reachable",
    translation_key="reachable",
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor per device and per user, now and whenever the options add some."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_user=lambda hub, user_id: [UserReachableSensor(hub, REACHABLE, user_id)],
        per_device=lambda hub, _user_id, device_id: [
            DeviceRegisteredSensor(hub, REGISTERED, device_id)
        ],
    )


class DeviceRegisteredSensor(CallflipDeviceEntity, BinarySensorEntity):
    """On while the device has at least one registered contact."""

    def _refresh(self) -> None:
        self._attr_available = self.owned is not None
        self._attr_is_on = bool(self.hub.device_bindings(self.device_id))


class UserReachableSensor(CallflipUserEntity, BinarySensorEntity):
    """On while any of the user's devices is registered, so a call to them can ring somewhere."""

    def _refresh(self) -> None:
        user = self.user
        self._attr_available = user is not None
        self._attr_is_on = user is not None and any(
            self.hub.device_bindings(device["id"]) for device in user["devices"]
        )
