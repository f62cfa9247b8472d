"""Repair flows: the "banned address" issue can lift its ban (the same as ``callflip.unban``)."""

from __future__ import annotations

from homeassistant import data_entry_flow
from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from .const import DOMAIN
from .security import ATTR_ADDRESS, BAN_ISSUE_PREFIX, unban_address


class UnbanRepairFlow(ConfirmRepairFlow):
    """Confirm, then lift the ban named by the issue (it may have ended meanwhile)."""

    def __init__(self, address: str, placeholders: dict[str, str]) -> None:
        super().__init__()
        self._address = address
        self._placeholders = {**placeholders, ATTR_ADDRESS: address}

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> data_entry_flow.FlowResult:
        if user_input is not None:
            unban_address(self.hass, self._address, missing_ok=True)
            return self.async_create_entry(data={})
        return self.async_show_form(step_id="confirm", description_placeholders=self._placeholders)


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The flow that fixes one of callflip's issues (only ban issues are fixable)."""
    issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
    placeholders = dict(issue.translation_placeholders or {}) if issue is not None else {}
    return UnbanRepairFlow(issue_id.removeprefix(BAN_ISSUE_PREFIX), placeholders)
