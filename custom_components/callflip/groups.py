"""Personal Ring Groups in Home Assistant: each group a device, with its members' Group Presence.

Each group (`group_options`) is a device under the PBX with a Group Presence switch per member
(an absent member is not rung by the group's calls or pushes), a binary sensor that is on while a
call rings the group (a call to its pilot, or a push), and a sensor naming the member that holds
the group's active call. Presence is runtime state kept by the PBX (saved in the entry's
runtime-state Store); the entities follow the hub's notifications under the group's key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from homeassistant.components.binary_sensor import BinarySensorEntity
from homeassistant.components.sensor import SensorEntity
from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from sip_core.prg.presence import GroupPresenceError

from .group_options import GROUP_PREFIX, GroupOptions, find_group, group_identifier, group_key
from .services import validation_error


def async_add_per_group(
    entry: Any,
    async_add_entities: AddConfigEntryEntitiesCallback,
    per_group: Callable[[Any, GroupOptions], Iterable[Entity]],
    *,
    per_member: Callable[[Any, GroupOptions, str], Iterable[Entity]] | None = None,
) -> None:
    """Add a platform's entities for every group (and member) now, and for those the options
    add later."""
    hub = entry.runtime_data.hub
    known: set[str] = set()

    @callback
    def add_new() -> None:
        entities: list[Entity] = []
        for group in hub.groups:
            if group["id"] not in known:
                known.add(group["id"])
                entities.extend(per_group(hub, group))
            if per_member is None:
                continue
            for device_id in group["members"]:
                membership = f"{group['id']}/{device_id}"
                if membership not in known:
                    known.add(membership)
                    entities.extend(per_member(hub, group, device_id))
        if entities:
            async_add_entities(entities)

    add_new()
    entry.async_on_unload(hub.async_add_topology_listener(add_new))


class CallflipGroupEntity(Entity):
    """An entity of one Personal Ring Group (pushed by the PBX, never polled)."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, hub: Any, description: EntityDescription, group_id: str) -> None:
        self.hub = hub
        self.entity_description = description
        self.group_id = group_id
        self._attr_unique_id = f"{GROUP_PREFIX}{group_id}-{description.key}"
        self._attr_device_info = DeviceInfo(identifiers={group_identifier(group_id)})

    @property
    def group(self) -> GroupOptions | None:
        """The group's options, None once it was removed."""
        found: GroupOptions | None = find_group(self.hub.groups, self.group_id)
        return found

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(
            self.hub.async_add_listener(group_key(self.group_id), self._handle_update)
        )
        self._refresh()

    def _handle_update(self) -> None:
        self._refresh()
        self.async_write_ha_state()

    def _refresh(self) -> None:
        raise NotImplementedError


# -- the entities (added by the switch, binary_sensor and sensor platforms) -----------------------


class CallflipGroupMemberEntity(CallflipGroupEntity):
    """An entity of one member (a phone) of one group, named after the phone's label."""

    def __init__(
        self, hub: Any, description: EntityDescription, group_id: str, device_id: str, what: str
    ) -> None:
        super().__init__(hub, description, group_id)
        self.device_id = device_id
        self._attr_unique_id = f"{GROUP_PREFIX}{group_id}-{device_id}-{what}"
        owned = hub.device(device_id)
        # Set before the entity is added: its entity id and name are made from them.
        self._attr_translation_placeholders = {
            "device": owned.device["label"] if owned is not None else device_id
        }


class GroupPresenceSwitch(CallflipGroupMemberEntity, SwitchEntity):
    """A member's Group Presence: off = absent (not rung by the group's calls and pushes)."""

    def __init__(
        self, hub: Any, description: SwitchEntityDescription, group_id: str, device_id: str
    ) -> None:
        super().__init__(hub, description, group_id, device_id, "presence")

    def _member(self) -> tuple[str, str] | None:
        """(group name, member username) while both are configured."""
        group = self.group
        owned = self.hub.device(self.device_id)
        if group is None or owned is None or self.device_id not in group["members"]:
            return None
        return group["name"], owned.device["username"]

    def _refresh(self) -> None:
        member = self._member()
        self._attr_available = member is not None
        self._attr_is_on = member is not None and self.hub.pbx.group_present(*member)

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._set(True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._set(False)

    def _set(self, present: bool) -> None:
        member = self._member()
        if member is None:
            raise validation_error("group_member_gone")
        try:
            self.hub.pbx.set_group_presence(member[0], member[1], present)
        except GroupPresenceError as err:  # the group changed under the entity
            raise validation_error("group_member_gone") from err
        self._refresh()
        self.async_write_ha_state()


class GroupRingingSensor(CallflipGroupEntity, BinarySensorEntity):
    """On while a call rings the group: a call to its pilot, or a push."""

    def _refresh(self) -> None:
        group = self.group
        self._attr_available = group is not None
        self._attr_is_on = group is not None and self.hub.pbx.group_ringing(group["name"])


class GroupActiveCallSensor(CallflipGroupEntity, SensorEntity):
    """The member (its label) holding the group's active call; unknown when there is none."""

    def _refresh(self) -> None:
        group = self.group
        self._attr_available = group is not None
        holder = self.hub.pbx.group_call_holder(group["name"]) if group is not None else None
        self._attr_native_value = self.hub.device_label(holder) if holder else None
