"""Handoff buttons of a Personal Ring Group: per member, "Push from <phone>" and "Pull to <phone>".

They sit on the group's device, one pair per member (as the members' Group Presence switches),
and do what ``callflip.push`` and ``callflip.pull`` do for that phone:

- *Push from <phone>* hands the phone's answered call to this group (every other present, free
  member rings; the call moves to whoever answers). Available while the phone has an answered,
  talking call with no flip, transfer or handoff under way, and the group is not ringing.
- *Pull to <phone>* rings the phone with the group's call in progress (held by another member)
  and moves the call to it when it answers. Available while the phone is registered and free and
  another member of this group holds an answered call.

As with the flip buttons, a dashboard greys out what cannot act; a press that still loses a race
is refused with the PBX's reason, translated (`handoff_services.HANDOFF_ERRORS`). The buttons
follow the group's notifications (calls of its members, pushes, presence) and the phone's own
(its registration).
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription

from sip_core.calls import CallState
from sip_core.features.handoff import HandoffError

from .call_view import PhoneState
from .groups import CallflipGroupMemberEntity
from .handoff_services import HANDOFF_ERRORS
from .services import validation_error


class _MemberButton(CallflipGroupMemberEntity, ButtonEntity):
    """A button of one member of one group."""

    def __init__(
        self, hub: Any, description: ButtonEntityDescription, group_id: str, device_id: str
    ) -> None:
        super().__init__(hub, description, group_id, device_id, description.key)

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        # The phone's own changes too: its registration decides whether it can pull.
        self.async_on_remove(self.hub.async_add_listener(self.device_id, self._handle_update))

    def _member(self) -> tuple[str, str] | None:
        """(group name, member username) while both are configured."""
        group = self.group
        owned = self.hub.device(self.device_id)
        if group is None or owned is None or self.device_id not in group["members"]:
            return None
        return group["name"], owned.device["username"]

    def _refused(self, err: HandoffError, username: str) -> Exception:
        name = self.hub.device_label(username)
        return validation_error(HANDOFF_ERRORS[err.refusal], name=name, details=str(err))


class GroupPushButton(_MemberButton):
    """Push the member's call to the group."""

    def _pushable(self) -> tuple[str, str, str] | None:
        """(group, member, call id) when a push could start now."""
        member = self._member()
        if member is None or self.hub.pbx.group_ringing(member[0]):
            return None
        view = self.hub.device_call(self.device_id)
        if view is None or view.state is not PhoneState.TALKING:
            return None
        call = self.hub.call_of(view.call_id)
        if call is None or call.state is not CallState.TALKING or call.operation is not None:
            return None
        return member[0], member[1], view.call_id

    def _refresh(self) -> None:
        self._attr_available = self._pushable() is not None

    async def async_press(self) -> None:
        member = self._member()
        if member is None:
            raise validation_error("group_member_gone")
        view = self.hub.device_call(self.device_id)
        if view is None:
            raise validation_error("no_call", name=self.hub.device_label(member[1]))
        try:
            self.hub.pbx.push(view.call_id, device=member[1], group=member[0])
        except HandoffError as err:
            raise self._refused(err, member[1]) from err


class GroupPullButton(_MemberButton):
    """Pull the group's call in progress to the member."""

    def _refresh(self) -> None:
        member = self._member()
        if member is None or not self.hub.device_bindings(self.device_id):
            self._attr_available = False
            return
        holder = self.hub.pbx.group_call_holder(member[0])
        self._attr_available = (
            holder is not None
            and holder != member[1]
            and self.hub.device_call(self.device_id) is None
        )

    async def async_press(self) -> None:
        member = self._member()
        if member is None:
            raise validation_error("group_member_gone")
        try:
            self.hub.pbx.pull(member[1])
        except HandoffError as err:
            raise self._refused(err, member[1]) from err
