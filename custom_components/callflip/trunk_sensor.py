"""The state sensor of each SIP trunk: registered, failing (with the reason) or not registering.

One sensor per trunk on the PBX's device, added and removed as trunks are added and removed in
the options; pushed by `TrunkMonitor` on every `TrunkStateChanged`.
"""

from __future__ import annotations

from homeassistant.components.sensor import SensorEntity, SensorEntityDescription
from homeassistant.core import callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .data import CallflipConfigEntry
from .entity import CallflipHubEntity
from .hub import CallflipHub
from .trunks import TrunkMonitor, sensor_state


def trunk_unique_id(entry_id: str, trunk_id: str) -> str:
    return f"{entry_id}-trunk-{trunk_id}"


@callback
def async_add_trunk_sensors(
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    description: SensorEntityDescription,
) -> None:
    """Add a sensor for every trunk now and as trunks are added; remove those of removed ones."""
    hub = entry.runtime_data.hub
    monitor = entry.runtime_data.trunks
    if monitor is None:
        return
    known: set[str] = set()

    @callback
    def sync() -> None:
        assert monitor is not None
        wanted = {trunk["id"] for trunk in monitor.trunks}
        new = [
            TrunkStateSensor(hub, monitor, description, trunk_id)
            for trunk_id in sorted(wanted - known)
        ]
        registry = er.async_get(hub.hass)
        for gone in known - wanted:
            entity_id = registry.async_get_entity_id(
                "sensor", "callflip", trunk_unique_id(entry.entry_id, gone)
            )
            if entity_id is not None:
                registry.async_remove(entity_id)
        known.intersection_update(wanted)
        known.update(wanted)
        if new:
            async_add_entities(new)

    sync()
    entry.async_on_unload(monitor.async_add_listener(sync))


class TrunkStateSensor(CallflipHubEntity, SensorEntity):
    """Where a trunk's registration with its provider stands; why it fails, when it does."""

    def __init__(
        self,
        hub: CallflipHub,
        monitor: TrunkMonitor,
        description: SensorEntityDescription,
        trunk_id: str,
    ) -> None:
        super().__init__(hub, description)
        self.monitor = monitor
        self.trunk_id = trunk_id
        self._attr_unique_id = trunk_unique_id(hub.entry.entry_id, trunk_id)
        self._attr_translation_placeholders = {"trunk": self._trunk_name() or trunk_id}

    def _trunk_name(self) -> str | None:
        return next((t["name"] for t in self.monitor.trunks if t["id"] == self.trunk_id), None)

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self.monitor.async_add_listener(self._handle_update))

    def _refresh(self) -> None:
        name = self._trunk_name()
        self._attr_available = name is not None
        state = self.monitor.state(self.trunk_id)
        self._attr_native_value = sensor_state(state).value
        attributes: dict[str, object] = {"trunk": name}
        if state is not None:
            attributes |= {
                "reason": state.failure.value if state.failure is not None else None,
                "detail": state.detail or None,
                "failures": state.failures,
                "authentication_failures": state.auth_failures,
            }
        self._attr_extra_state_attributes = attributes
