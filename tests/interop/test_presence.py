"""Do Not Disturb, Make Busy and Call Forward Always with real baresip phones and our runner on
its shipped defaults. The settings are runtime state, so they come from the runner's state file
(``<config name>.state.json`` beside the configuration, read at start), as a previous run that
had them switched on would have left it; the tests also prove that path.

The forwarded and the sibling calls are checked from the audio the caller recorded: the caller
must hear the tone of the device that was meant to ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from . import audio
from .clients import Baresip, ClientError
from .conftest import DOMAIN, Device, RunningPbx, StartPbx, User

pytestmark = pytest.mark.interop

CALLER_HZ, MOBILE_HZ, DESK_HZ = 1000.0, 700.0, 440.0

ACCOUNTS = {
    "201": "alice-desk-pw",
    "202": "alice-mobile-pw",
    "301": "bob-kitchen-pw",
    "401": "carol-desk-pw",
    "501": "dave-desk-pw",
}


def _users() -> list[User]:
    return [
        User("alice", "200", [Device("201", ACCOUNTS["201"]), Device("202", ACCOUNTS["202"])]),
        User("bob", "300", [Device("301", ACCOUNTS["301"])]),
        User("carol", "400", [Device("401", ACCOUNTS["401"])]),
        User("dave", "500", [Device("501", ACCOUNTS["501"])]),
    ]


async def _start(start_pbx: StartPbx, tmp_path: Path) -> RunningPbx:
    """The runner, with a state file saying: alice's desk (201) in DND, bob's phone (301) in
    Make Busy, dave's phone (501) forwarding everything to alice's mobile (202)."""
    state = {
        "version": 1,
        "state": {
            "presence": {
                "devices": {
                    "201": {"dnd": True},
                    "301": {"make_busy": True},
                    "501": {"forward": "device:202"},
                },
                "flip": {},
            }
        },
    }
    # start_pbx writes pbx-0.yaml into tmp_path; its default state file is pbx-0.state.json.
    (tmp_path / "pbx-0.state.json").write_text(json.dumps(state))
    return await start_pbx(_users())


@contextlib.asynccontextmanager
async def _phone(
    pbx: RunningPbx, user: str, tone: Path, workdir: Path, answermode: str = "manual"
) -> AsyncIterator[Baresip]:
    ua = Baresip(
        user,
        ACCOUNTS[user],
        pbx.port,
        domain=DOMAIN,
        tone=tone,
        record=True,
        answermode=answermode,
        workdir=workdir,
    )
    async with ua:
        registration = await ua.wait_registered()
        assert registration.ok, f"{user} did not register:\n{ua.output[-3000:]}"
        yield ua


def _heard(ua: Baresip) -> list[audio.Window]:
    found: list[audio.Window] = []
    for path in ua.recordings("dec"):
        samples, rate = audio.read_wav(path)
        found += audio.windows(samples, rate)
    return found


async def test_dnd_make_busy_and_call_forward_always(start_pbx: StartPbx, tmp_path: Path) -> None:
    tones = {
        hz: audio.write_tone(tmp_path / f"tone-{hz:.0f}.wav", hz, 60.0)
        for hz in (CALLER_HZ, MOBILE_HZ, DESK_HZ)
    }
    pbx = await _start(start_pbx, tmp_path)
    async with (
        _phone(pbx, "401", tones[CALLER_HZ], tmp_path / "carol") as carol,
        _phone(pbx, "201", tones[DESK_HZ], tmp_path / "desk", "auto") as desk,
        _phone(pbx, "202", tones[MOBILE_HZ], tmp_path / "mobile", "auto") as mobile,
        _phone(pbx, "301", tones[DESK_HZ], tmp_path / "bob", "auto") as bob,
        _phone(pbx, "501", tones[DESK_HZ], tmp_path / "dave", "auto") as dave,
    ):

        def failure() -> str:
            phones = (carol, desk, mobile, bob, dave)
            text = "\n".join(f"--- baresip {ua.user}\n{ua.output[-2000:]}" for ua in phones)
            return f"{text}\n--- runner log\n{pbx.log()[-3000:]}"

        try:
            # 1. Alice (200): her desk is in DND, so only her mobile rings and takes the call.
            await carol.dial(f"sip:200@{DOMAIN}")
            await mobile.wait_event("CALL_ESTABLISHED", 15)
            await carol.wait_event("CALL_ESTABLISHED", 15)
            await asyncio.sleep(2.5)
            await carol.hangup()
            await mobile.wait_event("CALL_CLOSED", 10)
            await carol.wait_event("CALL_CLOSED", 10)
            assert desk.call_events("CALL_INCOMING") == [], failure()

            # 2. Bob's only phone is in Make Busy: Carol gets 486 Busy Here, Bob's never rings.
            await carol.dial(f"sip:300@{DOMAIN}")
            closed = await carol.wait_event("CALL_CLOSED", 15, count=2)
            assert "486" in str(closed.get("param")), closed
            await pbx.wait_for_log(r"Call from 401 to 300 rejected with 486: busy")
            assert bob.call_events("CALL_INCOMING") == [], failure()

            # 3. Dave's phone forwards to Alice's mobile: calling 501 rings the mobile instead.
            await carol.dial(f"sip:501@{DOMAIN}")
            await mobile.wait_event("CALL_ESTABLISHED", 15, count=2)
            await carol.wait_event("CALL_ESTABLISHED", 15, count=2)
            await asyncio.sleep(2.5)
            await carol.hangup()
            await mobile.wait_event("CALL_CLOSED", 10, count=2)
            assert dave.call_events("CALL_INCOMING") == [], failure()
        except ClientError as error:
            pytest.fail(f"{error}\n{failure()}")

    heard = _heard(carol)
    assert heard, f"carol recorded nothing: {list(carol.directory.rglob('*'))}"
    # Carol heard the mobile in both answered calls (each at least 2 s), never the desk tone
    # (the desk, Bob's and Dave's phones all play it, and none of them may have answered).
    assert audio.tone_seconds(heard, MOBILE_HZ) >= 4.0, audio.describe(heard)
    assert audio.tone_seconds(heard, DESK_HZ) == 0, audio.describe(heard)
