"""Personal Ring Group handoff between real baresip phones through our runner, decided by audio.

A three-member group "Home" (Alice's desk 201 first, her mobile 202, Bob's phone 301) and an
outside caller 401. Each phone plays its own tone and records what it hears, so "the caller hears
the member who answered" and "the caller hears ringback until someone answers" are read from the
caller's recording, not from signalling. Ringback is the PBX's 425 Hz cadence (1 s on, 4 s off),
the error tone starts at 950 Hz.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from . import audio
from .clients import Baresip, ClientError
from .conftest import DOMAIN, Device, RunningPbx, StartPbx, User

pytestmark = pytest.mark.interop

CALLER_HZ, DESK_HZ, MOBILE_HZ, BOB_HZ, DAVE_HZ = 1000.0, 600.0, 700.0, 800.0, 900.0
RINGBACK_HZ, ERROR_HZ = 425.0, 950.0

ACCOUNTS = {
    "201": "alice-desk-pw",
    "202": "alice-mobile-pw",
    "301": "bob-phone-pw",
    "401": "carol-phone-pw",
    "501": "dave-phone-pw",
}
TONE_OF = {"201": DESK_HZ, "202": MOBILE_HZ, "301": BOB_HZ, "401": CALLER_HZ, "501": DAVE_HZ}


def _users() -> list[User]:
    return [
        User("alice", "200", [Device("201", ACCOUNTS["201"]), Device("202", ACCOUNTS["202"])]),
        User("bob", "300", [Device("301", ACCOUNTS["301"])]),
        User("carol", "400", [Device("401", ACCOUNTS["401"])]),
        User("dave", "500", [Device("501", ACCOUNTS["501"])]),
    ]


def _group(*, ring_timer: int | None = None, no_answer: str | None = None) -> str:
    lines = [
        "groups:",
        '  - name: "Home"',
        '    pilot: "250"',
        '    members: ["201", "202", "301"]',
    ]
    if ring_timer is not None:
        lines.append(f"    ring_timer: {ring_timer}")
    if no_answer is not None:
        lines.append(f'    no_answer: "{no_answer}"')
    return "\n".join(lines) + "\n"


class Phones:
    """The running PBX and the phones of one test, by device username."""

    def __init__(self, pbx: RunningPbx, tmp_path: Path, stack: contextlib.AsyncExitStack) -> None:
        self.pbx = pbx
        self.tmp_path = tmp_path
        self.stack = stack
        self.by_name: dict[str, Baresip] = {}

    async def add(self, user: str, *, answermode: str = "manual") -> Baresip:
        tone = audio.write_tone(self.tmp_path / f"tone-{user}.wav", TONE_OF[user], 90.0)
        ua = Baresip(
            user,
            ACCOUNTS[user],
            self.pbx.port,
            domain=DOMAIN,
            tone=tone,
            record=True,
            answermode=answermode,
            workdir=self.tmp_path / user,
        )
        await self.stack.enter_async_context(ua)
        registration = await ua.wait_registered()
        assert registration.ok, f"{user} did not register:\n{ua.output[-3000:]}"
        self.by_name[user] = ua
        return ua

    def failure(self) -> str:
        text = "\n".join(f"--- baresip {n}\n{ua.output[-2000:]}" for n, ua in self.by_name.items())
        return f"{text}\n--- runner log\n{self.pbx.log()[-5000:]}"


@contextlib.asynccontextmanager
async def phones(
    start_pbx: StartPbx, tmp_path: Path, extra: str, state: dict[str, Any] | None = None
) -> AsyncIterator[Phones]:
    if state is not None:
        # start_pbx writes pbx-0.yaml into tmp_path; the runner's state file is pbx-0.state.json.
        saved = {"version": 1, "state": state}
        (tmp_path / "pbx-0.state.json").write_text(json.dumps(saved))
    pbx = await start_pbx(_users(), extra_yaml=extra)
    async with contextlib.AsyncExitStack() as stack:
        yield Phones(pbx, tmp_path, stack)


def heard(ua: Baresip) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    assert found, f"{ua.user} recorded nothing"
    return found


def first_index(found: list[audio.Window], hz: float) -> int:
    return next(i for i, w in enumerate(found) if w.is_tone(hz))


def last_index(found: list[audio.Window], hz: float) -> int:
    return max(i for i, w in enumerate(found) if w.is_tone(hz))


async def _caller_talks_to_desk(p: Phones, *, desk_answers: str = "auto") -> tuple[Baresip, ...]:
    caller = await p.add("401")
    desk = await p.add("201", answermode=desk_answers)
    await caller.dial(f"sip:201@{DOMAIN}")
    if desk_answers == "manual":
        await desk.wait_event("CALL_INCOMING", 15)
        await desk.accept()
    await desk.wait_event("CALL_ESTABLISHED", 15)
    await caller.wait_event("CALL_ESTABLISHED", 15)
    await asyncio.sleep(1.5)
    return caller, desk


async def test_push_rings_both_others_while_the_pusher_talks_and_the_caller_hears_who_answers(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await asyncio.sleep(2.0)  # the pusher keeps talking while the others ring
            assert desk.call_events("CALL_CLOSED") == [], p.failure()
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            await mobile.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert mobile.call_events("CALL_ESTABLISHED") == []
        by_caller = heard(caller)
        assert audio.tone_seconds(by_caller, DESK_HZ) >= 3.0, audio.describe(by_caller)
        assert audio.tone_seconds(by_caller, BOB_HZ) >= 2.0, audio.describe(by_caller)
        assert last_index(by_caller, DESK_HZ) < first_index(by_caller, BOB_HZ)
        assert audio.tone_seconds(by_caller, RINGBACK_HZ) == 0, audio.describe(by_caller)
        by_bob = heard(bob)
        assert audio.tone_seconds(by_bob, CALLER_HZ) >= 2.0, audio.describe(by_bob)
        assert "pushed from 201 to 301" in p.pbx.log()


async def test_pusher_hangs_up_first_the_caller_hears_ringback_until_a_member_answers(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p, desk_answers="manual")
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await desk.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
            # The pusher's own line is free now: it rings too.
            await desk.wait_event("CALL_INCOMING", 10, count=2)
            await asyncio.sleep(3.0)
            await mobile.accept()
            await mobile.wait_event("CALL_ESTABLISHED", 10)
            await bob.wait_event("CALL_CLOSED", 10)
            await desk.wait_event("CALL_CLOSED", 10, count=2)
            await asyncio.sleep(2.5)
            await caller.hangup()
            await mobile.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert len(caller.call_events("CALL_ESTABLISHED")) == 1
        by_caller = heard(caller)
        described = audio.describe(by_caller)
        assert audio.tone_seconds(by_caller, RINGBACK_HZ) >= 0.6, described
        assert audio.tone_seconds(by_caller, MOBILE_HZ) >= 1.5, described
        # desk, then ringback, then the mobile: never the desk again
        assert last_index(by_caller, DESK_HZ) < first_index(by_caller, RINGBACK_HZ), described
        assert last_index(by_caller, RINGBACK_HZ) < first_index(by_caller, MOBILE_HZ), described


async def test_ring_timer_expiry_with_the_pusher_still_on_stops_the_others(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group(ring_timer=4)) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await mobile.wait_event("CALL_CLOSED", 10)
            await bob.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.0)
            assert desk.call_events("CALL_CLOSED") == [], p.failure()
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller = heard(caller)
        assert audio.tone_seconds(by_caller, DESK_HZ) >= 6.0, audio.describe(by_caller)
        assert "no member answered within 4 s" in p.pbx.log()


async def test_pusher_gone_and_no_answer_goes_to_the_no_answer_destination(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group(ring_timer=4, no_answer="device:501")) as p:
        try:
            mobile = await p.add("202")
            dave = await p.add("501", answermode="auto")
            caller, desk = await _caller_talks_to_desk(p, desk_answers="manual")
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await desk.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
            await dave.wait_event("CALL_ESTABLISHED", 15)
            await mobile.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.5)
            await caller.hangup()
            await dave.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller = heard(caller)
        described = audio.describe(by_caller)
        assert audio.tone_seconds(by_caller, RINGBACK_HZ) >= 0.6, described
        assert audio.tone_seconds(by_caller, DAVE_HZ) >= 1.5, described
        assert last_index(by_caller, RINGBACK_HZ) < first_index(by_caller, DAVE_HZ), described


async def test_pull_by_code_takes_the_call_from_the_other_member(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            caller, desk = await _caller_talks_to_desk(p)
            await mobile.dial(f"sip:*5@{DOMAIN}")
            await mobile.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(3.0)
            assert caller.call_events("CALL_CLOSED") == [], p.failure()
            await caller.hangup()
            await mobile.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller = heard(caller)
        described = audio.describe(by_caller)
        assert audio.tone_seconds(by_caller, MOBILE_HZ) >= 2.0, described
        assert last_index(by_caller, DESK_HZ) < first_index(by_caller, MOBILE_HZ), described
        # no music on hold and no ringback: the call goes straight over
        assert audio.tone_seconds(by_caller, RINGBACK_HZ) == 0, described
        by_mobile = heard(mobile)
        assert audio.tone_seconds(by_mobile, CALLER_HZ) >= 2.0, audio.describe(by_mobile)


async def test_refusals_the_pusher_and_the_puller_hear_the_error_tone(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*5")  # nobody else of the group is registered
            await asyncio.sleep(3.0)
            assert desk.call_events("CALL_CLOSED") == [], p.failure()
            mobile = await p.add("202")
            await caller.hangup()
            await desk.wait_event("CALL_CLOSED", 10)
            await mobile.dial(f"sip:*5@{DOMAIN}")  # nothing to pull now
            await mobile.wait_event("CALL_CLOSED", 15)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_desk = heard(desk)
        assert audio.tone_seconds(by_desk, ERROR_HZ) >= 0.2, audio.describe(by_desk)
        assert audio.tone_seconds(by_desk, CALLER_HZ) >= 1.0, audio.describe(by_desk)
        assert mobile.call_events("CALL_ESTABLISHED") == []
        by_mobile = heard(mobile)  # the refused pull's early media: the error tone
        assert audio.tone_seconds(by_mobile, ERROR_HZ) >= 0.2, audio.describe(by_mobile)
        log = p.pbx.log()
        assert "Push by 201 refused: no other member of Home is present and available" in log
        assert "Pull by 202 refused: no call to pull" in log


async def test_pull_follows_member_order_and_skips_a_held_call(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    async with phones(start_pbx, tmp_path, _group()) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301", answermode="auto")
            dave = await p.add("501")
            caller, desk = await _caller_talks_to_desk(p)
            await dave.dial(f"sip:301@{DOMAIN}")
            await dave.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(1.0)
            # Both calls can be pulled: the desk (201) comes first in the group's order.
            await mobile.dial(f"sip:*5@{DOMAIN}")
            await mobile.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            assert bob.call_events("CALL_CLOSED") == [], p.failure()
            await asyncio.sleep(1.5)
            # The mobile holds its call: the desk's pull skips it and takes Bob's (301).
            await mobile.command("hold")
            await asyncio.sleep(1.5)  # its re-INVITE (sendonly) is through
            await desk.dial(f"sip:*5@{DOMAIN}")
            await desk.wait_event("CALL_ESTABLISHED", 10, count=2)
            await bob.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.0)
            assert mobile.call_events("CALL_CLOSED") == [], p.failure()
            await dave.hangup()
            await desk.wait_event("CALL_CLOSED", 10, count=2)
            await caller.hangup()
            await mobile.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller = heard(caller)
        assert last_index(by_caller, DESK_HZ) < first_index(by_caller, MOBILE_HZ)
        by_dave = heard(dave)
        described = audio.describe(by_dave)
        assert audio.tone_seconds(by_dave, BOB_HZ) >= 1.0, described
        assert audio.tone_seconds(by_dave, DESK_HZ) >= 1.5, described
        assert last_index(by_dave, BOB_HZ) < first_index(by_dave, DESK_HZ), described


async def test_push_overrides_dnd_make_busy_and_call_forward_always(
    start_pbx: StartPbx, tmp_path: Path
) -> None:
    """The mobile in Do Not Disturb, Bob's phone in Make Busy and forwarding to dave: a push
    rings both members themselves, and dave not at all."""
    state = {
        "presence": {
            "devices": {"202": {"dnd": True}, "301": {"make_busy": True, "forward": "device:501"}},
            "flip": {},
        }
    }
    async with phones(start_pbx, tmp_path, _group(), state) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            dave = await p.add("501")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await bob.wait_event("CALL_INCOMING", 10)
            await asyncio.sleep(1.0)
            await bob.accept()
            await bob.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(2.0)
            await caller.hangup()
            await bob.wait_event("CALL_CLOSED", 10)
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        assert dave.call_events("CALL_INCOMING") == []
        by_caller = heard(caller)
        assert audio.tone_seconds(by_caller, BOB_HZ) >= 1.0, audio.describe(by_caller)


async def test_an_absent_member_is_not_rung_by_a_push(start_pbx: StartPbx, tmp_path: Path) -> None:
    state = {"groups": {"absent": {"Home": ["301"]}}}
    async with phones(start_pbx, tmp_path, _group(), state) as p:
        try:
            mobile = await p.add("202")
            bob = await p.add("301")
            caller, desk = await _caller_talks_to_desk(p)
            await desk.send_dtmf("*5")
            await mobile.wait_event("CALL_INCOMING", 10)
            await asyncio.sleep(5.0)  # more than a re-check: still not rung
            assert bob.call_events("CALL_INCOMING") == [], p.failure()
            await mobile.accept()
            await mobile.wait_event("CALL_ESTABLISHED", 10)
            await desk.wait_event("CALL_CLOSED", 10)
            await asyncio.sleep(1.5)
            await caller.hangup()
        except ClientError as error:
            pytest.fail(f"{error}\n{p.failure()}")
        by_caller = heard(caller)
        assert audio.tone_seconds(by_caller, MOBILE_HZ) >= 1.0, audio.describe(by_caller)
