"""The bundled blueprints: installed into the configuration's blueprints folder without touching a
user's copy, loaded and validated by Home Assistant's blueprint machinery, and automations made
from them acting on real calls through the PBX."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.automation.helpers import async_get_blueprints
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.const import EVENT_CALL_SERVICE
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.callflip.bundled_blueprints import (
    async_install_blueprints,
    bundled_blueprints,
    install,
)
from custom_components.callflip.const import DOMAIN, EVENT_CALL, EVENT_HANDOFF

from .sip_client import SipPhone
from .test_calls import answered_call, ha_id, registered

PRESENCE = "callflip/move_call_on_presence.yaml"
MISSED = "callflip/missed_call_notification.yaml"


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def _installed(hass: HomeAssistant, path: str) -> Path:
    return Path(hass.config.path("blueprints", "automation", path))


async def _automation(hass: HomeAssistant, path: str, inputs: dict[str, Any]) -> None:
    """An automation made from a bundled blueprint, as the editor saves it (the blueprints put
    in place first: callflip's set-up ran before automations were loaded)."""
    await hass.async_add_executor_job(
        install, Path(hass.config.path("blueprints")), {"automation"}, {}
    )
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": {
                "id": "from_blueprint",
                "alias": "From blueprint",
                "use_blueprint": {"path": path, "input": inputs},
            }
        },
    )
    await hass.async_block_till_done()
    state = hass.states.get("automation.from_blueprint")
    assert state is not None
    assert state.state == "on", state


async def test_blueprints_installed_where_home_assistant_reads_them(hass: HomeAssistant) -> None:
    """Once automations are loaded, callflip's set-up puts both blueprints in
    blueprints/automation/callflip/, Home Assistant's own examples still arrive, and the
    blueprint machinery loads both without an error."""
    assert await async_setup_component(hass, "automation", {})
    await hass.async_block_till_done()
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()

    bundled = bundled_blueprints()
    for path, name in (
        (PRESENCE, "Move my call when I leave or arrive"),
        (MISSED, "Missed call notification"),
    ):
        installed = await hass.async_add_executor_job(_installed(hass, path).read_bytes)
        assert installed == bundled[f"automation/{path}"]
        blueprint = await async_get_blueprints(hass).async_get_blueprint(path)
        assert blueprint.name == name
        assert blueprint.validate() is None  # supported by this Home Assistant
    assert await hass.async_add_executor_job(
        _installed(hass, "homeassistant/motion_light.yaml").exists
    )
    loaded = await async_get_blueprints(hass).async_get_blueprints()
    assert {PRESENCE, MISSED} <= set(loaded)
    assert not [path for path, result in loaded.items() if not hasattr(result, "inputs")]


async def test_nothing_installed_without_automations(hass: HomeAssistant) -> None:
    """Without the automation integration the blueprints folder is not created: Home Assistant
    adds its examples only to a folder that does not exist yet."""
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert not await hass.async_add_executor_job(Path(hass.config.path("blueprints")).exists)


def test_install_keeps_edits_and_deletions_and_updates_untouched_copies(tmp_path: Path) -> None:
    """A copy as callflip wrote it follows the bundled version; an edited one and a deleted one
    are the user's."""
    bundled = bundled_blueprints()
    assert set(bundled) == {f"automation/{PRESENCE}", f"automation/{MISSED}"}
    folder = tmp_path / "blueprints"
    installed: dict[str, str] = {}
    report = install(folder, {"automation"}, installed)
    assert sorted(report.written) == sorted(bundled)
    assert installed == {path: _digest(text) for path, text in bundled.items()}

    # Nothing to do the second time.
    again = install(folder, {"automation"}, installed)
    assert (again.written, again.updated, again.kept) == ([], [], [])

    presence, missed = folder / "automation" / PRESENCE, folder / "automation" / MISSED
    # An older version callflip installed and nobody touched: replaced by the bundled one.
    presence.write_text("blueprint: {name: old}\n", encoding="utf-8")
    installed[f"automation/{PRESENCE}"] = _digest(presence.read_bytes())
    # The user's own edit: kept, and so is the record of what callflip wrote.
    missed.write_text("blueprint: {name: mine}\n", encoding="utf-8")
    report = install(folder, {"automation"}, installed)
    assert report.updated == [f"automation/{PRESENCE}"]
    assert report.kept == [f"automation/{MISSED}"]
    assert presence.read_bytes() == bundled[f"automation/{PRESENCE}"]
    assert missed.read_text(encoding="utf-8") == "blueprint: {name: mine}\n"

    # Deleted by the user: not brought back.
    presence.unlink()
    report = install(folder, {"automation"}, installed)
    assert report.removed_by_user == [f"automation/{PRESENCE}"]
    assert not presence.exists()

    # A domain that is not loaded gets nothing.
    other = tmp_path / "other"
    assert install(other, {"script"}, {}).written == []
    assert not other.exists()


async def test_updated_blueprint_reloads_automations(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """After an update of an untouched copy, automations are reloaded to run the new version."""
    old = b"blueprint: {name: old, domain: automation}\n"

    def prepare() -> None:
        Path(hass.config.path("configuration.yaml")).write_text("automation: []\n", "utf-8")
        presence = _installed(hass, PRESENCE)
        presence.parent.mkdir(parents=True)
        presence.write_bytes(old)

    await hass.async_add_executor_job(prepare)
    assert await async_setup_component(hass, "automation", {})
    await hass.async_block_till_done()
    hass_storage["callflip.blueprints"] = {
        "version": 1,
        "key": "callflip.blueprints",
        "data": {"installed": {f"automation/{PRESENCE}": _digest(old)}},
    }
    reloads = async_capture_events(hass, EVENT_CALL_SERVICE)
    report = await async_install_blueprints(hass)
    assert report.updated == [f"automation/{PRESENCE}"]
    assert report.written == [f"automation/{MISSED}"]
    assert [(e.data["domain"], e.data["service"]) for e in reloads] == [("automation", "reload")]
    assert hass_storage["callflip.blueprints"]["data"]["installed"] == {
        path: _digest(text) for path, text in bundled_blueprints().items()
    }


async def test_unwritable_folder_is_a_warning(
    hass: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    """A blueprints folder that cannot be written is reported, and callflip sets up anyway."""

    def block() -> None:
        blocked = _installed(hass, "callflip")
        blocked.parent.mkdir(parents=True)
        blocked.write_text("a file where the folder should be\n", "utf-8")

    await hass.async_add_executor_job(block)
    assert await async_setup_component(hass, "automation", {})
    await hass.async_block_till_done()
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert "Could not put callflip's blueprints in" in caplog.text
    assert DOMAIN in hass.config.components


async def test_device_conditions_of_a_person(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """A person offers "is talking" and "is in a call", a phone neither; both follow the call."""
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    desk_device = ha_id(hass, loaded_entry, "device-d-alice-desk")
    conditions = await async_get_device_automations(hass, DeviceAutomationType.CONDITION, alice)
    assert sorted(c["type"] for c in conditions if c["domain"] == DOMAIN) == [
        "is_in_call",
        "is_talking",
    ]
    on_desk = await async_get_device_automations(hass, DeviceAutomationType.CONDITION, desk_device)
    assert [c for c in on_desk if c["domain"] == DOMAIN] == []

    calls: list[ServiceCall] = async_mock_service(hass, "test", "checked")
    assert await async_setup_component(
        hass,
        "automation",
        {
            "automation": [
                {
                    "triggers": {"trigger": "event", "event_type": f"check_{kind}"},
                    "conditions": {
                        "condition": "device",
                        "domain": DOMAIN,
                        "device_id": alice,
                        "type": kind,
                    },
                    "actions": {"action": "test.checked", "data": {"kind": kind}},
                }
                for kind in ("is_talking", "is_in_call")
            ]
        },
    )

    async def check() -> list[str]:
        calls.clear()
        for kind in ("is_talking", "is_in_call"):
            hass.bus.async_fire(f"check_{kind}")
        await hass.async_block_till_done()
        return sorted(call.data["kind"] for call in calls)

    assert await check() == []
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    outgoing = await bob.dial("101")
    invite = await desk.request("INVITE")
    tag = desk.ring(invite)
    await bob.expect(lambda m: m.status == 180)
    await hass.async_block_till_done()
    assert await check() == ["is_in_call"]
    await desk.answer(invite, tag)
    await outgoing.answered()
    await hass.async_block_till_done()
    assert await check() == ["is_in_call", "is_talking"]


async def _presence_setup(hass: HomeAssistant, entry: MockConfigEntry) -> tuple[str, str, str]:
    alice = ha_id(hass, entry, "user-u-alice")
    mobile = ha_id(hass, entry, "device-d-alice-mobile")
    desk = ha_id(hass, entry, "device-d-alice-desk")
    hass.states.async_set("person.alice", "home")
    await _automation(
        hass,
        PRESENCE,
        {
            "person_entity": "person.alice",
            "callflip_person": alice,
            "leaving_phone": mobile,
            "arriving_phone": desk,
        },
    )
    return alice, mobile, desk


async def test_leaving_and_arriving_move_the_call(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """Alice talks on her desk phone and leaves: the automation flips the call to her mobile;
    she comes back: to her desk phone."""
    alice, mobile_id, desk_id = await _presence_setup(hass, loaded_entry)
    actions = async_capture_events(hass, EVENT_CALL_SERVICE)
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)

    hass.states.async_set("person.alice", "not_home")
    to_mobile = await mobile.request("INVITE")
    await hass.async_block_till_done()
    flips = [e.data for e in actions if e.data["domain"] == DOMAIN]
    assert flips == [
        {
            "domain": DOMAIN,
            "service": "flip",
            "service_data": {"device_id": [alice], "target_device_id": mobile_id},
        }
    ]
    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert [(e.data["type"], e.data["to_device"]) for e in handoffs] == [
        ("flip_started", "alice-mobile"),
        ("flip_succeeded", "alice-mobile"),
    ]

    hass.states.async_set("person.alice", "home")
    await desk.request("INVITE")
    await hass.async_block_till_done()
    flips = [e.data["service_data"] for e in actions if e.data["domain"] == DOMAIN]
    assert flips[-1] == {"device_id": [alice], "target_device_id": desk_id}
    assert [(e.data["type"], e.data["to_device"]) for e in handoffs][-1] == (
        "flip_started",
        "alice-desk",
    )


async def test_no_call_no_flip_no_error(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leaving without a call does nothing and logs no error; nor do restarts (unavailable) or
    moves that neither leave nor enter the zone. The same automation then moves a call."""
    alice, mobile_id, _desk_id = await _presence_setup(hass, loaded_entry)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    actions = async_capture_events(hass, EVENT_CALL_SERVICE)
    caplog.clear()
    for state in ("not_home", "work", "home", "unavailable", "not_home", "home"):
        hass.states.async_set("person.alice", state)
        await hass.async_block_till_done()
    assert [e.data for e in actions if e.data["domain"] == DOMAIN] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []

    await answered_call(hass, bob, desk)
    hass.states.async_set("person.alice", "not_home")
    await mobile.request("INVITE")
    await hass.async_block_till_done()
    assert [e.data["service_data"] for e in actions if e.data["domain"] == DOMAIN] == [
        {"device_id": [alice], "target_device_id": mobile_id}
    ]


async def test_direction_switched_off(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """With "when leaving" off, leaving during a call leaves the call where it is."""
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    hass.states.async_set("person.alice", "home")
    await _automation(
        hass,
        PRESENCE,
        {
            "person_entity": "person.alice",
            "callflip_person": alice,
            "leaving_phone": ha_id(hass, loaded_entry, "device-d-alice-mobile"),
            "move_when_leaving": False,
        },
    )
    actions = async_capture_events(hass, EVENT_CALL_SERVICE)
    desk, _mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    hass.states.async_set("person.alice", "not_home")
    await hass.async_block_till_done()
    assert [e.data for e in actions if e.data["domain"] == DOMAIN] == []
    active = hass.states.get("sensor.alice_active_call")
    assert active is not None
    assert active.attributes["device"] == "Alice desk phone"


async def test_missed_call_notified_answered_not(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """Bob's call that Alice's busy desk phone refuses is reported with Bob's name; his answered
    call is not; the event says how each ended."""
    notified: list[ServiceCall] = async_mock_service(hass, "notify", "alice_phone")
    ended = async_capture_events(hass, EVENT_CALL)
    await _automation(
        hass,
        MISSED,
        {
            "callflip_person": ha_id(hass, loaded_entry, "user-u-alice"),
            "notify_action": "notify.alice_phone",
        },
    )
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")

    outgoing = await bob.dial("101")
    invite = await desk.request("INVITE")
    desk.respond(invite, 486, tag="busy")
    await desk.request("ACK")
    refused = await bob.final_response("INVITE")
    assert refused.status == 486
    outgoing.ack_failure(refused, 2)
    await hass.async_block_till_done()
    assert [e.data["outcome"] for e in ended if e.data["state"] == "ended"] == ["busy"]
    assert len(notified) == 1
    assert notified[0].data["title"] == "Missed call"
    message = notified[0].data["message"]
    assert message.startswith("Bob called at ")
    assert len(message.removeprefix("Bob called at ")) == len("12:34")

    _outgoing, dialog = await answered_call(hass, bob, desk, number="101")
    desk.hang_up(dialog)
    await bob.request("BYE")
    await hass.async_block_till_done()
    assert [e.data["outcome"] for e in ended if e.data["state"] == "ended"] == ["busy", "answered"]
    assert all(e.data["outcome"] is None for e in ended if e.data["state"] != "ended")
    assert len(notified) == 1


async def test_leaving_another_zone(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """With a zone other than home, the person's state is the zone's name: going from the Office
    to home is leaving the Office."""
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    mobile_id = ha_id(hass, loaded_entry, "device-d-alice-mobile")
    hass.states.async_set("zone.office", "1", {"friendly_name": "Office"})
    hass.states.async_set("person.alice", "Office")
    await _automation(
        hass,
        PRESENCE,
        {
            "person_entity": "person.alice",
            "zone_entity": "zone.office",
            "callflip_person": alice,
            "leaving_phone": mobile_id,
            "arriving_phone": ha_id(hass, loaded_entry, "device-d-alice-desk"),
        },
    )
    actions = async_capture_events(hass, EVENT_CALL_SERVICE)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    hass.states.async_set("person.alice", "home")
    await mobile.request("INVITE")
    await hass.async_block_till_done()
    assert [e.data["service_data"] for e in actions if e.data["domain"] == DOMAIN] == [
        {"device_id": [alice], "target_device_id": mobile_id}
    ]
