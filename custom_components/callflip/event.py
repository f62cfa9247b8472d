"""A user's handoff events: a flip of their call started, succeeded or failed (with the reason);
and the call events of every user and SIP device: each step of each of their calls
(`call_steps`), flips included."""

from __future__ import annotations

from typing import Any

from homeassistant.components.event import EventEntity, EventEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .call_steps import EVENT_TYPES, entity_attributes
from .const import HandoffType
from .data import CallflipConfigEntry
from .entity import (
    CallflipDeviceEntity,
    CallflipEntity,
    CallflipUserEntity,
    async_add_per_user_and_device,
)
from .handoff import HandoffSummary
from .hub import CallflipHub

PARALLEL_UPDATES = 0

HANDOFF = EventEntityDescription(
    key="handoff",
    translation_key="handoff",
    event_types=[kind.value for kind in HandoffType],
)
CALL = EventEntityDescription(
    key="call",
    translation_key="call",
    event_types=list(EVENT_TYPES),
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
        per_user=lambda hub, user_id: [
            HandoffEvent(hub, HANDOFF, user_id),
            UserCallEvent(hub, CALL, user_id),
        ],
        per_device=lambda hub, _user_id, device_id: [DeviceCallEvent(hub, CALL, device_id)],
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


class _CallEvent(CallflipEntity, EventEntity):
    """Fires for each step of each call of its user or phone: the event type is the step
    (incoming, dialled, ringing, answered, held, resumed, moved, ended, flip_...), the
    attributes its fields (caller name and number, dialled number, ringing phones, the phone
    that answered, reason, outcome, duration)."""

    _key: str

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.steps.async_add_listener(self._key, self._step))

    @callback
    def _step(self, kind: str, data: dict[str, Any]) -> None:
        self._trigger_event(kind, entity_attributes(data))
        self.async_write_ha_state()


class UserCallEvent(_CallEvent, CallflipUserEntity):
    """Every step of the user's calls, on any of their phones."""

    def __init__(self, hub: CallflipHub, description: EventEntityDescription, user_id: str) -> None:
        super().__init__(hub, description, user_id)
        self._key = user_id

    def _refresh(self) -> None:
        self._attr_available = self.user is not None


class DeviceCallEvent(_CallEvent, CallflipDeviceEntity):
    """Every step of the calls this phone takes part in (rings, answers, places)."""

    def __init__(
        self, hub: CallflipHub, description: EventEntityDescription, device_id: str
    ) -> None:
        super().__init__(hub, description, device_id)
        self._key = device_id

    def _refresh(self) -> None:
        self._attr_available = self.owned is not None
