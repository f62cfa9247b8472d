"""Per-device runtime settings applied to every call (`sip_core.presence`): Do Not Disturb, Make
Busy, Call Forward Always (with loops cut), and the per-user flip permission."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sip_core.__main__ import StateKeeper
from sip_core.calls import CallState
from sip_core.clock import ManualClock
from sip_core.config import ConfigError, FlipPermission, config_from_mapping
from sip_core.events import HandoffFailed
from sip_core.features import FlipDisabled, NoFlipTarget, TargetUnavailable
from sip_core.pbx import Pbx
from sip_core.presence import (
    PRESENCE_SECTION,
    DeviceStates,
    ForwardKind,
    ForwardTarget,
    Presence,
    PresenceError,
    UnknownDeviceError,
    UnknownUserError,
)
from sip_core.state import RuntimeState, StateFile

from .test_b2bua_harness import Harness, Phone, make_config, sdp, settle


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def invites(phone: Phone) -> list[str]:
    """The Request-URI users of the INVITEs a phone received."""
    return [request.uri.user or "" for request in phone.requests("INVITE")]


def final_status(phone: Phone) -> int:
    return [r.status for r in phone.responses() if r.status >= 200][-1]


# -- Do Not Disturb --------------------------------------------------------------------------------


async def test_dnd_device_is_not_rung_but_its_sibling_is(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    h.b2bua.presence.set_dnd("201", True)
    carol.invite("200")
    await settle()
    assert invites(desk) == []
    assert invites(mobile) == ["202"]
    assert h.only_call().state is CallState.SETUP  # no 180 from the mobile yet


async def test_user_with_every_device_in_dnd_gives_the_caller_busy(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    h.b2bua.presence.set_dnd("201", True)
    h.b2bua.presence.set_dnd("202", True)
    carol.invite("200")
    await settle()
    assert final_status(carol) == 486
    assert invites(desk) == invites(mobile) == []
    assert h.b2bua.calls() == []


async def test_calling_a_dnd_device_directly_gets_486(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    h.b2bua.presence.set_dnd("201", True)
    carol.invite("201")
    await settle()
    assert final_status(carol) == 486
    assert invites(desk) == []


async def test_dnd_off_again_rings_the_device(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    h.b2bua.presence.set_dnd("201", True)
    h.b2bua.presence.set_dnd("201", False)
    assert h.b2bua.presence.device("201") == DeviceStates()
    carol.invite("201")
    await settle()
    assert invites(desk) == ["201"]


# -- Make Busy -------------------------------------------------------------------------------------


async def test_make_busy_device_answers_busy(h: Harness) -> None:
    carol = h.phone("401", 5401)
    bob = h.phone("301", 5301)
    h.b2bua.presence.set_make_busy("301", True)
    carol.invite("301")
    await settle()
    assert final_status(carol) == 486
    assert invites(bob) == []


async def test_make_busy_device_is_skipped_when_its_user_is_called(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("301", 5301)
    mobile = h.phone("302", 5302)
    h.b2bua.presence.set_make_busy("301", True)
    carol.invite("300")
    await settle()
    assert invites(desk) == []
    assert invites(mobile) == ["302"]


# -- Call Forward Always ---------------------------------------------------------------------------


async def test_forward_to_a_device_rings_the_target_instead(h: Harness) -> None:
    carol = h.phone("401", 5401)
    alice_desk = h.phone("201", 5201)
    bob_desk = h.phone("301", 5301)
    h.b2bua.presence.set_forward("201", "device:301")
    carol.invite("201")
    await settle()
    assert invites(alice_desk) == []
    assert invites(bob_desk) == ["301"]
    call = h.only_call()
    offered = bob_desk.last_request("INVITE")
    bob_desk.answer(offered, 200, sdp(6301))
    assert call.state is CallState.TALKING
    assert call.callee is not None
    assert call.callee.device == "301"


async def test_forward_to_a_user_rings_each_of_their_devices(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    bob_desk = h.phone("301", 5301)
    bob_mobile = h.phone("302", 5302)
    h.b2bua.presence.set_forward("201", ForwardTarget(ForwardKind.USER, "Bob"))
    carol.invite("201")
    await settle()
    assert invites(bob_desk) == ["301"]
    assert invites(bob_mobile) == ["302"]


async def test_forward_target_in_dnd_is_not_rung(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    bob_desk = h.phone("301", 5301)
    h.b2bua.presence.set_forward("201", "device:301")
    h.b2bua.presence.set_dnd("301", True)
    carol.invite("201")
    await settle()
    assert final_status(carol) == 486
    assert invites(bob_desk) == []


async def test_forward_to_the_caller_does_not_ring_the_caller(h: Harness) -> None:
    carol = h.phone("401", 5401)
    h.phone("201", 5201)
    h.b2bua.presence.set_forward("201", "device:401")
    carol.invite("201")
    await settle()
    assert final_status(carol) == 480
    assert invites(carol) == []


async def test_forwarding_loop_is_refused_with_482_naming_the_chain(h: Harness) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    bob = h.phone("301", 5301)
    h.b2bua.presence.set_forward("201", "device:301")
    h.b2bua.presence.set_forward("301", "user:Alice")
    carol.invite("201")
    await settle()
    (refused,) = [r for r in carol.responses() if r.status >= 200]
    assert refused.status == 482
    assert refused.headers.get("Warning") == '399 callflip "forwarding loop: 201 -> 301 -> 201"'
    assert invites(desk) == invites(bob) == []
    assert h.b2bua.calls() == []


# -- validation ------------------------------------------------------------------------------------


def test_settings_for_unknown_devices_and_targets_are_refused(h: Harness) -> None:
    presence = h.b2bua.presence
    with pytest.raises(UnknownDeviceError, match="no device is called '999'"):
        presence.set_dnd("999", True)
    with pytest.raises(UnknownDeviceError):
        presence.device("999")
    with pytest.raises(UnknownDeviceError, match="'998'"):
        presence.set_forward("201", "device:998")
    with pytest.raises(UnknownUserError, match="'Nobody'"):
        presence.set_forward("201", "user:Nobody")
    with pytest.raises(PresenceError, match="itself"):
        presence.set_forward("201", "device:201")
    with pytest.raises(PresenceError, match="no group is called 'family'"):
        presence.set_forward("201", "group:family")  # a kind since Personal Ring Groups
    with pytest.raises(PresenceError, match="device:<username>"):
        presence.set_forward("201", "team:family")
    with pytest.raises(PresenceError, match="device:<username>"):
        presence.set_forward("201", "301")
    with pytest.raises(UnknownUserError):
        presence.set_user_flip("Nobody", False)
    # Nothing of the refused settings was kept.
    assert presence.device("201") == DeviceStates()


def test_forward_target_text_round_trips() -> None:
    target = ForwardTarget.parse("user:Bob")
    assert target == ForwardTarget(ForwardKind.USER, "Bob")
    assert str(target) == "user:Bob"


# -- persistence -----------------------------------------------------------------------------------


def test_settings_are_a_runtime_state_section_and_survive_a_restart() -> None:
    config = make_config()
    state = RuntimeState()
    changes: list[None] = []
    state.subscribe(lambda: changes.append(None))
    presence = Presence(lambda: config, state)
    presence.set_dnd("201", True)
    presence.set_make_busy("202", True)
    presence.set_forward("301", "user:Alice")
    presence.set_user_flip("Bob", False)
    presence.set_dnd("201", True)  # no change, no save
    assert len(changes) == 4
    saved = state.records()[PRESENCE_SECTION]
    assert saved == {
        "devices": {
            "201": {"dnd": True},
            "202": {"make_busy": True},
            "301": {"forward": "user:Alice"},
        },
        "flip": {"Bob": False},
    }
    # A new process: the section is restored when the PBX registers it.
    again = RuntimeState()
    again.restore({PRESENCE_SECTION: saved})
    pbx = Pbx(config, clock=ManualClock(), state=again)
    assert pbx.device_states("201").dnd
    assert pbx.device_states("202").make_busy
    assert pbx.device_states("301").forward == ForwardTarget(ForwardKind.USER, "Alice")
    assert not pbx.flip_enabled("Bob")
    assert pbx.flip_enabled("Alice")


def test_a_broken_saved_section_starts_from_defaults(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config()
    state = RuntimeState()
    state.restore({PRESENCE_SECTION: {"devices": {"201": {"forward": "nowhere"}}}})
    presence = Presence(lambda: config, state)
    assert presence.device("201") == DeviceStates()
    assert "cannot be restored" in caplog.text


# -- flip permission and availability --------------------------------------------------------------


async def answered(h: Harness) -> tuple[Phone, Phone, Phone]:
    """Carol calls Alice's desk (201) directly and it answers; Alice's mobile (202) is free."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    return carol, desk, mobile


def dial(phone: Phone, keys: str) -> None:
    for key in keys:
        phone.request(
            "INFO", body=f"Signal={key}\r\n".encode(), content_type="application/dtmf-relay"
        )


async def test_star_zero_is_refused_when_the_users_flip_is_off(h: Harness) -> None:
    _, desk, mobile = await answered(h)
    h.b2bua.presence.set_user_flip("Alice", False)
    dial(desk, "*0")
    h.clock.advance(2)
    assert invites(mobile) == []
    (failed,) = h.events_of(HandoffFailed)
    assert failed.from_device == "201"
    assert failed.reason == "Alice's flip is disabled"
    (record,) = h.only_call().handoffs
    assert not record.succeeded
    assert record.reason == "Alice's flip is disabled"
    assert h.only_call().state is CallState.TALKING


async def test_flip_api_is_refused_when_disabled_and_fires_the_failed_event(h: Harness) -> None:
    await answered(h)
    h.b2bua.presence.set_user_flip("Alice", False)
    with pytest.raises(FlipDisabled):
        h.b2bua.flip(h.only_call().id)
    (failed,) = h.events_of(HandoffFailed)
    assert "disabled" in failed.reason


async def test_administrator_setting_overrides_the_users_own(h: Harness) -> None:
    alice = h.config.users[0]
    h.config = replace(
        h.config, users=(replace(alice, flip=FlipPermission.ENABLED), *h.config.users[1:])
    )
    _, desk, mobile = await answered(h)
    h.b2bua.presence.set_user_flip("Alice", False)
    assert h.b2bua.presence.flip_enabled("Alice")
    dial(desk, "*0")  # the code is complete at its last key: the mobile rings at once
    assert invites(mobile) == ["202"]

    h.config = replace(
        h.config, users=(replace(alice, flip=FlipPermission.DISABLED), *h.config.users[1:])
    )
    h.b2bua.presence.set_user_flip("Alice", True)
    assert not h.b2bua.presence.flip_enabled("Alice")


async def test_dnd_device_is_not_offered_as_a_flip_target(h: Harness) -> None:
    await answered(h)
    h.b2bua.presence.set_dnd("202", True)
    # the only other device is in DND: no target, and the reason says why
    with pytest.raises(NoFlipTarget, match="do not disturb"):
        h.b2bua.flip(h.only_call().id)


async def test_dnd_device_named_as_flip_target_is_refused(h: Harness) -> None:
    _, desk, mobile = await answered(h)
    h.b2bua.presence.set_dnd("202", True)
    with pytest.raises(TargetUnavailable):
        h.b2bua.flip(h.only_call().id, "202")
    dial(desk, "*0")
    await settle()
    assert invites(mobile) == []
    reasons = [event.reason for event in h.events_of(HandoffFailed)]
    assert reasons == [
        "202 is in do not disturb or make busy",
        "Alice's other registered devices are in do not disturb or make busy",
    ]


# -- configuration ---------------------------------------------------------------------------------


def _users(flip: object) -> dict[str, object]:
    device = {"username": "201", "password": "long-enough-pw"}
    return {"users": [{"name": "alice", "extension": "200", "flip": flip, "devices": [device]}]}


def test_flip_permission_is_read_from_the_configuration() -> None:
    config = config_from_mapping(_users("disabled"))
    assert config.users[0].flip is FlipPermission.DISABLED
    assert config.users[0].to_mapping()["flip"] == "disabled"
    assert config_from_mapping(_users(None)).users[0].flip is FlipPermission.USER


def test_a_bad_flip_permission_is_a_field_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(_users("sometimes"))
    assert info.value.path == "users[0].flip"
    assert "user, enabled, disabled" in str(info.value)


async def test_the_runner_saves_a_change_and_the_next_run_has_it(tmp_path: Path) -> None:
    """The runner's path: a change is written to the state file by its keeper (the runtime state
    announces it), and the next process restores it from there."""
    config = make_config()
    file = StateFile(tmp_path / "pbx.state.json")
    state = RuntimeState()
    pbx = Pbx(config, clock=ManualClock(), state=state)
    keeper = StateKeeper(pbx, state, file)
    keeper.start()
    pbx.set_dnd("202", True)
    pbx.set_call_forward("301", "device:202")
    pbx.set_user_flip("Carol", False)
    await keeper.stop()
    saved = file.load()
    assert saved["state"][PRESENCE_SECTION] == {
        "devices": {"202": {"dnd": True}, "301": {"forward": "device:202"}},
        "flip": {"Carol": False},
    }
    again = RuntimeState()
    again.restore(saved["state"])
    restarted = Pbx(config, clock=ManualClock(), state=again)
    assert restarted.device_states("202").dnd
    assert restarted.device_states("301").forward == ForwardTarget(ForwardKind.DEVICE, "202")
    assert not restarted.flip_enabled("Carol")
