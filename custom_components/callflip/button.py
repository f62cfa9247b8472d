"""Dashboard buttons: per user, "Flip to <device>" for each of their devices and "Hang up"; per
SIP device, "Hang up"; per member of a Personal Ring Group, on the group's device, "Push from
<device>" and "Pull to <device>" (`group_buttons`).

A button is available only while pressing it can do something: a flip button while the user has
an answered call on another of their devices, the target is registered and no flip is under way;
a hang-up button while there is a call. The dashboard then greys out what cannot act instead of
offering a press that would only be refused (and Home Assistant skips unavailable entities when
an automation presses them). A press that still loses a race (the call ended meanwhile) is
refused with a translated message.
"""

from __future__ import annotations

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .call_view import CallView, PhoneState
from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, CallflipUserEntity, async_add_per_user_and_device
from .group_buttons import GroupPullButton, GroupPushButton
from .groups import async_add_per_group
from .hub import CallflipHub
from .services import async_start_flip, validation_error

PARALLEL_UPDATES = 0

FLIP_TO = ButtonEntityDescription(key="flip_to", translation_key="flip_to")
HANG_UP = ButtonEntityDescription(key="hang_up", translation_key="hang_up")
GROUP_PUSH = ButtonEntityDescription(key="push", translation_key="group_push")
GROUP_PULL = ButtonEntityDescription(key="pull", translation_key="group_pull")

_ANSWERED = (PhoneState.TALKING, PhoneState.HELD)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the buttons of every user and device, now and whenever the options add some."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_user=lambda hub, user_id: [UserHangUpButton(hub, HANG_UP, user_id)],
        per_device=lambda hub, user_id, device_id: [
            FlipButton(hub, user_id, device_id),
            DeviceHangUpButton(hub, HANG_UP, device_id),
        ],
    )
    async_add_per_group(
        entry,
        async_add_entities,
        lambda _hub, _group: [],
        per_member=lambda hub, group, device_id: [
            GroupPushButton(hub, GROUP_PUSH, group["id"], device_id),
            GroupPullButton(hub, GROUP_PULL, group["id"], device_id),
        ],
    )


class FlipButton(CallflipUserEntity, ButtonEntity):
    """ "Flip to <device>": moves the user's call in progress to this device of theirs.

    It belongs to the user (a dashboard shows a person's buttons together) and is named after
    the device, following its label; it is unavailable once the device is removed or given to
    someone else, and whenever the flip could not start.
    """

    def __init__(self, hub: CallflipHub, user_id: str, device_id: str) -> None:
        super().__init__(hub, FLIP_TO, user_id)
        self.target_id = device_id
        self._attr_unique_id = f"{user_id}-flip_to-{device_id}"
        self._attr_translation_placeholders = {"device": self._label()}

    def _label(self) -> str:
        owned = self.hub.device(self.target_id)
        return owned.device["label"] if owned is not None else self.target_id

    def _refresh(self) -> None:
        label = self._label()
        if label != self._attr_translation_placeholders["device"]:
            self._attr_translation_placeholders = {"device": label}
            # Entity caches its name as a cached property (in the instance's __dict__, which is
            # where its own _attr_ setters drop it from too): drop it so the new label shows.
            self.__dict__.pop("name", None)
        self._attr_available = self._flippable_call() is not None

    def _flippable_call(self) -> CallView | None:
        """The user's call if a flip to this device could start now, else None."""
        owned = self.hub.device(self.target_id)
        if owned is None or owned.user["id"] != self.user_id:
            return None
        view = self.hub.user_call(self.user_id)
        if view is None or view.state not in _ANSWERED:
            return None
        username = owned.device["username"]
        if view.username == username or not self.hub.device_bindings(self.target_id):
            return None
        call = self.hub.call_of(view.call_id)
        if call is None or call.pending_flip is not None:
            return None
        return view

    async def async_press(self) -> None:
        """Move the user's call here; refused (with the reason) when that is not possible."""
        owned = self.hub.device(self.target_id)
        user = self.user
        if owned is None or user is None:  # pragma: no cover - the button is unavailable then
            raise validation_error("not_a_phone")
        view = self.hub.user_call(self.user_id)
        if view is None:
            raise validation_error("no_call", name=user["name"])
        async_start_flip(self.hub, view, user["name"], owned.device["username"], None)


def _hang_up(hub: CallflipHub, view: CallView | None, name: str) -> None:
    if view is None or not hub.pbx.hangup(view.call_id):
        raise validation_error("no_call", name=name)


class UserHangUpButton(CallflipUserEntity, ButtonEntity):
    """Ends the user's call (the busiest one, on whichever of their devices has it)."""

    def _refresh(self) -> None:
        self._attr_available = (
            self.user is not None and self.hub.user_call(self.user_id) is not None
        )

    async def async_press(self) -> None:
        user = self.user
        _hang_up(self.hub, self.hub.user_call(self.user_id), user["name"] if user else "")


class DeviceHangUpButton(CallflipDeviceEntity, ButtonEntity):
    """Ends the call this SIP device is in."""

    def _refresh(self) -> None:
        self._attr_available = (
            self.owned is not None and self.hub.device_call(self.device_id) is not None
        )

    async def async_press(self) -> None:
        owned = self.owned
        name = owned.device["label"] if owned else ""
        _hang_up(self.hub, self.hub.device_call(self.device_id), name)
