"""Group Presence by feature code from an idle phone: ``*61`` present, ``*60`` absent, alone in
every group of the phone or followed by a pilot for one group; the PBX answers, plays the
confirmation tone and hangs up; refusals hear the error tone then 403. A member made present this
way while a group call or a push rings starts ringing at the next re-check (at most 4 s).

Groups: "Home" (pilot 250) is Alice's desk 201, her mobile 202 and Bob's desk 301; "Desks"
(pilot 260) is 201 and 301. Carol (401) is in no group.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator

import pytest

from sip_core.config import (
    CodeConflict,
    ConfigError,
    GroupPresenceCodes,
    PbxConfig,
    RingGroup,
    config_from_mapping,
    transfer_settings,
)
from sip_core.events import GroupPresenceDialled
from sip_core.features.group_presence_codes import PresenceRefusal, parse_presence_code
from sip_core.features.ring_group import RECHECK_INTERVAL
from sip_core.message import Request, Response

from .test_b2bua_harness import Harness, Phone, make_config, sdp, sdp_port, settle
from .test_handoff import invites, key, refused, talking

HOME = RingGroup("Home", "250", ("201", "202", "301"), ring_timer=20)
DESKS = RingGroup("Desks", "260", ("201", "301"), ring_timer=20)


def config_with(*groups: RingGroup) -> PbxConfig:
    return dataclasses.replace(make_config(), groups=groups)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(config_with(HOME, DESKS))
    yield harness
    harness.close()


async def until(condition: Callable[[], bool], seconds: float = 6.0) -> None:
    """Wait (real time: the tone is played by the media engine) until ``condition`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def confirmed(phone: Phone, invite: Request) -> Response:
    """The code's INVITE was answered (200 with SDP towards the relay); the phone ACKs it and
    gets the PBX's BYE once the confirmation tone has played."""
    await settle()
    (ok,) = [r for r in phone.responses(200) if r.call_id == invite.call_id]
    assert ok.cseq.method == "INVITE"
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert sdp_port(ok.body) > 0
    assert ok.contacts
    assert [r for r in phone.responses(183) if r.call_id == invite.call_id] == []
    phone.confirm(invite, ok)

    def byes() -> list[Request]:
        return [r for r in phone.requests("BYE") if r.call_id == invite.call_id]

    await until(lambda: bool(byes()))
    (bye,) = byes()
    assert bye.to.tag == invite.from_.tag  # our BYE: the phone is the remote party
    phone.reply(bye, 200)
    return ok


def dialled(h: Harness) -> list[tuple[str, str, bool, tuple[str, ...], str]]:
    return [
        (e.device, e.dialled, e.present, e.groups, e.refusal)
        for e in h.events_of(GroupPresenceDialled)
    ]


def test_the_codes_and_what_a_number_asks() -> None:
    config = config_with(HOME, DESKS)
    assert config.group_presence == GroupPresenceCodes("*61", "*60")
    assert parse_presence_code(config, "*61") == parse_presence_code(config, "*61")
    whole = parse_presence_code(config, "*61")
    assert whole is not None
    assert (whole.present, whole.group) == (True, None)
    one = parse_presence_code(config, "*60260")
    assert one is not None
    assert (one.present, one.group) == (False, DESKS)
    assert parse_presence_code(config, "*61999") is None  # no such pilot: not ours
    assert parse_presence_code(config, "*6") is None
    assert parse_presence_code(config, "250") is None


async def test_the_absent_code_makes_the_phone_absent_in_every_group_and_is_confirmed(
    h: Harness,
) -> None:
    desk = h.phone("201", 5201)
    invite = desk.invite("*60")
    await confirmed(desk, invite)
    presence = h.b2bua.group_presence
    assert not presence.present("Home", "201")
    assert not presence.present("Desks", "201")
    assert presence.present("Home", "202")
    assert presence.records() == {"absent": {"Desks": ["201"], "Home": ["201"]}}
    assert dialled(h) == [("201", "*60", False, ("Home", "Desks"), "")]
    assert h.b2bua.calls() == []  # a code is no call: nothing in the call list or history
    assert h.b2bua.history.records() == []
    invite = desk.invite("*61")
    await confirmed(desk, invite)
    assert presence.present("Home", "201")
    assert presence.present("Desks", "201")


async def test_a_code_followed_by_a_pilot_changes_that_group_only(h: Harness) -> None:
    desk = h.phone("201", 5201)
    invite = desk.invite("*60260")
    await confirmed(desk, invite)
    presence = h.b2bua.group_presence
    assert not presence.present("Desks", "201")
    assert presence.present("Home", "201")
    assert dialled(h) == [("201", "*60260", False, ("Desks",), "")]


async def test_the_phone_may_hang_up_during_the_tone(h: Harness) -> None:
    mobile = h.phone("202", 5202)
    invite = mobile.invite("*60")
    await settle()
    (ok,) = mobile.responses(200)
    mobile.confirm(invite, ok)
    bye = mobile.request("BYE")
    await settle()
    answers = [r for r in mobile.responses(200) if r.cseq.method == "BYE"]
    assert [r.call_id for r in answers] == [bye.call_id]
    await asyncio.sleep(1.5)  # longer than the tone: the PBX sends no BYE of its own
    assert mobile.requests("BYE") == []
    assert not h.b2bua.group_presence.present("Home", "202")
    assert h.b2bua.open_counts()["call_tasks"] == 0


async def test_refusals_hear_the_error_tone_then_403_and_change_nothing(h: Harness) -> None:
    carol = h.phone("401", 5401)
    mobile = h.phone("202", 5202)
    carol.invite("*60")
    mobile.invite("*60260")  # the mobile is no member of Desks
    await settle()
    stranger = await refused(carol, 403)
    assert "401 is not a member of a ring group" in (stranger.headers.get("Warning") or "")
    outsider = await refused(mobile, 403)
    assert "202 is not a member of Desks" in (outsider.headers.get("Warning") or "")
    assert h.b2bua.group_presence.records() == {"absent": {}}
    assert dialled(h) == [
        ("401", "*60", False, (), PresenceRefusal.NOT_MEMBER.value),
        ("202", "*60260", False, (), PresenceRefusal.NOT_MEMBER.value),
    ]
    assert h.events_of(GroupPresenceDialled)[0].reason == "401 is not a member of a ring group"


async def test_a_phone_that_is_not_registered_is_refused(h: Harness) -> None:
    bob = h.phone("301", 5301, register=False)
    bob.invite("*60")
    await settle()
    final = await refused(bob, 403)
    assert "301 is not registered" in (final.headers.get("Warning") or "")
    assert h.b2bua.group_presence.present("Home", "301")
    assert dialled(h) == [("301", "*60", False, (), "not_registered")]


async def test_without_an_offer_the_change_is_made_and_the_answer_comes_at_once(
    h: Harness,
) -> None:
    mobile = h.phone("202", 5202)
    mobile.invite("*60", body=b"")
    await settle()
    assert mobile.responses(200) == []
    (final,) = mobile.responses(480)
    assert "absent in Home" in (final.headers.get("Warning") or "")
    assert not h.b2bua.group_presence.present("Home", "202")


async def test_a_code_then_digits_that_are_no_pilot_is_an_unknown_number(h: Harness) -> None:
    mobile = h.phone("202", 5202)
    mobile.invite("*61999")
    await settle()
    assert len(mobile.responses(404)) == 1
    assert dialled(h) == []


async def test_a_member_made_present_by_code_while_the_pilot_rings_rings_within_four_seconds(
    h: Harness,
) -> None:
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    h.b2bua.group_presence.set_present("Home", "202", False)
    carol.invite("250")
    await settle()
    assert len(invites(desk)) == 1
    assert invites(mobile) == []
    code = mobile.invite("*61")
    await confirmed(mobile, code)
    mobile.seen = len(mobile.inbox())
    assert h.b2bua.group_presence.present("Home", "202")
    h.clock.advance(RECHECK_INTERVAL)
    (to_mobile,) = invites(mobile)
    assert RECHECK_INTERVAL <= 4
    assert "Carol" in (to_mobile.headers.get("From") or "")
    mobile.answer(to_mobile, 200, sdp(6202))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "202"
    assert len(desk.requests("CANCEL")) == 1


async def test_a_member_made_present_by_code_while_a_push_rings_rings_too(h: Harness) -> None:
    h.b2bua.group_presence.set_present("Home", "301", False)
    _carol, desk, mobile, bob = await talking(h)
    key(desk, "*5")
    assert len(invites(mobile)) == 1
    assert invites(bob) == []
    code = bob.invite("*61250")
    await confirmed(bob, code)
    bob.seen = len(bob.inbox())
    h.clock.advance(RECHECK_INTERVAL)
    assert len(invites(bob)) == 1


# -- configuration ---------------------------------------------------------------------------


def _users() -> list[dict[str, object]]:
    return [
        {
            "name": "alice",
            "extension": "200",
            "devices": [
                {"username": "201", "password": "alice-desk-pw"},
                {"username": "61250", "password": "alice-odd-pw"},
            ],
        }
    ]


def _config(codes: dict[str, object] | None, **extra: object) -> PbxConfig:
    data: dict[str, object] = {
        "users": _users(),
        "groups": [{"name": "Home", "pilot": "250", "members": ["201"]}],
        **extra,
    }
    if codes is not None:
        data["group_presence"] = codes
    return config_from_mapping(data)


def test_codes_may_be_changed_and_round_trip() -> None:
    config = _config({"present_code": "*71", "absent_code": "*70"})
    assert config.group_presence == GroupPresenceCodes("*71", "*70")
    assert config.to_mapping()["group_presence"] == {"present_code": "*71", "absent_code": "*70"}
    assert config_from_mapping(config.to_mapping()) == config


@pytest.mark.parametrize(
    ("codes", "extra", "path", "words"),
    [
        ({"present_code": "*6", "absent_code": "*60"}, {}, "absent_code", "starts the other"),
        ({"present_code": "*5"}, {}, "present_code", "handoff.code"),
        ({"absent_code": "*50"}, {}, "absent_code", "handoff.code"),
        ({"present_code": "*0"}, {}, "present_code", "flip.code"),
        ({"absent_code": "**"}, {}, "absent_code", "transfer.attended_code"),
        ({"present_code": "200"}, {}, "present_code", "an extension"),
        # a pilot: the one check of every code blames the pilot, naming the code
        ({"present_code": "250", "absent_code": "*60"}, {}, ("groups", 0, "pilot"), "present_code"),
        # *61 then the pilot 250 is the device 61250's number
        ({"present_code": "61", "absent_code": "*60"}, {}, "present_code", "'61250'"),
    ],
)
def test_clashing_codes_are_refused_with_the_field_named(
    codes: dict[str, object],
    extra: dict[str, object],
    path: str | tuple[str | int, ...],
    words: str,
) -> None:
    with pytest.raises(CodeConflict) as caught:
        _config(codes, **extra)
    expected = path if isinstance(path, tuple) else ("group_presence", path)
    assert caught.value.key_path == expected
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("codes", "words"),
    [
        ({"present_code": None}, "required"),
        ({"present_code": "*6a"}, "keypad keys"),
        ({"absent_code": "*123456789"}, "keypad keys"),
        ({"away_code": "*9"}, "away_code"),
    ],
)
def test_badly_written_codes_are_refused(codes: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(codes)
    assert caught.value.key_path[0] == "group_presence"
    assert words in str(caught.value)


def test_transfer_settings_checked_alone_keep_apart_from_the_presence_codes() -> None:
    """Home Assistant checks its transfer options alone (`transfer_settings`): a transfer code
    that is a Group Presence code is refused there as in the runner's file."""
    config = _config(None)
    assert transfer_settings({"blind_code": "*7"}, config).blind_code == "*7"
    with pytest.raises(CodeConflict) as caught:
        transfer_settings({"blind_code": "*60"}, config)
    assert caught.value.key_path == ("transfer", "blind_code")
    assert "group_presence.absent_code" in str(caught.value)
    with pytest.raises(CodeConflict):
        _config(None, transfer={"attended_code": "*61"})
