"""Call state of every SIP device and user, each user's last handoff, diagnostic sensors of a SIP
device's contact, the PBX's count of registered devices and of banned addresses, and from the
persisted call history the last call, the calls today and the missed calls today, of each user
and of the whole PBX."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.event import async_track_time_change
from homeassistant.helpers.restore_state import RestoreEntity
from homeassistant.util import dt as dt_util

from sip_core.calls import CallOutcome, CallRecord
from sip_core.headers import NameAddress
from sip_core.registrar import Binding
from sip_core.uri import ParseError

from .call_counts import CallCounts, count_since, last_of
from .call_view import PHONE_STATES, CallView, PhoneState
from .const import HandoffType
from .data import CallflipConfigEntry
from .entity import (
    CallflipDeviceEntity,
    CallflipEntity,
    CallflipHubEntity,
    CallflipUserEntity,
    async_add_per_user_and_device,
)
from .groups import GroupActiveCallSensor, async_add_per_group
from .handoff import HandoffSummary
from .hub import HUB_KEY, CallflipHub, device_identifier
from .trunk_sensor import async_add_trunk_sensors
from .trunks import TrunkSensorState

PARALLEL_UPDATES = 0

TRANSPORTS = ["udp", "tcp", "tls"]


def contact_address(binding: Binding) -> str:
    """Where the phone says it takes calls (its Contact), and where its REGISTER came from when
    that differs (a NAT, or a registration made on the phone's behalf)."""
    source = str(binding.source.remote)
    try:
        uri = binding.contact_uri
    except ParseError:
        return source
    if uri.scheme not in ("sip", "sips") or not uri.host:
        return source
    default_port = 5061 if uri.scheme == "sips" else 5060
    host = f"[{uri.host}]" if ":" in uri.host and not uri.host.startswith("[") else uri.host
    contact = f"{host}:{uri.port or default_port}"
    if contact == source:
        return contact
    return f"{contact} (registered from {source})"[:255]


@dataclass(frozen=True, kw_only=True)
class ContactSensorDescription(SensorEntityDescription):
    """A fact about a device's current contact, read from its most recent binding.

    They are diagnostics, disabled until someone wants them: a household needs to know that a
    phone is registered, rarely from where."""

    value_fn: Callable[[Binding], str | None]


CONTACT_SENSORS: tuple[ContactSensorDescription, ...] = (
    ContactSensorDescription(
        key="address",
        translation_key="address",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=contact_address,
    ),
    ContactSensorDescription(
        key="transport",
        translation_key="transport",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.ENUM,
        options=TRANSPORTS,
        value_fn=lambda binding: binding.source.kind.value.lower(),
    ),
    ContactSensorDescription(
        key="user_agent",
        translation_key="user_agent",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda binding: binding.user_agent[:255] if binding.user_agent else None,
    ),
)

REGISTERED_DEVICES = SensorEntityDescription(
    key="registered_devices",
    translation_key="registered_devices",
    state_class=SensorStateClass.MEASUREMENT,
)

BANNED_ADDRESSES = SensorEntityDescription(
    key="banned_addresses",
    translation_key="banned_addresses",
    state_class=SensorStateClass.MEASUREMENT,
)

LAST_CALL = SensorEntityDescription(
    key="last_call",
    translation_key="last_call",
    device_class=SensorDeviceClass.ENUM,
    options=[outcome.value for outcome in CallOutcome],
)

CALL_STATE = SensorEntityDescription(
    key="call_state",
    translation_key="call_state",
    device_class=SensorDeviceClass.ENUM,
    options=PHONE_STATES,
)
ACTIVE_CALL = SensorEntityDescription(
    key="active_call",
    translation_key="active_call",
    device_class=SensorDeviceClass.ENUM,
    options=PHONE_STATES,
)
LAST_HANDOFF = SensorEntityDescription(key="last_handoff", translation_key="last_handoff")
TRUNK_STATE = SensorEntityDescription(
    key="trunk",
    translation_key="trunk",
    device_class=SensorDeviceClass.ENUM,
    options=[state.value for state in TrunkSensorState],
)
CALLS_TODAY = SensorEntityDescription(
    key="calls_today",
    translation_key="calls_today",
    state_class=SensorStateClass.TOTAL,
)
MISSED_CALLS = SensorEntityDescription(
    key="missed_calls",
    translation_key="missed_calls",
    state_class=SensorStateClass.TOTAL,
)

GROUP_ACTIVE_CALL = SensorEntityDescription(key="active_call", translation_key="group_active_call")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the PBX's sensor, and the contact sensors of every device as devices appear."""
    hub = entry.runtime_data.hub
    async_add_entities(
        [
            RegisteredDevicesSensor(hub, REGISTERED_DEVICES),
            BannedAddressesSensor(hub, BANNED_ADDRESSES),
            LastCallSensor(hub, LAST_CALL),
            PbxCallsTodaySensor(hub, CALLS_TODAY),
            PbxMissedCallsSensor(hub, MISSED_CALLS),
        ]
    )

    async_add_trunk_sensors(entry, async_add_entities, TRUNK_STATE)

    def device_sensors(hub: CallflipHub, _user_id: str, device_id: str) -> list[SensorEntity]:
        return [
            CallStateSensor(hub, CALL_STATE, device_id),
            *(ContactSensor(hub, description, device_id) for description in CONTACT_SENSORS),
        ]

    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_user=lambda hub, user_id: [
            ActiveCallSensor(hub, ACTIVE_CALL, user_id),
            LastHandoffSensor(hub, LAST_HANDOFF, user_id),
            UserLastCallSensor(hub, LAST_CALL, user_id),
            UserCallsTodaySensor(hub, CALLS_TODAY, user_id),
            UserMissedCallsSensor(hub, MISSED_CALLS, user_id),
        ],
        per_device=device_sensors,
    )
    async_add_per_group(
        entry,
        async_add_entities,
        lambda hub, group: [GroupActiveCallSensor(hub, GROUP_ACTIVE_CALL, group["id"])],
    )


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


class BannedAddressesSensor(CallflipHubEntity, SensorEntity):
    """How many source addresses are banned for failed logins, and which (``callflip.unban``)."""

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        security = self.hub.entry.runtime_data.security
        self.async_on_remove(security.async_add_listener(self._handle_update))

    def _refresh(self) -> None:
        bans = self.hub.entry.runtime_data.security.bans()
        self._attr_native_value = len(bans)
        self._attr_extra_state_attributes = {
            "addresses": [
                {
                    "address": ban.address,
                    "username": ban.username,
                    "failures": ban.failures,
                    "until": dt_util.utc_from_timestamp(ban.until).isoformat(),
                }
                for ban in bans
            ]
        }


class LastCallSensor(CallflipHubEntity, SensorEntity):
    """How the most recent call ended, with who called whom and why (kept across restarts)."""

    def _refresh(self) -> None:
        history = self.hub.history
        record = history.last() if history is not None else None
        self._attr_native_value = record.outcome.value if record is not None else None
        self._attr_extra_state_attributes = (
            record_attributes(self.hub, record) if record is not None else {}
        )


def record_attributes(hub: CallflipHub, record: CallRecord) -> dict[str, Any]:
    """A finished call as sensor attributes (times in ISO format, devices by their labels)."""
    return {
        "call_id": record.call_id,
        "caller": hub.device_label(record.caller) if record.caller else None,
        "caller_user": record.caller_user,
        "dialled": record.dialled,
        "callee_user": record.callee_user,
        "callee_device": hub.device_label(record.callee_device) if record.callee_device else None,
        "started": dt_util.utc_from_timestamp(record.started_at).isoformat(),
        "answered": (
            dt_util.utc_from_timestamp(record.answered_at).isoformat()
            if record.answered_at is not None
            else None
        ),
        "ended": dt_util.utc_from_timestamp(record.ended_at).isoformat(),
        "duration": round(record.duration, 1),
        "reason": record.reason,
        "flips": len(record.handoffs),
        "calls_recorded": len(hub.history) if hub.history is not None else 0,
    }


def call_attributes(hub: CallflipHub, view: CallView | None) -> dict[str, Any]:
    """The attributes of a call sensor: who is on the other end, and since when (None: idle)."""
    if view is None:
        return {}
    return {
        "call_id": view.call_id,
        "direction": view.direction.value,
        "remote_party": view.remote_party,
        "remote_number": view.remote_number,
        "remote_device": hub.device_label(view.remote_device) if view.remote_device else None,
        "since": dt_util.utc_from_timestamp(view.since).isoformat(),
    }


class CallStateSensor(CallflipDeviceEntity, SensorEntity):
    """What a SIP device is doing: idle, ringing, dialing, talking or held."""

    def _refresh(self) -> None:
        self._attr_available = self.owned is not None
        view = self.hub.device_call(self.device_id)
        self._attr_native_value = view.state.value if view else PhoneState.IDLE.value
        self._attr_extra_state_attributes = call_attributes(self.hub, view)


class ActiveCallSensor(CallflipUserEntity, SensorEntity):
    """A user's call in progress on any of their devices, and which device has it."""

    def _refresh(self) -> None:
        self._attr_available = self.user is not None
        view = self.hub.user_call(self.user_id)
        self._attr_native_value = view.state.value if view else PhoneState.IDLE.value
        attributes = call_attributes(self.hub, view)
        if view is not None:
            owned = self.hub.by_username().get(view.username)
            attributes["device"] = self.hub.device_label(view.username)
            attributes["device_account"] = view.username
            attributes["device_id"] = (
                self.hub.ha_device_id(device_identifier(owned.device["id"])) if owned else None
            )
        self._attr_extra_state_attributes = attributes


_SUMMARY_KEYS = frozenset({"kind", "outcome", "call_id", "from", "to", "reason", "at"})


class LastHandoffSensor(CallflipUserEntity, RestoreEntity, SensorEntity):
    """The user's most recent handoff step as a sentence ("Call moved from A to B"); kept across
    restarts, unknown until the first one."""

    _unrecorded_attributes = frozenset({"call_id"})

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        last = await self.async_get_last_state()
        if last is not None and last.state not in ("unknown", "unavailable"):
            self._attr_native_value = last.state
            self._attr_extra_state_attributes = {
                key: value for key, value in last.attributes.items() if key in _SUMMARY_KEYS
            }
        self.async_on_remove(self.hub.async_add_handoff_listener(self.user_id, self._handoff))

    @callback
    def _handoff(self, kind: HandoffType, data: dict[str, Any]) -> None:
        summary = HandoffSummary.from_event({**data, "type": kind.value})
        self._attr_native_value = summary.sentence()
        self._attr_extra_state_attributes = {
            **summary.attributes(),
            "at": dt_util.utcnow().isoformat(),
        }
        self.async_write_ha_state()

    def _refresh(self) -> None:
        self._attr_available = self.user is not None


# -- from the call history: last call, calls today, missed calls ----------------------------------

MISSED_SHOWN = 10
"""Missed calls listed in the attributes (the newest), for a notification or a dashboard."""


def caller_text(hub: CallflipHub, record: CallRecord) -> str:
    """Who called, for a person: the user, else the outside caller's name or number as the
    trunk presented them, else the device's label."""
    if record.caller_user:
        return record.caller_user
    if record.caller_party:
        try:
            party = NameAddress.parse(record.caller_party)
        except (ParseError, ValueError):
            return record.caller_party[:100]
        number = party.uri.user_unescaped or party.uri.host
        if party.display_name:
            return f"{party.display_name} ({number})" if number else party.display_name
        return number
    return hub.device_label(record.caller) if record.caller else "unknown"


class _FollowsHistory(CallflipEntity):
    """Refreshed when a call joins the history (the PBX's key) and at local midnight."""

    _attr_last_reset: datetime | None

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        if self._listen_key != HUB_KEY:
            self.async_on_remove(self.hub.async_add_listener(HUB_KEY, self._handle_update))
        self.async_on_remove(
            async_track_time_change(self.hass, self._midnight, hour=0, minute=0, second=0)
        )

    @callback
    def _midnight(self, _now: Any) -> None:
        self._handle_update()

    def _records(self) -> list[CallRecord]:
        history = self.hub.history
        return history.records() if history is not None else []

    def _user_name(self) -> str | None:
        """The user whose calls these are (None: the whole PBX)."""
        return None

    def _today(self) -> CallCounts:
        since = dt_util.start_of_local_day()
        self._attr_last_reset = since
        return count_since(self._records(), since.timestamp(), self._user_name())


class _UserHistory(_FollowsHistory, CallflipUserEntity):
    def _user_name(self) -> str | None:
        user = self.user
        return user["name"] if user is not None else None

    def _refresh(self) -> None:
        self._attr_available = self.user is not None
        if self._attr_available:
            self._refresh_counts()

    def _refresh_counts(self) -> None:
        raise NotImplementedError


class _CallsToday:
    """The number of calls today; ``answered`` says how many of them were."""

    _attr_native_value: Any
    _attr_extra_state_attributes: dict[str, Any]

    def _show_calls(self, counts: CallCounts) -> None:
        self._attr_native_value = len(counts.calls)
        self._attr_extra_state_attributes = {
            "answered": sum(1 for r in counts.calls if r.outcome is CallOutcome.ANSWERED)
        }


class _MissedToday:
    """The number of missed calls today, and the newest of them (who called, and when)."""

    _attr_native_value: Any
    _attr_extra_state_attributes: dict[str, Any]
    hub: CallflipHub

    def _show_missed(self, counts: CallCounts) -> None:
        self._attr_native_value = len(counts.missed)
        newest = counts.missed[-MISSED_SHOWN:][::-1]
        self._attr_extra_state_attributes = {
            "calls": [
                {
                    "caller": caller_text(self.hub, record),
                    "callee_user": record.callee_user,
                    "outcome": record.outcome.value,
                    "at": dt_util.utc_from_timestamp(record.started_at).isoformat(),
                }
                for record in newest
            ],
            "last_caller": caller_text(self.hub, newest[0]) if newest else None,
        }


class PbxCallsTodaySensor(_FollowsHistory, _CallsToday, CallflipHubEntity, SensorEntity):
    """Every call through the PBX since local midnight."""

    def _refresh(self) -> None:
        self._show_calls(self._today())


class PbxMissedCallsSensor(_FollowsHistory, _MissedToday, CallflipHubEntity, SensorEntity):
    """Calls for any user since local midnight that nobody answered (no answer, busy,
    declined)."""

    def _refresh(self) -> None:
        self._show_missed(self._today())


class UserCallsTodaySensor(_UserHistory, _CallsToday, SensorEntity):
    """The user's calls (made or received) since local midnight."""

    def _refresh_counts(self) -> None:
        self._show_calls(self._today())


class UserMissedCallsSensor(_UserHistory, _MissedToday, SensorEntity):
    """Calls for the user since local midnight that they did not answer."""

    def _refresh_counts(self) -> None:
        self._show_missed(self._today())


class UserLastCallSensor(_UserHistory, SensorEntity):
    """How the user's most recent call (made or received) ended, with who and why."""

    def _refresh_counts(self) -> None:
        record = last_of(self._records(), self._user_name())
        self._attr_native_value = record.outcome.value if record is not None else None
        attributes = record_attributes(self.hub, record) if record is not None else {}
        if record is not None:
            attributes["caller"] = caller_text(self.hub, record)
        self._attr_extra_state_attributes = attributes
