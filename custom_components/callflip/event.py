"""A user's handoff events: a flip of their call started, succeeded or failed (with the reason)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.event import EventEntity, EventEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import HandoffType
from .data import CallflipConfigEntry
from .entity import CallflipUserEntity, async_add_per_user_and_device
from .handoff import HandoffSummary

PARALLEL_UPDATES = 0

HANDOFF = EventEntityDescription(
    key="handoff",
    translation_key="handoff",
    event_types=[kind.value for kind in HandoffType],
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the handoff event entity of every user, now and whenever the options add users."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_user=lambda hub, user_id: [HandoffEvent(hub, HANDOFF, user_id)],
    )


class HandoffEvent(CallflipUserEntity, EventEntity):
    """Fires for every flip of the user's calls; the translated event type says what happened,
    ``summary`` says it in one sentence, the other attributes from where, to where and why."""

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.async_add_handoff_listener(self.user_id, self._handoff))

    @callback
    def _handoff(self, kind: HandoffType, data: dict[str, Any]) -> None:
        summary = HandoffSummary.from_event({**data, "type": kind.value})
        self._trigger_event(kind.value, {**data, "summary": summary.sentence()})
        self.async_write_ha_state()

    def _refresh(self) -> None:
        self._attr_available = self.user is not None
