"""Diagnostic sensors of a SIP device's contact, and the PBX's count of registered devices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from sip_core.registrar import Binding

from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, CallflipHubEntity

PARALLEL_UPDATES = 0

TRANSPORTS = ["udp", "tcp"]


@dataclass(frozen=True, kw_only=True)
class ContactSensorDescription(SensorEntityDescription):
    """A fact about a device's current contact, read from its most recent binding."""

    value_fn: Callable[[Binding], str | None]


CONTACT_SENSORS: tuple[ContactSensorDescription, ...] = (
    ContactSensorDescription(
        key="address",
        translation_key="address",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda binding: str(binding.source.remote),
    ),
    ContactSensorDescription(
        key="transport",
        translation_key="transport",
        entity_category=EntityCategory.DIAGNOSTIC,
        device_class=SensorDeviceClass.ENUM,
        options=TRANSPORTS,
        value_fn=lambda binding: binding.source.kind.value.lower(),
    ),
    ContactSensorDescription(
        key="user_agent",
        translation_key="user_agent",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda binding: binding.user_agent[:255] if binding.user_agent else None,
    ),
)

REGISTERED_DEVICES = SensorEntityDescription(
    key="registered_devices",
    translation_key="registered_devices",
    state_class=SensorStateClass.MEASUREMENT,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the PBX's sensor, and the contact sensors of every device as devices appear."""
    hub = entry.runtime_data.hub
    known: set[str] = set()
    async_add_entities([RegisteredDevicesSensor(hub, REGISTERED_DEVICES)])

    @callback
    def add_new() -> None:
        entities: list[SensorEntity] = []
        for user in hub.users:
            for device in user["devices"]:
                if device["id"] not in known:
                    known.add(device["id"])
                    entities.extend(
                        ContactSensor(hub, description, device["id"])
                        for description in CONTACT_SENSORS
                    )
        if entities:
            async_add_entities(entities)

    add_new()
    entry.async_on_unload(hub.async_add_topology_listener(add_new))


class ContactSensor(CallflipDeviceEntity, SensorEntity):
    """Where and how a device is registered; unknown while it is not."""

    entity_description: ContactSensorDescription

    def _refresh(self) -> None:
        self._attr_available = self.owned is not None
        bindings = self.hub.device_bindings(self.device_id)
        self._attr_native_value = (
            self.entity_description.value_fn(bindings[0]) if bindings else None
        )


class RegisteredDevicesSensor(CallflipHubEntity, SensorEntity):
    """How many of the configured devices are registered right now."""

    def _refresh(self) -> None:
        self._attr_native_value = self.hub.registered_device_count()
