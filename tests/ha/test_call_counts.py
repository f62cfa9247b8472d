"""Calls today, missed calls and the last call, per user and for the whole PBX, from the call
history: real calls through the PBX, a day boundary at local midnight, and the counts surviving
a reload of the entry and a restart of Home Assistant (the history is restored from its store)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.diagnostics import async_get_config_entry_diagnostics

from .sip_client import SipPhone
from .test_calls import answered_call, registered

PBX = "sensor.callflip_test_home_arpa"
SENSORS = {
    "pbx_calls": f"{PBX}_calls_today",
    "pbx_missed": f"{PBX}_missed_calls_today",
    "alice_calls": "sensor.alice_calls_today",
    "alice_missed": "sensor.alice_missed_calls_today",
    "alice_last": "sensor.alice_last_call",
    "bob_calls": "sensor.bob_calls_today",
    "bob_missed": "sensor.bob_missed_calls_today",
    "bob_last": "sensor.bob_last_call",
}


def states(hass: HomeAssistant) -> dict[str, str]:
    found = {}
    for name, entity_id in SENSORS.items():
        state = hass.states.get(entity_id)
        assert state is not None, entity_id
        found[name] = state.state
    return found


def counts(hass: HomeAssistant) -> dict[str, str]:
    return {k: v for k, v in states(hass).items() if not k.endswith("_last")}


async def busy_call(hass: HomeAssistant, bob: SipPhone, desk: SipPhone) -> None:
    """Bob calls Alice; her only registered phone is busy (486)."""
    outgoing = await bob.dial("101")
    invite = await desk.request("INVITE")
    desk.respond(invite, 486, tag="busy")
    await desk.request("ACK")
    refused = await bob.final_response("INVITE")
    assert refused.status == 486
    outgoing.ack_failure(refused, 2)
    await hass.async_block_till_done()


async def hung_up_call(
    hass: HomeAssistant, caller: SipPhone, callee: SipPhone, number: str
) -> None:
    _outgoing, dialog = await answered_call(hass, caller, callee, number=number)
    callee.hang_up(dialog)
    await caller.request("BYE")
    await hass.async_block_till_done()


def saved_record(call_id: str, started: float, outcome: str, **fields: Any) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "caller": "bob-soft",
        "caller_user": "Bob",
        "dialled": "101",
        "callee_user": "Alice",
        "callee_device": None,
        "answered_device": None,
        "started_at": started,
        "answered_at": None,
        "ended_at": started + 20,
        "outcome": outcome,
        "reason": "",
        "handoffs": [],
        **fields,
    }


async def test_calls_and_missed_calls_of_each_user_and_of_the_pbx(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    assert counts(hass) == dict.fromkeys(counts(hass), "0")
    assert states(hass)["alice_last"] == "unknown"
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await busy_call(hass, bob, desk)
    assert counts(hass) == {
        "pbx_calls": "1",
        "pbx_missed": "1",
        "alice_calls": "1",
        "alice_missed": "1",
        "bob_calls": "1",
        "bob_missed": "0",  # Bob made the call: Alice missed it, not he
    }
    missed = hass.states.get(SENSORS["alice_missed"])
    assert missed is not None
    assert missed.attributes["last_caller"] == "Bob"
    assert [call["outcome"] for call in missed.attributes["calls"]] == ["busy"]
    assert missed.attributes["last_reset"] == dt_util.start_of_local_day().isoformat()
    assert missed.attributes["state_class"] == "total"

    await hung_up_call(hass, desk, bob, "102")  # Alice calls Bob, who answers
    assert counts(hass) == {
        "pbx_calls": "2",
        "pbx_missed": "1",
        "alice_calls": "2",
        "alice_missed": "1",
        "bob_calls": "2",
        "bob_missed": "0",
    }
    alice_last = hass.states.get(SENSORS["alice_last"])
    assert alice_last is not None
    assert alice_last.state == "answered"
    assert alice_last.attributes["caller"] == "Alice"
    assert alice_last.attributes["callee_user"] == "Bob"
    calls = hass.states.get(SENSORS["alice_calls"])
    assert calls is not None
    assert calls.attributes["answered"] == 1


async def test_yesterdays_calls_are_not_counted_and_midnight_resets_the_counts(
    hass: HomeAssistant,
    config_entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
) -> None:
    """The history a previous run saved counts from local midnight on: a call at 23:59
    yesterday is the user's last call, not one of today's; at the next midnight, today's
    calls become yesterday's and the counts go back to 0."""
    midnight = dt_util.start_of_local_day()
    freezer.move_to(midnight + timedelta(hours=10))
    key = f"{DOMAIN}.{config_entry.entry_id}.history"
    yesterday = (midnight - timedelta(minutes=1)).timestamp()
    today = (midnight + timedelta(hours=9)).timestamp()
    hass_storage[key] = {
        "version": 1,
        "key": key,
        "data": {
            "calls": [
                saved_record("y1", yesterday, "no_answer"),
                saved_record("t1", today, "declined"),
                saved_record("t2", today + 60, "cancelled"),  # Bob gave up: not a missed call
                saved_record(
                    "t3",
                    today + 120,
                    "no_answer",
                    caller="trunk:provider",
                    caller_user=None,
                    caller_party='"Grandma" <sip:+4930123456@provider.example>',
                ),
            ]
        },
    }
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert counts(hass) == {
        "pbx_calls": "3",
        "pbx_missed": "2",
        "alice_calls": "3",
        "alice_missed": "2",
        "bob_calls": "2",
        "bob_missed": "0",
    }
    missed = hass.states.get(SENSORS["alice_missed"])
    assert missed is not None
    assert missed.attributes["last_caller"] == "Grandma (+4930123456)"
    assert [call["outcome"] for call in missed.attributes["calls"]] == ["no_answer", "declined"]
    bob_last = hass.states.get(SENSORS["bob_last"])
    assert bob_last is not None
    assert bob_last.state == "cancelled"

    next_midnight = midnight + timedelta(days=1)
    freezer.move_to(next_midnight)
    async_fire_time_changed(hass, next_midnight)
    await hass.async_block_till_done()
    assert counts(hass) == dict.fromkeys(counts(hass), "0")
    reset = hass.states.get(SENSORS["pbx_calls"])
    assert reset is not None
    assert reset.attributes["last_reset"] == next_midnight.isoformat()
    assert states(hass)["alice_last"] == "no_answer"  # the last call stays the last call
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_counts_survive_a_reload_and_a_restart(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    hass_storage: dict[str, Any],
) -> None:
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    await busy_call(hass, bob, desk)
    await hung_up_call(hass, bob, desk, "101")
    before = states(hass)
    assert before["alice_missed"] == "1"
    assert before["pbx_calls"] == "2"

    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert states(hass) == before

    # A restart: the entry unloads (the store is written), and a new run reads the store.
    hub_before = loaded_entry.runtime_data.hub
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    saved = hass_storage[f"{DOMAIN}.{loaded_entry.entry_id}.history"]["data"]["calls"]
    assert [call["outcome"] for call in saved] == ["busy", "answered"]
    assert await hass.config_entries.async_setup(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.hub is not hub_before
    assert states(hass) == before
    diagnostics = await async_get_config_entry_diagnostics(hass, loaded_entry)
    assert [record["outcome"] for record in diagnostics["history"]] == ["busy", "answered"]
    assert diagnostics["call_counts"]["Alice"] == {"calls_today": 2, "missed_today": 1}
    assert diagnostics["call_counts"]["pbx"] == {"calls_today": 2, "missed_today": 1}
