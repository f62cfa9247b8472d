"""Base classes of callflip's entities: one for a SIP device, one for a user, one for the PBX."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .data import CallflipConfigEntry
from .hub import HUB_KEY, CallflipHub, device_identifier, hub_identifier, user_identifier
from .users import OwnedDevice, UserOptions, find_user


def async_add_per_user_and_device(
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    *,
    per_user: Callable[[CallflipHub, str], Iterable[Entity]] | None = None,
    per_device: Callable[[CallflipHub, str, str], Iterable[Entity]] | None = None,
) -> None:
    """Add a platform's entities for every user and device now, and for those the options add
    later (users and devices come and go without a reload). ``per_device`` gets the owning
    user's id and the device's id."""
    hub = entry.runtime_data.hub
    known: set[str] = set()

    @callback
    def add_new() -> None:
        entities: list[Entity] = []
        for user in hub.users:
            user_id = user["id"]
            if per_user is not None and user_id not in known:
                known.add(user_id)
                entities.extend(per_user(hub, user_id))
            for device in user["devices"]:
                if per_device is not None and device["id"] not in known:
                    known.add(device["id"])
                    entities.extend(per_device(hub, user_id, device["id"]))
        if entities:
            async_add_entities(entities)

    add_new()
    entry.async_on_unload(hub.async_add_topology_listener(add_new))


class CallflipEntity(Entity):
    """An entity pushed by the PBX: it never polls and refreshes when its key is notified."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _listen_key: str

    def __init__(self, hub: CallflipHub, description: EntityDescription) -> None:
        self.hub = hub
        self.entity_description = description

    async def async_added_to_hass(self) -> None:
        """Follow the PBX from now on."""
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.async_add_listener(self._listen_key, self._handle_update))
        self._refresh()

    def _handle_update(self) -> None:
        self._refresh()
        self.async_write_ha_state()

    def _refresh(self) -> None:
        """Recompute the entity's attributes from the hub."""
        raise NotImplementedError


class CallflipDeviceEntity(CallflipEntity):
    """An entity of one SIP device (a phone or an app)."""

    def __init__(self, hub: CallflipHub, description: EntityDescription, device_id: str) -> None:
        super().__init__(hub, description)
        self.device_id = device_id
        self._listen_key = device_id
        self._attr_unique_id = f"{device_id}-{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={device_identifier(device_id)})

    @property
    def owned(self) -> OwnedDevice | None:
        """The device's configuration, None once it was removed."""
        return self.hub.device(self.device_id)


class CallflipUserEntity(CallflipEntity):
    """An entity of one user, across all of their devices."""

    def __init__(self, hub: CallflipHub, description: EntityDescription, user_id: str) -> None:
        super().__init__(hub, description)
        self.user_id = user_id
        self._listen_key = user_id
        self._attr_unique_id = f"{user_id}-{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={user_identifier(user_id)})

    @property
    def user(self) -> UserOptions | None:
        """The user's configuration, None once they were removed."""
        return find_user(self.hub.users, self.user_id)


class CallflipHubEntity(CallflipEntity):
    """An entity of the PBX as a whole."""

    _listen_key = HUB_KEY

    def __init__(self, hub: CallflipHub, description: EntityDescription) -> None:
        super().__init__(hub, description)
        entry_id = hub.entry.entry_id
        self._attr_unique_id = f"{entry_id}-{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={hub_identifier(entry_id)})
