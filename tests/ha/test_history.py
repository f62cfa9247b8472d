"""Call history survives a reload and a restart of Home Assistant; a call cut short by either is
ended with a record saying why, and a registration under way completes afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.callflip.const import DOMAIN, EVENT_CALL
from custom_components.callflip.diagnostics import async_get_config_entry_diagnostics
from custom_components.callflip.history import HISTORY_LIMIT

from .sip_client import SipPhone

LAST_CALL = "sensor.callflip_test_home_arpa_last_call"


def _key(entry: MockConfigEntry) -> str:
    return f"{DOMAIN}.{entry.entry_id}.history"


async def _registered(make_phone: Callable[..., SipPhone], *usernames: str) -> list[SipPhone]:
    phones = []
    for username in usernames:
        phone = make_phone(username)
        await phone.open()
        assert (await phone.register(expires=600)).status == 200
        phones.append(phone)
    return phones


async def test_a_reload_mid_call_ends_it_with_a_record_and_keeps_it(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    hass_storage: dict[str, Any],
) -> None:
    """Bob is talking to Alice's desk when the entry reloads: both phones get a BYE, the call is
    recorded as failed "the PBX is stopping", and after the reload the record is still there (in
    the store, the last-call sensor and the diagnostics); the bindings are kept too."""
    events = async_capture_events(hass, EVENT_CALL)
    desk, bob = await _registered(make_phone, "alice-desk", "bob-soft")
    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    await desk.answer(invite)
    await outgoing.answered()
    await hass.async_block_till_done()
    assert hass.states.get(LAST_CALL).state == "unknown"

    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()

    assert (await desk.request("BYE")).method == "BYE"
    assert (await bob.request("BYE")).method == "BYE"
    ended = [event.data for event in events if event.data["state"] == "ended"]
    assert [data["reason"] for data in ended] == ["the PBX is stopping"]

    stored = hass_storage[_key(loaded_entry)]["data"]["calls"]
    assert len(stored) == 1
    assert stored[0]["outcome"] == "failed"
    assert stored[0]["reason"] == "the PBX is stopping"
    assert stored[0]["caller"] == "bob-soft"
    assert stored[0]["answered_at"] is not None

    state = hass.states.get(LAST_CALL)
    assert state is not None
    assert state.state == "failed"
    assert state.attributes["reason"] == "the PBX is stopping"
    assert state.attributes["caller"] == "Bob softphone"
    assert state.attributes["calls_recorded"] == 1
    pbx = loaded_entry.runtime_data.hub.pbx
    assert [record.reason for record in pbx.history()] == ["the PBX is stopping"]
    assert {binding.username for binding in pbx.bindings()} == {"alice-desk", "bob-soft"}
    diagnostics = await async_get_config_entry_diagnostics(hass, loaded_entry)
    assert [record["reason"] for record in diagnostics["history"]] == ["the PBX is stopping"]

    # The restored PBX carries calls again, and the next record joins the restored one.
    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    dialog = await desk.answer(invite)
    await outgoing.answered()
    desk.hang_up(dialog)
    await desk.final_response("BYE")
    await hass.async_block_till_done()
    assert hass.states.get(LAST_CALL).state == "answered"
    assert hass.states.get(LAST_CALL).attributes["calls_recorded"] == 2


async def test_a_registration_under_way_completes_after_a_reload(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """The phone got its challenge from the old PBX; its answer to it reaches the new one, which
    calls the nonce stale (no password guess counted), and the phone's retry registers."""
    phone = make_phone("alice-mobile")
    await phone.open()
    challenge = await phone._send_register(600, None, phone.contact)
    assert challenge.status == 401
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()

    old = challenge.all("WWW-Authenticate")[0]
    answer = phone._authorization(old, "REGISTER", f"sip:{phone.domain}")
    stale = await phone._send_register(600, answer, phone.contact)
    assert stale.status == 401
    assert any("stale=true" in value.lower() for value in stale.all("WWW-Authenticate")), stale
    assert (await phone.register(expires=600)).status == 200
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.alice_mobile_registered").state == "on"


def _record(number: int, now: float) -> dict[str, Any]:
    return {
        "call_id": f"saved-{number}",
        "caller": "bob-soft",
        "caller_user": "Bob",
        "dialled": "101",
        "callee_user": "Alice",
        "callee_device": "alice-desk",
        "answered_device": "alice-desk",
        "started_at": now - 100 + number,
        "answered_at": now - 90 + number,
        "ended_at": now - 30 + number,
        "outcome": "answered",
        "reason": "the caller hung up",
        "handoffs": [
            {
                "from_device": "alice-desk",
                "to_device": "alice-mobile",
                "started_at": now - 60,
                "ended_at": now - 59,
                "succeeded": True,
                "reason": "",
            }
        ],
    }


async def test_history_restored_at_startup_is_bounded_and_skips_broken_records(
    hass: HomeAssistant, config_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """What an earlier run saved is the PBX's history as soon as the entry is set up; a broken
    record is skipped, and the store keeps only the newest HISTORY_LIMIT records."""
    now = time.time()
    saved = [_record(number, now) for number in range(HISTORY_LIMIT + 5)]
    saved.insert(3, {"call_id": "broken", "outcome": "no-such-outcome"})
    hass_storage[_key(config_entry)] = {
        "version": 1,
        "minor_version": 1,
        "key": _key(config_entry),
        "data": {"calls": saved},
    }
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()

    hub = config_entry.runtime_data.hub
    assert hub.history is not None
    kept = hub.history.records()
    assert len(kept) == HISTORY_LIMIT
    assert kept[-1].call_id == f"saved-{HISTORY_LIMIT + 4}"
    assert kept[-1].handoffs[0].to_device == "alice-mobile"
    assert "broken" not in {record.call_id for record in kept}
    assert hub.pbx.history()[-1].call_id == kept[-1].call_id
    state = hass.states.get(LAST_CALL)
    assert state is not None
    assert state.state == "answered"
    assert state.attributes["flips"] == 1
    assert state.attributes["callee_device"] == "Alice desk phone"

    await hass.config_entries.async_unload(config_entry.entry_id)
    await hass.async_block_till_done()
    written = hass_storage[_key(config_entry)]["data"]["calls"]
    assert len(written) == HISTORY_LIMIT
    assert written[0]["call_id"] == "saved-5"


async def test_removing_the_entry_forgets_its_history(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert _key(loaded_entry) in hass_storage
    await hass.config_entries.async_remove(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert _key(loaded_entry) not in hass_storage


async def test_home_assistant_stopping_mid_call_saves_the_record(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    hass_storage: dict[str, Any],
) -> None:
    """Home Assistant shutting down (its stop event) ends the call the same way and saves."""
    desk, bob = await _registered(make_phone, "alice-desk", "bob-soft")
    outgoing = await bob.dial("alice-desk")
    invite = await desk.request("INVITE")
    await desk.answer(invite)
    await outgoing.answered()
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await hass.async_block_till_done()
    assert (await bob.request("BYE")).method == "BYE"
    stored = hass_storage[_key(loaded_entry)]["data"]["calls"]
    assert [(record["outcome"], record["reason"]) for record in stored] == [
        ("failed", "the PBX is stopping")
    ]
    bindings = hass_storage[f"{DOMAIN}.{loaded_entry.entry_id}.bindings"]["data"]["bindings"]
    assert {record["username"] for record in bindings} == {"alice-desk", "bob-soft"}
