"""Feature codes set in the options flow are checked against every other code (sip_core's one
check, `sip_core.config.check_feature_codes`): a transfer code clashing with the handoff code,
and a group's pilot clashing with a transfer code set in the options, are refused with a
translated field error naming the clashing code."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.translation import async_get_translations
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.const import DOMAIN
from sip_core.config import TransferSettings

from .test_transfer_options import transfer_step


async def field_error_text(hass: HomeAssistant, key: str, placeholders: dict[str, Any]) -> str:
    """The English text the form shows for an options error, with its placeholders."""
    strings = await async_get_translations(hass, "en", "options", [DOMAIN])
    template = strings[f"component.{DOMAIN}.options.error.{key}"]
    return str(template.format(**placeholders))


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({"blind_code": "*5"}, "blind_code"),  # the very handoff code
        ({"attended_code": "*55"}, "attended_code"),  # the handoff code starts it
        ({"complete_code": "*5"}, "complete_code"),  # a consultation's code too
    ],
)
async def test_a_transfer_code_clashing_with_the_handoff_code_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    answers: dict[str, str],
    field: str,
) -> None:
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.handoff.code == "*5"
    result = await transfer_step(hass, loaded_entry, **answers)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: "code_conflict"}
    placeholders = result["description_placeholders"]
    assert placeholders["clash"] == "handoff.code '*5'"
    assert "cannot both be codes" in placeholders["error"]
    text = await field_error_text(hass, "code_conflict", placeholders)
    assert text.startswith("Clashes with handoff.code '*5':")
    assert "transfer" not in loaded_entry.options
    assert pbx.config.transfer == TransferSettings()


async def test_a_transfer_code_apart_from_every_other_code_is_taken(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await transfer_step(hass, loaded_entry, blind_code="*6")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.hub.pbx.config.transfer.blind_code == "*6"


async def test_a_pilot_clashing_with_a_transfer_code_of_the_options_is_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """The group's form checks its pilot against the transfer codes set in the options too,
    and puts the error on the pilot, naming the code."""
    result = await transfer_step(hass, loaded_entry, blind_code="250")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_group"}
    )
    group = {
        "name": "Office",
        "pilot": "250",
        "members": ["d-bob-soft", "d-alice-desk"],
        "ring_timer": 15,
        "no_answer": "none",
    }
    result = await hass.config_entries.options.async_configure(result["flow_id"], group)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"pilot": "code_conflict"}
    placeholders = result["description_placeholders"]
    assert placeholders["clash"] == "transfer.blind_code '250'"
    text = await field_error_text(hass, "code_conflict", placeholders)
    assert text.startswith("Clashes with transfer.blind_code '250':")
    assert "groups" not in loaded_entry.options
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**group, "pilot": "260"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    office = loaded_entry.runtime_data.hub.pbx.config.group("Office")
    assert office is not None
    assert office.pilot == "260"
