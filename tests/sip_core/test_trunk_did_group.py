"""A trunk DID whose destination is a Personal Ring Group: the runner's checks, and the call
ringing the group as its pilot does (present, available members; the group's ring timer, then
its no-answer destination), on the B2BUA harness with a ManualClock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from sip_core.call.dial import RECHECK_INTERVAL
from sip_core.config import (
    ConfigError,
    NoAnswerKind,
    NoAnswerTarget,
    RingGroup,
    config_from_mapping,
)
from sip_core.trunk.config import DialPlan, Did, Trunk, Trunking

from .test_b2bua_harness import HOST, Harness, make_config, sdp, settle
from .test_trunk_inbound import PROVIDER_PORT, invites, provider

HOME = RingGroup(
    "Home",
    "250",
    ("201", "202", "301"),
    ring_timer=10,
    no_answer=NoAnswerTarget(NoAnswerKind.DEVICE, "401"),
)


@pytest.fixture
def h() -> Iterator[Harness]:
    trunk = Trunk(
        "provider", HOST, "4930", "pw", port=PROVIDER_PORT, dids=(Did("+4930333", "group:Home"),)
    )
    config = replace(
        make_config(),
        groups=(HOME,),
        trunking=Trunking((trunk,), DialPlan(emergency_trunk="provider")),
    )
    harness = Harness(config, trunks=True)
    yield harness
    harness.close()


async def test_a_did_routed_to_a_group_rings_its_present_available_members(h: Harness) -> None:
    pstn = provider(h)
    desk, mobile, bob = h.phone("201", 5201), h.phone("202", 5202), h.phone("301", 5301)
    h.b2bua.group_presence.set_present("Home", "202", False)
    h.b2bua.presence.set_dnd("301", True)
    pstn.invite("+4930333", authenticate=False)
    await settle()
    (to_desk,) = invites(desk)
    assert invites(mobile) == []  # absent
    assert invites(bob) == []  # Do Not Disturb
    call = h.only_call()
    assert call.dialled == "+4930333"
    assert call.caller is not None
    assert call.caller.device == "trunk:provider"
    h.b2bua.presence.set_dnd("301", False)
    h.clock.advance(RECHECK_INTERVAL)
    assert len(invites(bob)) == 1  # available now: rings within the re-check
    desk.answer(to_desk, 200, sdp(6201))
    await settle()
    assert call.callee is not None
    assert call.callee.device == "201"
    assert [r.status for r in pstn.responses() if r.status >= 200] == [200]


async def test_an_unanswered_group_did_goes_to_the_groups_no_answer_destination(
    h: Harness,
) -> None:
    pstn = provider(h)
    desk, carol = h.phone("201", 5201), h.phone("401", 5401)
    pstn.invite("+4930333", authenticate=False)
    await settle()
    (to_desk,) = invites(desk)
    desk.answer(to_desk, 180)
    h.clock.advance(9.9)
    assert invites(carol) == []
    h.clock.advance(0.1)  # the group's ring timer
    (to_carol,) = invites(carol)
    assert to_carol.method == "INVITE"


def runner_config(destination: str) -> dict[str, object]:
    return {
        "sip": {"domain": "home.arpa"},
        "users": [
            {
                "name": "Alice",
                "extension": "200",
                "devices": [{"username": "201", "password": "secret-201"}],
            }
        ],
        "groups": [{"name": "Home", "pilot": "250", "members": ["201"]}],
        "trunks": [
            {
                "name": "provider",
                "host": "sip.example.net",
                "username": "4930",
                "password": "pw",
                "dids": [{"number": "+4930333", "destination": destination}],
            }
        ],
    }


def test_the_runner_accepts_a_group_as_a_did_destination() -> None:
    config = config_from_mapping(runner_config("group:Home"))
    assert config.trunking is not None
    (did,) = config.trunking.trunks[0].dids
    assert did.group == "Home"
    assert Did("+1", "Alice").group is None


def test_an_unknown_group_is_a_field_error() -> None:
    with pytest.raises(ConfigError, match="no group is called 'Nope'") as err:
        config_from_mapping(runner_config("group:Nope"))
    assert "trunks[0].dids[0].destination" in str(err.value)
