"""Personal Ring Groups as targets in Home Assistant: ``callflip.announce`` to a group (its
present, free members ring; the response names the phone that answered; translated refusals),
and a trunk number (DID) that rings a group in the trunk options (the group in the destination
list, the PBX's DID naming the group, a gone group refused on its field)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_TRANSFER
from custom_components.callflip.group_options import group_identifier
from custom_components.callflip.hub import device_identifier

from .sip_client import SipPhone
from .test_announce import TONE, announce
from .test_calls import answered_call, registered
from .test_groups import GROUP
from .test_play import ha_id
from .test_trunks import GOOD_TRUNK
from .tone_tts import ToneTts, async_setup_tone_tts

STRINGS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "custom_components" / "callflip" / "strings.json").read_text()
)


@pytest.fixture
def config_entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    """The household with the group Home (Alice's desk and mobile, Bob's softphone) and a
    trunk without numbers."""
    trunk = {**GOOD_TRUNK, "id": "t1", "dids": []}
    hass.config_entries.async_update_entry(
        config_entry,
        options={**config_entry.options, "groups": [dict(GROUP)], "trunks": [trunk]},
    )
    return config_entry


@pytest.fixture
async def tone_tts(hass: HomeAssistant) -> ToneTts:
    return await async_setup_tone_tts(hass)


async def refused(hass: HomeAssistant, key: str, **data: Any) -> ServiceValidationError:
    with pytest.raises(ServiceValidationError) as caught:
        await announce(hass, **data)
    assert caught.value.translation_domain == DOMAIN
    assert caught.value.translation_key == key, caught.value
    assert key in STRINGS["exceptions"]
    return caught.value


# -- callflip.announce to a group -------------------------------------------------------------


async def test_an_announcement_to_a_group_rings_its_members(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    home = ha_id(loaded_entry, group_identifier("g-home"))
    task = hass.async_create_task(announce(hass, device_id=home, caller_id="Front door", **TONE))
    to_desk, to_bob = await desk.request("INVITE"), await bob.request("INVITE")
    assert to_bob.get("From").startswith('"Front door"')
    desk.ring(to_desk)
    await bob.answer(to_bob)
    assert (await bob.request("BYE")).method == "BYE"  # after the message
    response = await asyncio.wait_for(task, 10)
    assert response is not None
    assert response["answered"] is True
    assert response["device"] == "Bob softphone"
    assert response["device_id"] == ha_id(loaded_entry, device_identifier("d-bob-soft"))
    assert response["played"] == 1
    assert await desk.request("CANCEL")
    record = loaded_entry.runtime_data.hub.pbx.history()[-1]
    assert record.dialled == GROUP["pilot"]


async def test_an_absent_member_is_not_rung_by_an_announcement(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    tone_tts: ToneTts,
) -> None:
    await registered(make_phone, "alice-desk")  # registered, but absent from the group
    loaded_entry.runtime_data.hub.pbx.set_group_presence("Home", "alice-desk", False)
    home = ha_id(loaded_entry, group_identifier("g-home"))
    error = await refused(hass, "nothing_registered", device_id=home, **TONE)
    assert error.translation_placeholders == {"name": "Home"}
    assert loaded_entry.runtime_data.hub.pbx.calls() == []


async def test_a_group_with_nothing_registered_or_gone_is_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, tone_tts: ToneTts
) -> None:
    home = ha_id(loaded_entry, group_identifier("g-home"))
    error = await refused(hass, "nothing_registered", device_id=home, **TONE)
    assert error.translation_placeholders == {"name": "Home"}
    # A group device whose group is no longer configured.
    gone = dr.async_get(hass).async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={group_identifier("g-gone")}
    )
    await refused(hass, "unknown_group", device_id=gone.id, **TONE)
    assert tone_tts.requests == []  # refused before any audio was made


# -- a trunk number ringing a group -----------------------------------------------------------


async def _add_did(
    hass: HomeAssistant, entry: MockConfigEntry, values: dict[str, Any] | None = None
) -> dict[str, Any]:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "trunks"}
    )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {"next_step_id": "add_did"}
    )
    if values is None:
        return dict(result)
    return dict(await hass.config_entries.options.async_configure(result["flow_id"], values))


async def test_a_number_may_ring_a_group(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    form = await _add_did(hass, loaded_entry)
    schema = form["data_schema"].schema
    selector = next(value for key, value in schema.items() if str(key) == "destination")
    values = {option["value"]: option["label"] for option in selector.config["options"]}
    assert values["group:g-home"] == "Home (150)"
    result = await _add_did(
        hass, loaded_entry, {"trunk": "t1", "number": "+4930333", "destination": "group:g-home"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    trunking = loaded_entry.runtime_data.hub.pbx.config.trunking
    assert trunking is not None
    (did,) = trunking.trunks[0].dids
    assert (did.number, did.destination, did.group) == ("+4930333", "group:Home", "Home")
    assert loaded_entry.options["trunks"][0]["dids"] == [
        {"number": "+4930333", "destination": "group:g-home"}
    ]


async def test_a_group_gone_before_the_number_is_saved_is_a_field_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    form = await _add_did(hass, loaded_entry)
    # The group is removed while the form is open (another window).
    hass.config_entries.async_update_entry(
        loaded_entry, options={**loaded_entry.options, "groups": []}
    )
    result = await hass.config_entries.options.async_configure(
        form["flow_id"], {"trunk": "t1", "number": "+4930333", "destination": "group:g-home"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"destination": "unknown_group_destination"}
    assert "unknown_group_destination" in STRINGS["options"]["error"]


async def test_a_stored_number_of_a_removed_group_rings_the_first_user(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> None:
    trunk = {
        **GOOD_TRUNK,
        "id": "t1",
        "dids": [{"number": "+4930333", "destination": "group:g-gone"}],
    }
    hass.config_entries.async_update_entry(
        config_entry, options={**config_entry.options, "trunks": [trunk]}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    trunking = config_entry.runtime_data.hub.pbx.config.trunking
    assert trunking is not None
    assert trunking.trunks[0].dids[0].destination == "Alice"
    await hass.config_entries.async_unload(config_entry.entry_id)


# -- callflip.transfer to a group -------------------------------------------------------------


async def test_the_transfer_action_passes_a_call_to_a_group(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """Bob talks to Alice's desk; the action passes him to the group Home: the desk is released,
    the one other free member (Alice's mobile) rings and takes the call."""
    events = async_capture_events(hass, EVENT_TRANSFER)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    await hass.services.async_call(
        DOMAIN,
        "transfer",
        {
            "device_id": ha_id(loaded_entry, device_identifier("d-alice-desk")),
            "target_device_id": ha_id(loaded_entry, group_identifier("g-home")),
        },
        blocking=True,
    )
    await desk.request("BYE")
    await mobile.answer(await mobile.request("INVITE"))
    await hass.async_block_till_done()
    assert [event.data["type"] for event in events] == ["transfer_started", "transfer_succeeded"]
    done = events[-1].data
    assert (done["target"], done["to_device"]) == (GROUP["pilot"], "alice-mobile")


async def test_the_transfer_action_to_a_gone_group_is_refused(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await answered_call(hass, bob, desk)
    gone = dr.async_get(hass).async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={group_identifier("g-gone")}
    )
    with pytest.raises(ServiceValidationError) as caught:
        await hass.services.async_call(
            DOMAIN,
            "transfer",
            {
                "device_id": ha_id(loaded_entry, device_identifier("d-alice-desk")),
                "target_device_id": gone.id,
            },
            blocking=True,
        )
    assert caught.value.translation_key == "unknown_group"
    assert loaded_entry.runtime_data.hub.pbx.calls()[0].operation is None
