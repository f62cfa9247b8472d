"""The transfer settings in the options flow: applied to the running PBX, kept over a restart,
every kind of bad answer refused with its own translated field error."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from pytest_homeassistant_custom_component.common import MockConfigEntry

from sip_core.config import TransferSettings


async def transfer_form(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, Any]:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert "transfer" in result["menu_options"]
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "transfer"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "transfer"
    return dict(result)


async def transfer_step(
    hass: HomeAssistant, entry: MockConfigEntry, **answers: object
) -> dict[str, Any]:
    form = await transfer_form(hass, entry)
    answers = {"preset": "default", "timeout": 30, "recall_timeout": 30, **answers}
    return dict(await hass.config_entries.options.async_configure(form["flow_id"], answers))


async def test_transfer_options_apply_live_and_survive_a_restart(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.transfer == TransferSettings()
    users = loaded_entry.options["users"]
    result = await transfer_step(
        hass, loaded_entry, preset="voipnow", cancel_code="#9", timeout=20, recall_timeout=15
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.options["transfer"] == {
        "preset": "voipnow",
        "cancel_code": "#9",
        "timeout": 20,
        "recall_timeout": 15,
    }
    assert loaded_entry.options["users"] == users
    assert loaded_entry.runtime_data.hub.pbx is pbx  # applied, not restarted
    assert pbx.config.transfer == TransferSettings(
        blind_code="#1",
        attended_code="*2",
        timeout=20,
        recall_timeout=15,
        preset="voipnow",
        complete_code="*3",
        cancel_code="#9",
    )
    # The form shows what is in force: the preset, the times, the code set by hand.
    form = await transfer_form(hass, loaded_entry)
    defaults = {
        str(key): key.default() if callable(key.default) else None
        for key in form["data_schema"].schema
    }
    assert defaults["preset"] == "voipnow"
    assert defaults["timeout"] == 20
    suggested = {
        str(key): (key.description or {}).get("suggested_value")
        for key in form["data_schema"].schema
    }
    assert suggested["cancel_code"] == "#9"
    assert suggested["blind_code"] is None
    hass.config_entries.options.async_abort(form["flow_id"])
    # A restart reads them back.
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    restarted = loaded_entry.runtime_data.hub.pbx
    assert restarted is not pbx
    assert restarted.config.transfer.blind_code == "#1"
    assert restarted.config.transfer.cancel_code == "#9"
    # Editing users afterwards keeps them.
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "remove_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"user": users[1]["id"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert loaded_entry.options["transfer"]["preset"] == "voipnow"
    assert loaded_entry.runtime_data.hub.pbx.config.transfer.blind_code == "#1"


@pytest.mark.parametrize(
    "case",
    [
        # the preset's blind code *2 would start *23
        ({"complete_code": "*23"}, "complete_code", "code_conflict", "one starts the other"),
        # the VoipNow preset's attended code is *2, which starts the blind code set by hand
        (
            {"preset": "voipnow", "blind_code": "*21"},
            "base",
            "code_conflict",
            "one starts the other",
        ),
        ({"attended_code": "101"}, "attended_code", "code_conflict", "extension"),
        ({"blind_code": "x1"}, "blind_code", "invalid_transfer", "keypad keys"),
        ({"cancel_code": "*123456789"}, "cancel_code", "invalid_transfer", "keypad keys"),
    ],
)
async def test_bad_transfer_options_are_refused_with_a_field_error(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    case: tuple[dict[str, Any], str, str, str],
) -> None:
    answers, field, error, reason = case
    pbx = loaded_entry.runtime_data.hub.pbx
    result = await transfer_step(hass, loaded_entry, **answers)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}
    assert reason in result["description_placeholders"]["error"]
    assert "transfer" not in loaded_entry.options
    assert pbx.config.transfer == TransferSettings()


@pytest.mark.parametrize(
    "answers", [{"timeout": 0}, {"recall_timeout": 3601}, {"preset": "asterisk"}]
)
async def test_out_of_range_times_and_unknown_presets_are_refused_by_the_form(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, answers: dict[str, Any]
) -> None:
    with pytest.raises(InvalidData):
        await transfer_step(hass, loaded_entry, **answers)
    assert "transfer" not in loaded_entry.options


async def test_a_new_extension_may_not_take_a_transfer_code(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await transfer_step(hass, loaded_entry, blind_code="55")
    assert result["type"] is FlowResultType.CREATE_ENTRY
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_user"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"name": "Dana", "extension": "55", "flip": "user"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_config"}
    assert "extension" in result["description_placeholders"]["error"]
