"""Push and pull as call steps, and the group's push/pull buttons, with real SIP phones.

Bob calls Alice's desk phone, a member of the Personal Ring Group Home (with her mobile and
Bob's softphone). The group's "Push from Alice desk phone" button hands the call to the group;
the mobile answers. Every step is a ``callflip_handoff`` bus event, a logbook line, a device
trigger of Alice's with the step's fields as trigger variables, and an event on the call event
entities of Alice and of both phones (with the group). Then "Pull to Alice desk phone" brings the
call back. The buttons are available only while they can act; a press that cannot is refused
with a translated reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from homeassistant.components.button import DOMAIN as BUTTON_DOMAIN
from homeassistant.components.button import SERVICE_PRESS
from homeassistant.const import ATTR_ENTITY_ID, EVENT_STATE_CHANGED, STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant, ServiceCall
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_mock_service,
)

from custom_components.callflip.const import EVENT_HANDOFF
from custom_components.callflip.logbook import describe_handoff

from .callflip_testing import find_device, household
from .sip_client import SipPhone
from .test_calls import answered_call, ha_id, registered
from .test_groups import GROUP

PUSH_DESK = "button.home_push_from_alice_desk_phone"
PUSH_MOBILE = "button.home_push_from_alice_mobile"
PULL_DESK = "button.home_pull_to_alice_desk_phone"
PULL_MOBILE = "button.home_pull_to_alice_mobile"
PULL_BOB = "button.home_pull_to_bob_softphone"
ALICE_CALLS = "event.alice_calls"
DESK_CALLS = "event.alice_desk_phone_calls"
MOBILE_CALLS = "event.alice_mobile_calls"


@pytest.fixture
def config_entry(hass: HomeAssistant, config_entry: MockConfigEntry) -> MockConfigEntry:
    hass.config_entries.async_update_entry(
        config_entry, options={"users": household(), "groups": [dict(GROUP)]}
    )
    return config_entry


def _available(hass: HomeAssistant, *entity_ids: str) -> dict[str, bool]:
    found = {}
    for entity_id in entity_ids:
        state = hass.states.get(entity_id)
        assert state is not None, entity_id
        found[entity_id] = state.state != STATE_UNAVAILABLE
    return found


async def _press(hass: HomeAssistant, entity_id: str) -> None:
    await hass.services.async_call(
        BUTTON_DOMAIN, SERVICE_PRESS, {ATTR_ENTITY_ID: entity_id}, blocking=True
    )
    await hass.async_block_till_done()


async def _handoff_automations(hass: HomeAssistant, alice: str) -> list[ServiceCall]:
    calls = async_mock_service(hass, "test", "automation")
    automations = [
        {
            "trigger": {
                "platform": "device",
                "domain": "callflip",
                "device_id": alice,
                "type": kind,
            },
            "action": {
                "service": "test.automation",
                "data": {
                    "type": kind,
                    "from": "{{ trigger.from_label }}",
                    "to": "{{ trigger.to_label }}",
                    "group": "{{ trigger.group }}",
                    "kind": "{{ trigger.kind }}",
                    "user": "{{ trigger.user }}",
                    "event_type": "{{ trigger.event.data.type }}",
                },
            },
        }
        for kind in ("push_started", "pushed", "pull_started", "pulled", "flip_started")
    ]
    assert await async_setup_component(hass, "automation", {"automation": automations})
    await hass.async_block_till_done()
    return calls


def _events_of(changes: list[Event[Any]], entity_id: str) -> list[dict[str, Any]]:
    """The events an event entity showed, in order (its attributes at each one)."""
    return [
        dict(change.data["new_state"].attributes)
        for change in changes
        if change.data["entity_id"] == entity_id
        and change.data.get("new_state") is not None
        and change.data["new_state"].attributes.get("event_type")
    ]


async def test_buttons_are_made_per_member_on_the_group_device(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    registry = er.async_get(hass)
    group = find_device(hass, loaded_entry.entry_id, "group-g-home")
    assert group is not None
    for entity_id in (PUSH_DESK, PUSH_MOBILE, PULL_DESK, PULL_MOBILE, PULL_BOB):
        entry = registry.async_get(entity_id)
        assert entry is not None, entity_id
        assert entry.device_id == group.id
    push = registry.async_get(PUSH_DESK)
    assert push is not None
    assert push.unique_id == "group-g-home-d-alice-desk-push"
    assert push.translation_key == "group_push"
    state = hass.states.get(PULL_MOBILE)
    assert state is not None
    assert state.attributes["friendly_name"] == "Home Pull to Alice mobile"
    # nobody registered, no call: nothing can act
    assert not any(_available(hass, PUSH_DESK, PULL_MOBILE, PULL_BOB).values())


async def test_push_and_pull_buttons_move_the_call_and_every_step_is_reported(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    alice = ha_id(hass, loaded_entry, "user-u-alice")
    triggered = await _handoff_automations(hass, alice)
    handoffs = async_capture_events(hass, EVENT_HANDOFF)
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    desk, mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await hass.async_block_till_done()
    assert not any(_available(hass, PUSH_DESK, PULL_MOBILE).values())
    _outgoing, _dialog = await answered_call(hass, bob, desk)
    # the desk holds the group's call: it may push, the mobile may pull; Bob is in the call
    assert _available(hass, PUSH_DESK, PUSH_MOBILE, PULL_DESK, PULL_MOBILE, PULL_BOB) == {
        PUSH_DESK: True,
        PUSH_MOBILE: False,
        PULL_DESK: False,
        PULL_MOBILE: True,
        PULL_BOB: False,
    }

    await _press(hass, PUSH_DESK)
    to_mobile = await mobile.request("INVITE")
    mobile.ring(to_mobile)
    await hass.async_block_till_done()
    assert _available(hass, PUSH_DESK)[PUSH_DESK] is False  # the group rings: no second push
    await mobile.answer(to_mobile)
    await desk.request("BYE")
    await hass.async_block_till_done()
    assert [event.data["type"] for event in handoffs] == ["push_started", "pushed"]
    pushed = handoffs[-1].data

    # the logbook line
    assert describe_handoff(pushed) == {
        "name": "Alice",
        "message": "call pushed from Alice desk phone to Alice mobile",
    }
    # Alice's device triggers, with the step's fields as trigger variables
    assert [call.data for call in triggered] == [
        {
            "type": "push_started",
            "from": "Alice desk phone",
            "to": "Home",
            "group": "Home",
            "kind": "push",
            "user": "Alice",
            "event_type": "push_started",
        },
        {
            "type": "pushed",
            "from": "Alice desk phone",
            "to": "Alice mobile",
            "group": "Home",
            "kind": "push",
            "user": "Alice",
            "event_type": "pushed",
        },
    ]
    # the call event entities of Alice and of both phones (the mobile is no party of the
    # push while it rings the group, only once it has the call)
    for entity_id, steps in (
        (ALICE_CALLS, {"push_started", "pushed"}),
        (DESK_CALLS, {"push_started", "pushed"}),
        (MOBILE_CALLS, {"pushed"}),
    ):
        events = _events_of(changes, entity_id)
        shown = {e["event_type"] for e in events}
        assert shown & {"push_started", "pushed"} == steps, (entity_id, shown)
        pushed_event = next(e for e in events if e["event_type"] == "pushed")
        assert pushed_event["group"] == "Home"
        assert pushed_event["kind"] == "push"
        assert pushed_event["from_label"] == "Alice desk phone"
        assert pushed_event["to_label"] == "Alice mobile"

    # now the mobile holds it: the desk (free, registered) may pull it back
    assert _available(hass, PUSH_MOBILE, PULL_DESK, PULL_MOBILE) == {
        PUSH_MOBILE: True,
        PULL_DESK: True,
        PULL_MOBILE: False,
    }
    await _press(hass, PULL_DESK)
    to_desk = await desk.request("INVITE")
    await desk.answer(to_desk)
    await mobile.request("BYE")
    await hass.async_block_till_done()
    assert [event.data["type"] for event in handoffs][2:] == ["pull_started", "pulled"]
    assert [call.data["type"] for call in triggered][2:] == ["pull_started", "pulled"]
    assert triggered[-1].data["kind"] == "pull"
    assert triggered[-1].data["to"] == "Alice desk phone"
    assert "pulled" in [e["event_type"] for e in _events_of(changes, DESK_CALLS)]
    assert describe_handoff(handoffs[-1].data)["message"] == (
        "call pulled from Alice mobile to Alice desk phone"
    )


async def test_a_press_that_loses_a_race_is_a_translated_refusal(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    make_phone: Callable[..., SipPhone],
) -> None:
    """The call ends between the dashboard drawing the buttons and the press reaching us."""
    desk, _mobile, bob = await registered(make_phone, "alice-desk", "alice-mobile", "bob-soft")
    await answered_call(hass, bob, desk)
    component = hass.data["entity_components"]["button"]
    push, pull = component.get_entity(PUSH_DESK), component.get_entity(PULL_MOBILE)
    assert push is not None
    assert pull is not None
    assert push.available
    assert pull.available
    hub = loaded_entry.runtime_data.hub
    for call in hub.pbx.calls():
        hub.pbx.hangup(call.id)
    with pytest.raises(ServiceValidationError) as caught:
        await pull.async_press()
    assert caught.value.translation_key == "handoff_nothing_to_pull"
    assert caught.value.translation_placeholders is not None
    assert caught.value.translation_placeholders["name"] == "Alice mobile"
    with pytest.raises(ServiceValidationError) as caught:
        await push.async_press()
    assert caught.value.translation_key == "no_call"
    await hass.async_block_till_done()
    assert not any(_available(hass, PUSH_DESK, PULL_MOBILE).values())
