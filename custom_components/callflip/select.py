"""Call Forward Always of each SIP device, as a select (`sip_core.presence`).

The options are ``none`` (calls ring the device) and every place a call can go: each user
(``user:<name>``: their devices ring, each by its own settings) and each other device
(``device:<username>``), the same text the runner's API takes. Groups will join the list when
they exist. The setting is runtime state of the PBX, saved in the entry's Store; a forwarding
loop is not refused here but cut when a call meets it (482, the chain in the log).
"""

from __future__ import annotations

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from sip_core.presence import ForwardKind, ForwardTarget, PresenceError

from .data import CallflipConfigEntry
from .entity import CallflipDeviceEntity, async_add_per_user_and_device
from .hub import CallflipHub
from .services import validation_error

PARALLEL_UPDATES = 0

NO_FORWARD = "none"

CALL_FORWARD = SelectEntityDescription(
    key="call_forward", translation_key="call_forward", entity_category=EntityCategory.CONFIG
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: CallflipConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """A Call Forward Always select per device, now and as the options add devices."""
    async_add_per_user_and_device(
        entry,
        async_add_entities,
        per_device=lambda hub, _user_id, device_id: [
            CallForwardSelect(hub, CALL_FORWARD, device_id)
        ],
    )


class CallForwardSelect(CallflipDeviceEntity, SelectEntity):
    """Where this device's calls go instead of ringing it."""

    def __init__(
        self, hub: CallflipHub, description: SelectEntityDescription, device_id: str
    ) -> None:
        super().__init__(hub, description, device_id)
        self._refresh()  # the options are read when the entity is registered

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        # Users and devices come and go with the options (the hub then refreshes every
        # entity): the list of places follows.
        self.async_on_remove(self.hub.pbx.presence.subscribe(self._handle_update))

    def _refresh(self) -> None:
        owned = self.owned
        self._attr_available = owned is not None
        if owned is None:
            return
        username = owned.device["username"]
        config = self.hub.pbx.config
        options = [NO_FORWARD]
        options += [str(ForwardTarget(ForwardKind.USER, user.name)) for user in config.users]
        options += [
            str(ForwardTarget(ForwardKind.DEVICE, device.username))
            for _user, device in config.devices()
            if device.username != username
        ]
        forward = self.hub.pbx.presence.states(username).forward
        current = str(forward) if forward is not None else NO_FORWARD
        if current not in options:  # forwarded to someone since removed: still shown
            options.append(current)
        self._attr_options = options
        self._attr_current_option = current

    async def async_select_option(self, option: str) -> None:
        owned = self.owned
        if owned is None:  # pragma: no cover - the entity is unavailable then
            raise validation_error("not_a_phone")
        username = owned.device["username"]
        try:
            self.hub.pbx.set_call_forward(username, None if option == NO_FORWARD else option)
        except PresenceError as err:
            raise validation_error(
                "invalid_forward", device=owned.device["label"], target=option, error=str(err)
            ) from err
