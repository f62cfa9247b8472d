"""Personal Ring Groups in the configuration: the model, every field error, round trips, and Group
Presence kept in the runtime state."""

from __future__ import annotations

from typing import Any

import pytest

from sip_core.config import (
    ConfigError,
    HandoffSettings,
    NoAnswerKind,
    NoAnswerTarget,
    RingGroup,
    config_from_mapping,
    parse_config,
)
from sip_core.prg.presence import GroupPresence, GroupPresenceError


def household(**extra: Any) -> dict[str, Any]:
    def dev(name: str) -> dict[str, str]:
        return {"username": name, "password": "secret-password"}

    return {
        "users": [
            {"name": "alice", "extension": "200", "devices": [dev("201"), dev("202")]},
            {"name": "bob", "extension": "300", "devices": [dev("301")]},
        ],
        **extra,
    }


def groups(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return household(groups=list(items), **extra)


def group(**fields: Any) -> dict[str, Any]:
    return {"name": "Home", "pilot": "250", "members": ["201", "202", "301"], **fields}


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    return caught.value


def test_a_group_with_defaults() -> None:
    config = config_from_mapping(groups(group()))
    assert config.groups == (RingGroup("Home", "250", ("201", "202", "301"), 20, None),)
    assert config.handoff == HandoffSettings("*5")
    (home,) = config.groups
    assert home.prime == "201"
    assert config.group("Home") is home
    assert config.group_by_pilot("250") is home
    assert config.groups_of("301") == (home,)
    assert config.groups_of("999") == ()


def test_a_device_may_be_in_several_groups_and_no_answer_may_name_a_later_group() -> None:
    config = config_from_mapping(
        groups(
            group(no_answer="group:Office", ring_timer=15),
            {"name": "Office", "pilot": "260", "members": ["301", "201"], "no_answer": "user:bob"},
            {"name": "Desk", "pilot": 270, "members": [201], "no_answer": "device:301"},
            {"name": "Quiet", "pilot": "280", "members": ["202"], "no_answer": "none"},
        )
    )
    home, office, desk, quiet = config.groups
    assert home.no_answer == NoAnswerTarget(NoAnswerKind.GROUP, "Office")
    assert home.ring_timer == 15
    assert office.no_answer == NoAnswerTarget(NoAnswerKind.USER, "bob")
    assert desk.pilot == "270"
    assert desk.members == ("201",)
    assert desk.no_answer == NoAnswerTarget(NoAnswerKind.DEVICE, "301")
    assert quiet.no_answer is None
    assert config.groups_of("201") == (home, office, desk)


def test_groups_round_trip_through_the_mapping() -> None:
    config = config_from_mapping(groups(group(no_answer="user:bob"), handoff={"code": "#7"}))
    assert config_from_mapping(config.to_mapping()) == config


def test_handoff_code_from_a_file_and_its_line_in_errors() -> None:
    text = """
users:
  - name: alice
    extension: "200"
    devices: [{username: "201", password: secret-password}]
handoff: {code: "*7"}
groups:
  - name: Home
    pilot: "250"
    members: ["201", "209"]
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.path == "groups[0].members[1]"
    assert "no device is called '209'" in str(caught.value)
    assert "line 10" in str(caught.value)
    config = parse_config(text.replace('"209"', '"201x"').replace(', "201x"', ""))
    assert config.handoff.code == "*7"


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (groups(group(name=None)), "groups[0].name", "required"),
        (groups(group(pilot="200")), "groups[0].pilot", "already an extension"),
        (groups(group(pilot="201")), "groups[0].pilot", "already an extension"),
        (groups(group(pilot="*0")), "groups[0].pilot", "not a valid SIP user name"),
        (groups(group(), group(pilot="251")), "groups[1].name", "already used by groups[0]"),
        (groups(group(), group(name="Other")), "groups[1].pilot", "already used by groups[0]"),
        (groups(group(members=[])), "groups[0].members", "at least one member"),
        (groups(group(members="201")), "groups[0].members", "must be a list"),
        (groups(group(members=["201", "201"])), "groups[0].members[1]", "listed twice"),
        (groups(group(members=["201", True])), "groups[0].members[1]", "device's username"),
        (groups(group(ring_timer=0)), "groups[0].ring_timer", "between 1 and 3600"),
        (groups(group(no_answer="user:nobody")), "groups[0].no_answer", "no user"),
        (groups(group(no_answer="device:999")), "groups[0].no_answer", "no device"),
        (groups(group(no_answer="group:Home")), "groups[0].no_answer", "to itself"),
        (groups(group(no_answer="phone:201")), "groups[0].no_answer", "'user:<name>'"),
        (groups(group(no_answer=5)), "groups[0].no_answer", "not the number 5"),
        (groups(group(colour="red")), "groups[0].colour", "unknown key"),
        (groups("Home"), "groups[0]", "must be a mapping"),
        (household(groups={"name": "Home"}), "groups", "must be a list"),
        (household(handoff={"code": "*0"}), "handoff.code", "and flip.code '*0' cannot both be"),
        (household(handoff={"code": "200"}), "handoff.code", "also an extension"),
        (household(handoff={"code": "*x"}), "handoff.code", "keypad keys"),
        (household(handoff={"code": None}), "handoff.code", "required"),
        (household(handoff={"cod": "*5"}), "handoff.cod", "did you mean 'code'"),
        (groups(group(pilot="*5")), "groups[0].pilot", "not a valid SIP user name"),
    ],
)
def test_field_errors(data: dict[str, Any], path: str, reason: str) -> None:
    error = error_of(data)
    assert error.path == path
    assert reason in str(error)


class FakeState:
    def __init__(self) -> None:
        self.sections: dict[str, Any] = {}
        self.saves = 0

    def register(self, name: str, records: Any, restore: Any) -> None:
        self.sections[name] = (records, restore)

    def changed(self) -> None:
        self.saves += 1


def test_group_presence_is_per_membership_and_persisted() -> None:
    config = config_from_mapping(
        groups(group(), {"name": "Office", "pilot": "260", "members": ["201"]})
    )
    state = FakeState()
    presence = GroupPresence(lambda: config, state)
    seen: list[int] = []
    presence.subscribe(lambda: seen.append(1))
    assert presence.present("Home", "201")
    presence.set_present("Home", "201", False)
    presence.set_present("Home", "201", False)  # no change: no save
    assert not presence.present("Home", "201")
    assert presence.present("Office", "201")
    assert state.saves == 1
    assert seen == [1]
    records, _restore = state.sections["groups"]
    saved = records()
    assert saved == {"absent": {"Home": ["201"]}}
    again = GroupPresence(lambda: config, FakeState())
    again.restore(saved)
    assert not again.present("Home", "201")
    presence.set_present("Home", "201", True)
    assert presence.present("Home", "201")
    assert records() == {"absent": {}}


def test_group_presence_refuses_strangers_and_broken_state() -> None:
    config = config_from_mapping(groups(group()))
    presence = GroupPresence(lambda: config)
    with pytest.raises(GroupPresenceError, match="no group is called 'Nope'"):
        presence.set_present("Nope", "201", False)
    with pytest.raises(GroupPresenceError, match="999 is not a member of Home"):
        presence.set_present("Home", "999", False)
    with pytest.raises(TypeError):
        presence.restore(["absent"])
    with pytest.raises(TypeError):
        presence.restore({"absent": {"Home": "201"}})


async def test_the_pbx_facade_for_groups() -> None:
    import dataclasses

    from sip_core.features.handoff import HandoffError, Refusal
    from sip_core.pbx import Pbx

    config = dataclasses.replace(
        config_from_mapping(groups(group())), sip=config_from_mapping(household()).sip
    )
    pbx = Pbx(dataclasses.replace(config, sip=dataclasses.replace(config.sip, port=0)))
    await pbx.start()
    try:
        changes: list[int] = []
        pbx.group_presence.subscribe(lambda: changes.append(1))
        assert pbx.group_present("Home", "202")
        pbx.set_group_presence("Home", "202", False)
        assert not pbx.group_present("Home", "202")
        assert changes == [1]
        with pytest.raises(GroupPresenceError):
            pbx.set_group_presence("Home", "401", False)
        assert not pbx.group_ringing("Home")
        assert pbx.group_call_holder("Home") is None
        assert not pbx.group_ringing("Nope")
        with pytest.raises(HandoffError) as caught:
            pbx.push("no-such-call")
        assert caught.value.refusal is Refusal.NO_SUCH_CALL
        with pytest.raises(HandoffError) as caught:
            pbx.pull("202")
        assert caught.value.refusal is Refusal.NOT_REGISTERED
        pbx.update_groups((RingGroup("Office", "260", ("301",)),))
        assert [g.name for g in pbx.config.groups] == ["Office"]
        with pytest.raises(GroupPresenceError):
            pbx.set_group_presence("Home", "202", True)  # the group is gone
    finally:
        await pbx.stop()
