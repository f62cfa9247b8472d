"""Every step of a call on a real hass with SIP phones: the bus event's fields, the call event
entities of users and phones, the device triggers with the fields as variables, the logbook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import Event, HomeAssistant, ServiceCall
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.callflip.const import DOMAIN, EVENT_CALL, EVENT_HANDOFF
from custom_components.callflip.hub import device_identifier, user_identifier
from custom_components.callflip.logbook import describe_call

from .sip_client import Dialog, SipPhone, sdp
from .test_calls import registered

ENTITIES = {
    "alice": "event.alice_calls",
    "bob": "event.bob_calls",
    "desk": "event.alice_desk_phone_calls",
    "mobile": "event.alice_mobile_calls",
    "soft": "event.bob_softphone_calls",
}
VARIABLES = (
    "step",
    "caller_name",
    "caller_number",
    "dialled",
    "answered_label",
    "outcome",
    "reason",
    "missed",
)


def follow(hass: HomeAssistant) -> dict[str, list[dict[str, Any]]]:
    """What each call event entity fired, in order (event type and attributes)."""
    fired: dict[str, list[dict[str, Any]]] = {name: [] for name in ENTITIES}
    by_entity = {entity_id: name for name, entity_id in ENTITIES.items()}

    def changed(event: Event[Any]) -> None:
        state = event.data["new_state"]
        if state is not None and state.attributes.get("event_type"):
            fired[by_entity[state.entity_id]].append(dict(state.attributes))

    async_track_state_change_event(hass, list(ENTITIES.values()), changed)
    return fired


def types(fired: list[dict[str, Any]]) -> list[str]:
    return [attributes["event_type"] for attributes in fired]


async def automations(hass: HomeAssistant, entry: MockConfigEntry) -> list[ServiceCall]:
    """Automations on every call-step trigger of Alice, her desk phone and her mobile."""
    hub = entry.runtime_data.hub
    owners = {
        "alice": hub.ha_device_id(user_identifier("u-alice")),
        "desk": hub.ha_device_id(device_identifier("d-alice-desk")),
        "mobile": hub.ha_device_id(device_identifier("d-alice-mobile")),
    }
    calls: list[ServiceCall] = async_mock_service(hass, "test", "automation")
    configs = []
    for owner, device_id in owners.items():
        assert device_id is not None
        triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, device_id)
        for trigger in triggers:
            if trigger["domain"] != DOMAIN or trigger["type"].startswith(("flip", "incoming")):
                continue
            data = {name: f"{{{{ trigger.{name} }}}}" for name in VARIABLES}
            data["who"] = f"{owner} {trigger['type']}"
            configs.append(
                {
                    "trigger": trigger,
                    "action": {"service": "test.automation", "data": data},
                }
            )
    assert await async_setup_component(hass, "automation", {"automation": configs})
    await hass.async_block_till_done()
    return calls


def reinvite(phone: SipPhone, dialog: Dialog, direction: str) -> None:
    """A hold (sendonly) or a resume (sendrecv) from ``phone`` in ``dialog``."""
    dialog.cseq += 1
    phone.send(
        f"INVITE {dialog.target} SIP/2.0",
        [
            phone._via(),
            "Max-Forwards: 70",
            f"From: {dialog.local}",
            f"To: {dialog.remote}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} INVITE",
            f"Contact: {phone.contact}",
        ],
        sdp(30100, direction=direction),
    )


async def hold_and_resume(
    hass: HomeAssistant, desk: SipPhone, bob: SipPhone, dialog: Dialog
) -> None:
    for direction, answer in (("sendonly", "recvonly"), ("sendrecv", "sendrecv")):
        reinvite(desk, dialog, direction)
        forwarded = await bob.request("INVITE")
        bob.respond(forwarded, 200, body=sdp(30000, direction=answer))
        ok = await desk.final_response("INVITE")
        assert ok.status == 200
        desk.send(
            f"ACK {dialog.target} SIP/2.0",
            [
                desk._via(),
                "Max-Forwards: 70",
                f"From: {dialog.local}",
                f"To: {dialog.remote}",
                f"Call-ID: {dialog.call_id}",
                f"CSeq: {dialog.cseq} ACK",
            ],
        )
        await bob.request("ACK")
        await hass.async_block_till_done()


async def test_every_step_of_an_answered_call(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """Bob calls Alice (101): both her phones ring, the desk answers, puts Bob on hold and
    back, and hangs up."""
    bus = async_capture_events(hass, EVENT_CALL)
    fired = follow(hass)
    triggered = await automations(hass, loaded_entry)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    outgoing = await bob.dial("101")
    to_desk = await desk.request("INVITE")
    to_mobile = await mobile.request("INVITE")
    desk.ring(to_desk)
    mobile.ring(to_mobile)
    await hass.async_block_till_done()
    dialog = await desk.answer(to_desk)
    await outgoing.answered()
    await hass.async_block_till_done()
    await hold_and_resume(hass, desk, bob, dialog)
    desk.hang_up(dialog)
    await bob.request("BYE")
    await hass.async_block_till_done()

    steps = [event.data["step"] for event in bus]
    assert [s for s in steps if s != "ending"] == [
        "incoming",
        "ringing",
        "answered",
        "held",
        "resumed",
        "ended",
    ]
    first, ringing = bus[0].data, bus[1].data
    assert first["caller_name"] == "Bob"
    assert first["caller_number"] == "102"  # Bob's extension, as the PBX presents him
    assert first["dialled"] == "101"
    assert sorted(ringing["phone_labels"]) == ["Alice desk phone", "Alice mobile"]
    ended = bus[-1].data
    assert ended["answered_label"] == "Alice desk phone"
    assert ended["outcome"] == "answered"
    assert isinstance(ended["duration"], float)
    assert ended["duration"] >= 0
    assert ended["missed"] is False

    call_steps = ["ringing", "answered", "held", "resumed", "ended"]
    assert types(fired["alice"]) == ["incoming", *call_steps]
    assert types(fired["bob"]) == ["dialled", *call_steps]
    assert types(fired["desk"]) == ["ringing", "answered", "held", "resumed", "ended"]
    assert types(fired["mobile"]) == ["ringing"]  # it stopped ringing when the desk answered
    assert types(fired["soft"]) == ["dialled", *call_steps]
    assert fired["alice"][0]["direction"] == "incoming"
    assert fired["bob"][0]["direction"] == "outgoing"
    last = fired["alice"][-1]
    assert last["caller_name"] == "Bob"
    assert last["answered_label"] == "Alice desk phone"
    assert last["outcome"] == "answered"
    assert "phone_ids" not in last  # the entity shows labels, not registry ids

    by_who = {call.data["who"]: call.data for call in triggered}
    assert sorted(by_who) == [
        "alice call_answered",
        "alice call_ended",
        "alice call_held",
        "alice call_resumed",
        "desk phone_answered",
        "desk phone_call_ended",
        "desk phone_ringing",
        "mobile phone_ringing",
    ]
    assert by_who["desk phone_answered"]["answered_label"] == "Alice desk phone"
    assert str(by_who["alice call_ended"]["caller_number"]) == "102"  # rendered as a number
    assert by_who["alice call_ended"]["outcome"] == "answered"
    assert by_who["mobile phone_ringing"]["caller_name"] == "Bob"

    lines = [describe_call(event.data)["message"] for event in bus]
    assert lines[0] == "Bob (bob-soft) dialled 101"
    assert lines[2] == "Alice (101) answered Bob (bob-soft) on Alice desk phone"
    assert lines[-1].startswith("call between Bob (bob-soft) and Alice (101) ended after ")


async def test_a_missed_call_and_a_flip(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, make_phone: Callable[..., SipPhone]
) -> None:
    """Alice's desk is busy for Bob: the missed-call trigger fires with the caller; later a
    flip of an answered call reaches Alice's and both phones' call events."""
    bus = async_capture_events(hass, EVENT_CALL)
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    fired = follow(hass)
    calls: list[ServiceCall] = async_mock_service(hass, "test", "automation")
    alice = loaded_entry.runtime_data.hub.ha_device_id(user_identifier("u-alice"))
    bob_id = loaded_entry.runtime_data.hub.ha_device_id(user_identifier("u-bob"))
    configs = [
        {
            "trigger": {"platform": "device", "domain": DOMAIN, "device_id": who, "type": kind},
            "action": {
                "service": "test.automation",
                "data": {"who": who, "caller": "{{ trigger.caller_name }}", "kind": kind},
            },
        }
        for who in (alice, bob_id)
        for kind in ("missed_call", "call_ended")
    ]
    assert await async_setup_component(hass, "automation", {"automation": configs})
    desk, bob = await registered(make_phone, "alice-desk", "bob-soft")
    outgoing = await bob.dial("101")
    invite = await desk.request("INVITE")
    desk.respond(invite, 486, tag="busy")
    await desk.request("ACK")
    refused = await bob.final_response("INVITE")
    outgoing.ack_failure(refused, 2)
    await hass.async_block_till_done()
    ended = bus[-1].data
    assert ended["missed"] is True
    assert ended["outcome"] == "busy"
    assert describe_call(ended)["message"].startswith(
        "call between Bob (bob-soft) and Alice (101) ended (busy)"
    )
    assert sorted((c.data["who"] == alice, c.data["kind"]) for c in calls) == [
        (False, "call_ended"),  # Bob's call ended, and he did not miss it
        (True, "call_ended"),
        (True, "missed_call"),
    ]
    assert all(c.data["caller"] == "Bob" for c in calls)
    assert types(fired["alice"])[-1] == "ended"
    assert fired["alice"][-1]["missed"] is True

    # A flip: the steps of a handoff reach the user and both phones.
    mobile = (await registered(make_phone, "alice-mobile"))[0]
    outgoing = await bob.dial("alice-desk")
    to_desk = await desk.request("INVITE")
    await desk.answer(to_desk)
    await outgoing.answered()
    await hass.async_block_till_done()
    await hass.services.async_call(
        DOMAIN,
        "flip",
        {
            "device_id": alice,
            "target_device_id": loaded_entry.runtime_data.hub.ha_device_id(
                device_identifier("d-alice-mobile")
            ),
        },
        blocking=True,
    )
    to_mobile = await mobile.request("INVITE")
    mobile.respond(to_mobile, 603, tag="declined")
    await mobile.request("ACK")
    await hass.async_block_till_done()
    assert [h.data["type"] for h in handoffs] == ["flip_started", "flip_failed"]
    assert types(fired["alice"])[-2:] == ["flip_started", "flip_failed"]
    assert types(fired["desk"])[-2:] == ["flip_started", "flip_failed"]
    assert types(fired["mobile"])[-2:] == ["flip_started", "flip_failed"]
    assert fired["mobile"][-1]["to_label"] == "Alice mobile"
