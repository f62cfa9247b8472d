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
from sip_core.call_snapshot import CallSnapshot
from sip_core.calls import CallState, HandoffRecord
from sip_core.events import (
    CallRecorded,
    CallStateChanged,
    GroupPresenceDialled,
    HandoffFailed,
    HandoffStarted,
    HandoffSucceeded,
    PbxEvent,
    RegistrationChanged,
    TransferEnded,
    TransferStarted,
)
from sip_core.pbx import Pbx
from sip_core.registrar import Binding

from .call_steps import CallStepTracker
from .call_view import CallView, device_view, user_view
from .const import (
    BINDINGS_STORAGE_VERSION,
    DEVICE_MODELS,
    DOMAIN,
    EVENT_CALL,
    EVENT_GROUP_PRESENCE,
    EVENT_HANDOFF,
    EVENT_TRANSFER,
    MANUFACTURER,
    HandoffType,
    TransferEventType,
)
from .group_options import (
    GroupOptions,
    group_identifier,
    group_key,
    groups_from_options,
    groups_mapping,
)
from .group_presence_events import group_presence_payload
from .history import CallHistory
from .users import OwnedDevice, UserOptions, find_device, iter_devices, pbx_config

_LOGGER = logging.getLogger(__name__)

SAVE_DELAY = 2.0
"""Seconds to gather binding changes into one write; Store writes pending data on shutdown too."""

HUB_KEY = "hub"
"""Listener key of the entities that describe the whole PBX."""

type StoredBindings = dict[str, list[dict[str, Any]]]
type HandoffListener = Callable[[HandoffType, dict[str, Any]], None]


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


def device_model(kind: str, username: str) -> str:
    """What the device page shows under the name: the kind of phone and its SIP account.

    Neither the extension nor the account is a serial number, so neither is stored as one.
    """
    return f"{DEVICE_MODELS.get(kind, kind)}, account {username}"


class CallflipHub:
    """One running PBX and everything Home Assistant keeps about it."""

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ConfigEntry[Any],
        pbx: Pbx,
        store: Store[StoredBindings],
        users: list[UserOptions],
        *,
        history: CallHistory | None = None,
    ) -> None:
        self.hass = hass
        self.entry = entry
        self.pbx = pbx
        self.users = users
        self._store = store
        self.history = history
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._handoff_listeners: dict[str, list[HandoffListener]] = {}
        self._by_username: dict[str, OwnedDevice] = {}
        self._index_devices()
        self._call_devices: dict[str, set[str]] = {}
        self._topology_listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False
        self.steps = CallStepTracker(self)
        """Every step of every call, for the call event entities (`call_steps`)."""
        self.groups: list[GroupOptions] = groups_from_options(entry.options)
        self._unsubscribe_groups: Callable[[], None] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    @callback
    def async_start(self) -> None:
        """Start listening to the PBX and register the devices it serves."""
        self._unsubscribe = self.pbx.subscribe(self._handle_event)
        self._unsubscribe_groups = self.pbx.group_presence.subscribe(self._groups_changed)
        self._sync_device_registry()

    async def async_stop(self) -> None:
        """Stop the PBX and free its ports, then persist the bindings and the call history
        (safe to call twice).

        The PBX stops while we still listen: the calls it ends on the way ("the PBX is
        stopping") reach the event bus and the history before the final save.
        """
        if self._stopped:
            return
        self._stopped = True
        await self.pbx.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unsubscribe_groups is not None:
            self._unsubscribe_groups()
            self._unsubscribe_groups = None
        await self._store.async_save(self._stored_bindings())
        if self.history is not None:
            await self.history.async_save()

    @callback
    def async_apply_options(self, options: Mapping[str, Any], users: list[UserOptions]) -> None:
        """Apply changed users and devices to the running PBX, without restarting it."""
        groups = groups_from_options(options)
        config = pbx_config(self.entry.data, users, groups_mapping(groups, users))
        self.pbx.update_users(config.users)
        self.pbx.update_groups(config.groups)
        self.users = users
        self.groups = groups
        self._index_devices()
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

    def by_username(self) -> Mapping[str, OwnedDevice]:
        """Every configured device and its owner, by SIP username."""
        return self._by_username

    def device_call(self, device_id: str) -> CallView | None:
        """The call a SIP device is in (the busiest one), or None when it is idle."""
        owned = self.device(device_id)
        if owned is None:
            return None
        return device_view(self.pbx.call_snapshots(), self._by_username, owned.device["username"])

    def user_call(self, user_id: str) -> CallView | None:
        """The call a user is in on any of their devices (the busiest one), or None."""
        return user_view(self.pbx.call_snapshots(), self._by_username, user_id)

    def call_of(self, call_id: str) -> CallSnapshot | None:
        """The call in progress with this id, if any (a snapshot: never the live call)."""
        return self.pbx.call_snapshot(call_id)

    def device_label(self, username: str) -> str:
        """The label of a device of ours, else its account name (for messages and events)."""
        owned = self._by_username.get(username)
        return owned.device["label"] if owned is not None else username

    def ha_device_id(self, identifier: tuple[str, str]) -> str | None:
        """The device registry id of one of our devices (user, SIP device or hub).

        Searched among the entry's devices: async_get_device by identifiers alone is deprecated
        in newer Home Assistant, and its replacement does not exist in 2025.4.
        """
        registry = dr.async_get(self.hass)
        for device in dr.async_entries_for_config_entry(registry, self.entry.entry_id):
            if identifier in device.identifiers:
                return device.id
        return None

    def identify(self, ha_device_id: str) -> tuple[str, str] | None:
        """What a device registry id stands for: ("user", user id), ("device", device id)
        or ("hub", entry id); None when it is not one of this entry's devices."""
        device = dr.async_get(self.hass).async_get(ha_device_id)
        if device is None or self.entry.entry_id not in entries_of(device):
            return None
        for domain, value in device.identifiers:
            if domain != DOMAIN:
                continue
            if value.startswith("user-"):
                return ("user", value.removeprefix("user-"))
            if value.startswith("device-"):
                return ("device", value.removeprefix("device-"))
            if value.startswith("group-"):
                return ("group", value.removeprefix("group-"))
            return ("hub", value)
        return None

    @callback
    def async_add_handoff_listener(
        self, user_id: str, listener: HandoffListener
    ) -> Callable[[], None]:
        """Call ``listener(type, data)`` for each handoff (flip) of one of the user's calls."""
        self._handoff_listeners.setdefault(user_id, []).append(listener)

        def remove() -> None:
            self._handoff_listeners[user_id].remove(listener)

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

    def _index_devices(self) -> None:
        self._by_username = {owned.device["username"]: owned for owned in iter_devices(self.users)}

    def _notify(self, usernames: set[str] | tuple[str, ...], *extra: str) -> None:
        """Tell the entities of these devices, of their owners and of ``extra`` keys."""
        keys = set(extra)
        for username in usernames:
            owned = self._by_username.get(username)
            if owned is not None:
                keys.update((owned.device["id"], owned.user["id"]))
        for key in keys:
            for listener in list(self._listeners.get(key, ())):
                listener()

    @callback
    def _handle_event(self, event: PbxEvent) -> None:
        if isinstance(event, RegistrationChanged):
            _LOGGER.debug("Registration of %s: %s", event.username, event.reason)
            self._notify({event.username}, HUB_KEY)
            self._store.async_delay_save(self._stored_bindings, SAVE_DELAY)
        elif isinstance(event, CallStateChanged):
            self._call_changed(event)
        elif isinstance(event, (HandoffStarted, HandoffSucceeded, HandoffFailed)):
            self._handoff(event)
        elif isinstance(event, CallRecorded) and self.history is not None:
            self.history.add(event.record)
            self._notify((), HUB_KEY)
        elif isinstance(event, (TransferStarted, TransferEnded)):
            self._transfer(event)
        elif isinstance(event, GroupPresenceDialled):
            self.hass.bus.async_fire(EVENT_GROUP_PRESENCE, group_presence_payload(self, event))

    def _call_changed(self, event: CallStateChanged) -> None:
        """Update the call sensors and put the change on the event bus."""
        involved = self._call_devices.setdefault(event.call_id, set())
        involved.update(event.devices, (event.caller,) if event.caller else ())
        caller_user, callee_user = event.caller_user, event.callee_user
        if event.state is CallState.ENDED:
            self._call_devices.pop(event.call_id, None)
        self._notify(involved, *self._group_keys(involved, event.dialled))
        data: dict[str, Any] = {
            "call_id": event.call_id,
            "state": event.state.value,
            "previous": event.previous.value if event.previous is not None else None,
            "caller": event.caller,
            "caller_user": caller_user,
            "dialled": event.dialled,
            "callee_user": callee_user,
            "caller_device_id": self._user_ha_id(caller_user),
            "callee_device_id": self._user_ha_id(callee_user),
            "devices": list(event.devices),
            "device_labels": [self.device_label(device) for device in event.devices],
            "device_ids": self._ha_ids(event.devices),
            "reason": event.reason,
            "outcome": event.outcome.value if event.outcome is not None else None,
        }
        self.steps.call_changed(event, data)
        self.hass.bus.async_fire(EVENT_CALL, data)

    def _user_ha_id(self, name: str | None) -> str | None:
        """The device registry id of the user with this (sip_core) name, if they are ours."""
        user = next((user for user in self.users if user["name"] == name), None)
        return self.ha_device_id(user_identifier(user["id"])) if user is not None else None

    def _ha_ids(self, usernames: tuple[str, ...]) -> list[str]:
        """Device registry ids of our devices among these accounts (for triggers and filters)."""
        ids: list[str] = []
        for username in usernames:
            owned = self._by_username.get(username)
            if owned is not None:
                found = self.ha_device_id(device_identifier(owned.device["id"]))
                if found is not None:
                    ids.append(found)
        return ids

    def _group_keys(self, usernames: set[str] | tuple[str, ...], dialled: str = "") -> list[str]:
        """The listener keys of the groups these devices are members of (or whose pilot this
        is): their ringing and active-call entities follow the call."""
        config = self.pbx.config
        keys = []
        for group in self.groups:
            found = config.group(group["name"])
            if found is None:
                continue
            if found.pilot == dialled or any(member in usernames for member in found.members):
                keys.append(group_key(group["id"]))
        return keys

    @callback
    def _groups_changed(self) -> None:
        """A member's Group Presence changed: the group entities read it again."""
        for group in self.groups:
            for listener in list(self._listeners.get(group_key(group["id"]), ())):
                listener()

    def _handoff(self, event: HandoffStarted | HandoffSucceeded | HandoffFailed) -> None:
        """Report a flip, push or pull: entities, the handoff event entity of its user, the
        event bus."""
        kind = _handoff_type(event)
        reason = event.reason if isinstance(event, HandoffFailed) else ""
        owner = self._by_username.get(event.from_device) or self._by_username.get(event.to_device)
        data: dict[str, Any] = {
            "call_id": event.call_id,
            "from_device": event.from_device,
            "from_label": self.device_label(event.from_device),
            "to_device": event.to_device,
            "to_label": self.device_label(event.to_device),
            "reason": reason,
        }
        if not isinstance(event, HandoffStarted):
            record = event.record  # why it failed, who pressed what, how the target was chosen
            data |= {
                "code": record.code,
                "pressed_by": record.pressed_by,
                "keys": record.keys,
                "how": record.how,
            }
        self._call_devices.setdefault(event.call_id, set()).update(
            (event.from_device, event.to_device)
        )
        if event.kind != "flip":
            data["kind"] = event.kind
            found: HandoffRecord | None = getattr(event, "record", None)
            pushed_to = event.to_device if event.kind == "push" else ""
            data["group"] = found.group if found is not None else pushed_to
            if isinstance(event, HandoffFailed):
                data["refusal"] = event.refusal
        self._notify(
            (event.from_device, event.to_device),
            *self._group_keys((event.from_device, event.to_device)),
        )
        user_data: dict[str, Any] = {}
        if owner is not None:
            user_id = owner.user["id"]
            user_data = {
                "user": owner.user["name"],
                "user_id": user_id,
                "device_id": self.ha_device_id(user_identifier(user_id)),
            }
            for listener in list(self._handoff_listeners.get(user_id, ())):
                listener(kind, data)
        self.steps.handoff(kind, {**data, **user_data}, owner.user["id"] if owner else None)
        self.hass.bus.async_fire(EVENT_HANDOFF, {"type": kind.value, **data, **user_data})

    def _transfer(self, event: TransferStarted | TransferEnded) -> None:
        """Report a transfer step: the call sensors of its devices, and the transfer bus event
        (the logbook and the transferring user's device triggers read it)."""
        if isinstance(event, TransferStarted):
            kind = TransferEventType.STARTED
            data: dict[str, Any] = {
                "transfer": event.kind.value,
                "transferring": event.transferring,
                "transferred": event.transferred,
                "target": event.target,
                "to_device": None,
                "recalled": None,
                "reason": "",
            }
        else:
            record = event.record
            kind = TransferEventType.SUCCEEDED if record.succeeded else TransferEventType.FAILED
            data = {
                "transfer": record.kind.value,
                "transferring": record.transferring,
                "transferred": record.transferred,
                "target": record.target,
                "to_device": record.to_device,
                "recalled": record.recalled,
                "reason": "" if record.succeeded else record.reason,
            }
        devices: tuple[str, ...] = (data["transferring"], data["transferred"])
        if data["to_device"]:
            devices = (*devices, data["to_device"])
        self._call_devices.setdefault(event.call_id, set()).update(devices)
        self._notify(devices)
        owner = self._by_username.get(data["transferring"])
        user = owner.user if owner is not None else None
        payload: dict[str, Any] = {
            "type": kind.value,
            "call_id": event.call_id,
            **data,
            "transferring_label": self.device_label(data["transferring"]),
            "transferred_label": self.device_label(data["transferred"]),
            "user": user["name"] if user is not None else None,
            "device_id": (
                self.ha_device_id(user_identifier(user["id"])) if user is not None else None
            ),
            "device_ids": self._ha_ids(devices),
        }
        self.steps.transfer(kind.value, payload)  # adds its ``step`` ("transferred" ...)
        self.hass.bus.async_fire(EVENT_TRANSFER, payload)

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
                model=f"Extension {user['extension']}",
                name=user["name"],
                serial_number=None,
            )
            self._set_parent(registry, user_device, hub)
            wanted.add(user_device.id)
            for device in user["devices"]:
                sip_device = registry.async_get_or_create(
                    config_entry_id=entry_id,
                    identifiers={device_identifier(device["id"])},
                    manufacturer=MANUFACTURER,
                    model=device_model(device["type"], device["username"]),
                    name=device["label"],
                    serial_number=None,
                )
                self._set_parent(registry, sip_device, user_device)
                wanted.add(sip_device.id)
        for group in self.groups:
            group_device = registry.async_get_or_create(
                config_entry_id=entry_id,
                identifiers={group_identifier(group["id"])},
                manufacturer=MANUFACTURER,
                model=f"Personal Ring Group {group['pilot']}",
                name=group["name"],
                serial_number=None,
            )
            self._set_parent(registry, group_device, hub)
            wanted.add(group_device.id)
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


def entries_of(device: dr.DeviceEntry) -> set[str]:
    """The config entries a device belongs to. Current Home Assistant gives a device one
    (`config_entry_id`) and warns about reading `config_entries`; 2025.4 has only the set."""
    owner: str | None = getattr(device, "config_entry_id", None)
    return {owner} if owner is not None else set(device.config_entries)


def _handoff_type(event: HandoffStarted | HandoffSucceeded | HandoffFailed) -> HandoffType:
    """The handoff event type of a PBX event (a flip, push or pull step)."""
    if event.kind == "push":
        if isinstance(event, HandoffStarted):
            return HandoffType.PUSH_STARTED
        if isinstance(event, HandoffSucceeded):
            return HandoffType.PUSHED
        if event.refusal == "unanswered":
            return HandoffType.PUSH_UNANSWERED
        return HandoffType.HANDOFF_FAILED
    if event.kind == "pull":
        if isinstance(event, HandoffStarted):
            return HandoffType.PULL_STARTED
        if isinstance(event, HandoffSucceeded):
            return HandoffType.PULLED
        return HandoffType.HANDOFF_FAILED
    if isinstance(event, HandoffStarted):
        return HandoffType.STARTED
    if isinstance(event, HandoffSucceeded):
        return HandoffType.SUCCEEDED
    return HandoffType.FAILED
