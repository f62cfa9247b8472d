"""Dashboard buttons: one per device of a user, moving the user's call to that device."""

from __future__ import annotations

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .data import CallflipConfigEntry
from .entity import CallflipUserEntity, async_add_per_user_and_device
from .hub import CallflipHub
from .services import async_start_flip, validation_error

PARALLEL_UPDATES = 0

FLIP_TO = ButtonEntityDescription(key="flip_to", translation_key="flip_to")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a flip button per user and device, now and whenever the options add devices."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_device=lambda hub, user_id, device_id: [FlipButton(hub, user_id, device_id)],
    )


class FlipButton(CallflipUserEntity, ButtonEntity):
    """ "Flip to <device>": moves the user's call in progress to this device of theirs.

    It belongs to the user (a dashboard shows a person's buttons together) and is named after
    the device; it is unavailable once the device is removed or given to someone else.
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
        owned = self.hub.device(self.target_id)
        self._attr_available = owned is not None and owned.user["id"] == self.user_id

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
