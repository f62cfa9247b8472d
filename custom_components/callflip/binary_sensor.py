"""Connectivity of SIP devices (registered) and of users (reachable on any device)."""

from __future__ import annotations

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, CallflipUserEntity

PARALLEL_UPDATES = 0

REGISTERED = BinarySensorEntityDescription(
    key="registered",
    translation_key="registered",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
)
REACHABLE = BinarySensorEntityDescription(
    key="reachable",
    translation_key="reachable",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor per device and per user, now and whenever the options add some."""
    hub = entry.runtime_data.hub
    known: set[str] = set()

    @callback
    def add_new() -> None:
        entities: list[BinarySensorEntity] = []
        for user in hub.users:
            if user["id"] not in known:
                known.add(user["id"])
                entities.append(UserReachableSensor(hub, REACHABLE, user["id"]))
            for device in user["devices"]:
                if device["id"] not in known:
                    known.add(device["id"])
                    entities.append(DeviceRegisteredSensor(hub, REGISTERED, device["id"]))
        if entities:
            async_add_entities(entities)

    add_new()
    entry.async_on_unload(hub.async_add_topology_listener(add_new))


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
