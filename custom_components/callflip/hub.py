"""The running PBX as Home Assistant sees it: devices in the registry, listeners, persistence.

``CallflipHub`` owns the ``sip_core`` ``Pbx`` of one config entry. It turns PBX events into
entity updates, keeps the device registry in step with the users and devices in the options,
applies option changes to the running PBX (``Pbx.update_users``: no restart, calls in progress
stay up) and persists the registrar's bindings with Home Assistant's ``Store`` so that phones
need not register again after a restart or a reload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.storage import Store

from sip_core import __version__ as SIP_CORE_VERSION
from sip_core.events import PbxEvent, RegistrationChanged
from sip_core.pbx import Pbx
from sip_core.registrar import Binding

from .const import BINDINGS_STORAGE_VERSION, DEVICE_MODELS, DOMAIN, MANUFACTURER
from .users import OwnedDevice, UserOptions, find_device, iter_devices, pbx_config

_LOGGER = logging.getLogger(__name__)

SAVE_DELAY = 2.0
"""Seconds to gather binding changes into one write; Store writes pending data on shutdown too."""

HUB_KEY = "hub"
"""Listener key of the entities that describe the whole PBX."""

type StoredBindings = dict[str, list[dict[str, Any]]]


def bindings_store(hass: HomeAssistant, entry_id: str) -> Store[StoredBindings]:
    """Return the Store that keeps one entry's registrar bindings across restarts."""
    return Store(hass, BINDINGS_STORAGE_VERSION, f"{DOMAIN}.{entry_id}.bindings")


def hub_identifier(entry_id: str) -> tuple[str, str]:
    """Return the device registry identifier of the PBX itself."""
    return (DOMAIN, entry_id)


def user_identifier(user_id: str) -> tuple[str, str]:
    """Return the device registry identifier of a user."""
    return (DOMAIN, f"user-{user_id}")


def device_identifier(device_id: str) -> tuple[str, str]:
    """Return the device registry identifier of a SIP device."""
    return (DOMAIN, f"device-{device_id}")


class CallflipHub:
    """One running PBX and everything Home Assistant keeps about it."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry[Any],
        pbx: Pbx,
        store: Store[StoredBindings],
        users: list[UserOptions],
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.pbx = pbx
        self.users = users
        self._store = store
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._topology_listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False

    # -- life cycle ------------------------------------------------------------------------------

    @callback
    def async_start(self) -> None:
        """Start listening to the PBX and register the devices it serves."""
        self._unsubscribe = self.pbx.subscribe(self._handle_event)
        self._sync_device_registry()

    async def async_stop(self) -> None:
        """Persist the bindings, then stop the PBX and free its ports (safe to call twice)."""
        if self._stopped:
            return
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._store.async_save(self._stored_bindings())
        await self.pbx.stop()

    @callback
    def async_apply_options(self, options: Mapping[str, Any], users: list[UserOptions]) -> None:
        """Apply changed users and devices to the running PBX, without restarting it."""
        config = pbx_config(self.entry.data, users)
        self.pbx.update_users(config.users)
        self.users = users
        self._sync_device_registry()
        for listener in list(self._topology_listeners):
            listener()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener()
        self._store.async_delay_save(self._stored_bindings, SAVE_DELAY)
        _LOGGER.debug("Applied %d users from options %s", len(users), sorted(options))

    # -- what entities read ----------------------------------------------------------------------

    def device(self, device_id: str) -> OwnedDevice | None:
        """Return a configured device and its owner, or None once it has been removed."""
        return find_device(self.users, device_id)

    def device_bindings(self, device_id: str) -> list[Binding]:
        """Return the current bindings of a device, most recently valid first."""
        owned = self.device(device_id)
        if owned is None:
            return []
        bindings = self.pbx.bindings(owned.device["username"])
        return sorted(bindings, key=lambda binding: binding.expires_at_wall, reverse=True)

    def registered_device_count(self) -> int:
        """Return how many configured devices have at least one binding."""
        return sum(
            1 for owned in iter_devices(self.users) if self.pbx.bindings(owned.device["username"])
        )

    @callback
    def async_add_listener(self, key: str, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when what is known about ``key`` (a device id, a user id or HUB_KEY)
        changes; returns the function that removes it."""
        self._listeners.setdefault(key, []).append(listener)

        def remove() -> None:
            self._listeners[key].remove(listener)

        return remove

    @callback
    def async_add_topology_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after users or devices were added, edited or removed."""
        self._topology_listeners.append(listener)

        def remove() -> None:
            self._topology_listeners.remove(listener)

        return remove

    # -- internals -------------------------------------------------------------------------------

    def _stored_bindings(self) -> StoredBindings:
        return {"bindings": self.pbx.binding_records()}

    @callback
    def _handle_event(self, event: PbxEvent) -> None:
        if not isinstance(event, RegistrationChanged):
            return
        _LOGGER.debug("Registration of %s: %s", event.username, event.reason)
        keys = {HUB_KEY}
        for owned in iter_devices(self.users):
            if owned.device["username"] == event.username:
                keys.update((owned.device["id"], owned.user["id"]))
        for key in keys:
            for listener in list(self._listeners.get(key, ())):
                listener()
        self._store.async_delay_save(self._stored_bindings, SAVE_DELAY)

    @callback
    def _sync_device_registry(self) -> None:
        """Create or update the hub, user and SIP devices; remove those no longer configured."""
        registry = dr.async_get(self.hass)
        entry_id = self.entry.entry_id
        wanted: set[str] = set()
        hub = registry.async_get_or_create(
            config_entry_id=entry_id,
            identifiers={hub_identifier(entry_id)},
            manufacturer=MANUFACTURER,
            model="SIP PBX",
            name=self.entry.title,
            sw_version=SIP_CORE_VERSION,
        )
        wanted.add(hub.id)
        for user in self.users:
            user_device = registry.async_get_or_create(
                config_entry_id=entry_id,
                identifiers={user_identifier(user["id"])},
                manufacturer=MANUFACTURER,
                model="User",
                name=user["name"],
                serial_number=user["extension"],
            )
            self._set_parent(registry, user_device, hub)
            wanted.add(user_device.id)
            for device in user["devices"]:
                sip_device = registry.async_get_or_create(
                    config_entry_id=entry_id,
                    identifiers={device_identifier(device["id"])},
                    manufacturer=MANUFACTURER,
                    model=DEVICE_MODELS.get(device["type"], device["type"]),
                    name=device["label"],
                    serial_number=device["username"],
                )
                self._set_parent(registry, sip_device, user_device)
                wanted.add(sip_device.id)
        for stale in dr.async_entries_for_config_entry(registry, entry_id):
            if stale.id not in wanted:
                registry.async_remove_device(stale.id)

    @staticmethod
    def _set_parent(
        registry: dr.DeviceRegistry, device: dr.DeviceEntry, parent: dr.DeviceEntry
    ) -> None:
        """Link a device to the one it is reached through.

        Set with async_update_device: async_get_or_create takes ``via_device`` before Home
        Assistant 2026.x and ``via_device_id`` after, but async_update_device's
        ``via_device_id`` works on every version we support.
        """
        if device.via_device_id != parent.id:
            registry.async_update_device(device.id, via_device_id=parent.id)
